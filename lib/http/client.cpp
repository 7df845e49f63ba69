// coring::http::Client (see coring/http_client.hpp): configuration, the request head, and one
// call from start to end: binding, deadline, connecting, retries and redirects. Reading the
// response is client_exchange.cpp's.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/event_engine.hpp"
#include "core/scheduler.hpp"
#include "http/client_core.hpp"
#include "http/http_text.hpp"
#include "http/url.hpp"

namespace coring::http {
namespace detail {
namespace {

// A body up to this size goes out in the same send as the head (copied behind it: cheaper than
// a second system call); a larger one is sent from where it is.
constexpr size_t kGatheredBody = 16 * 1024;

std::string_view trimmed(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Whether a comma-separated list (a Connection value) holds token.
bool list_has(std::string_view list, std::string_view token) noexcept {
  while (!list.empty()) {
    size_t comma = list.find(',');
    if (same_name(trimmed(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

bool value_is_sendable(std::string_view value) noexcept {
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool is_redirect(int status) noexcept {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

void append_number(std::string& out, uint64_t value) {
  char digits[24];
  auto [end, error] = std::to_chars(digits, digits + sizeof digits, value);
  (void)error;
  out.append(digits, end);
}

// A file opened for a request body, closed when the call ends.
struct BodyFile {
  RequestBody body;
  explicit BodyFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      body.file_error = errno;
      body.file_error_text = "the body's file cannot be opened";
      return;
    }
    struct stat status;
    if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
      body.file_error = EINVAL;
      body.file_error_text = "the body's file is not a regular file";
      ::close(fd);
      return;
    }
    body.file_fd = fd;
    body.file_size = static_cast<uint64_t>(status.st_size);
  }
  ~BodyFile() {
    if (body.file_fd >= 0) ::close(body.file_fd);
  }
  BodyFile(const BodyFile&) = delete;
  BodyFile& operator=(const BodyFile&) = delete;
};

// The context of https requests whose ClientOptions::tls is empty: the system's CA store, made
// on first use and kept for the thread, so that its session cache lets a second connection to a
// server resume the first one's session. Null (with *error and *why) when it cannot be made; a
// failure is not kept: the next request tries again.
const TlsContext* default_tls_context(int* error, std::string* why) {
  thread_local std::optional<TlsContext> context;
  if (!context) {
    // Making it may wait (the CA store is parsed on an offload worker): another coroutine of
    // the thread may have made it meanwhile, and its session cache is kept.
    std::optional<TlsContext> made = TlsContext::client();
    if (!context) context = std::move(made);
    if (!context) {
      *error = coring::last_error().value();
      if (*error == 0) *error = EINVAL;
      why->assign("the default TLS client context cannot be made: ");
      why->append(TlsContext::last_error_message());
      return nullptr;
    }
  }
  return &*context;
}

}  // namespace

Duration remaining(int64_t deadline_ns) noexcept {
  if (deadline_ns == INT64_MAX) return kForever;
  return Duration(deadline_ns - coring::detail::monotonic_ns());
}

ClientCore::ClientCore(std::string host_name, uint16_t port_number, ClientOptions client_options)
    : host(std::move(host_name)), port(port_number), options(std::move(client_options)) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  set_host_line();
}

void ClientCore::set_host_line() {
  host_line = "Host: ";
  append_host_value(host_line, host, port, options.https);
  host_line += "\r\n";
}

void ClientCore::check_binding() const {
  if (owner_cid == 0) return;
  coring::detail::Coroutine* self = coring::detail::running_coroutine();
  long current = self != nullptr ? self->id : -1;
  if (current == owner_cid) {
    throw std::logic_error("http::Client: called from inside its own on_body callback");
  }
  throw BindError(socket.fd(), owner_cid, current, BindError::Side::reading);
}

void ClientCore::set_headers(std::vector<std::pair<std::string, std::string>> headers) {
  check_binding();
  user_headers.clear();
  elsewhere_headers.clear();
  headers_invalid = user_host = user_agent = user_accept_encoding = user_connection =
      user_asks_close = idempotency_key = false;
  for (const auto& [name, value] : headers) {
    if (!is_token(name) || !value_is_sendable(value)) {
      headers_invalid = true;
      continue;
    }
    // The body is framed by the client: a user's framing header would contradict it.
    if (same_name(name, "content-length") || same_name(name, "transfer-encoding")) continue;
    bool credential = same_name(name, "authorization") || same_name(name, "cookie") ||
                      same_name(name, "cookie2") || same_name(name, "www-authenticate");
    if (same_name(name, "host")) user_host = true;
    if (same_name(name, "user-agent")) user_agent = true;
    if (same_name(name, "accept-encoding")) user_accept_encoding = true;
    if (same_name(name, "connection")) {
      user_connection = true;
      if (list_has(value, "close")) user_asks_close = true;
    }
    if (same_name(name, "idempotency-key") || same_name(name, "x-idempotency-key")) {
      idempotency_key = true;
    }
    std::string line;
    line.reserve(name.size() + value.size() + 4);
    line.append(name).append(": ").append(value).append("\r\n");
    user_headers += line;
    if (!credential && !same_name(name, "host")) elsewhere_headers += line;
  }
}

bool ClientCore::fail(int code, int error_number, std::string_view text) {
  status = code;
  error = error_number;
  error_text.assign(text);
  body.clear();  // never part of a body as if it were all of it
  close_connection();
  return false;
}

void ClientCore::close_connection() noexcept {
  reusable = false;
  if (connected) {
    socket.close();
    connected = false;
  }
}

bool ClientCore::peer_still_there() noexcept {
  // TLS: OpenSSL looks at what arrived, so that a session ticket is not taken for a response
  // nobody asked for, and the server's close_notify reads as the close it is.
  if (connected_https) {
    if (!socket.check_liveness()) return false;
    // check_liveness() counts application bytes waiting as alive; here they are bytes nobody
    // asked for, which the next request would read as its response: not a connection to reuse.
    char stray;
    return socket.recv(&stray, 1, Duration::zero()) < 0 && socket.error().value() == ETIMEDOUT;
  }
  char byte;
  // Through the engine: it may hold bytes (or the end of stream) it received ahead of us.
  int32_t result = coring::detail::receive_now(socket.fd(), &byte, 1, MSG_PEEK);
  // Bytes nobody asked for, or the end, or an error: either way not a connection to send on.
  return result == -EAGAIN || result == -EWOULDBLOCK;
}

bool ClientCore::replayable(const Hop& hop) const noexcept {
  std::string_view m = hop.method;
  return m == "GET" || m == "HEAD" || m == "PUT" || m == "DELETE" || m == "OPTIONS" ||
         m == "TRACE" || idempotency_key;
}

bool ClientCore::connect(const Hop& hop) {
  socket =
      Socket(hop.host.find(':') != std::string_view::npos ? Socket::Type::tcp6 : Socket::Type::tcp);
  connected = socket.is_open();
  if (!connected) {
    return fail(-1, socket.error().value(), socket.error_message());
  }
  Duration timeout = std::min<Duration>(options.connect_timeout, remaining(deadline_ns));
  if (!socket.connect(hop.host, hop.port, timeout)) {
    std::string text = "connect to ";
    append_host_value(text, hop.host, hop.port);
    text.append(": ").append(socket.error_message());
    return fail(-1, socket.error().value(), text);
  }
  connected_host.assign(hop.host);
  connected_port = hop.port;
  connected_https = hop.https;
  ++stats.connections;
  return !hop.https || start_tls(hop);
}

bool ClientCore::start_tls(const Hop& hop) {
  const TlsContext* context = nullptr;
  if (options.tls) {
    // (A moved-from context is refused by start_tls itself, with EINVAL.)
    if (options.tls->is_server()) {
      return fail(-5, EINVAL, "ClientOptions::tls is a server context (use TlsContext::client())");
    }
    context = &*options.tls;
  } else {
    int error_number = 0;
    std::string why;
    context = default_tls_context(&error_number, &why);
    if (context == nullptr) return fail(-5, error_number, why);
  }
  // The handshake finishes connecting: it has connect_timeout of its own, within the call's.
  Duration timeout = std::min<Duration>(options.connect_timeout, remaining(deadline_ns));
  if (timeout <= Duration::zero()) timeout = Duration::zero();  // not "the socket's default"
  if (socket.start_tls(*context, hop.host, timeout)) {
    if (socket.tls_session_reused()) ++stats.tls_resumed;
    return true;
  }
  const bool ipv6 = hop.host.find(':') != std::string_view::npos;
  std::string text = ipv6 ? "https://[" : "https://";
  text.append(hop.host).append(ipv6 ? "]:" : ":").append(std::to_string(hop.port));
  text.append(": ").append(socket.error_message());
  return fail(-5, socket.error().value(), text);
}

// 0, or the errno of the failure with *why (null: the errno's text).
int ClientCore::send_request(const Hop& hop, const char** why) {
  *why = nullptr;
  output.clear();
  output.append(hop.method).append(" ").append(hop.target).append(" HTTP/1.1\r\n");
  if (hop.elsewhere) {
    output += "Host: ";
    append_host_value(output, hop.host, hop.port, hop.https);
    output += "\r\n";
  } else if (!user_host) {
    output += host_line;
  }
  if (!user_agent) output += "User-Agent: coring/0.1\r\n";
  if (options.decompress && !user_accept_encoding) output += "Accept-Encoding: gzip, deflate\r\n";
  const RequestBody& body = hop.body;
  // RFC 9110 8.6: a POST, PUT or PATCH without a body says so (servers may want a length).
  if (!body.empty() || hop.method == "POST" || hop.method == "PUT" || hop.method == "PATCH") {
    output += "Content-Length: ";
    append_number(output, body.size());
    output += "\r\n";
  }
  if (!options.keep_alive && !user_connection) output += "Connection: close\r\n";
  output += hop.elsewhere ? elsewhere_headers : user_headers;
  output += "\r\n";
  const bool gathered = !body.from_file() && body.text.size() <= kGatheredBody;
  if (gathered) output.append(body.text);
  ssize_t sent = socket.send_all(output.data(), output.size(), remaining(deadline_ns));
  if (sent != static_cast<ssize_t>(output.size())) return socket.error().value();
  if (gathered || body.empty()) return 0;
  if (body.from_file()) {
    sent = socket.sendfile(body.file_fd, 0, body.file_size, remaining(deadline_ns));
    if (sent == static_cast<ssize_t>(body.file_size)) return 0;
    if (sent >= 0 && socket.error().value() == 0) {
      *why = "the body's file became shorter while it was sent";
      return EIO;
    }
    return socket.error().value();
  }
  sent = socket.send_all(body.text.data(), body.text.size(), remaining(deadline_ns));
  return sent == static_cast<ssize_t>(body.text.size()) ? 0 : socket.error().value();
}

// One request and its response, on a reused connection when there is one (and, when the server
// turns out to have closed it before answering, once more on a new one if the request may be
// replayed), else on a new one.
bool ClientCore::exchange(const Hop& hop, bool may_follow) {
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    if (reusable && connected_to(hop)) {
      // Always looked at first (one non-blocking peek, a system call per reused request, about
      // 5% of a request's client CPU here): a server that closed the connection (its
      // keepalive_timeout, a restart) would lose a POST sent into it, and bytes that came after
      // the last response (a body after a HEAD, more than its Content-Length) would be read as
      // this request's response, someone else's answer in a shared pool. Go's transport learns
      // the same from the read it keeps posted on an idle connection.
      reused = peer_still_there();
    }
    if (!reused) {
      close_connection();
      if (!connect(hop)) return false;
    }
    reusable = false;  // until this response has been read whole
    const bool may_retry = reused && attempt == 0 && replayable(hop);
    bool received_any = false;
    const char* why = nullptr;
    if (int send_error = send_request(hop, &why)) {
      if (send_error == ETIMEDOUT)
        return fail(-2, ETIMEDOUT, "the request timed out while it was sent");
      if (send_error == EPIPE || send_error == ECONNRESET) {
        // The server may have answered before it stopped reading (a 413, then a close).
        if (read_response(hop, may_follow, &received_any)) {
          close_connection();
          return true;
        }
        if (!received_any && may_retry) {
          ++stats.retries;
          continue;
        }
      }
      std::string text = "sending the request failed: ";
      text.append(why != nullptr ? why : std::strerror(send_error));
      return fail(-4, send_error, text);
    }
    if (read_response(hop, may_follow, &received_any)) return true;
    if (!received_any && may_retry && (error == ECONNRESET || error == EPIPE)) {
      ++stats.retries;
      continue;
    }
    return false;
  }
}

// Decided as soon as the head of a response to hop is read, before its body: the body of a
// redirect that is followed is dropped (and not waited for past kRedirectBodyRead), that of one
// that is not is the answer's. false: the Location is unusable (failed, -3).
bool ClientCore::decide_redirect(const Hop& hop, bool may_follow) {
  following = false;
  if (!may_follow || !is_redirect(status)) return true;
  std::optional<std::string_view> location = header("location");
  if (!location) return true;  // nowhere to go: the 3xx is the answer
  const char* why = nullptr;
  if (resolve_location(hop.host, hop.port, hop.https, hop.target, *location, &redirect, &why) !=
      0) {
    return fail(-3, EBADMSG, std::string("a redirect's Location is unusable: ") + why);
  }
  // A body that went out over TLS is not sent again in clear (Go would): the 3xx is the answer.
  // 301, 302 and 303 send none (see perform()); neither does a request whose body is empty.
  const bool keeps_body = status == 307 || status == 308;
  if (hop.https && !redirect.https && keeps_body && hop.body.size() > 0) return true;
  following = true;
  return true;
}

bool ClientCore::perform(std::string_view method, std::string_view path, RequestBody body) {
  check_binding();
  begin_response();
  coring::detail::Coroutine* self = coring::detail::running_coroutine();
  if (self == nullptr) return fail(-1, EPERM, "http::Client calls must run inside a coroutine");
  owner_cid = self->id;
  // Whatever way the call ends (a failure, an exception from on_body, the coroutine unwound), the
  // client is free again, and a connection whose response was not read whole is not reused.
  struct Release {
    ClientCore& core;
    ~Release() {
      core.owner_cid = 0;
      if (!core.reusable) core.close_connection();
    }
  } release{*this};
  if (options.timeout <= Duration::zero()) {
    return fail(-2, ETIMEDOUT, "the request's timeout is zero or less");
  }
  deadline_ns = coring::detail::deadline_for(options.timeout);
  if (path.empty()) path = "/";
  if (!is_token(method)) return fail(-4, EINVAL, "the method is not an HTTP token");
  if (!is_sendable_target(path)) {
    return fail(-4, EINVAL,
                "the path must start with / (or be *) and hold no space or control character");
  }
  if (headers_invalid) {
    return fail(-4, EINVAL,
                "a header from set_headers() has a name that is not a token, or CR, LF or NUL in "
                "its value");
  }
  if (body.file_error != 0) {
    std::string text = body.file_error_text;
    text.append(": ").append(std::strerror(body.file_error));
    return fail(-4, body.file_error, text);
  }
  Hop hop{method, host, port, path, body, options.https, false};
  Destination destination;  // a redirect's target: hop's views point into it
  for (int redirects = 0;;) {
    const bool may_follow = redirects < options.max_redirects;
    if (!exchange(hop, may_follow)) return false;
    if (!following) return true;  // decided from its head (decide_redirect)
    // RFC 9110 15.4: 301 and 302 may, and 303 must, turn the request into a GET (HEAD stays);
    // 307 and 308 repeat it as it was (Go's rules).
    if (status == 301 || status == 302 || status == 303) {
      if (hop.method != "HEAD") hop.method = "GET";
      hop.body = RequestBody{};
    }
    destination = std::move(redirect);
    hop.host = destination.host;
    hop.port = destination.port;
    hop.target = destination.target;
    hop.https = destination.https;
    // Another scheme counts as elsewhere too: credentials sent over TLS never go out in clear.
    hop.elsewhere = hop.port != port || hop.host != host || hop.https != options.https;
    ++redirects;
    ++stats.redirects;
  }
}

}  // namespace detail

// ---- Client ------------------------------------------------------------------------------------

Client::Client(std::string host, uint16_t port, ClientOptions options)
    : core_(std::make_unique<detail::ClientCore>(std::move(host), port, std::move(options))) {}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

void Client::set_headers(std::vector<std::pair<std::string, std::string>> headers) {
  core_->set_headers(std::move(headers));
}

const ClientOptions& Client::options() const noexcept {
  return core_->options;
}

void Client::set_options(ClientOptions options) {
  core_->check_binding();
  core_->options = std::move(options);
  core_->set_host_line();  // https may have changed the default port
}

bool Client::get(std::string_view path) {
  return core_->perform("GET", path, {});
}

bool Client::post(std::string_view path, std::string_view body) {
  return core_->perform("POST", path, detail::RequestBody{body});
}

bool Client::execute(std::string_view method, std::string_view path, std::string_view body) {
  return core_->perform(method, path, detail::RequestBody{body});
}

bool Client::post_file(std::string_view path, const std::string& file_path) {
  return execute_file("POST", path, file_path);
}

bool Client::execute_file(std::string_view method, std::string_view path,
                          const std::string& file_path) {
  core_->check_binding();  // before the file is opened
  detail::BodyFile file(file_path);
  return core_->perform(method, path, file.body);
}

int Client::status_code() const noexcept {
  return core_->status;
}

std::string_view Client::body() const noexcept {
  return core_->body;
}

std::optional<std::string_view> Client::header(std::string_view name) const noexcept {
  return core_->header(name);
}

std::span<const Header> Client::headers() const noexcept {
  detail::ClientCore& core = *core_;
  if (!core.header_views_ready) {
    const char* base = core.input.data();
    core.header_views.clear();
    for (size_t i = 0; i < core.parser.head_header_count; ++i) {
      const detail::HeaderSpan& field = core.parser.headers[i];
      core.header_views.push_back({field.name.in(base), field.value.in(base)});
    }
    core.header_views_ready = true;
  }
  return core.header_views;
}

std::optional<std::string_view> Client::trailer(std::string_view name) const noexcept {
  return core_->find(core_->parser.head_header_count, core_->parser.headers.size(), name);
}

std::error_code Client::error() const noexcept {
  return std::error_code(core_->error, std::generic_category());
}

std::string_view Client::error_message() const noexcept {
  if (!core_->error_text.empty()) return core_->error_text;
  if (core_->error == 0) return "";
  const char* text = ::strerrordesc_np(core_->error);
  return text != nullptr ? text : "unknown error";
}

ClientStats Client::stats() const noexcept {
  return core_->stats;
}

const std::string& Client::host() const noexcept {
  return core_->host;
}

uint16_t Client::port() const noexcept {
  return core_->port;
}

bool Client::close() {
  bool was_open = core_->connected;
  core_->close_connection();
  return was_open;
}

}  // namespace coring::http

// coring::http::Server (see coring/http_server.hpp): routing, and the loop that serves one
// connection: read, parse, check the head, answer, gather, write.
#include <cxxabi.h>
#include <strings.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <vector>

#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "http/exchange.hpp"
#include "http/static_files.hpp"
#include "net/worker_context.hpp"

namespace coring::http {

// A connection's input buffer: most request heads fit; a larger one grows it up to
// max_header_size, a body's reads too, and it shrinks back between requests.
constexpr size_t kInputSize = 4096;

class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(std::string host, uint16_t port, ServerOptions options)
      : options(std::move(options)), tcp(std::move(host), port, this->options) {}
  ServerCore(int listening_fd, ServerOptions options)
      : options(std::move(options)), tcp(listening_fd, this->options) {}

  struct Route {
    std::string prefix;
    Handler handler;
  };

  ServerOptions options;
  coring::Server tcp;
  std::vector<Route> routes;
  std::string server_line;
  bool stopping = false;
  bool started = false;  // start() was called: routes are fixed
  uint64_t requests = 0;
  uint64_t rejected = 0;
  detail::Exchange* exchanges = nullptr;  // every open connection's, linked through next

  const Route* route_for(std::string_view path) const noexcept;
  void serve(Connection& connection);
  void answer(detail::Exchange& exchange);
  void reject(detail::Exchange& exchange, int status);
  bool head_is_acceptable(detail::Exchange& exchange, size_t head_end, int* status);
  int message_end_status(detail::Exchange& exchange);
  // Makes room for the next read; a status (400, 431) when what it had to look at on the way
  // refuses the request, else 0.
  int make_room(detail::Exchange& exchange, size_t message_start, size_t head_end,
                size_t* new_message_start, size_t* new_head_end);
  void close_idle_connections();
};

namespace detail {

Exchange::Exchange(ServerCore& server, const ServerOptions& options, Connection& connection)
    : server(server), options(options), connection(connection), server_line(server.server_line) {
  input.resize(kInputSize);
}

void Exchange::finish() noexcept {
  ++server.requests;
  coring::detail::note_request();
}

bool Exchange::stopping() const noexcept {
  return server.stopping;
}

}  // namespace detail

namespace {

// The smallest input buffer that can hold a head one byte over the limit, so that the limit,
// not the buffer, decides.
size_t input_limit(const ServerOptions& options) {
  return std::max<size_t>(options.max_header_size + 1, 4096);
}

// Links an Exchange into its server's list for as long as the connection is served.
struct Registration {
  ServerCore& server;
  detail::Exchange& exchange;
  Registration(ServerCore& server, detail::Exchange& exchange)
      : server(server), exchange(exchange) {
    exchange.next = server.exchanges;
    if (server.exchanges != nullptr) server.exchanges->previous = &exchange;
    server.exchanges = &exchange;
  }
  ~Registration() {
    if (exchange.previous != nullptr) exchange.previous->next = exchange.next;
    if (exchange.next != nullptr) exchange.next->previous = exchange.previous;
    if (server.exchanges == &exchange) server.exchanges = exchange.next;
  }
};

// After the last response of a connection: closes it at once, with no lingering, when the
// client itself asked to close (Connection: close, or HTTP/1.0 without keep-alive) after a
// request read whole and has sent nothing more (as nginx decides: lingering is for a client
// that may still be sending). The wait for the client's FIN (and, over TLS, its close_notify)
// otherwise costs about 9 us of server CPU per connection here, 4% of a TLS handshake. A
// byte that has come (or an error) leaves the graceful close to drain it; end of stream or
// nothing at all ends it now. One non-blocking read, through the engine (which may hold bytes
// it read ahead) and, over TLS, through OpenSSL's buffered records. Bytes the kernel has taken
// but the engine not yet reported are missed, as nginx misses those its last poll did not
// report: a client that sends after asking to close can get a reset.
void close_if_client_done(detail::Exchange& exchange) {
  const detail::MessageParser& parser = exchange.parser;
  if (parser.keep_alive() || parser.upgrade() || exchange.parsed != exchange.filled) return;
  Connection& connection = exchange.connection;
  char byte;
  ssize_t received;
  try {
    received = connection.recv(&byte, 1, Duration::zero());
  } catch (const BindError&) {
    return;  // a coroutine the handler started still reads: the graceful close wakes it
  }
  if (received == 0 || (received < 0 && connection.error() == std::errc::timed_out)) {
    connection.Socket::close();
  }
}

}  // namespace

const ServerCore::Route* ServerCore::route_for(std::string_view path) const noexcept {
  // Longest first (start() sorted them): the first match wins.
  for (const Route& route : routes) {
    const std::string& prefix = route.prefix;
    if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) continue;
    // "/api" takes "/api" and "/api/x", not "/apis".
    if (path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/') {
      return &route;
    }
  }
  return nullptr;
}

bool ServerCore::head_is_acceptable(detail::Exchange& exchange, size_t head_end, int* status) {
  const detail::MessageParser& parser = exchange.parser;
  if (!parser.version_ok()) {
    *status = 505;
    return false;
  }
  const char* base = exchange.base();
  // llhttp also reads RTSP/1.0 and ICE/1.0 as version 1.0.
  std::string_view after_target(base + parser.url.offset + parser.url.length,
                                head_end - (parser.url.offset + parser.url.length));
  if (after_target.substr(0, 6) != " HTTP/") {
    *status = 505;
    return false;
  }
  // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing (an HTTP/1.0
  // hop in front would not have read it as chunked).
  if (parser.version_minor() == 0 && parser.has_transfer_encoding()) {
    *status = 400;
    return false;
  }
  // What llhttp 8 lets through even in strict mode: a bare LF (here the one ending the head),
  // names that are empty or not tokens, obs-fold. A proxy in front may read those otherwise.
  *status = 400;
  if (detail::has_bare_lf(base + parser.head_start, base + head_end)) return false;
  int hosts = 0;
  std::string_view expect;
  for (const detail::HeaderSpan& header : parser.headers) {
    std::string_view name = header.name.in(base);
    std::string_view value = header.value.in(base);
    if (!detail::field_is_acceptable(name, value)) return false;
    if (detail::same_name(name, "host")) ++hosts;
    if (detail::same_name(name, "expect")) expect = value;
  }
  // RFC 9112 3.2: exactly one Host in HTTP/1.1 (Go's net/http agrees), at most one in 1.0.
  if (hosts > 1 || (parser.version_minor() >= 1 && hosts != 1)) return false;
  if (!parser.chunked() && parser.content_length() > options.package_max_length) {
    *status = 413;  // answered before the body is read
    return false;
  }
  if (!expect.empty()) {
    if (!detail::same_name(expect, "100-continue")) {
      *status = 417;
      return false;
    }
    // Only when the body has not started to arrive (a client that sends it anyway does not
    // need the go-ahead) and the client speaks HTTP/1.1.
    if (parser.has_body() && exchange.parsed == exchange.filled && parser.version_minor() >= 1) {
      exchange.output += "HTTP/1.1 100 Continue\r\n\r\n";
    }
  }
  return true;
}

int ServerCore::message_end_status(detail::Exchange& exchange) {
  detail::MessageParser& parser = exchange.parser;
  if (!parser.chunked()) return 0;
  const char* base = exchange.base();
  // The last chunk and trailers: CRLF line ends only (llhttp takes "0\r\n\n").
  if (detail::has_bare_lf(base + parser.body_scan_from, base + exchange.parsed)) return 400;
  if (parser.headers.size() > parser.head_header_count) {
    // Trailer fields: checked like the head's, bounded like it, then dropped: they are not
    // the head's fields (RFC 9110 6.5.1), and a proxy in front may not have looked at them.
    size_t first = parser.headers[parser.head_header_count].name.offset;
    if (exchange.parsed - first > options.max_header_size) return 431;
    for (size_t i = parser.head_header_count; i < parser.headers.size(); ++i) {
      const detail::HeaderSpan& field = parser.headers[i];
      if (!detail::field_is_acceptable(field.name.in(base), field.value.in(base))) return 400;
    }
    parser.headers.resize(parser.head_header_count);
  }
  return 0;
}

void ServerCore::reject(detail::Exchange& exchange, int status) {
  ++rejected;
  coring::detail::log_format(
      LogLevel::debug, "connection#%ld: %d %s (%s)", exchange.connection.id(), status,
      std::string(reason_phrase(status)).c_str(), exchange.parser.error_reason());
  exchange.begin_response();
  exchange.head_request = false;
  exchange.close_after = true;
  exchange.status = status;
  exchange.header_block = "Content-Type: text/plain; charset=utf-8\r\n";
  std::string_view reason = reason_phrase(status);
  exchange.append_head(static_cast<int64_t>(reason.size() + 1));
  exchange.output.append(reason);
  exchange.output += '\n';
  exchange.flush();
}

void ServerCore::answer(detail::Exchange& exchange) {
  exchange.begin_response();
  exchange.close_after = !exchange.parser.keep_alive() || exchange.parser.upgrade() || stopping;
  Request request(&exchange);
  Response response(&exchange);
  std::string_view path = request.path();
  bool threw = false;
  try {
    if (path == "*" && request.method() == "OPTIONS") {
      // "OPTIONS *" asks about the server itself, not a resource (RFC 9110 9.3.7): no route
      // can own it, and 404 would say the server does not exist. An empty 200, as Go answers.
      response.end();
    } else if (const Route* route = route_for(path)) {
      route->handler(request, response);
    } else {
      response.status(404);
      response.header("Content-Type", "text/plain; charset=utf-8");
      response.end("Not Found\n");
    }
  } catch (const coring::detail::ForcedUnwind&) {
    throw;  // the container unwinds this coroutine
  } catch (const abi::__forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    threw = true;
    coring::detail::log_format(
        LogLevel::error, "connection#%ld: the handler of %.*s %.*s threw: %s",
        exchange.connection.id(), static_cast<int>(request.method().size()),
        request.method().data(), static_cast<int>(path.size()), path.data(), e.what());
  } catch (...) {
    threw = true;
    coring::detail::log_format(
        LogLevel::error, "connection#%ld: the handler of %.*s %.*s threw a non-standard exception",
        exchange.connection.id(), static_cast<int>(request.method().size()),
        request.method().data(), static_cast<int>(path.size()), path.data());
  }
  if (exchange.ended) return;
  if (!threw) {
    coring::detail::log_format(
        LogLevel::error,
        "connection#%ld: the handler of %.*s %.*s returned without ending its "
        "response",
        exchange.connection.id(), static_cast<int>(request.method().size()),
        request.method().data(), static_cast<int>(path.size()), path.data());
  }
  if (!exchange.head_sent && !exchange.client_gone) {
    exchange.begin_response();
    response.status(500);
    response.header("Content-Type", "text/plain; charset=utf-8");
    response.end("Internal Server Error\n");
    return;
  }
  // Part of the response is out: the client can only learn of the failure from the close
  // (a chunked body without its last chunk, or a short one).
  exchange.ended = true;
  exchange.close_after = true;
  exchange.finish();
}

int ServerCore::make_room(detail::Exchange& exchange, size_t message_start, size_t head_end,
                          size_t* new_message_start, size_t* new_head_end) {
  detail::MessageParser& parser = exchange.parser;
  std::vector<char>& input = exchange.input;
  if (!parser.in_message()) {
    // Everything parsed and answered: start over at the front, in a buffer of the usual size,
    // without the last request's body if it was large (an idle connection holds no more).
    exchange.parsed = exchange.filled = 0;
    parser.release_large_body();
    if (input.size() > kInputSize) {
      input.resize(kInputSize);
      input.shrink_to_fit();
    }
    *new_message_start = 0;
    *new_head_end = 0;
  } else if (parser.in_head()) {
    // Keep the head so far, at the front; grow for a long one, up to one byte over the limit.
    if (message_start > 0) {
      std::memmove(input.data(), input.data() + message_start, exchange.filled - message_start);
      parser.shift(static_cast<uint32_t>(message_start));
      exchange.filled -= message_start;
      exchange.parsed -= message_start;
    }
    *new_message_start = 0;
    *new_head_end = 0;
    if (exchange.filled == input.size()) {
      input.resize(std::min(input.size() * 2, input_limit(options) + 1024));
    }
  } else {
    // In a body: it is copied out as it is parsed, so only the head (the request's views)
    // stays; the body's bytes after it are reused. Trailer fields after a chunked body are
    // views too: once the first has begun, its bytes move to just after the head.
    // The framing about to be dropped is checked first (llhttp takes a bare LF there).
    if (detail::has_bare_lf(exchange.base() + parser.body_scan_from,
                            exchange.base() + exchange.filled)) {
      return 400;
    }
    const bool ends_with_cr = exchange.filled > 0 && input[exchange.filled - 1] == '\r';
    size_t trailer_start = exchange.filled;
    for (const detail::HeaderSpan& header : parser.headers) {
      if (header.name.offset >= head_end) {
        trailer_start = std::min<size_t>(trailer_start, header.name.offset);
      }
    }
    size_t trailer_bytes = exchange.filled - trailer_start;
    if (trailer_bytes > 0) {
      std::memmove(input.data() + head_end, input.data() + trailer_start, trailer_bytes);
      auto moved = static_cast<uint32_t>(trailer_start - head_end);
      for (detail::HeaderSpan& header : parser.headers) {
        if (header.name.offset < trailer_start) continue;
        header.name.offset -= moved;
        if (header.value.length > 0) header.value.offset -= moved;
      }
    }
    size_t head_start = parser.head_start;
    if (head_start > 0) {
      std::memmove(input.data(), input.data() + head_start, head_end - head_start + trailer_bytes);
      parser.shift(static_cast<uint32_t>(head_start));
    }
    *new_message_start = 0;
    *new_head_end = head_end - head_start;
    exchange.parsed = exchange.filled = *new_head_end + trailer_bytes;
    parser.body_scan_from = static_cast<uint32_t>(*new_head_end);
    if (trailer_bytes == 0 && ends_with_cr) {
      // A CRLF that a read split: its CR stays, so that the LF after it is not a bare one.
      input[exchange.filled] = '\r';
      exchange.parsed = ++exchange.filled;
    }
    if (trailer_bytes > options.max_header_size) return 431;
    if (input.size() - exchange.filled < 2048) input.resize(input.size() * 2);
  }
  return 0;
}

void ServerCore::serve(Connection& connection) {
  detail::Exchange exchange(*this, options, connection);
  exchange.coroutine = this_coroutine::id();
  Registration registration(*this, exchange);
  detail::MessageParser& parser = exchange.parser;
  size_t message_start = 0;  // where the message being parsed began
  size_t head_end = 0;       // where its head ended (once head_complete)
  // The head's deadline, taken when a head first has to wait for more bytes (not for every
  // request: a head that arrives whole, the usual case, never reads the clock for it). It is
  // later than header_timeout after the head's first byte by the time that byte waited to be
  // parsed, which is no time at all to a slowloris client.
  int64_t head_deadline = 0;  // monotonic ns
  bool head_deadline_set = false;
  // After a head, the parser has more to say even with no byte left (a request without a
  // body is complete right there).
  bool parse_again = false;
  for (;;) {
    if (exchange.parsed == exchange.filled && !parse_again) {
      if (!exchange.flush() || exchange.close_after) return;
      bool between_requests = !parser.in_message();
      if (int status = make_room(exchange, message_start, head_end, &message_start, &head_end)) {
        reject(exchange, status);
        return;
      }
      Duration timeout;
      if (between_requests) {
        timeout = options.keepalive_timeout;
      } else if (parser.in_head()) {
        if (!head_deadline_set) {
          head_deadline = coring::detail::deadline_for(options.header_timeout);
          head_deadline_set = true;
        }
        timeout = Duration(head_deadline - coring::detail::monotonic_ns());
        if (timeout <= Duration::zero()) return;  // slowloris: no answer, just close
      } else {
        timeout = options.body_timeout;
      }
      // Stopping, between requests: a request already here (one that raced the shutdown, or
      // the first of a connection accepted just before it) is served; none, and the
      // connection ends.
      if (between_requests && stopping) timeout = Duration::zero();
      exchange.idle = between_requests;
      ssize_t received = connection.recv(exchange.input.data() + exchange.filled,
                                         exchange.input.size() - exchange.filled, timeout);
      exchange.idle = false;
      if (received < 0 && between_requests && stopping && connection.error().value() == ECANCELED) {
        // Woken by close_idle_connections(). A request may have raced the shutdown: serve it
        // (its response says Connection: close); otherwise the server's graceful close sends
        // FIN, not the reset a close with unread input would.
        received = connection.recv(exchange.input.data() + exchange.filled,
                                   exchange.input.size() - exchange.filled, Duration::zero());
      }
      if (received <= 0) {
        if (parser.in_message()) {
          coring::detail::log_format(
              LogLevel::debug, "connection#%ld: the request was cut short (%s)", connection.id(),
              received == 0 ? "end of stream" : std::string(connection.error_message()).c_str());
        }
        return;
      }
      if (between_requests) head_deadline_set = false;
      exchange.filled += static_cast<size_t>(received);
    }
    parse_again = false;
    size_t stopped = exchange.parsed;
    auto event = parser.parse(
        exchange.base(), exchange.parsed, exchange.filled, options.package_max_length,
        options.package_max_length + options.max_header_size, options.max_header_size, &stopped);
    exchange.parsed = stopped;
    switch (event) {
      case detail::MessageParser::Event::need_more:
        if (parser.in_head() && exchange.filled - message_start > options.max_header_size) {
          reject(exchange, 431);
          return;
        }
        break;
      case detail::MessageParser::Event::head_complete: {
        head_end = exchange.parsed;
        if (head_end - parser.head_start > options.max_header_size) {
          reject(exchange, 431);
          return;
        }
        int status = 0;
        if (!head_is_acceptable(exchange, head_end, &status)) {
          reject(exchange, status);
          return;
        }
        parser.body_scan_from = static_cast<uint32_t>(head_end);
        parser.resume();
        parse_again = true;
        break;
      }
      case detail::MessageParser::Event::message_complete: {
        int status = message_end_status(exchange);
        if (status != 0) {
          reject(exchange, status);
          return;
        }
        message_start = exchange.parsed;
        answer(exchange);
        if (exchange.close_after) {
          if (exchange.flush()) close_if_client_done(exchange);
          return;
        }
        parser.resume();
        head_deadline_set = false;  // the next pipelined request's head has its own
        break;
      }
      case detail::MessageParser::Event::error:
        reject(exchange, parser.error_status());
        return;
    }
  }
}

void ServerCore::close_idle_connections() {
  stopping = true;
  // Each idle connection's coroutine is woken from its read (it then ends the connection,
  // see serve()); cancel() does not wait, so the list cannot change under the loop.
  for (detail::Exchange* exchange = exchanges; exchange != nullptr; exchange = exchange->next) {
    if (exchange->idle) coring::cancel(exchange->coroutine);
  }
}

// ---- Server ------------------------------------------------------------------------------------

Server::Server(std::string host, uint16_t port, ServerOptions options)
    : core_(std::make_shared<ServerCore>(std::move(host), port, std::move(options))) {}

Server::Server(int listening_fd, ServerOptions options)
    : core_(std::make_shared<ServerCore>(listening_fd, std::move(options))) {}

Server::~Server() = default;

void Server::handle(std::string_view path_prefix, Handler handler) {
  if (core_->started) {
    // Handlers may be running: the route table they were found in must not move.
    coring::detail::log_format(LogLevel::error,
                               "http::Server::handle(%.*s) after start(): routes are fixed once "
                               "the server starts; ignored",
                               static_cast<int>(path_prefix.size()), path_prefix.data());
    return;
  }
  std::string prefix(path_prefix);
  if (prefix.empty()) prefix = "/";
  for (ServerCore::Route& route : core_->routes) {
    if (route.prefix == prefix) {
      route.handler = std::move(handler);
      return;
    }
  }
  core_->routes.push_back({std::move(prefix), std::move(handler)});
}

void Server::serve_directory(std::string_view path_prefix, std::string directory) {
  std::string prefix(path_prefix);
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  handle(prefix, detail::directory_handler(prefix, std::move(directory)));
}

bool Server::start() {
  std::shared_ptr<ServerCore> core = core_;
  // Started before (running, or ended): the TCP server says why it refuses (EBUSY,
  // ECANCELED); nothing running may be touched.
  if (core->started) return core->tcp.start();
  core->started = true;
  std::stable_sort(core->routes.begin(), core->routes.end(),
                   [](const ServerCore::Route& a, const ServerCore::Route& b) {
                     return a.prefix.size() > b.prefix.size();
                   });
  core->server_line = core->options.server_name.empty()
                          ? std::string()
                          : "Server: " + core->options.server_name + "\r\n";
  // Connection coroutines keep the core alive through the handler (a connection may outlive
  // this object); the handler is dropped when start() returns, which breaks the cycle.
  core->tcp.handle([core](Connection& connection) { core->serve(connection); });
  core->tcp.on_stop([raw = core.get()] { raw->close_idle_connections(); });
  coring::detail::set_counts_requests(core->tcp, false);
  struct DropHandler {  // also when start() is unwound
    coring::Server& tcp;
    ~DropHandler() { tcp.handle(nullptr); }
  } drop{core->tcp};
  return core->tcp.start();
}

void Server::shutdown() {
  core_->tcp.shutdown();
}

uint16_t Server::port() const {
  return core_->tcp.port();
}

ServerStats Server::stats() const {
  ServerStats stats;
  static_cast<coring::ServerStats&>(stats) = core_->tcp.stats();
  stats.requests = core_->requests;
  stats.rejected = core_->rejected;
  return stats;
}

std::error_code Server::error() const noexcept {
  return core_->tcp.error();
}

std::string_view Server::error_message() const noexcept {
  return core_->tcp.error_message();
}

}  // namespace coring::http

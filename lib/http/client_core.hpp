// The state behind a coring::http::Client (see coring/http_client.hpp), shared by the files that
// make it up. Private to the library.
//
// client.cpp: configuration, the request head, and a call from start to end: the binding to one
//   coroutine, the deadline, redirects, retries on a reused connection the server closed, and
//   connecting.
// client_exchange.cpp: one response read from the connection: the input buffer, llhttp (the
//   server's adapter, in response mode), the checks of the head, where the body goes (stored,
//   handed to on_body, dropped) and how (decoded or not), and whether the connection may be
//   reused afterwards.
// fetch.cpp: the one-call functions and the idle clients they keep per container.
//
// The input buffer holds the response head at its front from the head's end to the next request
// (header() and headers() are views into it, kept as offsets so the buffer may grow); body bytes
// are handed out as they are parsed and their room reused; trailer fields, if any, are kept just
// after the head.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "coring/http_client.hpp"
#include "coring/socket.hpp"
#include "http/content_decoder.hpp"
#include "http/message_parser.hpp"
#include "http/url.hpp"

namespace coring::http::detail {

// Where the body of the response being read goes.
enum class BodyMode : uint8_t { store, stream, discard };

// What a request sends after its head: text, or length bytes of an open file.
struct RequestBody {
  std::string_view text;
  int file_fd = -1;
  uint64_t file_size = 0;
  int file_error = 0;  // the file could not be used: the request fails with -4 and this errno
  const char* file_error_text = nullptr;

  bool from_file() const noexcept { return file_fd >= 0; }
  bool empty() const noexcept { return !from_file() && text.empty(); }
  uint64_t size() const noexcept { return from_file() ? file_size : text.size(); }
};

// One request of a call: the first, or one a redirect asked for.
struct Hop {
  std::string_view method;
  std::string_view host;
  uint16_t port = 0;
  std::string_view target;
  RequestBody body;
  bool https = false;      // over TLS
  bool elsewhere = false;  // not the client's own scheme, host and port: credentials stay home
};

struct ClientCore {
  ClientCore(std::string host, uint16_t port, ClientOptions options);

  static ClientCore& of(Client& client) noexcept { return *client.core_; }

  // ---- configuration (client.cpp)
  std::string host;  // without brackets
  uint16_t port = 0;
  ClientOptions options;
  std::string host_line;          // "Host: host[:port]\r\n", unless set_headers() has one
  std::string user_headers;       // set_headers(), rendered: "Name: value\r\n"...
  std::string elsewhere_headers;  // the same without Host, Authorization, Cookie...
  bool headers_invalid = false;
  bool user_host = false;
  bool user_agent = false;
  bool user_accept_encoding = false;
  bool user_connection = false;
  bool user_asks_close = false;  // the user's Connection header says close
  bool idempotency_key = false;

  // ---- the connection
  Socket socket{-1, Socket::Type::tcp};  // no descriptor until connect() makes one
  bool connected = false;
  std::string connected_host;
  uint16_t connected_port = 0;
  bool connected_https = false;
  bool reusable = false;  // its last response was read whole and allows another request

  // ---- the call in progress
  long owner_cid = 0;  // the coroutine inside a call, 0 between calls
  int64_t deadline_ns = 0;
  std::string output;  // the request head (and a small body): one send

  // ---- the response (client_exchange.cpp)
  MessageParser parser{HTTP_RESPONSE};
  std::vector<char> input;
  size_t parsed = 0;
  size_t filled = 0;
  size_t head_end = 0;
  bool head_request = false;
  bool interim = false;   // the head being read is a 1xx's
  int interim_count = 0;  // 1xx responses before this request's answer
  static constexpr int kMaxInterimResponses = 5;
  BodyMode body_mode = BodyMode::store;
  bool decoding = false;
  ContentDecoder decoder;
  std::string body;
  int body_error = 0;  // why the body sink stopped the parse
  const char* body_error_text = nullptr;
  std::exception_ptr callback_exception;  // thrown by on_body: rethrown once llhttp returned
  // A redirect perform() follows, decided from the head (decide_redirect): its body is dropped.
  bool following = false;
  Destination redirect;  // where it goes
  // Go's maxBodySlurpSize: what a followed redirect's body may hold to be read for the
  // connection's sake; a longer one is not waited for (redirect_body_left), the connection closes.
  static constexpr uint64_t kRedirectBodyRead = 2 * 1024;
  uint64_t redirect_body_read = 0;
  bool redirect_body_left = false;
  mutable std::vector<Header> header_views;
  mutable bool header_views_ready = false;

  // ---- results
  int status = 0;
  int error = 0;
  std::string error_text;  // empty: the errno's text
  ClientStats stats;

  // client.cpp
  void set_host_line();  // from host, port and options.https
  void set_headers(std::vector<std::pair<std::string, std::string>> headers);
  void check_binding() const;  // BindError / logic_error for a call that may not start now
  bool perform(std::string_view method, std::string_view path, RequestBody body);
  bool exchange(const Hop& hop, bool may_follow);
  bool decide_redirect(const Hop& hop, bool may_follow);
  bool connect(const Hop& hop);
  bool start_tls(const Hop& hop);
  // Whether the connection is to hop's scheme, host and port.
  bool connected_to(const Hop& hop) const noexcept {
    return connected && connected_port == hop.port && connected_https == hop.https &&
           connected_host == hop.host;
  }
  int send_request(const Hop& hop, const char** why);
  bool replayable(const Hop& hop) const noexcept;
  bool peer_still_there() noexcept;
  void close_connection() noexcept;
  // Records a failure (status code, errno, text) and closes the connection; returns false.
  bool fail(int code, int error_number, std::string_view text = {});

  // client_exchange.cpp
  void begin_response() noexcept;
  bool read_response(const Hop& hop, bool may_follow, bool* received_any);
  bool make_room();
  bool accept_head(const Hop& hop, bool may_follow);
  bool complete_response();
  bool leave_redirect_body();
  void drop_interim_response() noexcept;
  static bool take_body(void* context, const char* data, size_t size);
  static bool deliver(void* context, const char* data, size_t size);
  std::optional<std::string_view> find(size_t from, size_t to,
                                       std::string_view name) const noexcept;
  std::optional<std::string_view> header(std::string_view name) const noexcept {
    return find(0, parser.head_header_count, name);
  }
};

// The response a one-call request returns, moved out of client after its request (ok: whether
// it succeeded); on failure also records the error for last_error().
ClientResponse take_response(Client& client, bool ok);

Duration remaining(int64_t deadline_ns) noexcept;

}  // namespace coring::http::detail

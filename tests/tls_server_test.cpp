// TLS above the socket: coring's TCP server and HTTP server serving TLS (ServerOptions::tls)
// against coring's own clients over real loopback connections: raw TLS sockets, http::Client
// with https, ClientPool, and http::get("https://..."). Covers: the handler of a TLS server
// reading and writing plaintext; a plaintext client at a TLS port (closed, NOTICE, the server
// goes on); a handshake that never comes (tls_handshake_timeout) and shutdown during one;
// keep-alive with one handshake and a resumed session on a new connection; the client's idle
// check through OpenSSL (a close_notify replaces the connection before a POST; a kept one is
// reused); pipelining; chunked responses and requests; 100-continue; 10 MiB bodies both ways;
// static files and file ranges sent with sendfile over TLS (small ones in their head's write),
// uploads from a file; header_timeout after the handshake; graceful shutdown; a TLS client at a
// plaintext port; verification failures (unknown CA, expired, another name, the system store)
// as status -5 with OpenSSL's reason; ClientPool over https; http::get with a context of the
// test CA (idle connections kept per context), and with the default context (SSL_CERT_FILE, in a
// child) reusing idle connections, http and https keyed apart; redirects between http and https;
// WorkerPool with the context made before the fork (a session resumes with either worker).
//
// The certificates come from tests/tls_util.hpp (made at test time). Assertions inside
// coroutines use CHECK only; every wait the test expects to end has a finite timeout.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <coring/http_client.hpp>
#include <coring/http_client_pool.hpp>
#include <coring/http_server.hpp>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"
#include "tls_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers
namespace http = coring::http;

namespace {

constexpr size_t kBig = 10 * 1024 * 1024;
// Bulk transfers get longer than kLong: the sanitizer build is slow.
constexpr auto kBulk = 60s;

http::ServerOptions tls_http_options(const std::string& cert = test_pki().server) {
  http::ServerOptions options;
  options.tls = tls_server_context(cert);
  return options;
}

http::ClientOptions https_options() {
  http::ClientOptions options;
  options.https = true;
  options.tls = tls_client_context();
  options.connect_timeout = kLong;
  options.timeout = kBulk;
  return options;
}

// https_options() with a context that verifies nothing (a test's: see http_client.hpp).
http::ClientOptions insecure_https_options() {
  http::ClientOptions options = https_options();
  Co::TlsOptions off;
  off.verify_peer = false;
  options.tls = tls_client_context(off);
  return options;
}

// A GET that fails in the handshake: status -5, EPROTO, and OpenSSL's reason in the message.
void check_handshake_fails(http::Client& client, std::string_view reason) {
  CHECK_FALSE(client.get("/"));
  CHECK(client.status_code() == -5);
  CHECK(client.error().value() == EPROTO);
  CHECK_MESSAGE(contains(client.error_message(), reason), client.error_message());
}

// A connected, verified TLS socket to 127.0.0.1:port (as "localhost"); closed on failure.
Co::Socket tls_connect(uint16_t port) {
  static const Co::TlsContext context = tls_client_context();
  Co::Socket socket;
  if (!socket.connect("127.0.0.1", port, kLong)) {
    FAIL_CHECK("connect: " << socket.error_message());
    return socket;
  }
  if (!socket.start_tls(context, "localhost", kLong)) {
    FAIL_CHECK("start_tls: " << socket.error_message());
    socket.close();
  }
  return socket;
}

bool send_text(Co::Socket& socket, std::string_view data) {
  return socket.send_all(data.data(), data.size(), kBulk) == static_cast<ssize_t>(data.size());
}

// One response read from a socket by hand (pipelining, interim responses, chunked framing);
// buffer keeps what follows it.
struct RawResponse {
  int status = 0;  // 0: none arrived whole
  std::string head;
  std::string body;
  bool chunked = false;
};

// Reads more into buffer; false at the end of the stream, on an error or after kBulk.
bool fill(Co::Socket& socket, std::string& buffer) {
  char chunk[64 * 1024];
  ssize_t n = socket.recv(chunk, sizeof chunk, kBulk);
  if (n <= 0) return false;
  buffer.append(chunk, static_cast<size_t>(n));
  return true;
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// head_request: the response to a HEAD, whose head describes a body that does not come.
RawResponse read_response(Co::Socket& socket, std::string& buffer, bool head_request = false) {
  RawResponse response;
  size_t head_end;
  while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
    if (!fill(socket, buffer)) return response;
  }
  response.head = buffer.substr(0, head_end + 4);
  buffer.erase(0, head_end + 4);
  const std::string head = lower(response.head);
  const int status = std::atoi(response.head.c_str() + 9);
  if (status < 200 || head_request) {  // an interim response, or HEAD's: no body
    response.status = status;
    return response;
  }
  size_t length_at = head.find("\r\ncontent-length:");
  if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
    response.chunked = true;
    for (;;) {
      size_t line_end;
      while ((line_end = buffer.find("\r\n")) == std::string::npos) {
        if (!fill(socket, buffer)) return response;
      }
      size_t size = std::stoul(buffer.substr(0, line_end), nullptr, 16);
      while (buffer.size() < line_end + 2 + size + 2) {
        if (!fill(socket, buffer)) return response;
      }
      response.body.append(buffer, line_end + 2, size);
      buffer.erase(0, line_end + 2 + size + 2);
      if (size == 0) break;  // (no trailers here)
    }
  } else if (length_at != std::string::npos) {
    size_t length = std::stoul(head.substr(length_at + 17));
    while (buffer.size() < length) {
      if (!fill(socket, buffer)) return response;
    }
    response.body = buffer.substr(0, length);
    buffer.erase(0, length);
  }
  response.status = status;
  return response;
}

// Reads until the peer ends the stream; its result: 0 for a clean end (a TLS close_notify),
// else the error.
int read_to_end(Co::Socket& socket) {
  char sink[16 * 1024];
  for (;;) {
    ssize_t n = socket.recv(sink, sizeof sink, kLong);
    if (n == 0) return 0;
    if (n < 0) return socket.error().value();
  }
}

std::string file_of(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
  return path;
}

}  // namespace

// ---- the TCP server ----------------------------------------------------------------------------

TEST_CASE("TCP server over TLS: the handler reads and writes plaintext; both ends close_notify") {
  Co::ServerOptions options;
  options.tls = tls_server_context();
  in_container([&] {
    Co::Server server("127.0.0.1", 0, options);
    bool handler_saw_tls = false;
    std::string server_name;
    size_t echoed = 0;
    server.handle([&](Co::Connection& connection) {
      handler_saw_tls = connection.is_tls();
      server_name = connection.tls_server_name();
      char buffer[16 * 1024];
      for (;;) {
        ssize_t n = connection.recv(buffer, sizeof buffer, kBulk);
        if (n <= 0) break;
        if (connection.send_all(buffer, static_cast<size_t>(n), kBulk) != n) break;
        echoed += static_cast<size_t>(n);
      }
    });
    Running running(server);
    CO_REQUIRE(running.port() != 0);
    Co::Socket client = tls_connect(running.port());
    CO_REQUIRE(client.is_tls());
    // 1 MiB each way at once: a writer coroutine, and the reader here.
    const std::string data = pattern(1 << 20, 7);
    Co::WaitGroup wg;
    spawn(wg, [&] {
      CHECK(send_text(client, data));
      CHECK(client.shutdown(SHUT_WR));  // close_notify: the handler reads its end
    });
    std::string back;
    while (back.size() < data.size() && fill(client, back)) {
    }
    CHECK(back == data);
    CHECK(settle(wg));
    CHECK(read_to_end(client) == 0);  // the server's close_notify, not a cut
    CHECK(handler_saw_tls);
    CHECK(server_name == "localhost");
    CHECK(echoed == data.size());
    CHECK(server.stats().tls_failed == 0);
    CHECK(running.stop());
  });
}

TEST_CASE("TCP server over TLS: a plaintext client is closed with a NOTICE; the server goes on") {
  Co::ServerOptions options;
  options.tls = tls_server_context();
  LogCapture log;
  in_container([&] {
    Co::Server server("127.0.0.1", 0, options);
    int handled = 0;
    server.handle([&](Co::Connection& connection) {
      ++handled;
      char buffer[256];
      ssize_t n = connection.recv(buffer, sizeof buffer, kLong);
      if (n > 0) connection.send_all(buffer, static_cast<size_t>(n), kLong);
    });
    Running running(server);
    CO_REQUIRE(running.port() != 0);

    Co::Socket plain;
    CO_REQUIRE(plain.connect("127.0.0.1", running.port(), kLong));
    CHECK(send_text(plain, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    char byte;
    ssize_t n = plain.recv(&byte, 1, kLong);
    CHECK(n <= 0);  // closed, without an answer
    if (n < 0) CHECK(plain.error().value() == ECONNRESET);
    CHECK(eventually([&] { return server.stats().tls_failed == 1; }));

    // The server goes on: a TLS client is served.
    Co::Socket client = tls_connect(running.port());
    CO_REQUIRE(client.is_tls());
    CHECK(send_text(client, "after"));
    std::string back;
    while (back.size() < 5 && fill(client, back)) {
    }
    CHECK(back == "after");
    client.close();
    CHECK(running.stop());
    CHECK(handled == 1);
    CHECK(server.stats().tls_failed == 1);
    CHECK(server.stats().accepted == 2);
  });
  CHECK(log.count(Co::LogLevel::notice,
                  "TLS handshake failed: http request (plaintext HTTP sent to a TLS port); "
                  "closed") == 1);
  CHECK(log.count(Co::LogLevel::notice, "connection#1 (127.0.0.1:") == 1);
}

TEST_CASE("TCP server over TLS: a handshake that never comes ends after tls_handshake_timeout") {
  LogCapture log;
  in_container([&] {
    {
      Co::ServerOptions options;
      options.tls = tls_server_context();
      options.tls_handshake_timeout = 100ms;
      Co::Server server("127.0.0.1", 0, options);
      int handled = 0;
      server.handle([&](Co::Connection&) { ++handled; });
      Running running(server);
      CO_REQUIRE(running.port() != 0);
      Co::Socket silent;
      CO_REQUIRE(silent.connect("127.0.0.1", running.port(), kLong));
      char byte;
      CHECK(silent.recv(&byte, 1, kLong) == 0);  // the server gave up and closed
      CHECK(eventually([&] { return server.stats().tls_failed == 1; }));
      CHECK(running.stop());
      CHECK(handled == 0);
    }
  });
  CHECK(log.count(Co::LogLevel::notice, "TLS handshake failed: Connection timed out; closed") == 1);
}

TEST_CASE("TCP server over TLS: shutdown() cancels the handshakes in progress, without a NOTICE") {
  LogCapture log;
  in_container([&] {
    {
      Co::ServerOptions options;
      options.tls = tls_server_context();
      options.tls_handshake_timeout = 600s;  // only the shutdown can end it in time
      Co::Server server("127.0.0.1", 0, options);
      int handled = 0;
      server.handle([&](Co::Connection&) { ++handled; });
      Running running(server);
      CO_REQUIRE(running.port() != 0);
      Co::Socket silent;
      CO_REQUIRE(silent.connect("127.0.0.1", running.port(), kLong));
      CHECK(eventually([&] { return server.stats().connections == 1; }));
      server.shutdown();
      CHECK(running.returned(kLong));
      CHECK(running.result());
      char byte;
      CHECK(silent.recv(&byte, 1, kLong) == 0);
      CHECK(handled == 0);
      CHECK(server.stats().tls_failed == 1);
    }
  });
  CHECK(log.count(Co::LogLevel::notice, "TLS handshake") == 0);
}

TEST_CASE("TCP server: a client context as ServerOptions::tls fails start() with EINVAL") {
  Co::ServerOptions options;
  options.tls = tls_client_context();
  in_container([&] {
    Co::Server server("127.0.0.1", 0, options);
    server.handle([](Co::Connection&) {});
    CHECK_FALSE(server.start());
    CHECK(server.error().value() == EINVAL);
    CHECK(contains(server.error_message(), "server context"));
  });
}

// ---- the HTTP server and client ----------------------------------------------------------------

TEST_CASE("HTTPS: keep-alive over one handshake; a new connection resumes the session") {
  in_container([] {
    with_http_server(
        tls_http_options(),
        [](http::Server& server) {
          server.handle("/", [](http::Request& request, http::Response& response) {
            response.end(std::string(request.connection().is_tls() ? "tls " : "plain ") +
                         std::string(request.target()));
          });
        },
        [](http::Server& server, uint16_t port) {
          http::Client client("localhost", port, https_options());
          for (int i = 0; i < 20; ++i) {
            std::string path = "/k?i=" + std::to_string(i);
            CHECK(client.get(path));
            CHECK(client.status_code() == 200);
            CHECK(client.body() == "tls " + path);
          }
          CHECK(client.stats().connections == 1);
          CHECK(server.stats().accepted == 1);
          // The session ticket came with the first response: a new connection resumes it.
          CHECK(client.close());
          CHECK(client.get("/again"));
          CHECK(client.body() == "tls /again");
          CHECK(client.stats().connections == 2);
          CHECK(client.stats().tls_resumed == 1);
          // POST with a body, and HEAD.
          CHECK(client.post("/p", "payload"));
          CHECK(client.body() == "tls /p");
          CHECK(client.execute("HEAD", "/h"));
          CHECK(client.status_code() == 200);
          CHECK(client.body().empty());
          CHECK(client.stats().connections == 2);
        });
  });
}

TEST_CASE("HTTPS: a client that asked to close is not lingered for; the end is a close_notify") {
  in_container([] {
    with_http_server(
        tls_http_options(),
        [](http::Server& server) {
          server.handle("/", [](http::Request&, http::Response& response) { response.end("ten"); });
        },
        [](http::Server& server, uint16_t port) {
          for (std::string_view extra : {"", "more"}) {
            CAPTURE(extra);
            const uint64_t closed = server.stats().closed;
            Co::Socket client = tls_connect(port);
            CO_REQUIRE(client.is_open());
            CO_REQUIRE(
                send_text(client, std::string("GET / HTTP/1.0\r\n\r\n") + std::string(extra)));
            std::string got;
            char buffer[4096];
            ssize_t n;
            while ((n = client.recv(buffer, sizeof buffer, kLong)) > 0) {
              got.append(buffer, static_cast<size_t>(n));
            }
            CHECK(n == 0);  // the server's close_notify: a clean end
            CHECK(client.error().value() == 0);
            CHECK(got.find("\r\n\r\nten") != std::string::npos);
            if (extra.empty()) {
              // Closed at once, while this client still holds its end open.
              CHECK(eventually([&] { return server.stats().closed == closed + 1; }));
            } else {
              // Bytes after the request: the graceful close waits for this client's end.
              CHECK(server.stats().connections == 1);
              CHECK(client.close());
              CHECK(eventually([&] { return server.stats().closed == closed + 1; }));
            }
          }
        });
  });
}

TEST_CASE(
    "HTTPS: an idle connection the server closed is replaced before a POST; a kept one reused") {
  in_container([] {
    http::ServerOptions closing_options = tls_http_options();
    closing_options.keepalive_timeout = 100ms;
    http::Server closing("127.0.0.1", 0, closing_options);
    http::Server keeping("127.0.0.1", 0, tls_http_options());
    for (http::Server* server : {&closing, &keeping}) {
      server->handle("/", [](http::Request& request, http::Response& response) {
        response.end(request.body());
      });
    }
    Running closing_running(closing);
    Running keeping_running(keeping);
    CO_REQUIRE((closing_running.port() != 0 && keeping_running.port() != 0));
    http::Client closed_client("localhost", closing_running.port(), https_options());
    http::Client kept_client("localhost", keeping_running.port(), https_options());
    CHECK(closed_client.post("/", "one"));
    CHECK(kept_client.post("/", "one"));
    CHECK(eventually([&] { return closing.stats().closed == 1; }));
    // Idle for more than a second: each client looks before it sends (not a synchronisation:
    // the close has happened; this passes the client's idle threshold). The look goes through
    // OpenSSL: the server's close_notify reads as the close, and a connection the server kept
    // (whose session tickets were read with the first response) as usable.
    Co::this_coroutine::sleep(1100ms);
    CHECK(closed_client.post("/", "100 EUR"));
    CHECK(closed_client.body() == "100 EUR");
    CHECK(closed_client.stats().retries == 0);
    CHECK(closed_client.stats().connections == 2);
    CHECK(kept_client.post("/", "200 EUR"));
    CHECK(kept_client.body() == "200 EUR");
    CHECK(kept_client.stats().connections == 1);
    CHECK(closing_running.stop());
    CHECK(keeping_running.stop());
  });
}

TEST_CASE("HTTPS: pipelined requests are answered in order; chunked both ways; 100-continue") {
  in_container([] {
    with_http_server(
        tls_http_options(),
        [](http::Server& server) {
          server.handle("/", [](http::Request& request, http::Response& response) {
            response.end(std::string(request.target()));
          });
          server.handle("/echo", [](http::Request& request, http::Response& response) {
            response.end(request.body());
          });
          server.handle("/chunks", [](http::Request&, http::Response& response) {
            response.write("a");
            response.write("bb");
            response.end("ccc");
          });
        },
        [](http::Server&, uint16_t port) {
          Co::Socket socket = tls_connect(port);
          CO_REQUIRE(socket.is_tls());
          std::string batch;
          for (int i = 0; i < 16; ++i) {
            batch += "GET /p" + std::to_string(i) + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
          }
          CHECK(send_text(socket, batch));
          std::string buffer;
          for (int i = 0; i < 16; ++i) {
            RawResponse response = read_response(socket, buffer);
            CHECK(response.status == 200);
            CHECK(response.body == "/p" + std::to_string(i));
          }

          // A chunked request body, and a chunked response.
          CHECK(send_text(socket,
                          "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: "
                          "chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
          RawResponse echo = read_response(socket, buffer);
          CHECK(echo.status == 200);
          CHECK(echo.body == "hello world");
          CHECK(send_text(socket, "GET /chunks HTTP/1.1\r\nHost: localhost\r\n\r\n"));
          RawResponse chunks = read_response(socket, buffer);
          CHECK(chunks.status == 200);
          CHECK(chunks.chunked);
          CHECK(chunks.body == "abbccc");

          // Expect: 100-continue: the go-ahead comes before the body is sent.
          const std::string body(100 * 1024, 'e');
          CHECK(send_text(socket, "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                                      std::to_string(body.size()) +
                                      "\r\nExpect: 100-continue\r\n\r\n"));
          RawResponse go_ahead = read_response(socket, buffer);
          CHECK(go_ahead.status == 100);
          CHECK(send_text(socket, body));
          RawResponse answer = read_response(socket, buffer);
          CHECK(answer.status == 200);
          CHECK(answer.body == body);
          CHECK(buffer.empty());

          // http::Client reads the chunked response too.
          http::Client client("127.0.0.1", port, https_options());
          CHECK(client.get("/chunks"));
          CHECK(client.body() == "abbccc");
          CHECK(client.header("transfer-encoding") == "chunked");
        });
  });
}

TEST_CASE("HTTPS: 10 MiB both ways; static files and file ranges by sendfile arrive intact") {
  TempDir dir;
  const std::string big = pattern(kBig, 11);
  const std::string big_file = file_of(dir.file("big.bin"), big);
  const std::string upload = pattern(3 * 1024 * 1024 + 17, 12);
  const std::string upload_file = file_of(dir.file("upload.bin"), upload);
  // Small files go out in the same TLS write as their head (see response.cpp): up to 64 KiB.
  const std::string small = pattern(1000, 13);
  file_of(dir.file("small.txt"), small);
  const std::string limit = pattern(64 * 1024, 14);
  file_of(dir.file("limit.bin"), limit);
  http::ServerOptions options = tls_http_options();
  options.package_max_length = 16 * 1024 * 1024;
  in_container([&] {
    with_http_server(
        options,
        [&](http::Server& server) {
          server.handle("/echo", [](http::Request& request, http::Response& response) {
            response.end(request.body());
          });
          server.handle("/range", [&](http::Request&, http::Response& response) {
            int fd = ::open(big_file.c_str(), O_RDONLY | O_CLOEXEC);
            CHECK(response.sendfile(fd, 1000, 3 * 1024 * 1024));
            ::close(fd);
          });
          server.serve_directory("/static", dir.path());
        },
        [&](http::Server&, uint16_t port) {
          http::Client client("localhost", port, https_options());
          CHECK(client.post("/echo", big));
          CHECK(client.status_code() == 200);
          CHECK(client.body().size() == big.size());
          CHECK(client.body() == big);

          CHECK(client.get("/static/big.bin"));
          CHECK(client.status_code() == 200);
          CHECK(client.header("content-length") == std::to_string(kBig));
          CHECK(client.body() == big);

          CHECK(client.get("/range"));
          CHECK(client.body() == std::string_view(big).substr(1000, 3 * 1024 * 1024));

          // An upload from a file (the client's sendfile over TLS).
          CHECK(client.post_file("/echo", upload_file));
          CHECK(client.body() == upload);
          CHECK(client.stats().connections == 1);  // all on one connection

          // Small files, pipelined: each in its head's write, all gathered in order; HEAD.
          Co::Socket socket = tls_connect(port);
          CO_REQUIRE(socket.is_tls());
          std::string batch;
          for (const char* path : {"/static/small.txt", "/static/limit.bin", "/static/small.txt"}) {
            batch += std::string("GET ") + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
          }
          batch += "HEAD /static/limit.bin HTTP/1.1\r\nHost: localhost\r\n\r\n";
          CHECK(send_text(socket, batch));
          std::string buffer;
          CHECK(read_response(socket, buffer).body == small);
          RawResponse at_limit = read_response(socket, buffer);
          CHECK(at_limit.status == 200);
          CHECK(at_limit.body == limit);
          CHECK(contains(lower(at_limit.head), "content-type: application/octet-stream"));
          CHECK(read_response(socket, buffer).body == small);
          CHECK(send_text(socket, "GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"));
          RawResponse head = read_response(socket, buffer, true);
          CHECK(head.status == 200);
          CHECK(contains(lower(head.head), "content-length: 65536"));
          RawResponse after = read_response(socket, buffer);
          CHECK(after.status == 404);
          CHECK(buffer.empty());
        });
  });
}

TEST_CASE("HTTPS: header_timeout after the handshake (slowloris); graceful shutdown") {
  http::ServerOptions options = tls_http_options();
  options.header_timeout = 200ms;
  in_container([&] {
    http::Server server("127.0.0.1", 0, options);
    Co::Channel<int> release(1);
    bool slow_started = false;
    server.handle("/", [](http::Request&, http::Response& response) { response.end("fast"); });
    server.handle("/slow", [&](http::Request&, http::Response& response) {
      slow_started = true;
      CHECK(release.pop(kLong).has_value());
      response.end("slow");
    });
    Running running(server);
    CO_REQUIRE(running.port() != 0);

    // A head that never ends: the server closes (with its close_notify) after header_timeout.
    Co::Socket slow = tls_connect(running.port());
    CO_REQUIRE(slow.is_tls());
    CHECK(send_text(slow, "GET / HTTP/1.1\r\nHost: localhost\r\n"));
    CHECK(read_to_end(slow) == 0);

    // Shutdown: an idle keep-alive connection is closed; a request in progress finishes, its
    // response saying Connection: close.
    Co::Socket idle = tls_connect(running.port());
    Co::Socket busy = tls_connect(running.port());
    CO_REQUIRE((idle.is_tls() && busy.is_tls()));
    std::string idle_buffer, busy_buffer;
    CHECK(send_text(idle, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    CHECK(read_response(idle, idle_buffer).body == "fast");
    CHECK(send_text(busy, "GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    CHECK(eventually([&] { return slow_started; }));
    server.shutdown();
    CHECK(read_to_end(idle) == 0);
    CHECK(release.push(1, kLong));
    RawResponse last = read_response(busy, busy_buffer);
    CHECK(last.status == 200);
    CHECK(last.body == "slow");
    CHECK(contains(lower(last.head), "connection: close"));
    CHECK(read_to_end(busy) == 0);
    CHECK(running.returned(kLong));
    CHECK(running.result());
  });
}

TEST_CASE("HTTPS client failures: -5 with OpenSSL's reason; the server logs and goes on") {
  LogCapture log;
  in_container([&] {
    auto answer = [](http::Server& server) {
      server.handle("/", [](http::Request&, http::Response& response) { response.end("ok"); });
    };
    SUBCASE("a plaintext server") {
      with_http_server(http::ServerOptions{}, answer, [](http::Server& server, uint16_t port) {
        http::Client client("127.0.0.1", port, https_options());
        CHECK_FALSE(client.get("/"));
        CHECK(client.status_code() == -5);
        CHECK(client.error().value() == EPROTO);
        CHECK(client.error_message() ==
              "https://127.0.0.1:" + std::to_string(port) +
                  ": TLS handshake failed: wrong version number (the peer does not speak TLS)");
        CHECK(client.body().empty());
        CHECK(server.stats().requests == 0);  // nothing went out in clear
        CHECK(server.stats().rejected == 1);  // the ClientHello read as a request: 400
      });
    }
    SUBCASE("an expired certificate") {
      with_http_server(tls_http_options(test_pki().expired), answer,
                       [](http::Server& server, uint16_t port) {
                         http::Client client("localhost", port, https_options());
                         check_handshake_fails(client,
                                               "TLS handshake failed: certificate verify failed: "
                                               "certificate has expired");
                         CHECK(eventually([&] { return server.stats().tls_failed == 1; }));
                         // Verification off (a test's context): the same server answers.
                         http::Client lax("localhost", port, insecure_https_options());
                         CHECK(lax.get("/"));
                         CHECK(lax.body() == "ok");
                       });
    }
    SUBCASE("a certificate for another name") {
      with_http_server(
          tls_http_options(test_pki().other), answer, [](http::Server&, uint16_t port) {
            http::Client by_name("localhost", port, https_options());
            check_handshake_fails(by_name, "certificate verify failed: hostname mismatch");
            http::Client by_address("127.0.0.1", port, https_options());
            check_handshake_fails(by_address, "certificate verify failed: IP address mismatch");
          });
    }
    SUBCASE("a CA the client does not know; the system's store does not know ours either") {
      with_http_server(
          tls_http_options(test_pki().rogue), answer, [&](http::Server& server, uint16_t port) {
            http::Client client("localhost", port, https_options());
            check_handshake_fails(
                client, "certificate verify failed: unable to get local issuer certificate");
            http::ClientOptions system_store = https_options();
            system_store.tls.reset();  // the thread's default context
            http::Client system("localhost", port, system_store);
            check_handshake_fails(system, "certificate verify failed");
            // The server went on; what it logged names the client's alert (one a second).
            CHECK(eventually([&] { return server.stats().tls_failed == 2; }));
            CHECK(log.count(Co::LogLevel::notice,
                            "TLS handshake failed: tlsv1 alert unknown ca; closed") >= 1);
            http::Client accepting("localhost", port, insecure_https_options());
            CHECK(accepting.get("/"));
            CHECK(accepting.body() == "ok");
          });
    }
    SUBCASE("a server context as ClientOptions::tls") {
      with_http_server(tls_http_options(), answer, [](http::Server&, uint16_t port) {
        http::ClientOptions wrong = https_options();
        wrong.tls = tls_server_context();
        http::Client client("localhost", port, wrong);
        CHECK_FALSE(client.get("/"));
        CHECK(client.status_code() == -5);
        CHECK(client.error().value() == EINVAL);
      });
    }
  });
  CHECK(log.count(Co::LogLevel::error, "") == 0);
}

TEST_CASE("HTTPS: a ClientPool of 4 connections serves 40 coroutines") {
  in_container([] {
    with_http_server(
        tls_http_options(),
        [](http::Server& server) {
          server.handle("/", [](http::Request& request, http::Response& response) {
            response.end(std::string(request.target()));
          });
        },
        [](http::Server& server, uint16_t port) {
          http::ClientPoolOptions options;
          options.size = 4;
          options.client = https_options();
          http::ClientPool pool("localhost", port, options);
          Co::WaitGroup wg;
          int answered = 0;
          for (int c = 0; c < 40; ++c) {
            spawn(wg, [&, c] {
              for (int i = 0; i < 5; ++i) {
                std::string path = "/c" + std::to_string(c) + "/" + std::to_string(i);
                http::ClientResponse response = pool.get(path);
                CHECK(response.status == 200);
                CHECK(response.body == path);
                answered += response.status == 200 && response.body == path;
              }
            });
          }
          CHECK(settle(wg));
          CHECK(answered == 200);
          CHECK(pool.connections() <= 4);
          CHECK(server.stats().accepted <= 4);
          CHECK(server.stats().tls_failed == 0);
          pool.close();
        });
  });
}

TEST_CASE("http::get(https://...) with a context of the test CA; http and https keyed apart") {
  LogCapture log;
  in_container([] {
    with_http_server(
        tls_http_options(),
        [](http::Server& server) {
          server.handle("/", [](http::Request& request, http::Response& response) {
            response.end(std::string(request.header("host").value_or("?")));
          });
        },
        [](http::Server& server, uint16_t port) {
          http::ClientOptions options;
          options.tls = tls_client_context();
          const std::string origin = "127.0.0.1:" + std::to_string(port);
          http::ClientResponse r = http::get("https://" + origin + "/a", options);
          CHECK(r.status == 200);
          CHECK(r.body == origin);  // Host: with the port, as it is not 443
          r = http::get("https://" + origin + "/b", options);
          CHECK(r.status == 200);
          // The same context (a copy of it): the idle connection it verified serves again.
          CHECK(server.stats().accepted == 1);
          // Another context, even one that trusts the same CA: a connection of its own.
          http::ClientOptions other;
          other.tls = tls_client_context();
          CHECK_FALSE(*other.tls == *options.tls);
          CHECK(*options.tls == Co::TlsContext(*options.tls));
          r = http::get("https://" + origin + "/b2", other);
          CHECK(r.status == 200);
          CHECK(server.stats().accepted == 2);
          r = http::get("https://" + origin + "/b3", options);
          CHECK(r.status == 200);
          CHECK(server.stats().accepted == 2);
          r = http::get("https://localhost:" + std::to_string(port) + "/c", options);
          CHECK(r.status == 200);
          CHECK(r.body == "localhost:" + std::to_string(port));
          CHECK(server.stats().accepted == 3);  // another host name: another connection
          // http:// to the same port: a plaintext connection, which the TLS server refuses.
          r = http::get("http://" + origin + "/d", options);
          CHECK(r.status == -3);
          CHECK(r.error.value() == ECONNRESET);
          CHECK(eventually([&] { return server.stats().tls_failed == 1; }));
          r = http::post("https://" + origin + "/e", "body", options);
          CHECK(r.status == 200);
          CHECK(server.stats().tls_failed == 1);
          // Without a context of the test CA: the system's store refuses the certificate (the
          // idle connections the test CA's context verified are not for this request).
          r = http::get("https://" + origin + "/f");
          CHECK(r.status == -5);
          CHECK(r.error.value() == EPROTO);
          CHECK(contains(r.error_message, "certificate verify failed"));
          CHECK(Co::last_error().value() == EPROTO);
        });
  });
  CHECK(log.count(Co::LogLevel::notice, "TLS handshake failed: http request") == 1);
}

TEST_CASE("redirects between http and https; credentials do not follow to another scheme") {
  in_container([] {
    http::Server tls_server("127.0.0.1", 0, tls_http_options());
    http::Server plain_server("127.0.0.1", 0, http::ServerOptions{});
    uint16_t plain_port = 0;
    uint16_t tls_port = 0;
    auto describe = [](http::Request& request) {
      return std::string(request.connection().is_tls() ? "tls " : "plain ") +
             std::string(request.target()) +
             " auth=" + std::string(request.header("authorization").value_or("-"));
    };
    tls_server.handle("/", [&](http::Request& request, http::Response& response) {
      if (request.path() == "/to-plain") {
        response.status(302);
        response.header("Location", "http://127.0.0.1:" + std::to_string(plain_port) + "/landed");
        response.end();
        return;
      }
      if (request.path() == "/relative") {
        response.status(301);
        response.header("Location", "/landed-relative");
        response.end();
        return;
      }
      response.end(describe(request));
    });
    plain_server.handle("/", [&](http::Request& request, http::Response& response) {
      if (request.path() == "/to-tls") {
        response.status(307);
        response.header("Location", "https://localhost:" + std::to_string(tls_port) + "/landed");
        response.end();
        return;
      }
      response.end(describe(request));
    });
    Running tls_running(tls_server);
    Running plain_running(plain_server);
    tls_port = tls_running.port();
    plain_port = plain_running.port();
    CO_REQUIRE((tls_port != 0 && plain_port != 0));

    http::ClientOptions options = https_options();
    options.https = false;
    options.max_redirects = 3;
    http::Client from_plain("127.0.0.1", plain_port, options);
    from_plain.set_headers({{"Authorization", "Bearer secret"}});
    CHECK(from_plain.post("/to-tls", "kept"));
    CHECK(from_plain.status_code() == 200);
    CHECK(from_plain.body() == "tls /landed auth=-");
    CHECK(from_plain.get("/home"));
    CHECK(from_plain.body() == "plain /home auth=Bearer secret");

    options.https = true;
    http::Client from_tls("localhost", tls_port, options);
    from_tls.set_headers({{"Authorization", "Bearer secret"}});
    CHECK(from_tls.get("/relative"));  // stays on https
    CHECK(from_tls.body() == "tls /landed-relative auth=Bearer secret");
    CHECK(from_tls.get("/to-plain"));
    CHECK(from_tls.body() == "plain /landed auth=-");  // never in clear
    CHECK(from_tls.get("/home"));
    CHECK(from_tls.body() == "tls /home auth=Bearer secret");

    CHECK(tls_running.stop());
    CHECK(plain_running.stop());
  });
}

TEST_CASE("http::get(https://...) with the default context: the system's store, idle reuse") {
  // The system's store is parsed once per process: a fresh process (this test run again) points
  // OpenSSL's default store at the test CA with SSL_CERT_FILE before anything parses it.
  if (std::getenv("CORING_FRESH_PROCESS") == nullptr) {
    ChildResult child =
        run_fresh("http::get(https://...) with the default context*", "CORING_FRESH_PROCESS");
    CHECK_MESSAGE(child.exited(), child.describe());
    CHECK_MESSAGE(child.exit_code() == 0, child.describe());
    return;
  }
  fresh_process_ran();
  const std::string ca_file = test_pki().ca_file;
  const Co::TlsContext server_context = tls_server_context();
  {
    ::setenv("SSL_CERT_FILE", ca_file.c_str(), 1);
    int failures = 0;
    std::thread thread([&] {
      int rc = Co::run([&] {
        http::ServerOptions options;
        options.tls = server_context;
        http::Server server("127.0.0.1", 0, options);
        server.handle("/", [](http::Request& request, http::Response& response) {
          response.end(std::string(request.target()));
        });
        Running running(server);
        const std::string base = "https://localhost:" + std::to_string(running.port());
        for (int i = 0; i < 5; ++i) {
          http::ClientResponse r = http::get(base + "/" + std::to_string(i));
          if (r.status != 200 || r.body != "/" + std::to_string(i)) {
            child_report("request " + std::to_string(i) + ": " + std::to_string(r.status) + " " +
                         r.error_message);
            ++failures;
          }
        }
        if (server.stats().accepted != 1) {
          child_report("connections: " + std::to_string(server.stats().accepted));
          ++failures;
        }
        if (!running.stop()) ++failures;
      });
      if (rc != 0) ++failures;
    });
    thread.join();
    CHECK(failures == 0);
  }
}

TEST_CASE("WorkerPool: a TLS context made before the fork serves every worker; sessions resume") {
  // The context is made here, before the master (a child of the test) forks its workers, as
  // an HTTPS server made in a WorkerPool's master does (see server.hpp).
  const Co::TlsContext context = tls_server_context();
  int port_pipe[2];
  REQUIRE(::pipe(port_pipe) == 0);
  std::fflush(nullptr);
  pid_t master = ::fork();
  REQUIRE(master >= 0);
  if (master == 0) {
    ::setpgid(0, 0);  // a group of its own: the test kills it and its workers at once
    ::alarm(60);
    ::close(port_pipe[0]);
    Co::WorkerOptions options;
    options.worker_num = 2;
    Co::WorkerPool pool(options);
    uint16_t port = pool.listen("127.0.0.1", 0) >= 0 ? pool.port() : 0;
    ssize_t written = ::write(port_pipe[1], &port, sizeof port);
    ::close(port_pipe[1]);
    if (port == 0 || written != sizeof port) ::_exit(1);
    int status = pool.start([&](int) {
      http::ServerOptions server_options;
      server_options.tls = context;
      http::Server server(pool.listener(), server_options);
      server.handle("/", [](http::Request&, http::Response& response) {
        response.end(std::to_string(::getpid()));
      });
      server.start();
    });
    ::_exit(status == 0 ? 0 : 1);
  }
  ::close(port_pipe[1]);
  uint16_t port = 0;
  CHECK(::read(port_pipe[0], &port, sizeof port) == sizeof port);
  ::close(port_pipe[0]);
  if (port != 0) {
    in_container([&] {
      http::Client client("localhost", port, https_options());
      std::set<std::string> workers;
      constexpr int kConnections = 24;
      for (int i = 0; i < kConnections; ++i) {
        client.close();  // a new connection (and handshake) each time
        CHECK(client.get("/"));
        CHECK(client.status_code() == 200);
        workers.insert(std::string(client.body()));
      }
      CHECK(client.stats().connections == kConnections);
      // Every handshake after the first resumed, whichever worker took it: the workers share
      // the context's ticket keys. (Both workers took some, almost always; the kernel decides.)
      CHECK(client.stats().tls_resumed == kConnections - 1);
      MESSAGE("workers that answered: " << workers.size());
    });
  }
  ::kill(master, SIGTERM);
  int status = 0;
  auto until = Clock::now() + 15s;
  while (::waitpid(master, &status, WNOHANG) == 0) {
    if (Clock::now() > until) {
      ::kill(-master, SIGKILL);
      ::waitpid(master, &status, 0);
      FAIL("the master did not exit after SIGTERM");
    }
    std::this_thread::sleep_for(10ms);
  }
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

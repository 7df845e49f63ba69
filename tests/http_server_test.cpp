// coring::http::Server over real loopback connections, with a small HTTP client written here
// (coring sockets in the test's own coroutine; the server runs in another coroutine of the same
// container). Covers: GET with Date and Server; keep-alive, HTTP/1.0, Connection: close;
// pipelining; request bodies (Content-Length, chunked), Expect: 100-continue, HEAD; routing by
// longest prefix; the Request accessors; Response::write (chunked), header() refusals;
// the limits (max_header_size, package_max_length) exactly at and one byte over; malformed and
// smuggling requests; header, body and keep-alive timeouts; handlers that throw or do not end;
// a client that goes away mid-response; graceful shutdown; stats; serve_directory (types,
// Last-Modified, 304, 404, path traversal, a 10 MiB file, index.html).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <coring/http_server.hpp>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "seccomp_util.hpp"
#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers
namespace http = coring::http;

namespace {

// ---------------------------------------------------------------------------------------------
// The server side.

// Runs a container with a server on 127.0.0.1 (a free port): setup(server) adds the routes,
// body(server, port) talks to it; then the server is shut down and must return.
template <class Setup, class Body>
void with_server(const http::ServerOptions& options, Setup&& setup, Body&& body) {
  in_container([&] { with_http_server(options, setup, body); });
}

// ---------------------------------------------------------------------------------------------
// The client side: raw bytes out, responses parsed here.

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

constexpr std::string_view kAbsent = "<absent>";

struct Reply {
  int status = 0;  // 0: no (complete, well-formed) head arrived
  std::string status_line;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;
  bool complete = false;            // the whole message arrived (chunked: the last chunk too)
  std::vector<size_t> chunk_sizes;  // chunked: the data chunks' sizes, in order

  // The first header of that name (without case), or "<absent>".
  std::string get(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (iequal(n, name)) return v;
    }
    return std::string(kAbsent);
  }
  bool has(std::string_view name) const { return get(name) != kAbsent; }
  size_t count(std::string_view name) const {
    size_t n = 0;
    for (const auto& header : headers) n += iequal(header.first, name);
    return n;
  }
};

class Client {
 public:
  // rcvbuf > 0: a small receive buffer, set before connecting.
  explicit Client(uint16_t port, int rcvbuf = 0) {
    if (rcvbuf > 0) set_int_option(socket_.fd(), SOL_SOCKET, SO_RCVBUF, rcvbuf);
    ok_ = socket_.connect("127.0.0.1", port, kLong);
    CHECK_MESSAGE(ok_, "connect: " << socket_.error_message());
  }
  bool ok() const { return ok_; }
  Co::Socket& socket() { return socket_; }
  std::string& buffer() { return buffer_; }
  bool at_eof() const { return eof_; }

  bool send(std::string_view data) {
    return socket_.send_all(data.data(), data.size(), kLong) == static_cast<ssize_t>(data.size());
  }

  // One read into the buffer; false at end of stream (or a reset), or when the deadline passes.
  bool fill(Clock::time_point deadline) {
    if (eof_) return false;
    auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return false;
    size_t old = buffer_.size();
    buffer_.resize(old + kRead);
    ssize_t n = socket_.recv(buffer_.data() + old, kRead, Co::Duration(left));
    buffer_.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n == 0 || (n < 0 && socket_.error().value() != ETIMEDOUT)) eof_ = true;
    return n > 0;
  }

  // Reads until text is in the buffer (nothing is consumed).
  bool wait_for(std::string_view text, Co::Duration timeout = kLong) {
    auto deadline = Clock::now() + timeout;
    while (buffer_.find(text) == std::string::npos) {
      if (!fill(deadline)) return false;
    }
    return true;
  }

  // True when the server closes the connection (end of stream or a reset) within timeout;
  // whatever arrives before stays in buffer().
  bool closed(Co::Duration timeout = kLong) {
    auto deadline = Clock::now() + timeout;
    while (!eof_) {
      if (!fill(deadline) && !eof_) return false;
    }
    return true;
  }

  // Reads one response. no_body: the answer to HEAD.
  Reply read(bool no_body = false, Co::Duration timeout = kLong) {
    Reply r;
    auto deadline = Clock::now() + timeout;
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill(deadline)) return r;
    }
    std::string head = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    std::vector<std::string> lines;
    for (size_t start = 0;;) {
      size_t eol = head.find("\r\n", start);
      lines.push_back(head.substr(start, eol == std::string::npos ? eol : eol - start));
      if (eol == std::string::npos) break;
      start = eol + 2;
    }
    r.status_line = lines[0];
    const std::string& s = r.status_line;
    if (s.size() < 12 || s.compare(0, 7, "HTTP/1.") != 0 || s[8] != ' ' ||
        (s.size() > 12 && s[12] != ' ')) {
      return r;
    }
    for (size_t i = 1; i < lines.size(); ++i) {
      size_t colon = lines[i].find(':');
      if (colon == std::string::npos || colon == 0) return r;
      r.headers.emplace_back(lines[i].substr(0, colon), trim(lines[i].substr(colon + 1)));
    }
    int code = 0;
    for (size_t i = 9; i < 12; ++i) {
      if (s[i] < '0' || s[i] > '9') return r;
      code = code * 10 + (s[i] - '0');
    }
    r.status = code;
    if (no_body || code < 200 || code == 204 || code == 304) {
      r.complete = true;
      return r;
    }
    if (iequal(r.get("Transfer-Encoding"), "chunked")) {
      r.chunked = true;
      read_chunks(r, deadline);
    } else if (r.has("Content-Length")) {
      size_t n = std::stoull(r.get("Content-Length"));
      while (buffer_.size() < n) {
        if (!fill(deadline)) {
          r.body = std::move(buffer_);
          buffer_.clear();
          return r;
        }
      }
      r.body = buffer_.substr(0, n);
      buffer_.erase(0, n);
      r.complete = true;
    } else {  // until the server closes
      while (fill(deadline)) {
      }
      r.body = std::move(buffer_);
      buffer_.clear();
      r.complete = eof_;
    }
    return r;
  }

 private:
  static constexpr size_t kRead = 64 * 1024;

  void read_chunks(Reply& r, Clock::time_point deadline) {
    for (;;) {
      size_t eol;
      while ((eol = buffer_.find("\r\n")) == std::string::npos) {
        if (!fill(deadline)) return;
      }
      size_t size = 0;
      size_t digits = 0;
      for (size_t i = 0; i < eol && buffer_[i] != ';'; ++i, ++digits) {
        int v = std::isdigit(static_cast<unsigned char>(buffer_[i])) ? buffer_[i] - '0'
                : (std::tolower(static_cast<unsigned char>(buffer_[i])) >= 'a' &&
                   std::tolower(static_cast<unsigned char>(buffer_[i])) <= 'f')
                    ? std::tolower(static_cast<unsigned char>(buffer_[i])) - 'a' + 10
                    : -1;
        if (v < 0 || digits > 12) return;  // not a chunk size we would send
        size = size * 16 + static_cast<size_t>(v);
      }
      if (digits == 0) return;
      buffer_.erase(0, eol + 2);
      if (size == 0) {  // trailers, then the empty line
        for (;;) {
          while ((eol = buffer_.find("\r\n")) == std::string::npos) {
            if (!fill(deadline)) return;
          }
          buffer_.erase(0, eol + 2);
          if (eol == 0) break;
        }
        r.complete = true;
        return;
      }
      while (buffer_.size() < size + 2) {
        if (!fill(deadline)) {
          r.body += buffer_;
          buffer_.clear();
          return;
        }
      }
      r.body.append(buffer_, 0, size);
      r.chunk_sizes.push_back(size);
      if (buffer_.compare(size, 2, "\r\n") != 0) return;
      buffer_.erase(0, size + 2);
    }
  }

  Co::Socket socket_;
  std::string buffer_;
  bool ok_ = false;
  bool eof_ = false;
};

std::string get_request(std::string_view target, std::string_view extra_headers = {}) {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n" + std::string(extra_headers) +
         "\r\n";
}

std::string post_request(std::string_view target, std::string_view body,
                         std::string_view extra_headers = {}) {
  return "POST " + std::string(target) +
         " HTTP/1.1\r\nHost: test\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra_headers) + "\r\n" + std::string(body);
}

// Sends one request on a new connection and reads the response.
Reply ask(uint16_t port, std::string_view request, bool no_body = false) {
  Client client(port);
  if (!client.ok() || !client.send(request)) return {};
  return client.read(no_body);
}

// An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") as seconds since the epoch; -1 if it is not
// one.
time_t parse_http_date(const std::string& text) {
  if (text.size() != 29) return -1;
  tm parts{};
  const char* end = ::strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &parts);
  if (end == nullptr || *end != '\0') return -1;
  return ::timegm(&parts);
}

// The handler most tests use: answers "METHOD target body" (text/plain).
void describe(http::Request& request, http::Response& response) {
  response.header("Content-Type", "text/plain");
  response.end(std::string(request.method()) + " " + std::string(request.target()) + " " +
               std::string(request.body()));
}

void write_file(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  REQUIRE(out.good());
}

}  // namespace

// =============================================================================================

TEST_CASE("http: GET gets 200 with Content-Length, Date and Server; reason_phrase") {
  with_server(
      {}, [](http::Server& server) { server.handle("/", describe); },
      [](http::Server&, uint16_t port) {
        Reply r = ask(port, get_request("/hello"));
        CHECK(r.status_line == "HTTP/1.1 200 OK");
        CHECK(r.body == "GET /hello ");
        CHECK(r.get("Content-Length") == std::to_string(r.body.size()));
        CHECK(r.get("Content-Type") == "text/plain");
        CHECK(r.get("Server") == "coring");
        CHECK(r.count("Date") == 1);
        time_t date = parse_http_date(r.get("Date"));
        CHECK_MESSAGE(date > 0, "Date: " << r.get("Date"));
        CHECK(std::abs(static_cast<long>(date - ::time(nullptr))) <= 2);
        CHECK(!r.has("Transfer-Encoding"));
        CHECK(r.complete);
      });
  http::ServerOptions named;
  named.server_name = "unit-test/1.0";
  with_server(
      named, [](http::Server& server) { server.handle("/", describe); },
      [](http::Server&, uint16_t port) {
        CHECK(ask(port, get_request("/")).get("Server") == "unit-test/1.0");
      });
  http::ServerOptions anonymous;
  anonymous.server_name = "";
  with_server(
      anonymous, [](http::Server& server) { server.handle("/", describe); },
      [](http::Server&, uint16_t port) {
        Reply r = ask(port, get_request("/"));
        CHECK(r.status == 200);
        CHECK(!r.has("Server"));
        CHECK(r.has("Date"));
      });
  CHECK(http::reason_phrase(200) == "OK");
  CHECK(http::reason_phrase(404) == "Not Found");
  CHECK(http::reason_phrase(431) == "Request Header Fields Too Large");
  CHECK(http::reason_phrase(799).empty());
}

TEST_CASE("http: keep-alive: two requests on one connection, one handler connection") {
  std::vector<long> ids;
  std::vector<bool> keep;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          ids.push_back(request.connection().id());
          keep.push_back(request.keep_alive());
          response.end("n" + std::to_string(ids.size()));
        });
      },
      [&](http::Server& server, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/a")));
        Reply first = client.read();
        CHECK(first.status == 200);
        CHECK(first.body == "n1");
        CHECK(!iequal(first.get("Connection"), "close"));
        CO_REQUIRE(client.send(get_request("/b")));
        Reply second = client.read();
        CHECK(second.status == 200);
        CHECK(second.body == "n2");
        CHECK(!client.at_eof());
        CHECK(server.stats().accepted == 1);
      });
  REQUIRE(ids.size() == 2);
  CHECK(ids[0] == ids[1]);
  CHECK(keep == std::vector<bool>{true, true});
}

TEST_CASE("http: HTTP/1.0 closes unless Connection: keep-alive") {
  std::vector<int> minors;
  std::vector<bool> keep;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          minors.push_back(request.version_minor());
          keep.push_back(request.keep_alive());
          response.end("ten");
        });
      },
      [&](http::Server&, uint16_t port) {
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send("GET / HTTP/1.0\r\n\r\n"));
          Reply r = client.read();
          CHECK(r.status == 200);
          CHECK(r.body == "ten");
          CHECK(client.closed());
        }
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
          Reply r = client.read();
          CHECK(r.status == 200);
          CHECK(r.body == "ten");
          CHECK(r.has("Content-Length"));  // an HTTP/1.0 client cannot read chunked
          // A 1.0 client keeps the connection only when the response says so (RFC 9112 9.3).
          CHECK(iequal(r.get("Connection"), "keep-alive"));
          CO_REQUIRE(client.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
          CHECK(client.read().body == "ten");
          CHECK(!client.at_eof());
        }
      });
  CHECK(minors == std::vector<int>{0, 0, 0});
  CHECK(keep == std::vector<bool>{false, true, true});
}

TEST_CASE("http: a client that asked to close and sent nothing more is not lingered for") {
  // The graceful close waits (up to linger_timeout) for the client's FIN. A client that asked
  // to close after a request read whole sends nothing more: its connection is closed at once,
  // while the client still holds its end open (as nginx does). One that sent more bytes gets
  // the graceful close, which drains them until the client closes.
  http::ServerOptions options;
  options.linger_timeout = std::chrono::seconds(60);  // longer than any wait here
  with_server(
      options,
      [](http::Server& server) {
        server.handle("/", [](http::Request&, http::Response& response) { response.end("ten"); });
        server.handle("/stream", [](http::Request&, http::Response& response) {
          response.write("te");  // HTTP/1.0: unframed, the close ends the body
          response.end("n");
        });
      },
      [](http::Server& server, uint16_t port) {
        for (const char* request :
             {"GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"}) {
          CAPTURE(request);
          const uint64_t closed = server.stats().closed;
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(request));
          Reply r = client.read();
          CHECK(r.status == 200);
          CHECK(r.body == "ten");
          CHECK(client.closed());
          CHECK(eventually([&] { return server.stats().closed == closed + 1; }));
          CHECK(server.stats().connections == 0);
        }
        // Bytes after the request: the server drains them and waits for the client's end.
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send("GET / HTTP/1.0\r\n\r\nmore"));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(client.closed());
        CHECK(server.stats().connections == 1);
        client.socket().close();
        CHECK(eventually([&] { return server.stats().connections == 0; }));
        // A client that asked to keep the connection, which the server ends (an HTTP/1.0 body
        // without a length ends with it), may be sending its next request: the graceful close.
        Client keeping(port);
        CO_REQUIRE(keeping.ok());
        CO_REQUIRE(keeping.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        r = keeping.read();
        CHECK(r.status == 200);
        CHECK(r.body == "ten");
        CHECK(keeping.closed());
        CHECK(server.stats().connections == 1);
        keeping.socket().close();
        CHECK(eventually([&] { return server.stats().connections == 0; }));
      });
}

TEST_CASE("http: Connection: close is answered with Connection: close, then the close") {
  std::vector<std::string> seen;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          seen.emplace_back(request.target());
          CHECK_FALSE(request.keep_alive());
          response.end("bye");
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        // A second request pipelined after it is never answered.
        CO_REQUIRE(
            client.send(get_request("/first", "Connection: close\r\n") + get_request("/second")));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(r.body == "bye");
        CHECK(iequal(r.get("Connection"), "close"));
        CHECK(client.closed());
        CHECK(client.buffer().empty());
      });
  CHECK(seen == std::vector<std::string>{"/first"});
}

TEST_CASE("http: pipelining: every request of one send answered, in order") {
  std::vector<std::string> seen;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          seen.emplace_back(request.target());
          describe(request, response);
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        std::string batch = get_request("/1") + post_request("/2", "two") +
                            "HEAD /3 HTTP/1.1\r\nHost: test\r\n\r\n" + get_request("/4");
        CO_REQUIRE(client.send(batch));
        CHECK(client.read().body == "GET /1 ");
        CHECK(client.read().body == "POST /2 two");
        Reply head = client.read(true);
        CHECK(head.status == 200);
        CHECK(head.get("Content-Length") == std::to_string(std::string("HEAD /3 ").size()));
        CHECK(client.read().body == "GET /4 ");
        // A hundred in one send.
        std::string many;
        for (int i = 0; i < 100; ++i) many += get_request("/m" + std::to_string(i));
        CO_REQUIRE(client.send(many));
        for (int i = 0; i < 100; ++i) {
          Reply r = client.read();
          CO_REQUIRE(r.status == 200);
          CHECK(r.body == "GET /m" + std::to_string(i) + " ");
        }
        CHECK(!client.at_eof());
      });
  REQUIRE(seen.size() == 104);
  CHECK(seen[0] == "/1");
  CHECK(seen[3] == "/4");
  CHECK(seen[103] == "/m99");
}

TEST_CASE("http: POST bodies: Content-Length, large, leading zeros") {
  std::string got;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          got = std::string(request.body());
          response.end(std::to_string(request.body().size()));
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        std::string body = pattern(300 * 1024, 7);  // more than one read, binary, NULs included
        CO_REQUIRE(client.send(post_request("/upload", body)));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(r.body == std::to_string(body.size()));
        bool same = got == body;  // (not through CHECK: doctest would print 300 KiB)
        CHECK(same);
        // RFC 9110 8.6: Content-Length is 1*DIGIT; leading zeros are still that number.
        CO_REQUIRE(client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\n\r\nabcde"));
        CHECK(client.read().body == "5");
        CHECK(got == "abcde");
        // A body sent after the head, in a separate write.
        CO_REQUIRE(client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"));
        Co::this_coroutine::sleep(Co::Duration::zero());
        CO_REQUIRE(client.send("xyz"));
        CHECK(client.read().body == "3");
        CHECK(got == "xyz");
      });
}

TEST_CASE("http: a chunked request body reaches the handler de-chunked") {
  std::vector<std::string> bodies;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          bodies.emplace_back(request.body());
          response.end("ok");
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        // In pieces that cut through sizes, data and the trailer; with an extension.
        const char* pieces[] = {
            "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "lo\r\n6;ext=1\r\n wor", "ld\r\n0\r\nX-Trailer: t\r\n", "\r\n"};
        for (const char* piece : pieces) {
          CO_REQUIRE(client.send(piece));
          Co::this_coroutine::sleep(1ms);  // (a separate read each, most of the time)
        }
        CHECK(client.read().status == 200);
        // Case does not matter in the coding or the hex digits.
        CO_REQUIRE(client.send(
            "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n"
            "0\r\n\r\n"));
        CHECK(client.read().status == 200);
        // An empty chunked body.
        CO_REQUIRE(client.send(
            "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
        CHECK(client.read().status == 200);
      });
  CHECK(bodies == std::vector<std::string>{"hello world", "0123456789", ""});
}

TEST_CASE("http: a chunked body with a trailer, cut into reads: the headers stay intact") {
  // Found by fuzz/http_request_fuzz: the head's header table went wrong (a name of 2^32 - 2
  // bytes) when the trailer arrived in a read of its own.
  const std::string request =
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0;x=y\r\nT: v\r\n\r\n";
  int bad = 0, calls = 0;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          ++calls;
          for (const http::Header& header : request.headers()) {
            bool sane = !header.name.empty() && header.name.size() < 64 && header.value.size() < 64;
            if (!sane && bad++ == 0) {
              MESSAGE("bad header: name size " << header.name.size() << ", value size "
                                               << header.value.size() << ", of "
                                               << request.headers().size());
            }
          }
          response.end();
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        for (int round = 0; round < 50; ++round) {
          size_t start = 0;
          for (size_t end : {size_t{9}, size_t{60}, size_t{64}, size_t{70}, request.size()}) {
            CO_REQUIRE(client.send(std::string_view(request).substr(start, end - start)));
            start = end;
            Co::this_coroutine::sleep(Co::Duration::zero());
          }
          CO_REQUIRE(client.read().status == 200);
        }
      });
  CHECK(calls == 50);
  CHECK(bad == 0);
}

TEST_CASE("http: Expect: 100-continue is answered before the body is sent; other Expect: 417") {
  int calls = 0;
  std::string got;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          ++calls;
          got = std::string(request.body());
          response.end("got " + std::to_string(request.body().size()));
        });
      },
      [&](http::Server&, uint16_t port) {
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(
              client.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: "
                          "100-continue\r\n\r\n"));
          Reply interim = client.read();
          CHECK(interim.status_line == "HTTP/1.1 100 Continue");
          CHECK(calls == 0);
          CO_REQUIRE(client.send("hello world"));
          Reply r = client.read();
          CHECK(r.status == 200);
          CHECK(r.body == "got 11");
          CHECK(got == "hello world");
        }
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(
              "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: teapot\r\n\r\nab"));
          Reply r = client.read();
          CHECK(r.status == 417);
          CHECK(client.closed());
        }
      });
  CHECK(calls == 1);
}

TEST_CASE("http: HEAD gets the head (Content-Length included) and no body") {
  with_server(
      {},
      [](http::Server& server) {
        server.handle("/", [](http::Request& request, http::Response& response) {
          CHECK(request.method() == "HEAD");
          response.end("hello world");
        });
        server.handle("/stream", [](http::Request&, http::Response& response) {
          response.write("abc");
          response.end("def");
        });
        server.handle("/get", describe);
      },
      [](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"));
        Reply r = client.read(true);
        CHECK(r.status == 200);
        CHECK(r.get("Content-Length") == "11");
        CHECK(r.has("Date"));
        // No body bytes follow: the next response on the connection parses from its first byte.
        CO_REQUIRE(client.send(get_request("/get")));
        Reply next = client.read();
        CHECK(next.status == 200);
        CHECK(next.body == "GET /get ");
        CO_REQUIRE(client.send("HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n"));
        CHECK(client.read(true).status == 200);
        CO_REQUIRE(client.send(get_request("/get")));
        CHECK(client.read().body == "GET /get ");
      });
}

TEST_CASE("http: routing by longest path prefix; 404 when nothing matches") {
  auto named = [](std::string name) {
    return [name](http::Request&, http::Response& response) { response.end(name); };
  };
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/api", named("api"));
        server.handle("/api/v2", named("v2"));
        server.handle("/", named("root"));
      },
      [](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        std::pair<const char*, const char*> cases[] = {
            {"/api", "api"},   {"/api/", "api"},   {"/api/x", "api"},   {"/api?q=1", "api"},
            {"/apis", "root"}, {"/api/v2", "v2"},  {"/api/v2/z", "v2"}, {"/api/v2x", "api"},
            {"/", "root"},     {"/other", "root"},
        };
        for (auto [target, handler] : cases) {
          CO_REQUIRE(client.send(get_request(target)));
          Reply r = client.read();
          CHECK_MESSAGE(r.status == 200, std::string(target));
          CHECK_MESSAGE(r.body == handler, std::string(target));
        }
      });
  with_server(
      {}, [&](http::Server& server) { server.handle("/api", named("api")); },
      [](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        for (const char* target : {"/apis", "/", "/other", "/ap"}) {
          CO_REQUIRE(client.send(get_request(target)));
          CHECK_MESSAGE(client.read().status == 404, std::string(target));
        }
        CO_REQUIRE(client.send(get_request("/api/deep/er")));
        CHECK(client.read().body == "api");
      });
}

TEST_CASE("http: Request accessors") {
  struct Seen {
    std::string method, target, path, query, body;
    int minor = -1;
    bool keep_alive = false;
    std::optional<std::string> custom_lower, custom_upper, missing, padded;
    std::vector<std::string> header_names;
    std::optional<std::string> cookie_session, cookie_a, cookie_empty, cookie_none;
    std::optional<std::string> q_a, q_b, q_c, q_d, q_e, q_missing, q_slash;
  } seen;
  auto copy = [](std::optional<std::string_view> v) {
    return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
  };
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          seen.method = request.method();
          seen.target = request.target();
          seen.path = request.path();
          seen.query = request.query();
          seen.body = request.body();
          seen.minor = request.version_minor();
          seen.keep_alive = request.keep_alive();
          seen.custom_lower = copy(request.header("x-custom"));
          seen.custom_upper = copy(request.header("X-CUSTOM"));
          seen.missing = copy(request.header("X-Missing"));
          seen.padded = copy(request.header("X-Padded"));
          for (const http::Header& header : request.headers()) {
            seen.header_names.emplace_back(header.name);
          }
          seen.cookie_session = copy(request.cookie("session"));
          seen.cookie_a = copy(request.cookie("a"));
          seen.cookie_empty = copy(request.cookie("empty"));
          seen.cookie_none = copy(request.cookie("none"));
          seen.q_a = request.query_param("a");
          seen.q_b = request.query_param("b");
          seen.q_c = request.query_param("c");
          seen.q_d = request.query_param("d");
          seen.q_e = request.query_param("e");
          seen.q_missing = request.query_param("missing");
          seen.q_slash = request.query_param("s");
          response.end();
        });
      },
      [](http::Server&, uint16_t port) {
        Reply r = ask(port,
                      "DELETE /p%20q/r?a=1&b=hello%20world&c=x+y&d=%zz&e=&s=%2F%2f HTTP/1.1\r\n"
                      "Host: test\r\nX-Custom: Value\r\nCookie: a=1; session=abc123\r\n"
                      "X-Padded:   padded value  \r\ncookie: empty=\r\nContent-Length: 2\r\n"
                      "\r\nhi");
        CHECK(r.status == 200);
        CHECK(r.get("Content-Length") == "0");
      });
  CHECK(seen.method == "DELETE");
  CHECK(seen.target == "/p%20q/r?a=1&b=hello%20world&c=x+y&d=%zz&e=&s=%2F%2f");
  CHECK(seen.path == "/p%20q/r");
  CHECK(seen.query == "a=1&b=hello%20world&c=x+y&d=%zz&e=&s=%2F%2f");
  CHECK(seen.body == "hi");
  CHECK(seen.minor == 1);
  CHECK(seen.keep_alive);
  CHECK(seen.custom_lower == "Value");
  CHECK(seen.custom_upper == "Value");
  CHECK(!seen.missing);
  CHECK_MESSAGE(seen.padded == "padded value",
                "[" << seen.padded.value_or("<absent>")
                    << "]");  // RFC 9112 5: OWS around the value is not part of it
  CHECK(seen.header_names == std::vector<std::string>{"Host", "X-Custom", "Cookie", "X-Padded",
                                                      "cookie", "Content-Length"});
  CHECK(seen.cookie_session == "abc123");
  CHECK(seen.cookie_a == "1");
  CHECK(seen.cookie_empty == "");  // from the second Cookie header
  CHECK(!seen.cookie_none);
  CHECK(seen.q_a == "1");
  CHECK(seen.q_b == "hello world");
  CHECK(seen.q_c == "x y");
  CHECK(!seen.q_d);  // malformed escape
  CHECK(seen.q_e == "");
  CHECK(!seen.q_missing);
  CHECK(seen.q_slash == "//");
  // No query at all.
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          seen.path = request.path();
          seen.query = request.query();
          seen.q_a = request.query_param("a");
          response.end();
        });
      },
      [](http::Server&, uint16_t port) { CHECK(ask(port, get_request("/x")).status == 200); });
  CHECK(seen.path == "/x");
  CHECK(seen.query.empty());
  CHECK(!seen.q_a);
}

TEST_CASE("http: Response::write streams a chunked body as it is written") {
  struct Calls {
    bool head_before = true, head_after = false, write1 = false, write_empty = false,
         write2 = false, end = false, ended = false, write_after = true, end_after = true;
  } calls;
  Co::Channel<int> client_saw_first{1};
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request&, http::Response& response) {
          calls.head_before = response.head_sent();
          response.header("Content-Type", "text/plain");
          calls.write1 = response.write("abc");
          calls.head_after = response.head_sent();
          calls.write_empty = response.write("");
          calls.write2 = response.write("defg");
          calls.end = response.end("hij");
          calls.ended = response.ended();
          calls.write_after = response.write("late");
          calls.end_after = response.end("late");
        });
        // The first chunk goes out before the handler ends: the handler waits until the
        // client has seen it (were it held back, the client would never see it and the wait
        // would time out).
        server.handle("/live", [&](http::Request&, http::Response& response) {
          CHECK(response.write("first"));
          CHECK(client_saw_first.pop(5s).has_value());
          CHECK(response.write("second"));
          CHECK(response.end());
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/")));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(r.chunked);
        CHECK(r.complete);
        CHECK(!r.has("Content-Length"));
        CHECK(r.get("Content-Type") == "text/plain");
        CHECK(r.body == "abcdefghij");
        for (size_t size : r.chunk_sizes) CHECK(size > 0);
        // The connection stays usable after a chunked response.
        CO_REQUIRE(client.send(get_request("/live")));
        CHECK(client.wait_for("5\r\nfirst\r\n"));
        CHECK(client_saw_first.push(1));
        Reply live = client.read();
        CHECK(live.body == "firstsecond");
        CHECK(live.complete);
      });
  CHECK(!calls.head_before);
  CHECK(calls.write1);
  CHECK(calls.head_after);
  CHECK(calls.write_empty);
  CHECK(calls.write2);
  CHECK(calls.end);
  CHECK(calls.ended);
  CHECK(!calls.write_after);
  CHECK(!calls.end_after);
}

TEST_CASE("http: Response::status and header: refusals (no injection, server-owned names)") {
  std::vector<std::pair<std::string, bool>> results;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request&, http::Response& response) {
          auto note = [&](std::string what, bool result) { results.emplace_back(what, result); };
          note("status 99", response.status(99));
          note("status 1000", response.status(1000));
          note("status 201", response.status(201));
          note("X-Ok", response.header("X-Ok", "fine"));
          note("CRLF in value", response.header("X-Bad", "a\r\nX-Injected: 1"));
          note("LF in value", response.header("X-Bad", "a\nX-Injected: 1"));
          note("CR in value", response.header("X-Bad", "a\rb"));
          note("NUL in value", response.header("X-Bad", std::string_view("a\0b", 3)));
          note("CRLF in name", response.header("X-Bad\r\nX-Injected", "1"));
          note("space in name", response.header("X Bad", "1"));
          note("colon in name", response.header("X-Bad:", "1"));
          note("empty name", response.header("", "1"));
          note("Content-Length", response.header("Content-Length", "5"));
          note("content-length", response.header("content-length", "5"));
          note("Transfer-Encoding", response.header("Transfer-Encoding", "chunked"));
          note("Date", response.header("Date", "Thu, 01 Jan 1970 00:00:00 GMT"));
          note("Connection", response.header("CONNECTION", "close"));
          note("end", response.end("body"));
          note("status after end", response.status(500));
          note("header after end", response.header("X-Late", "1"));
        });
        server.handle("/reason", [](http::Request&, http::Response& response) {
          CHECK(response.status(299, "Custom Thing"));
          response.end();
        });
      },
      [](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/")));
        Reply r = client.read();
        CHECK(r.status_line == "HTTP/1.1 201 Created");
        CHECK(r.get("X-Ok") == "fine");
        CHECK(!r.has("X-Bad"));
        CHECK(!r.has("X-Injected"));
        CHECK(!r.has("X-Late"));
        CHECK(r.get("Content-Length") == "4");
        CHECK(r.count("Date") == 1);
        CHECK(r.get("Date") != "Thu, 01 Jan 1970 00:00:00 GMT");
        CHECK(!iequal(r.get("Connection"), "close"));
        CHECK(r.body == "body");
        CO_REQUIRE(client.send(get_request("/reason")));
        CHECK(client.read().status_line == "HTTP/1.1 299 Custom Thing");
      });
  std::vector<std::pair<std::string, bool>> expected = {
      {"status 99", false},         {"status 1000", false},
      {"status 201", true},         {"X-Ok", true},
      {"CRLF in value", false},     {"LF in value", false},
      {"CR in value", false},       {"NUL in value", false},
      {"CRLF in name", false},      {"space in name", false},
      {"colon in name", false},     {"empty name", false},
      {"Content-Length", false},    {"content-length", false},
      {"Transfer-Encoding", false}, {"Date", false},
      {"Connection", false},        {"end", true},
      {"status after end", false},  {"header after end", false},
  };
  REQUIRE(results.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    CHECK_MESSAGE(results[i].second == expected[i].second, results[i].first);
  }
}

// ---------------------------------------------------------------------------------------------
// Limits.

namespace {

// A request head of exactly `size` bytes, from the request line's first byte through the empty
// line that ends it.
std::string head_of_size(size_t size) {
  std::string start = "GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ";
  std::string end = "\r\n\r\n";
  CHECK(size > start.size() + end.size());
  return start + std::string(size - start.size() - end.size(), 'p') + end;
}

std::string chunked_post(size_t body_size) {
  std::string request = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  size_t left = body_size;
  while (left > 0) {
    size_t n = std::min<size_t>(left, 300);
    char size_line[16];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", n);
    request += size_line + std::string(n, 'c') + "\r\n";
    left -= n;
  }
  return request + "0\r\n\r\n";
}

}  // namespace

TEST_CASE("http: max_header_size: a head exactly at the limit is served, one byte over is 431") {
  http::ServerOptions options;
  options.max_header_size = 1024;
  int calls = 0;
  with_server(
      options,
      [&](http::Server& server) {
        server.handle("/", [&](http::Request&, http::Response& response) {
          ++calls;
          response.end("ok");
        });
      },
      [&](http::Server& server, uint16_t port) {
        CHECK(head_of_size(1024).size() == 1024);
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(head_of_size(1024)));
          Reply r = client.read();
          CHECK(r.status == 200);
          // Twice on one connection: the limit is per head, not per connection.
          CO_REQUIRE(client.send(head_of_size(1024)));
          CHECK(client.read().status == 200);
        }
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(head_of_size(1025)));
          Reply r = client.read();
          CHECK(r.status == 431);
          CHECK(client.closed());
        }
        // Over the limit and not yet ended: answered without waiting for the rest.
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send("GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + std::string(2000, 'p')));
          Reply r = client.read();
          CHECK(r.status == 431);
          CHECK(client.closed());
        }
        // A long request line counts too.
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(get_request("/" + std::string(1100, 'u'))));
          CHECK(client.read().status == 431);
          CHECK(client.closed());
        }
        CHECK(calls == 2);
        CHECK(eventually([&] { return server.stats().rejected == 3; }));
      });
}

TEST_CASE("http: package_max_length: a body exactly at the limit is served, one over is 413") {
  http::ServerOptions options;
  options.package_max_length = 1000;
  std::vector<size_t> sizes;
  with_server(
      options,
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          sizes.push_back(request.body().size());
          response.end("ok");
        });
      },
      [&](http::Server&, uint16_t port) {
        {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(post_request("/", std::string(1000, 'b'))));
          CHECK(client.read().status == 200);
          CO_REQUIRE(client.send(chunked_post(1000)));
          CHECK(client.read().status == 200);
        }
        {  // Only the head is sent: the 413 comes from the head alone.
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n"));
          Reply r = client.read();
          CHECK(r.status == 413);
          CHECK(client.closed());
        }
        {  // With Expect: 100-continue, no 100 before the 413.
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(
              client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nExpect: "
                          "100-continue\r\n\r\n"));
          Reply r = client.read();
          CHECK(r.status == 413);
          CHECK(client.closed());
        }
        {  // Chunked, one byte over in all.
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(chunked_post(1001)));
          Reply r = client.read();
          CHECK(r.status == 413);
          CHECK(client.closed());
        }
        {  // A huge Content-Length is just over the limit.
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(
              client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n"));
          CHECK(client.read().status == 413);
          CHECK(client.closed());
        }
      });
  CHECK(sizes == std::vector<size_t>{1000, 1000});
}

namespace {

struct BadCase {
  const char* name;
  std::string request;
  int status;
  int alternative = 0;  // another status the contract leaves open
};

// Sends each case on a new connection: the answer must be `status`, then the close; no handler
// runs (a request smuggled behind the bad one included).
void expect_rejected(const std::vector<BadCase>& cases) {
  int calls = 0;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          ++calls;
          FAIL_CHECK("a handler ran for " << request.method() << " " << request.target());
          response.end();
        });
      },
      [&](http::Server& server, uint16_t port) {
        for (const BadCase& c : cases) {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(c.request));
          Reply r = client.read();
          CHECK_MESSAGE((r.status == c.status || (c.alternative != 0 && r.status == c.alternative)),
                        std::string(c.name) << ": got \"" << r.status_line << "\"");
          CHECK_MESSAGE(client.closed(), std::string(c.name) << ": the connection stays open");
          CHECK_MESSAGE(client.buffer().empty(), std::string(c.name)
                                                     << ": more after the response");
        }
        CHECK(eventually([&] { return server.stats().rejected == cases.size(); }));
      });
  CHECK(calls == 0);
}

const std::string kSmuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

}  // namespace

TEST_CASE("http: malformed requests are 400, an unknown method 501; the connection closes") {
  expect_rejected({
      {"no colon", "GET / HTTP/1.1\r\nHost t\r\n\r\n", 400},
      {"Content-Length not a number", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
       400},
      {"negative Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400},
      {"space in the target", "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400},
      {"control byte in the target", "GET /a\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400},
      {"not a version", "GET / HTTP/1.x\r\nHost: t\r\n\r\n", 400, 505},
      {"version 2.0", "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, 400},
      {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400},
      {"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"no version (HTTP/0.9 style)", "GET /\r\nHost: t\r\n\r\n", 400, 505},
      {"bad header name", "GET / HTTP/1.1\r\nHost: t\r\nBad[Name]: x\r\n\r\n", 400},
      {"empty header name", "GET / HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n", 400},
      {"bad chunk size", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       400},
      {"chunk data without its CRLF",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
       400},
      {"unknown method", "FOO / HTTP/1.1\r\nHost: t\r\n\r\n", 501},
  });
}

TEST_CASE("http: request smuggling attempts are 400 and close the connection") {
  expect_rejected({
      {"Content-Length and Transfer-Encoding",
       "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n" +
           kSmuggled,
       400},
      {"Transfer-Encoding and Content-Length",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
       "0\r\n\r\n" +
           kSmuggled,
       400},
      {"two different Content-Lengths",
       "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n" + kSmuggled,
       400},
      {"Transfer-Encoding chunked, gzip",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" +
           kSmuggled,
       400},
      {"Transfer-Encoding gzip alone",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"chunked then gzip in two fields",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"
       "\r\n0\r\n\r\n" +
           kSmuggled,
       400},
      {"chunk size overflow",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"
       "a\r\n0\r\n\r\n" +
           kSmuggled,
       400},
      {"chunk size of 2^64",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
       "10000000000000000\r\n" +
           kSmuggled,
       400},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n" + kSmuggled, 400},
      {"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n" + kSmuggled,
       400},
      {"bare LF everywhere", "GET / HTTP/1.1\nHost: t\n\n" + kSmuggled, 400},
      {"bare LF in a header line", "GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n" + kSmuggled, 400},
      {"bare LF ending the head", "GET / HTTP/1.1\r\nHost: t\r\n\n" + kSmuggled, 400},
      {"whitespace before the colon", "GET / HTTP/1.1\r\nHost : t\r\n\r\n" + kSmuggled, 400},
      {"a space inside a header name",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc" +
           kSmuggled,
       400},
      {"tab before the colon",
       "POST / HTTP/1.1\r\nHost: t\r\nContent-Length\t: 3\r\n\r\nabc" + kSmuggled, 400},
      {"Transfer-Encoding with a space before the colon",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n"
       "abc" +
           kSmuggled,
       400},
      // Found in review: what llhttp 8 takes after a chunked body, and around it.
      {"a bare LF ending the last chunk",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n" + kSmuggled, 400},
      {"a bare LF ending a trailer",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n\n" +
           kSmuggled,
       400},
      {"a bare LF after chunk data",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n" +
           kSmuggled,
       400},
      {"obs-fold in a trailer",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n" +
           kSmuggled,
       400},
      {"an empty trailer name",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n: y\r\n\r\n" +
           kSmuggled,
       400},
      {"HTTP/1.0 with Transfer-Encoding",
       "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
           kSmuggled,
       400},
      {"RTSP/1.0 is not HTTP/1.0", "GET / RTSP/1.0\r\nHost: t\r\n\r\n" + kSmuggled, 505, 400},
      {"endless chunk extensions",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;x=" +
           std::string(64 * 1024, 'y') + "\r\nabc\r\n0\r\n\r\n",
       400},
      {"endless leading zeros",
       "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
           std::string(3 * 1024 * 1024, '0') + "3\r\nabc\r\n0\r\n\r\n",
       400},
  });
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

TEST_CASE("http: slowloris: a head trickling in is closed after header_timeout, no response") {
  http::ServerOptions options;
  options.header_timeout = 1s;
  with_server(
      options, [](http::Server& server) { server.handle("/", describe); },
      [](http::Server&, uint16_t port) {
        Client slow(port);
        CO_REQUIRE(slow.ok());
        bool closed = false;
        Clock::time_point first_byte{}, closed_at{};
        Co::WaitGroup watching;
        spawn(watching, [&] {
          closed = slow.closed(kLong);
          closed_at = Clock::now();
        });
        std::string head =
            "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + std::string(100, 's') + "\r\n\r\n";
        first_byte = Clock::now();
        bool other_answered = false;
        // One byte every 100 ms (pacing, not synchronisation) until the server closes.
        for (size_t i = 0; i < head.size() && watching.count() > 0; ++i) {
          if (slow.socket().send(&head[i], 1, kLong) != 1) break;
          if (i == 3) {  // meanwhile the server serves others
            other_answered = ask(port, get_request("/other")).status == 200;
          }
          watching.wait(100ms);
        }
        CHECK(settle(watching));
        CHECK(closed);
        CHECK(slow.buffer().empty());  // closed without a response
        auto took = std::chrono::duration_cast<std::chrono::milliseconds>(closed_at - first_byte);
        CHECK(took >= 900ms);
        CHECK(took < 3000ms);
        CHECK(other_answered);
      });
}

TEST_CASE("http: keepalive_timeout closes an idle connection, not a busy one") {
  http::ServerOptions options;
  options.keepalive_timeout = 300ms;
  with_server(
      options,
      [](http::Server& server) {
        server.handle("/", [](http::Request& request, http::Response& response) {
          response.end(std::to_string(request.connection().id()));
        });
      },
      [](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/")));
        Reply first = client.read();
        CHECK(first.status == 200);
        // A request every 150 ms for 750 ms in all: the idle time restarts with each.
        for (int i = 0; i < 5; ++i) {
          Co::this_coroutine::sleep(150ms);
          CO_REQUIRE(client.send(get_request("/")));
          Reply r = client.read();
          CHECK(r.status == 200);
          CHECK(r.body == first.body);  // the same connection
        }
        auto idle_since = Clock::now();
        CHECK(client.closed());
        CHECK(client.buffer().empty());
        CHECK(elapsed_ms(idle_since) >= 250ms);
        CHECK(elapsed_ms(idle_since) < 2000ms);
      });
}

TEST_CASE("http: body_timeout closes a connection whose body stalls") {
  http::ServerOptions options;
  options.body_timeout = 300ms;
  int calls = 0;
  with_server(
      options,
      [&](http::Server& server) {
        server.handle("/", [&](http::Request&, http::Response& response) {
          ++calls;
          response.end();
        });
      },
      [](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345"));
        auto stalled = Clock::now();
        CHECK(client.closed());
        CHECK(client.buffer().empty());
        CHECK(elapsed_ms(stalled) >= 250ms);
        CHECK(elapsed_ms(stalled) < 2000ms);
      });
  CHECK(calls == 0);
}

// ---------------------------------------------------------------------------------------------
// Handlers that fail; clients that go away.

TEST_CASE("http: a handler that throws or does not end gets 500; the server goes on") {
  LogCapture log;
  with_server(
      {},
      [](http::Server& server) {
        server.handle("/throw", [](http::Request&, http::Response& response) {
          response.status(201);
          response.header("X-Before", "1");
          throw std::runtime_error("kaboom");
        });
        server.handle("/throw-int", [](http::Request&, http::Response&) { throw 42; });
        server.handle("/forget", [](http::Request&, http::Response& response) {
          response.header("X-Forgot", "1");
        });
        server.handle("/ok", describe);
      },
      [](http::Server&, uint16_t port) {
        for (const char* target : {"/throw", "/throw-int", "/forget"}) {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(get_request(target)));
          Reply r = client.read();
          CHECK_MESSAGE(r.status == 500, std::string(target));
          // The 500 is a whole response: the connection is either closed or still usable.
          if (client.send(get_request("/ok"))) {
            Reply next = client.read();
            CHECK_MESSAGE((next.status == 200 || (next.status == 0 && client.at_eof())),
                          std::string(target) << ": after the 500: " << next.status_line);
          }
          // And the next connection is served.
          CHECK(ask(port, get_request("/ok")).status == 200);
        }
      });
  CHECK_MESSAGE(log.count_at(Co::LogLevel::error) >= 3, log.dump());
  CHECK_MESSAGE(log.count(Co::LogLevel::error, "kaboom") >= 1, log.dump());
}

TEST_CASE("http: a handler that fails after write() leaves the chunked body incomplete") {
  LogCapture log;
  with_server(
      {},
      [](http::Server& server) {
        server.handle("/throw", [](http::Request&, http::Response& response) {
          response.write("partial");
          throw std::runtime_error("after the head");
        });
        server.handle("/forget",
                      [](http::Request&, http::Response& response) { response.write("partial"); });
        server.handle("/ok", describe);
      },
      [](http::Server&, uint16_t port) {
        for (const char* target : {"/throw", "/forget"}) {
          Client client(port);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(get_request(target)));
          Reply r = client.read();
          CHECK_MESSAGE(r.status == 200, std::string(target));
          CHECK(r.chunked);
          CHECK_MESSAGE(!r.complete, std::string(target) << ": the last chunk was sent");
          CHECK(r.body == "partial");
          CHECK(client.closed());
          CHECK(ask(port, get_request("/ok")).status == 200);
        }
      });
  CHECK_MESSAGE(log.count_at(Co::LogLevel::error) >= 2, log.dump());
}

TEST_CASE("http: a client that goes away mid-response: writes fail, the server goes on") {
  LogCapture log;
  Co::Channel<bool> end_results(4);
  Co::Channel<int> write_results(4);
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/end", [&](http::Request&, http::Response& response) {
          std::string big(32 * 1024 * 1024, 'e');
          end_results.push(response.end(big), kLong);
        });
        server.handle("/write", [&](http::Request&, http::Response& response) {
          std::string chunk(64 * 1024, 'w');
          int written = 0;
          while (written < 2000 && response.write(chunk)) ++written;
          // The later calls fail (at once: the response knows the client is gone).
          bool later = response.write(chunk) || response.end();
          write_results.push(later ? -1 : written, kLong);
        });
        server.handle("/ok", describe);
      },
      [&](http::Server&, uint16_t port) {
        for (const char* target : {"/end", "/write"}) {
          Client client(port, 4096);
          CO_REQUIRE(client.ok());
          CO_REQUIRE(client.send(get_request(target)));
          CHECK(client.wait_for("HTTP/1.1 200"));  // the response has begun
          client.socket().close();                 // unread data: the kernel resets
        }
        std::optional<bool> ended = end_results.pop(kLong);
        CHECK(ended.has_value());
        CHECK(ended == false);
        std::optional<int> written = write_results.pop(kLong);
        CHECK(written.has_value());
        CHECK(written.value_or(-1) >= 0);
        CHECK(written.value_or(2000) < 2000);
        CHECK(ask(port, get_request("/ok")).status == 200);
      });
  CHECK_MESSAGE(log.count(Co::LogLevel::notice, "connection#") >= 2, log.dump());
}

// ---------------------------------------------------------------------------------------------
// Shutdown and stats.

TEST_CASE(
    "http: shutdown: a request in progress finishes with Connection: close, idle ones close") {
  int rc = Co::run([] {
    http::Server server("127.0.0.1", 0);
    Co::Channel<int> entered(1);
    Co::Channel<int> release(1);
    server.handle("/slow", [&](http::Request&, http::Response& response) {
      entered.push(1, kLong);
      CHECK(release.pop(kLong).has_value());
      response.end("done");
    });
    server.handle("/", describe);
    Running running(server);
    uint16_t port = running.port();
    CO_REQUIRE(port != 0);
    Client idle(port);
    CO_REQUIRE(idle.ok());
    CO_REQUIRE(idle.send(get_request("/")));
    CHECK(idle.read().status == 200);
    Client busy(port);
    CO_REQUIRE(busy.ok());
    CO_REQUIRE(busy.send(get_request("/slow")));
    CO_REQUIRE(entered.pop(kLong).has_value());  // its handler waits now
    server.shutdown();
    CHECK(idle.closed());
    CHECK(idle.buffer().empty());
    idle.socket().close();  // (else the server's lingering close waits for it)
    Co::Socket late;
    CHECK_FALSE(late.connect("127.0.0.1", port, kLong));
    CHECK_FALSE(running.returned(100ms));  // the request in progress holds it
    release.push(1, kLong);
    Reply r = busy.read();
    CHECK(r.status == 200);
    CHECK(r.body == "done");
    CHECK(iequal(r.get("Connection"), "close"));
    CHECK(busy.closed());
    busy.socket().close();
    CHECK(running.returned(kLong));
    CHECK(running.result());
  });
  CHECK(rc == 0);
}

TEST_CASE("http: stats count requests and the server's own rejections") {
  with_server(
      {}, [](http::Server& server) { server.handle("/a", describe); },
      [](http::Server& server, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        for (int i = 0; i < 3; ++i) {
          CO_REQUIRE(client.send(get_request("/a")));
          CHECK(client.read().status == 200);
        }
        CO_REQUIRE(client.send(get_request("/nothing-here")));
        CHECK(client.read().status == 404);
        CHECK(eventually([&] { return server.stats().requests == 4; }));
        CHECK(server.stats().rejected == 0);
        CHECK(ask(port, "GET / HTTP/1.1\r\nHost : t\r\n\r\n").status == 400);
        CHECK(ask(port, "FOO / HTTP/1.1\r\nHost: t\r\n\r\n").status == 501);
        CHECK(eventually([&] { return server.stats().rejected == 2; }));
        http::ServerStats stats = server.stats();
        CHECK(stats.requests >= 4);  // whether the server's own answers count is not said
        CHECK(stats.accepted == 3);
      });
}

// ---------------------------------------------------------------------------------------------
// Static files.

namespace {

constexpr time_t kMtime = 1577934245;  // Thu, 02 Jan 2020 03:04:05 GMT

struct Site {
  TempDir root;  // root/public is served; root/secret.txt and root/outside/ lie outside it
  std::string pub = root.file("public");
  std::string big = pattern(10 * 1024 * 1024, 42);

  Site() {
    REQUIRE(::mkdir(pub.c_str(), 0755) == 0);
    REQUIRE(::mkdir(root.file("outside").c_str(), 0755) == 0);
    REQUIRE(::mkdir((pub + "/docs").c_str(), 0755) == 0);
    REQUIRE(::mkdir((pub + "/empty").c_str(), 0755) == 0);
    write_file(root.file("secret.txt"), "SECRET");
    write_file(root.file("outside/secret.txt"), "SECRET");
    write_file(pub + "/hello.txt", "hello file");
    write_file(pub + "/hello world.txt", "spaced");
    write_file(pub + "/style.css", "body{}");
    write_file(pub + "/page.html", "<p>page</p>");
    write_file(pub + "/image.png", "\x89PNG");
    write_file(pub + "/docs/index.html", "<h1>docs</h1>");
    write_file(pub + "/big.bin", big);
    REQUIRE(::symlink(root.file("outside/secret.txt").c_str(), (pub + "/escape").c_str()) == 0);
    REQUIRE(::symlink(root.file("outside").c_str(), (pub + "/escape_dir").c_str()) == 0);
    REQUIRE(::symlink("../secret.txt", (pub + "/relative_escape").c_str()) == 0);
    timespec times[2] = {{kMtime, 0}, {kMtime, 0}};
    REQUIRE(::utimensat(AT_FDCWD, (pub + "/hello.txt").c_str(), times, 0) == 0);
  }
};

}  // namespace

TEST_CASE("http: serve_directory: types, Last-Modified, 304, 404, 405, index.html") {
  Site site;
  with_server(
      {}, [&](http::Server& server) { server.serve_directory("/static", site.pub); },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/static/hello.txt")));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(r.body == "hello file");
        CHECK(r.get("Content-Length") == "10");
        CHECK(lower(r.get("Content-Type")).rfind("text/plain", 0) == 0);
        CHECK(r.get("Last-Modified") == "Thu, 02 Jan 2020 03:04:05 GMT");
        CHECK(r.has("Date"));
        CHECK(r.has("Server"));
        std::pair<const char*, const char*> types[] = {{"/static/style.css", "text/css"},
                                                       {"/static/page.html", "text/html"},
                                                       {"/static/image.png", "image/png"}};
        for (auto [target, type] : types) {
          CO_REQUIRE(client.send(get_request(target)));
          Reply t = client.read();
          CHECK_MESSAGE(t.status == 200, std::string(target));
          CHECK_MESSAGE(lower(t.get("Content-Type")).rfind(type, 0) == 0,
                        target << ": " << t.get("Content-Type"));
        }
        // If-Modified-Since not older than the file: 304 with no body.
        for (const char* since :
             {"Thu, 02 Jan 2020 03:04:05 GMT", "Fri, 03 Jan 2020 00:00:00 GMT"}) {
          CO_REQUIRE(client.send(get_request("/static/hello.txt",
                                             "If-Modified-Since: " + std::string(since) + "\r\n")));
          Reply n = client.read();
          CHECK_MESSAGE(n.status == 304, std::string(since));
        }
        // Older, or not a date: the file.
        for (const char* since : {"Wed, 01 Jan 2020 00:00:00 GMT", "yesterday"}) {
          CO_REQUIRE(client.send(get_request("/static/hello.txt",
                                             "If-Modified-Since: " + std::string(since) + "\r\n")));
          Reply m = client.read();
          CHECK_MESSAGE(m.status == 200, std::string(since));
          CHECK(m.body == "hello file");
        }
        // HEAD: the head, Content-Length included, no body (the next response parses).
        CO_REQUIRE(client.send("HEAD /static/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"));
        Reply head = client.read(true);
        CHECK(head.status == 200);
        CHECK(head.get("Content-Length") == "10");
        // Percent-decoding, a query string ignored, index.html for a directory.
        std::pair<const char*, const char*> found[] = {
            {"/static/hello%20world.txt", "spaced"},
            {"/static/hello.txt?v=1", "hello file"},
            {"/static/docs/", "<h1>docs</h1>"},
            {"/static/docs", "<h1>docs</h1>"},
        };
        for (auto [target, body] : found) {
          CO_REQUIRE(client.send(get_request(target)));
          Reply f = client.read();
          CHECK_MESSAGE(f.status == 200, std::string(target));
          CHECK_MESSAGE(f.body == body, std::string(target));
        }
        // Missing, a directory without index.html, the directory itself: 404.
        for (const char* target :
             {"/static/missing.txt", "/static/empty/", "/static/", "/static/docs/missing.html"}) {
          CO_REQUIRE(client.send(get_request(target)));
          CHECK_MESSAGE(client.read().status == 404, std::string(target));
        }
        CO_REQUIRE(client.send(post_request("/static/hello.txt", "x")));
        CHECK(client.read().status == 405);
      });
}

TEST_CASE("http: serve_directory never leaves the directory") {
  Site site;
  with_server(
      {}, [&](http::Server& server) { server.serve_directory("/static", site.pub); },
      [&](http::Server&, uint16_t port) {
        const char* attempts[] = {
            "/static/../secret.txt",
            "/static/docs/../../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/%2E%2e%2fsecret.txt",
            "/static/..%2fsecret.txt",
            "/static/docs/%2e%2e%2F%2e%2e%2Fsecret.txt",
            "/static/hello.txt%00",
            "/static/hello.txt%00.png",
            "/static/%00",
            "/static/escape",
            "/static/escape_dir/secret.txt",
            "/static/relative_escape",
            "/static//etc/passwd",
            "/static/%2fetc%2fpasswd",
            "/static/%2F%2Fetc/passwd",
            "/static/..",
            "/static/%2e%2e",
        };
        for (const char* target : attempts) {
          Client client(port);
          CO_REQUIRE(client.ok());
          // Sent raw: the target is exactly these bytes.
          CO_REQUIRE(client.send(get_request(target)));
          Reply r = client.read();
          CHECK_MESSAGE((r.status == 404 || r.status == 400), std::string(target)
                                                                  << ": " << r.status_line);
          CHECK_MESSAGE(r.status != 0, std::string(target));
          CHECK_MESSAGE(r.body.find("SECRET") == std::string::npos, std::string(target));
          CHECK_MESSAGE(r.body.find("root:") == std::string::npos, std::string(target));
        }
        // The symlinks themselves were there: the refusal is not a missing file.
        struct stat info;
        CHECK(::lstat((site.pub + "/escape").c_str(), &info) == 0);
      });
}

// Sandboxes that refuse openat2 (Docker's seccomp profile answers ENOSYS for what it does not
// know, older ones EPERM): the fallback (open, then check where the file really is) must serve
// the same files and refuse the same escapes.
static void check_static_without_openat2(int refusal) {
  Site site;
  auto child = run_in_child([&] {
    if (!forbid_syscall(SYS_openat2, refusal)) {
      child_report("RESULT no-seccomp");
      return;
    }
    std::string result = "RESULT";
    int rc = Co::run([&] {
      http::Server server("127.0.0.1", 0);
      server.serve_directory("/static", site.pub);
      Running running(server);
      for (const char* target : {"/static/hello.txt", "/static/docs/index.html", "/static/escape",
                                 "/static/escape_dir/secret.txt", "/static/relative_escape"}) {
        Reply r = ask(running.port(), get_request(target));
        result += " " + std::to_string(r.status);
        if (r.body.find("SECRET") != std::string::npos) result += "!leak";
      }
      if (!running.stop()) result += " stop-failed";
    });
    child_report(result + " rc=" + std::to_string(rc));
  });
  INFO(child.describe());
  CHECK(child.exit_code() == 0);
  std::string result;
  for (const std::string& line : split_lines(child.output)) {
    if (line.rfind("RESULT ", 0) == 0) result = line;
  }
  if (result == "RESULT no-seccomp") {
    MESSAGE("seccomp filters are not available here; skipped");
    return;
  }
  CHECK(result == "RESULT 200 200 404 404 404 rc=0");
}

TEST_CASE("http: serve_directory where openat2 is refused: the same files, the same refusals") {
  SUBCASE("ENOSYS") {
    check_static_without_openat2(ENOSYS);
  }
  SUBCASE("EPERM") {
    check_static_without_openat2(EPERM);
  }
}

TEST_CASE("http: a 10 MiB file arrives intact; Response::sendfile") {
  Site site;
  with_server(
      {},
      [&](http::Server& server) {
        server.serve_directory("/static", site.pub);
        server.handle("/file", [&](http::Request& request, http::Response& response) {
          std::string name(request.query());
          if (!response.sendfile(site.pub + "/" + name)) {
            CHECK(!response.head_sent());
            response.status(404);
            response.end("no file " + name);
          }
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/static/big.bin")));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(r.get("Content-Length") == std::to_string(site.big.size()));
        CHECK(r.body.size() == site.big.size());
        bool same = r.body == site.big;  // (not through CHECK: doctest would print 10 MiB)
        CHECK(same);
        CO_REQUIRE(client.send(get_request("/file?big.bin")));
        Reply s = client.read();
        CHECK(s.status == 200);
        same = s.body == site.big;
        CHECK(same);
        CO_REQUIRE(client.send(get_request("/file?hello.txt")));
        Reply t = client.read();
        CHECK(t.body == "hello file");
        CHECK(lower(t.get("Content-Type")).rfind("text/plain", 0) == 0);
        CO_REQUIRE(client.send(get_request("/file?missing")));
        Reply m = client.read();
        CHECK(m.status == 404);
        CHECK(m.body == "no file missing");
        CO_REQUIRE(client.send(get_request("/file?docs")));  // a directory
        CHECK(client.read().status == 404);
        CO_REQUIRE(client.send("HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
        Reply head = client.read(true);
        CHECK(head.get("Content-Length") == std::to_string(site.big.size()));
        CO_REQUIRE(client.send(get_request("/static/hello.txt")));
        CHECK(client.read().body == "hello file");
      });
}

TEST_CASE("http: one spelling of a static path: a route under the prefix cannot be bypassed") {
  Site site;
  REQUIRE(::mkdir((site.pub + "/sub").c_str(), 0755) == 0);
  write_file(site.pub + "/sub/private.txt", "PRIVATE");
  with_server(
      {},
      [&](http::Server& server) {
        server.serve_directory("/static", site.pub);
        server.handle("/static/sub", [](http::Request&, http::Response& response) {
          response.status(403);
          response.end("no");
        });
      },
      [&](http::Server&, uint16_t port) {
        CHECK(ask(port, get_request("/static/sub/private.txt")).status == 403);
        for (const char* target :
             {"/static/./sub/private.txt", "/static/%73ub/private.txt", "/static//sub/private.txt",
              "/static/sub%2fprivate.txt", "/static/x/../sub/private.txt"}) {
          Reply r = ask(port, get_request(target));
          CHECK_MESSAGE(r.status == 404, target << ": " << r.status_line);
          CHECK_MESSAGE(r.body.find("PRIVATE") == std::string::npos, target);
        }
        CHECK(ask(port, get_request("/static/hello.txt")).status == 200);
      });
}

TEST_CASE("http: routes are fixed once started; a second start() is refused and harms nothing") {
  LogCapture log;
  int second_start = -1;
  int second_error = 0;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/late", [&](http::Request&, http::Response& response) {
          // Too late: ignored (a running handler's route table must not move).
          server.handle("/added", [](http::Request&, http::Response& r) { r.end("added"); });
          second_start = server.start() ? 1 : 0;
          second_error = server.error().value();
          response.end("late");
        });
      },
      [&](http::Server&, uint16_t port) {
        CHECK(ask(port, get_request("/late")).body == "late");
        CHECK(ask(port, get_request("/added")).status == 404);
        CHECK(ask(port, get_request("/late")).status == 200);  // still served
      });
  CHECK(second_start == 0);
  CHECK(second_error == EBUSY);
  CHECK(log.count(Co::LogLevel::error, "routes are fixed once the server starts") == 2);
}

TEST_CASE("http: trailer fields are checked and dropped, not merged into the head's") {
  std::vector<std::string> names;
  std::string body;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request& request, http::Response& response) {
          names.clear();
          for (const http::Header& header : request.headers()) names.emplace_back(header.name);
          body = std::string(request.body());
          response.end();
        });
      },
      [&](http::Server&, uint16_t port) {
        Reply r = ask(port,
                      "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n0\r\nCookie: sid=evil\r\nHost: other\r\n\r\n");
        CHECK(r.status == 200);
      });
  CHECK(names == std::vector<std::string>{"Host", "Transfer-Encoding"});
  CHECK(body == "abc");
}

TEST_CASE("http: send_timeout bounds a stall, not a large response to a reader that keeps up") {
  http::ServerOptions options;
  options.send_timeout = 300ms;
  const std::string big(1024 * 1024, 'b');
  bool ended = false;
  with_server(
      options,
      [&](http::Server& server) {
        server.handle("/",
                      [&](http::Request&, http::Response& response) { ended = response.end(big); });
      },
      [&](http::Server&, uint16_t port) {
        // A small receive buffer and pauses between reads: the whole transfer takes well over
        // send_timeout, no single stall does.
        Client client(port, 4096);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send(get_request("/")));
        auto deadline = Clock::now() + kLong;
        while (client.buffer().size() < big.size() && !client.at_eof()) {
          Co::this_coroutine::sleep(5ms);  // (pacing: a slow reader)
          if (!client.fill(deadline)) break;
        }
        CHECK(client.buffer().size() > big.size());  // the head and the whole body
        CHECK(client.buffer().rfind("HTTP/1.1 200", 0) == 0);
      });
  CHECK(ended);
}

TEST_CASE("http: an absolute-form target is routed by its path (RFC 9112 3.2.2)") {
  std::vector<std::string> seen;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/api", [&](http::Request& request, http::Response& response) {
          seen.push_back(std::string(request.path()) + "|" + std::string(request.query()));
          response.end("api");
        });
        server.handle("/", [&](http::Request& request, http::Response& response) {
          seen.push_back("root:" + std::string(request.path()));
          response.end("root");
        });
      },
      [&](http::Server&, uint16_t port) {
        CHECK(ask(port, "GET http://example.com/api/x?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
                  .body == "api");
        CHECK(ask(port, "GET HTTP://example.com:8080/api HTTP/1.1\r\nHost: example.com\r\n\r\n")
                  .body == "api");
        CHECK(ask(port, "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n").body ==
              "root");
        CHECK(ask(port, "GET http://example.com?a=b HTTP/1.1\r\nHost: example.com\r\n\r\n").body ==
              "root");
      });
  CHECK(seen == std::vector<std::string>{"/api/x|q=1", "/api|", "root:/", "root:/"});
}

TEST_CASE("http: OPTIONS * asks about the server: an empty 200, no handler runs") {
  int handled = 0;
  with_server(
      {},
      [&](http::Server& server) {
        server.handle("/", [&](http::Request&, http::Response& response) {
          ++handled;
          response.end("root");
        });
      },
      [&](http::Server&, uint16_t port) {
        Client client(port);
        CO_REQUIRE(client.ok());
        CO_REQUIRE(client.send("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"));
        Reply r = client.read();
        CHECK(r.status == 200);
        CHECK(r.get("Content-Length") == "0");
        CHECK(r.body.empty());
        // The connection goes on; "*" with another method is no resource either.
        CO_REQUIRE(client.send("GET * HTTP/1.1\r\nHost: t\r\n\r\n"));
        Reply other = client.read();
        CHECK(other.status >= 400);
      });
  CHECK(handled == 0);
}

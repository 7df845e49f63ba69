// The canned responses of the HTTP benchmark's ceiling servers (http_limit.cpp with epoll,
// http_limit_uring.cpp with io_uring): the same bytes and the same request counting for both,
// so that the two differ only in how they wait and move bytes.
//
// The response has what a real server's has, no more: Server, Date (rewritten in place once a
// second), Content-Type and Content-Length, so that the load generator (one wrk thread, the
// bottleneck of the fast runs: it parses every header) does the same work as against the
// others. On a connection whose first request line ends in "HTTP/1.0" (ab -k) every response
// also says `Connection: keep-alive`, without which an HTTP/1.0 client closes the connection:
// decided once per connection from its first read, not per request.
#pragma once

#include <cstddef>
#include <cstring>
#include <ctime>
#include <string_view>
#include <vector>

namespace canned_http {

inline constexpr std::string_view kHead =
    "HTTP/1.1 200 OK\r\n"
    "Server: limit\r\n"
    "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n";
inline constexpr std::string_view kKeepAlive = "Connection: keep-alive\r\n";
inline constexpr std::string_view kBody = "\r\nHello, World!";
inline constexpr size_t kDateOffset = sizeof "HTTP/1.1 200 OK\r\nServer: limit\r\nDate: " - 1;
inline constexpr size_t kDateLength = sizeof "Thu, 01 Jan 1970 00:00:00 GMT" - 1;
inline constexpr size_t kBatch = 256;  // responses in a canned buffer: one write pays this many

// kBatch copies of one response, back to back.
struct Canned {
  std::vector<char> bytes;
  size_t length = 0;  // of one response

  explicit Canned(bool keep_alive) {
    std::string_view parts[] = {kHead, keep_alive ? kKeepAlive : "", kBody};
    for (size_t i = 0; i < kBatch; ++i) {
      for (std::string_view part : parts) bytes.insert(bytes.end(), part.begin(), part.end());
    }
    length = bytes.size() / kBatch;
  }

  void set_date(const char* date) {
    for (size_t i = 0; i < kBatch; ++i) {
      std::memcpy(bytes.data() + i * length + kDateOffset, date, kDateLength);
    }
  }
};

inline Canned http11(false);
inline Canned http10(true);
inline time_t canned_second = -1;

inline void render_date(time_t now) {
  char date[kDateLength + 1];
  tm utc;
  gmtime_r(&now, &utc);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &utc);
  http11.set_date(date);
  http10.set_date(date);
  canned_second = now;
}

// The response for a connection whose first read is buffer[0, n).
inline const Canned* choose(const char* buffer, size_t n) {
  std::string_view first(buffer, n);
  size_t end = first.find("\r\n");
  if (end != std::string_view::npos && first.substr(0, end).ends_with("HTTP/1.0")) return &http10;
  return &http11;
}

// Request heads ended in buffer[0, n), continuing the match of the previous read (match: how
// much of "\r\n\r\n" the bytes read before end with).
inline size_t count_heads(int& match, const char* buffer, size_t n) {
  size_t heads = 0;
  int matched = match;
  for (size_t i = 0; i < n; ++i) {
    char ch = buffer[i];
    if (ch == '\r') {
      matched = matched == 2 ? 3 : 1;
    } else if (ch == '\n' && (matched == 1 || matched == 3)) {
      if (matched == 3) {
        ++heads;
        matched = 0;
      } else {
        matched = 2;
      }
    } else {
      matched = 0;
    }
  }
  match = matched;
  return heads;
}

}  // namespace canned_http

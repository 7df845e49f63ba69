// coring::http::Response and the response side of an Exchange: rendering heads and bodies into
// the connection's output, and sending it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>

#include "core/logging.hpp"
#include "http/exchange.hpp"

namespace coring::http {
namespace detail {
namespace {

// A response body this large is not copied into the output buffer: the gathered output goes
// first, then the body from the caller's memory.
constexpr size_t kCopyLimit = 64 * 1024;
// sendfile() moves a file in pieces this large, each with its own send_timeout.
constexpr uint64_t kSendPiece = 1024 * 1024;

// "HTTP/1.1 200 OK\r\n" for every code with a standard reason, rendered once.
const std::string& status_line(int code) {
  static const std::array<std::string, 500> lines = [] {
    std::array<std::string, 500> all;
    for (int code = 100; code < 600; ++code) {
      std::string_view reason = reason_phrase(code);
      all[static_cast<size_t>(code - 100)] =
          "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) + "\r\n";
    }
    return all;
  }();
  return lines[static_cast<size_t>(code - 100)];
}

void append_number(std::string& out, uint64_t value) {
  char digits[24];
  auto result = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, result.ptr);
}

void append_hex(std::string& out, uint64_t value) {
  char digits[24];
  auto result = std::to_chars(digits, digits + sizeof digits, value, 16);
  out.append(digits, result.ptr);
}

bool has_line_break(std::string_view text) noexcept {
  for (char c : text) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}

bool has_no_body(int status) noexcept {
  return status < 200 || status == 204 || status == 304;
}

}  // namespace

void Exchange::begin_response() noexcept {
  status = 200;
  reason.clear();
  header_block.clear();
  head_sent = false;
  ended = false;
  chunked = false;
  unframed = false;
  has_content_type = false;
  has_server = false;
  head_request = parser.is_head_method();
  header_views_ready = false;
}

void Exchange::append_head(int64_t content_length) {
  if (stopping()) close_after = true;
  if (reason.empty() && status < 600) {
    output += status_line(status);
  } else {
    output += "HTTP/1.1 ";
    append_number(output, static_cast<uint64_t>(status));
    output += ' ';
    output += reason.empty() ? reason_phrase(status) : std::string_view(reason);
    output += "\r\n";
  }
  if (!has_server) output += server_line;
  output += "Date: ";
  output += http_date_now();
  output += "\r\n";
  if (content_length >= 0) {
    output += "Content-Length: ";
    append_number(output, static_cast<uint64_t>(content_length));
    output += "\r\n";
  } else if (content_length == -1) {
    output += "Transfer-Encoding: chunked\r\n";
  }
  if (close_after) {
    output += "Connection: close\r\n";
  } else if (parser.version_minor() == 0) {
    output += "Connection: keep-alive\r\n";
  }
  output += header_block;
  output += "\r\n";
  head_sent = true;
}

bool Exchange::flush() {
  if (client_gone) {
    output.clear();
    return false;
  }
  if (output.empty()) return true;
  bool whole = send_bytes(output.data(), output.size());
  // As for request bodies: a connection does not keep a large response's buffer.
  if (output.capacity() > kCopyLimit * 4) std::string().swap(output);
  output.clear();
  if (!whole) {
    client_gone = true;
    close_after = true;
  }
  return whole;
}

bool Exchange::send_bytes(const char* data, size_t size) {
  // send_timeout bounds each wait for progress, not the whole response: a large body to a slow
  // reader is not cut off, one that stops reading is.
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = connection.send(data + sent, size - sent, options.send_timeout);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

namespace {

bool end_with_file_copy(Exchange& exchange, int file_fd, uint64_t offset, size_t length) {
  // Over TLS the kernel cannot send the file itself (coring does not use kernel TLS, see
  // coring/tls.hpp): it is read and encrypted in user space either way. So a small one is read
  // into the output behind its head, and both (with the pipelined responses gathered before
  // them) go out in one TLS write and one send, as nginx does, instead of two of each.
  std::string& output = exchange.output;
  const size_t body_at = output.size();
  output.resize(body_at + length);
  size_t got = 0;
  int error = 0;
  while (got < length) {
    ssize_t n = ::pread(file_fd, output.data() + body_at + got, length - got,
                        static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == length) return exchange.end_response();
  // The file shrank (or cannot be read) since its size was taken: the head promised bytes that
  // are not there. It goes out, then the close tells the client the body is incomplete.
  output.resize(body_at);
  coring::detail::log_format(
      LogLevel::notice, "sendfile of %zu bytes to connection#%ld failed after 0: %s", length,
      exchange.connection.id(), error != 0 ? std::strerror(error) : "the file shrank");
  exchange.close_after = true;
  exchange.flush();
  exchange.client_gone = true;
  exchange.ended = true;
  exchange.finish();
  return false;
}

}  // namespace

bool Exchange::end_response() {
  ended = true;
  finish();
  // Gathered while more pipelined requests wait in the input: their responses go out together.
  // Otherwise now, so that a handler working on after end() does not hold its response back.
  if (parsed < filled && output.size() < kCopyLimit) return !client_gone;
  return flush();
}

}  // namespace detail

bool Response::status(int code, std::string_view reason) {
  detail::Exchange* exchange = exchange_;
  if (exchange->head_sent || code < 200 || code > 999 || detail::has_line_break(reason)) {
    return false;
  }
  exchange->status = code;
  exchange->reason.assign(reason);
  return true;
}

bool Response::header(std::string_view name, std::string_view value) {
  detail::Exchange* exchange = exchange_;
  if (exchange->head_sent || !detail::is_token(name) || detail::has_line_break(value)) {
    return false;
  }
  if (detail::same_name(name, "content-length") || detail::same_name(name, "transfer-encoding") ||
      detail::same_name(name, "date") || detail::same_name(name, "connection")) {
    return false;
  }
  if (detail::same_name(name, "content-type")) exchange->has_content_type = true;
  if (detail::same_name(name, "server")) exchange->has_server = true;
  std::string& block = exchange->header_block;
  block.append(name);
  block += ": ";
  block.append(value);
  block += "\r\n";
  return true;
}

bool Response::write(std::string_view chunk) {
  detail::Exchange* exchange = exchange_;
  if (exchange->ended || exchange->client_gone) return false;
  if (!exchange->head_sent) {
    if (detail::has_no_body(exchange->status)) {
      exchange->unframed = true;  // a 204 or 304 has no body to frame; chunks are dropped
      exchange->append_head(-2);
    } else if (exchange->parser.version_minor() == 0) {
      // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
      exchange->unframed = true;
      exchange->close_after = true;
      exchange->append_head(-2);
    } else {
      exchange->chunked = true;
      exchange->append_head(-1);
    }
  }
  if (!chunk.empty() && !exchange->head_request && !detail::has_no_body(exchange->status)) {
    std::string& output = exchange->output;
    if (exchange->chunked) {
      detail::append_hex(output, chunk.size());
      output += "\r\n";
      output.append(chunk);
      output += "\r\n";
    } else {
      output.append(chunk);
    }
  }
  return exchange->flush();
}

bool Response::end(std::string_view body) {
  detail::Exchange* exchange = exchange_;
  if (exchange->ended) return false;
  const bool send_body = !exchange->head_request && !detail::has_no_body(exchange->status);
  std::string& output = exchange->output;
  if (exchange->chunked || exchange->unframed) {
    if (exchange->client_gone) {
      exchange->ended = true;
      exchange->finish();
      return false;
    }
    if (send_body && exchange->chunked) {
      if (!body.empty()) {
        detail::append_hex(output, body.size());
        output += "\r\n";
        output.append(body);
        output += "\r\n";
      }
      output += "0\r\n\r\n";
    } else if (send_body) {
      output.append(body);
    }
    exchange->ended = true;
    exchange->finish();
    return exchange->flush();
  }
  if (detail::has_no_body(exchange->status)) {
    exchange->append_head(-2);
  } else {
    exchange->append_head(static_cast<int64_t>(body.size()));
  }
  if (send_body && body.size() > detail::kCopyLimit) {
    // Large: the head (and what was gathered before it) first, then the body where it is.
    bool sent = exchange->flush() && !exchange->client_gone;
    if (sent) {
      sent = exchange->send_bytes(body.data(), body.size());
      if (!sent) {
        exchange->client_gone = true;
        exchange->close_after = true;
      }
    }
    exchange->ended = true;
    exchange->finish();
    return sent;
  }
  if (send_body) output.append(body);
  return exchange->end_response();
}

bool Response::sendfile(const std::string& path) {
  detail::Exchange* exchange = exchange_;
  if (exchange->ended || exchange->head_sent) return false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat status {};
  if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd);
    return false;
  }
  if (!exchange->has_content_type) header("Content-Type", detail::content_type_for(path));
  bool sent = sendfile(fd, 0, static_cast<uint64_t>(status.st_size));
  ::close(fd);
  return sent;
}

bool Response::sendfile(int file_fd, uint64_t offset, uint64_t length) {
  detail::Exchange* exchange = exchange_;
  if (exchange->ended || exchange->head_sent) return false;
  struct stat status {};
  if (::fstat(file_fd, &status) != 0 || !S_ISREG(status.st_mode) ||
      offset > static_cast<uint64_t>(status.st_size) ||
      length > static_cast<uint64_t>(status.st_size) - offset) {
    return false;
  }
  const bool send_body = !exchange->head_request && !detail::has_no_body(exchange->status);
  exchange->append_head(detail::has_no_body(exchange->status) ? -2 : static_cast<int64_t>(length));
  if (!send_body || length == 0) return exchange->end_response();
  if (length <= detail::kCopyLimit && exchange->connection.is_tls()) {
    return detail::end_with_file_copy(*exchange, file_fd, offset, static_cast<size_t>(length));
  }
  bool sent = exchange->flush();
  if (sent) {
    // In pieces, each with send_timeout of its own: the timeout is for a client that stops
    // reading, not for a large file.
    uint64_t done = 0;
    ssize_t n = 1;
    while (done < length && n > 0) {
      size_t piece = static_cast<size_t>(std::min<uint64_t>(length - done, detail::kSendPiece));
      n = exchange->connection.sendfile(file_fd, static_cast<int64_t>(offset + done), piece,
                                        exchange->options.send_timeout);
      if (n > 0) done += static_cast<uint64_t>(n);
      if (n >= 0 && static_cast<size_t>(n) < piece) break;
    }
    sent = done == length;
    if (!sent) {
      // Gone, too slow, or the file shrank under us: the response cannot be completed.
      int error = exchange->connection.error().value();
      coring::detail::log_format(
          LogLevel::notice, "sendfile of %llu bytes to connection#%ld failed after %llu: %s",
          static_cast<unsigned long long>(length), exchange->connection.id(),
          static_cast<unsigned long long>(done),
          error != 0 ? std::string(exchange->connection.error_message()).c_str()
                     : "the file shrank");
      exchange->client_gone = true;
      exchange->close_after = true;
    }
  }
  exchange->ended = true;
  exchange->finish();
  return sent;
}

bool Response::head_sent() const noexcept {
  return exchange_->head_sent;
}

bool Response::ended() const noexcept {
  return exchange_->ended;
}

}  // namespace coring::http

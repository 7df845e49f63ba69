// One HTTP connection's state inside the library: its input buffer and parser, the request
// being answered and the response being built, and the output gathered for one write.
// Request and Response (coring/http_server.hpp) are views of it; the server's connection loop
// (http/server.cpp) drives it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coring/http_server.hpp"
#include "http/http_text.hpp"
#include "http/message_parser.hpp"

namespace coring::http {

class ServerCore;

namespace detail {

struct Exchange {
  Exchange(ServerCore& server, const ServerOptions& options, Connection& connection);

  ServerCore& server;
  const ServerOptions& options;
  Connection& connection;

  // Input: bytes [0, filled) of input are valid, [parsed, filled) not parsed yet.
  MessageParser parser{HTTP_REQUEST};
  std::vector<char> input;
  size_t parsed = 0;
  size_t filled = 0;
  long coroutine = 0;  // the one serving the connection
  bool idle = false;   // waiting for the first byte of a request: shutdown wakes it

  std::string_view server_line;  // "Server: coring\r\n", or empty

  // Output gathered for one write (the responses of a pipelined batch).
  std::string output;
  bool client_gone = false;  // a write failed: later ones fail at once
  bool close_after = false;  // the connection ends after this response

  // The response in progress (reset by begin_response()).
  int status = 200;
  std::string reason;        // empty: the standard one
  std::string header_block;  // "Name: value\r\n"..., as added
  bool head_sent = false;
  bool ended = false;
  bool chunked = false;   // write() started a chunked body
  bool unframed = false;  // write() to an HTTP/1.0 client: the body ends at close
  bool has_content_type = false;
  bool has_server = false;
  bool head_request = false;                 // HEAD: no body goes out
  mutable std::vector<Header> header_views;  // Request::headers(), built on first use
  mutable bool header_views_ready = false;

  const char* base() const noexcept { return input.data(); }
  void begin_response() noexcept;
  // The status line and headers into output; framing: the Content-Length value, or -1 for a
  // chunked body, or -2 for none (204, 304, an unframed HTTP/1.0 body).
  void append_head(int64_t content_length);
  // Sends output; false (and client_gone) when the client is gone.
  bool flush();
  // Sends bytes, waiting at most send_timeout for each bit of progress; false on failure.
  bool send_bytes(const char* data, size_t size);
  // A response ended by end() or sendfile() without a body: counts it and sends the output,
  // unless more pipelined requests wait in the input (then their responses join it).
  bool end_response();
  // The end of a response: counts it.
  void finish() noexcept;
  // The server is stopping: this response closes the connection.
  bool stopping() const noexcept;

  Exchange* next = nullptr;  // the server's list of open connections
  Exchange* previous = nullptr;
};

}  // namespace detail
}  // namespace coring::http

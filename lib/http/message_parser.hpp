// The llhttp adapter, shared by the server (requests) and the client (responses): parses HTTP/1.x
// messages out of a connection's input buffer, one at a time, in llhttp's strict mode (no lenient
// flag is ever set).
//
// The parser keeps no pointers into the buffer between calls: the request line and headers are
// offsets (Span) into it, so the caller may grow or compact the buffer between parse() calls
// (shift() moves the offsets with it). A field split across two reads arrives as two adjacent
// pieces and is joined. The body is copied out, de-chunked, into body (its capacity is kept from
// one request to the next: no allocation in steady state), or, with a body sink (the client's
// decoding and streaming), handed to the sink piece by piece, straight from the buffer.
//
// parse() stops at three points: the end of the data, the end of a head (head_complete: the
// caller checks limits and Expect before any body byte is read), and the end of a message
// (message_complete: the server answers it before parsing the next pipelined one).
//
// What differs by direction: the request line (url, method(), head_start) and error_status()
// are a request's; status_code(), skip_body() and finish() serve the client, which also decides
// which responses have no body (HEAD, 1xx, 204, 304: llhttp 8 would read a Content-Length body
// after a 204).
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace coring::http::detail {

struct Span {
  uint32_t offset = 0;
  uint32_t length = 0;
  std::string_view in(const char* base) const noexcept { return {base + offset, length}; }
};

struct HeaderSpan {
  Span name;
  Span value;
};

class MessageParser {
 public:
  enum class Event { need_more, head_complete, message_complete, error };
  // Takes one piece of body data; false stops the parse with Event::error.
  using BodySink = bool (*)(void* context, const char* data, size_t size);

  explicit MessageParser(llhttp_type_t type);
  MessageParser(const MessageParser&) = delete;
  MessageParser& operator=(const MessageParser&) = delete;

  // Parses base[from, end). *stopped: where it stopped (end, unless an event stopped it
  // earlier; for error, where the error is). max_body: a body growing past it is an error
  // (status() 413); not checked with a body sink (the sink decides).
  // max_framing: the bytes a chunked body may spend on anything but data (sizes, extensions,
  // trailers); past it, or with chunk extensions longer than max_extensions, an error (400).
  Event parse(const char* base, size_t from, size_t end, size_t max_body, size_t max_framing,
              size_t max_extensions, size_t* stopped);
  // After head_complete or message_complete: go on with the next parse().
  void resume() noexcept { llhttp_resume(&parser_); }
  // Forgets the message in progress: the next parse() starts a new one (the client, after an
  // interim response and before each request).
  void reset() noexcept;
  // The end of the stream: completes a body that lasts until the close. message_complete when it
  // did, need_more when no message had begun, error when one was cut short.
  Event finish() noexcept;
  // With a sink, body data goes to it instead of into body.
  void set_body_sink(BodySink sink, void* context) noexcept {
    sink_ = sink;
    sink_context_ = context;
  }

  // The buffer's bytes before `by` were dropped: move every offset down.
  void shift(uint32_t by) noexcept;

  // Between message_begin and message_complete.
  bool in_message() const noexcept { return in_message_; }
  // Between message_begin and head_complete.
  bool in_head() const noexcept { return in_message_ && !head_done_; }

  // The current request (valid from head_complete to the next message).
  std::string_view method() const noexcept;
  int version_minor() const noexcept { return parser_.http_minor; }
  bool version_ok() const noexcept { return parser_.http_major == 1; }
  bool keep_alive() const noexcept { return llhttp_should_keep_alive(&parser_) != 0; }
  bool upgrade() const noexcept { return parser_.upgrade != 0; }
  bool has_body() const noexcept;  // a Content-Length above 0, or chunked
  uint64_t content_length() const noexcept { return parser_.content_length; }
  bool chunked() const noexcept { return (parser_.flags & F_CHUNKED) != 0; }
  bool has_transfer_encoding() const noexcept { return (parser_.flags & F_TRANSFER_ENCODING) != 0; }
  // Between requests: a large body's buffer is given back.
  void release_large_body() noexcept;
  bool is_head_method() const noexcept { return parser_.method == HTTP_HEAD; }
  // A response's status code (from head_complete on).
  int status_code() const noexcept { return parser_.status_code; }
  int version_major() const noexcept { return parser_.http_major; }
  // After head_complete, before resume(): the message has no body whatever its head says.
  void skip_body() noexcept { parser_.flags |= F_SKIPBODY; }
  // A response whose body lasts until the connection closes (no length, not chunked).
  bool body_until_close() const noexcept { return llhttp_message_needs_eof(&parser_) != 0; }
  // The body data parsed since the message began (into body or through the sink).
  uint64_t body_received() const noexcept { return body_received_; }
  Span url;
  std::vector<HeaderSpan> headers;  // the head's, then (until the caller drops them) trailers
  size_t head_header_count = 0;     // how many of headers are the head's
  uint32_t body_scan_from = 0;      // where the chunked framing not yet checked begins
  std::string body;
  uint32_t head_start = 0;  // where the request line begins

  // After error: the status to answer (400, 413, 501...) and llhttp's reason; sink_refused()
  // when the body sink stopped it.
  int error_status() const noexcept { return error_status_; }
  const char* error_reason() const noexcept { return error_reason_; }
  bool sink_refused() const noexcept { return sink_refused_; }

 private:
  static int on_message_begin(llhttp_t* parser);
  static int on_url(llhttp_t* parser, const char* at, size_t length);
  static int on_header_field(llhttp_t* parser, const char* at, size_t length);
  static int on_header_value(llhttp_t* parser, const char* at, size_t length);
  static int on_header_field_complete(llhttp_t* parser);
  static int on_headers_complete(llhttp_t* parser);
  static int on_body(llhttp_t* parser, const char* at, size_t length);
  static int on_chunk_extension(llhttp_t* parser, const char* at, size_t length);
  static int on_message_complete(llhttp_t* parser);
  static const llhttp_settings_t kSettings;

  void extend(Span& span, const char* at, size_t length) noexcept;

  llhttp_t parser_{};
  const char* base_ = nullptr;
  BodySink sink_ = nullptr;
  void* sink_context_ = nullptr;
  bool sink_refused_ = false;
  uint64_t body_received_ = 0;
  size_t max_body_ = 0;
  bool in_message_ = false;
  bool head_done_ = false;
  bool body_too_large_ = false;
  bool framing_too_large_ = false;
  bool bare_lf_ = false;
  size_t max_extensions_ = 0;
  size_t framing_bytes_ = 0;
  size_t extension_bytes_ = 0;
  bool field_done_ = false;  // the last header's name is complete
  Event stopped_at_ = Event::need_more;
  int error_status_ = 0;
  const char* error_reason_ = "";
};

}  // namespace coring::http::detail

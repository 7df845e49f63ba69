// The request side of the llhttp adapter: parses HTTP/1.x requests out of a connection's input
// buffer, one message at a time, in llhttp's strict mode (no lenient flag is ever set).
//
// The parser keeps no pointers into the buffer between calls: the request line and headers are
// offsets (Span) into it, so the caller may grow or compact the buffer between parse() calls
// (shift() moves the offsets with it). A field split across two reads arrives as two adjacent
// pieces and is joined. The body is copied out, de-chunked, into body (its capacity is kept from
// one request to the next: no allocation in steady state).
//
// parse() stops at three points: the end of the data, the end of a head (head_complete: the
// caller checks limits and Expect before any body byte is read), and the end of a message
// (message_complete: the caller answers it before parsing the next pipelined one).
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

class RequestParser {
 public:
  enum class Event { need_more, head_complete, message_complete, error };

  RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Parses base[from, end). *stopped: where it stopped (end, unless an event stopped it
  // earlier; for error, where the error is). max_body: a body growing past it is an error
  // (status() 413).
  // max_framing: the bytes a chunked body may spend on anything but data (sizes, extensions,
  // trailers); past it, or with chunk extensions longer than max_extensions, an error (400).
  Event parse(const char* base, size_t from, size_t end, size_t max_body, size_t max_framing,
              size_t max_extensions, size_t* stopped);
  // After head_complete or message_complete: go on with the next parse().
  void resume() noexcept { llhttp_resume(&parser_); }

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
  Span url;
  std::vector<HeaderSpan> headers;  // the head's, then (until the caller drops them) trailers
  size_t head_header_count = 0;     // how many of headers are the head's
  uint32_t body_scan_from = 0;      // where the chunked framing not yet checked begins
  std::string body;
  uint32_t head_start = 0;  // where the request line begins

  // After error: the status to answer (400, 413, 501...) and llhttp's reason.
  int error_status() const noexcept { return error_status_; }
  const char* error_reason() const noexcept { return error_reason_; }

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

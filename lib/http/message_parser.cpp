#include "http/message_parser.hpp"

#include "http/http_text.hpp"

namespace coring::http::detail {
namespace {

constexpr size_t kKeptBodyCapacity = 64 * 1024;

MessageParser* self(llhttp_t* parser) {
  return static_cast<MessageParser*>(parser->data);
}

// The status for a request llhttp refused.
int status_for(llhttp_errno_t error) {
  switch (error) {
    case HPE_INVALID_METHOD:
      return 501;
    case HPE_INVALID_VERSION:
      return 505;
    default:
      return 400;
  }
}

}  // namespace

const llhttp_settings_t MessageParser::kSettings = [] {
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_message_begin = &MessageParser::on_message_begin;
  settings.on_url = &MessageParser::on_url;
  settings.on_header_field = &MessageParser::on_header_field;
  settings.on_header_value = &MessageParser::on_header_value;
  settings.on_header_field_complete = &MessageParser::on_header_field_complete;
  settings.on_headers_complete = &MessageParser::on_headers_complete;
  settings.on_body = &MessageParser::on_body;
  settings.on_chunk_extension_name = &MessageParser::on_chunk_extension;
  settings.on_chunk_extension_value = &MessageParser::on_chunk_extension;
  settings.on_message_complete = &MessageParser::on_message_complete;
  return settings;
}();

MessageParser::MessageParser(llhttp_type_t type) {
  llhttp_init(&parser_, type, &kSettings);
  parser_.data = this;
}

void MessageParser::reset() noexcept {
  llhttp_reset(&parser_);  // keeps the type, the settings and data
  in_message_ = false;
  head_done_ = false;
}

MessageParser::Event MessageParser::finish() noexcept {
  if (!in_message_) return Event::need_more;
  stopped_at_ = Event::need_more;
  llhttp_errno_t result = llhttp_finish(&parser_);
  // on_message_complete pauses, which llhttp_finish passes on as HPE_PAUSED.
  if ((result == HPE_OK || result == HPE_PAUSED) && stopped_at_ == Event::message_complete) {
    return Event::message_complete;
  }
  error_reason_ =
      result == HPE_OK ? "the message was cut short" : llhttp_get_error_reason(&parser_);
  error_status_ = 400;
  return Event::error;
}

MessageParser::Event MessageParser::parse(const char* base, size_t from, size_t end,
                                          size_t max_body, size_t max_framing,
                                          size_t max_extensions, size_t* stopped) {
  base_ = base;
  max_body_ = max_body;
  max_extensions_ = max_extensions;
  stopped_at_ = Event::need_more;
  const bool in_body = in_message_ && head_done_;
  const uint64_t body_before = body_received_;
  llhttp_errno_t result = llhttp_execute(&parser_, base + from, end - from);
  if (result == HPE_OK) {
    *stopped = end;
  } else {
    const char* position = llhttp_get_error_pos(&parser_);
    *stopped = position != nullptr ? static_cast<size_t>(position - base) : end;
  }
  if (in_body && result != HPE_USER) {
    // Chunk sizes (leading zeros have no limit in llhttp), extensions and trailers: bounded,
    // or a client could stream framing forever within a small body (Node's CVE-2024-22019).
    framing_bytes_ += (*stopped - from) - static_cast<size_t>(body_received_ - body_before);
    if (framing_bytes_ > max_framing) {
      error_reason_ = "chunked framing too long";
      error_status_ = 400;
      return Event::error;
    }
  }
  if (result == HPE_OK) return Event::need_more;
  if (result == HPE_PAUSED) return stopped_at_;
  if (result == HPE_PAUSED_UPGRADE) {
    // An Upgrade request is answered like any other (no protocol switch is offered); the
    // connection closes after it, as the bytes after it belong to the other protocol.
    return Event::message_complete;
  }
  error_reason_ = framing_too_large_ ? "chunk extensions too long"
                  : bare_lf_         ? "a bare LF in chunked framing"
                                     : llhttp_get_error_reason(&parser_);
  error_status_ = body_too_large_                    ? 413
                  : (framing_too_large_ || bare_lf_) ? 400
                                                     : status_for(result);
  return Event::error;
}

void MessageParser::shift(uint32_t by) noexcept {
  url.offset -= by;
  for (HeaderSpan& header : headers) {
    header.name.offset -= by;
    header.value.offset -= by;
  }
  head_start -= by;
}

void MessageParser::release_large_body() noexcept {
  if (body.capacity() > kKeptBodyCapacity) std::string().swap(body);
}

std::string_view MessageParser::method() const noexcept {
  return llhttp_method_name(static_cast<llhttp_method_t>(parser_.method));
}

bool MessageParser::has_body() const noexcept {
  return chunked() || ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > 0);
}

void MessageParser::extend(Span& span, const char* at, size_t length) noexcept {
  auto offset = static_cast<uint32_t>(at - base_);
  if (span.length == 0) {
    span.offset = offset;
    span.length = static_cast<uint32_t>(length);
  } else {
    // The next piece of a field that a read split: the buffer keeps bytes in place between
    // parses, so it follows the previous piece directly.
    span.length = offset + static_cast<uint32_t>(length) - span.offset;
  }
}

int MessageParser::on_message_begin(llhttp_t* parser) {
  MessageParser* me = self(parser);
  me->in_message_ = true;
  me->head_done_ = false;
  me->body_too_large_ = false;
  me->framing_too_large_ = false;
  me->bare_lf_ = false;
  me->framing_bytes_ = 0;
  me->extension_bytes_ = 0;
  me->body_received_ = 0;
  me->sink_refused_ = false;
  me->head_header_count = 0;
  me->field_done_ = false;
  me->url = {};
  me->headers.clear();
  // Capacity is kept for the next request, but not a large body's: ten thousand idle
  // connections must not each hold the largest body they ever received.
  if (me->body.capacity() > kKeptBodyCapacity) std::string().swap(me->body);
  me->body.clear();
  return 0;
}

int MessageParser::on_url(llhttp_t* parser, const char* at, size_t length) {
  MessageParser* me = self(parser);
  bool first = me->url.length == 0;
  me->extend(me->url, at, length);
  if (first) {
    // The request line starts with the method and one space (strict mode allows no other).
    size_t method_length = me->method().size() + 1;
    me->head_start =
        me->url.offset >= method_length ? me->url.offset - static_cast<uint32_t>(method_length) : 0;
  }
  return 0;
}

int MessageParser::on_header_field(llhttp_t* parser, const char* at, size_t length) {
  MessageParser* me = self(parser);
  if (me->headers.empty() || me->field_done_) {
    me->headers.emplace_back();
    me->field_done_ = false;
  }
  me->extend(me->headers.back().name, at, length);
  return 0;
}

int MessageParser::on_header_value(llhttp_t* parser, const char* at, size_t length) {
  MessageParser* me = self(parser);
  if (me->headers.empty()) return 0;
  me->extend(me->headers.back().value, at, length);
  return 0;
}

int MessageParser::on_header_field_complete(llhttp_t* parser) {
  // The next field piece starts a new header, even when this one's value is empty (llhttp
  // does not call on_header_value for an empty value).
  self(parser)->field_done_ = true;
  return 0;
}

int MessageParser::on_headers_complete(llhttp_t* parser) {
  MessageParser* me = self(parser);
  // llhttp drops the whitespace before a value, not after it (RFC 9112 5: neither is part of
  // the value).
  for (HeaderSpan& header : me->headers) {
    const char* value = me->base_ + header.value.offset;
    while (header.value.length > 0 &&
           (value[header.value.length - 1] == ' ' || value[header.value.length - 1] == '\t')) {
      --header.value.length;
    }
  }
  me->head_done_ = true;
  me->head_header_count = me->headers.size();
  me->stopped_at_ = Event::head_complete;
  return HPE_PAUSED;  // the caller checks the head before any body byte is parsed
}

int MessageParser::on_body(llhttp_t* parser, const char* at, size_t length) {
  MessageParser* me = self(parser);
  if (me->sink_ != nullptr) {
    if (has_bare_lf(me->base_ + me->body_scan_from, at)) {
      me->bare_lf_ = true;
      return -1;
    }
    me->body_scan_from = static_cast<uint32_t>(at - me->base_ + length);
    me->body_received_ += length;
    if (!me->sink_(me->sink_context_, at, length)) {
      me->sink_refused_ = true;
      return -1;
    }
    return 0;
  }
  if (me->body.size() + length > me->max_body_) {
    me->body_too_large_ = true;
    return -1;
  }
  // The framing since the last data (CRLF, a chunk size line): llhttp takes a bare LF there.
  if (has_bare_lf(me->base_ + me->body_scan_from, at)) {
    me->bare_lf_ = true;
    return -1;
  }
  me->body.append(at, length);
  me->body_received_ += length;
  me->body_scan_from = static_cast<uint32_t>(at - me->base_ + length);
  return 0;
}

int MessageParser::on_chunk_extension(llhttp_t* parser, const char* /*at*/, size_t length) {
  MessageParser* me = self(parser);
  me->extension_bytes_ += length;
  if (me->extension_bytes_ > me->max_extensions_) {
    me->framing_too_large_ = true;
    return -1;
  }
  return 0;
}

int MessageParser::on_message_complete(llhttp_t* parser) {
  MessageParser* me = self(parser);
  me->in_message_ = false;
  me->stopped_at_ = Event::message_complete;
  return HPE_PAUSED;
}

}  // namespace coring::http::detail

// One response read by an http::Client (see client_core.hpp): the input buffer, the parser in
// response mode, the checks of the head, where the body goes, and whether the connection may be
// reused afterwards.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/scheduler.hpp"
#include "http/client_core.hpp"
#include "http/http_text.hpp"

namespace coring::http::detail {
namespace {

// Most response heads fit; a larger one grows the buffer up to max_header_size (and back down
// at the next request when it had grown large).
constexpr size_t kInputSize = 4096;
constexpr size_t kLargeInput = 64 * 1024;
// While a body streams through: the room each read gets at least (fewer system calls per byte
// than 4 KiB reads), and what a read asks for when it grows the buffer.
constexpr size_t kBodyReadMinimum = 8 * 1024;
constexpr size_t kBodyRead = 32 * 1024;
// A stored body's capacity is kept for the next response up to this (a client that fetched a
// large file once does not hold it for good).
constexpr size_t kKeptBodyCapacity = 1024 * 1024;
// What is reserved ahead for a stored body whose Content-Length is known (not all of a claimed
// length: a server could claim 256 MiB and send nothing).
constexpr size_t kReserveAhead = 4 * 1024 * 1024;

}  // namespace

std::optional<std::string_view> ClientCore::find(size_t from, size_t to,
                                                 std::string_view name) const noexcept {
  const char* base = input.data();
  for (size_t i = from; i < to && i < parser.headers.size(); ++i) {
    const HeaderSpan& field = parser.headers[i];
    if (same_name(field.name.in(base), name)) return field.value.in(base);
  }
  return std::nullopt;
}

void ClientCore::begin_response() noexcept {
  status = 0;
  error = 0;
  error_text.clear();
  if (body.capacity() > kKeptBodyCapacity) std::string().swap(body);
  body.clear();
  parser.headers.clear();
  parser.head_header_count = 0;
  header_views_ready = false;
  callback_exception = nullptr;
}

bool ClientCore::read_response(const Hop& hop, bool may_follow, bool* received_any) {
  begin_response();
  parser.reset();
  parser.set_body_sink(&ClientCore::take_body, this);
  if (input.size() < kInputSize || input.size() > kLargeInput) {
    input.resize(kInputSize);
    input.shrink_to_fit();
  }
  parsed = filled = head_end = 0;
  head_request = hop.method == "HEAD";
  interim = false;
  interim_count = 0;
  decoding = false;
  body_mode = BodyMode::store;
  body_error = 0;
  body_error_text = nullptr;
  following = false;
  redirect_body_read = 0;
  redirect_body_left = false;
  // Bounds the non-data bytes of a chunked body (sizes, extensions, trailers) when the body
  // itself is bounded; a streamed body is bounded by the timeout only.
  const size_t max_framing =
      options.on_body
          ? SIZE_MAX
          : std::max(options.max_body_size, options.max_body_size + options.max_header_size);
  bool parse_again = false;  // after a head, the parser has more to say even with no byte left
  for (;;) {
    if (parsed == filled && !parse_again) {
      if (!make_room()) return false;
      ssize_t received =
          socket.recv(input.data() + filled, input.size() - filled, remaining(deadline_ns));
      if (received < 0) {
        int reason = socket.error().value();
        if (reason == ETIMEDOUT)
          return fail(-2, ETIMEDOUT, "the request timed out waiting for the response");
        std::string text = "receiving the response failed: ";
        text.append(socket.error_message());
        return fail(-3, reason, text);
      }
      if (received == 0) {
        // The end of a body that lasts until the close is the end of the response.
        if (parser.in_message() && !parser.in_head() && parser.body_until_close() &&
            parser.finish() == MessageParser::Event::message_complete) {
          return complete_response();
        }
        return fail(-3, ECONNRESET,
                    *received_any ? "the server closed the connection before the response was "
                                    "complete"
                                  : "the server closed the connection without a response");
      }
      filled += static_cast<size_t>(received);
      *received_any = true;
    }
    parse_again = false;
    size_t stopped = parsed;
    auto event = parser.parse(input.data(), parsed, filled, SIZE_MAX, max_framing,
                              options.max_header_size, &stopped);
    if (callback_exception) std::rethrow_exception(callback_exception);
    parsed = stopped;
    switch (event) {
      case MessageParser::Event::need_more:
        if (parser.in_head() && filled > options.max_header_size) {
          return fail(-3, EMSGSIZE, "the response head is larger than max_header_size");
        }
        break;
      case MessageParser::Event::head_complete:
        head_end = parsed;
        if (!accept_head(hop, may_follow)) return false;
        if (redirect_body_left) return leave_redirect_body();
        parser.body_scan_from = static_cast<uint32_t>(head_end);
        parser.resume();
        parse_again = true;
        break;
      case MessageParser::Event::message_complete:
        if (!interim) return complete_response();
        drop_interim_response();
        break;
      case MessageParser::Event::error:
        if (redirect_body_left) return leave_redirect_body();  // deliver() stopped it
        if (body_error != 0) return fail(-3, body_error, body_error_text);
        return fail(-3, EBADMSG, std::string("a malformed response: ") + parser.error_reason());
    }
  }
}

// An interim (1xx) response is over: what follows it starts at the front again.
void ClientCore::drop_interim_response() noexcept {
  std::memmove(input.data(), input.data() + parsed, filled - parsed);
  filled -= parsed;
  parsed = 0;
  head_end = 0;
  interim = false;
  parser.reset();
  parser.headers.clear();
  parser.head_header_count = 0;
}

// Makes room for the next read. The head, while it arrives, stays at the front and the buffer
// grows for a long one (the limit is checked as it is parsed). In a body, the body's bytes were
// handed out as they were parsed: only the head (the views of header()) and the trailer fields
// begun so far stay, and the rest of the buffer is reused.
bool ClientCore::make_room() {
  if (!parser.in_message() || parser.in_head()) {
    if (filled == input.size()) input.resize(input.size() * 2);
    header_views_ready = false;
    return true;
  }
  char* base = input.data();
  // The framing about to be dropped is checked first (llhttp takes a bare LF there).
  if (has_bare_lf(base + parser.body_scan_from, base + filled)) {
    return fail(-3, EBADMSG, "a bare LF in the chunked framing");
  }
  const bool ends_with_cr = filled > 0 && base[filled - 1] == '\r';
  size_t trailer_start = filled;
  for (size_t i = parser.head_header_count; i < parser.headers.size(); ++i) {
    trailer_start = std::min<size_t>(trailer_start, parser.headers[i].name.offset);
  }
  const size_t trailer_bytes = filled - trailer_start;
  if (trailer_bytes > 0 && trailer_start > head_end) {
    std::memmove(base + head_end, base + trailer_start, trailer_bytes);
    auto moved = static_cast<uint32_t>(trailer_start - head_end);
    for (size_t i = parser.head_header_count; i < parser.headers.size(); ++i) {
      HeaderSpan& field = parser.headers[i];
      field.name.offset -= moved;
      if (field.value.length > 0) field.value.offset -= moved;
    }
  }
  filled = parsed = head_end + trailer_bytes;
  parser.body_scan_from = static_cast<uint32_t>(head_end);
  if (trailer_bytes == 0 && ends_with_cr) {
    // A CRLF that a read split: its CR stays, so that the LF after it is not a bare one.
    base[filled] = '\r';
    parsed = ++filled;
  }
  if (trailer_bytes > options.max_header_size) {
    return fail(-3, EMSGSIZE, "the response's trailer fields are larger than max_header_size");
  }
  if (input.size() - filled < kBodyReadMinimum) {
    input.resize(filled + kBodyRead);
    header_views_ready = false;
  }
  return true;
}

bool ClientCore::accept_head(const Hop& hop, bool may_follow) {
  if (head_end > options.max_header_size) {
    return fail(-3, EMSGSIZE, "the response head is larger than max_header_size");
  }
  const char* base = input.data();
  // llhttp also reads RTSP/1.0 and ICE/1.0 status lines.
  if (parser.version_major() != 1 ||
      std::string_view(base, std::min<size_t>(head_end, 7)) != "HTTP/1.") {
    return fail(-3, EBADMSG, "a malformed response: not HTTP/1.x");
  }
  const int code = parser.status_code();
  if (code < 100) return fail(-3, EBADMSG, "a malformed response: a status code below 100");
  if (code == 101) {
    return fail(-3, EBADMSG,
                "a malformed response: 101 Switching Protocols, which the client did not ask for");
  }
  // What llhttp 8 lets through even in strict mode (as the server checks requests).
  if (has_bare_lf(base, base + head_end)) {
    return fail(-3, EBADMSG, "a malformed response: a bare LF in its head");
  }
  for (const HeaderSpan& field : parser.headers) {
    if (!field_is_acceptable(field.name.in(base), field.value.in(base))) {
      return fail(-3, EBADMSG, "a malformed response: a bad header field");
    }
  }
  if (code < 200) {  // 100 Continue, 102, 103 Early Hints...: skipped, never the answer
    // A few at most (Go allows 5): a server that sends them forever would hold the request
    // until its timeout.
    if (++interim_count > kMaxInterimResponses) {
      return fail(-3, EBADMSG, "a malformed response: too many 1xx informational responses");
    }
    interim = true;
    parser.skip_body();
    return true;
  }
  status = code;
  header_views_ready = false;
  // Before any body byte: it is dropped if the redirect is followed, the answer's if not.
  if (!decide_redirect(hop, may_follow)) return false;
  // RFC 9112 6.3: a response to HEAD, and 204 and 304, end with their head.
  if (head_request || code == 204 || code == 304) {
    parser.skip_body();
    return true;
  }
  if (following) {
    body_mode = BodyMode::discard;
    // A body announced longer than is worth reading is not waited for (a server could announce
    // a gigabyte, or send none of it); the connection goes with it (see deliver() for the rest).
    if (!parser.chunked() && parser.content_length() > kRedirectBodyRead) {
      redirect_body_left = true;
    }
    return true;
  }
  body_mode = options.on_body ? BodyMode::stream : BodyMode::store;
  if (options.decompress) {
    if (std::optional<std::string_view> coding = header("content-encoding")) {
      ContentDecoder::Coding kind = ContentDecoder::coding_of(*coding);
      if (kind != ContentDecoder::Coding::none) {
        decoder.start(kind);
        decoding = true;
        // The body handed out is not what these describe any more (Go drops them too).
        auto& fields = parser.headers;
        auto end = std::remove_if(fields.begin(), fields.begin() + parser.head_header_count,
                                  [base](const HeaderSpan& field) {
                                    std::string_view name = field.name.in(base);
                                    return same_name(name, "content-encoding") ||
                                           same_name(name, "content-length");
                                  });
        size_t removed = static_cast<size_t>(fields.begin() + parser.head_header_count - end);
        fields.erase(end, fields.begin() + parser.head_header_count);
        parser.head_header_count -= removed;
      }
    }
  }
  if (body_mode == BodyMode::store && !decoding && !parser.chunked() &&
      parser.content_length() > 0) {
    if (parser.content_length() > options.max_body_size) {
      return fail(-3, EFBIG, "the response body (Content-Length) is larger than max_body_size");
    }
    body.reserve(static_cast<size_t>(std::min<uint64_t>(parser.content_length(), kReserveAhead)));
  }
  return true;
}

bool ClientCore::complete_response() {
  const char* base = input.data();
  if (parser.chunked()) {
    // The last chunk and trailers: CRLF line ends only (llhttp takes "0\r\n\n").
    if (has_bare_lf(base + parser.body_scan_from, base + parsed)) {
      return fail(-3, EBADMSG, "a bare LF in the chunked framing");
    }
    if (parser.headers.size() > parser.head_header_count) {
      size_t first = parser.headers[parser.head_header_count].name.offset;
      if (parsed - first > options.max_header_size) {
        return fail(-3, EMSGSIZE, "the response's trailer fields are larger than max_header_size");
      }
      for (size_t i = parser.head_header_count; i < parser.headers.size(); ++i) {
        const HeaderSpan& field = parser.headers[i];
        if (!field_is_acceptable(field.name.in(base), field.value.in(base))) {
          return fail(-3, EBADMSG, "a malformed response: a bad trailer field");
        }
      }
    }
  }
  if (decoding && !decoder.finish()) {
    return fail(-3, EBADMSG, std::string("a malformed response: ") + decoder.error_text());
  }
  ++stats.requests;
  // Reused only when the server allows it (HTTP/1.1 without Connection: close, HTTP/1.0 with
  // keep-alive, a body with a length) and sent nothing past this response.
  reusable = options.keep_alive && !user_asks_close && parser.keep_alive() && parsed == filled;
  if (!reusable) close_connection();
  return true;
}

// A followed redirect whose body is longer than kRedirectBodyRead: what is left of it is not read
// (Go closes such a body unread too), so the connection, which it still occupies, is closed.
bool ClientCore::leave_redirect_body() {
  ++stats.requests;
  close_connection();
  return true;
}

bool ClientCore::take_body(void* context, const char* data, size_t size) {
  auto* core = static_cast<ClientCore*>(context);
  if (!core->decoding) return deliver(context, data, size);
  if (core->decoder.feed(data, size, &ClientCore::deliver, context)) return true;
  if (core->body_error == 0) {  // not refused by deliver(): the stream itself is bad
    core->body_error = EBADMSG;
    core->body_error_text = core->decoder.error_text() != nullptr
                                ? core->decoder.error_text()
                                : "the compressed body is corrupt";
  }
  return false;
}

bool ClientCore::deliver(void* context, const char* data, size_t size) {
  auto* core = static_cast<ClientCore*>(context);
  switch (core->body_mode) {
    case BodyMode::discard:
      // A followed redirect's: past kRedirectBodyRead the parse stops (see leave_redirect_body).
      core->redirect_body_read += size;
      if (core->redirect_body_read > kRedirectBodyRead) {
        core->redirect_body_left = true;
        return false;
      }
      return true;
    case BodyMode::store:
      if (size >
          core->options.max_body_size - std::min(core->body.size(), core->options.max_body_size)) {
        core->body_error = EFBIG;
        core->body_error_text = "the response body is larger than max_body_size";
        return false;
      }
      core->body.append(data, size);
      return true;
    case BodyMode::stream:
      break;
  }
  bool go_on = false;
  try {
    go_on = core->options.on_body(std::string_view(data, size));
  } catch (...) {
    // Not through llhttp's C frames: kept, and rethrown once the parse has returned.
    core->callback_exception = std::current_exception();
    return false;
  }
  if (!go_on) {
    core->body_error = ECANCELED;
    core->body_error_text = "on_body returned false: the response was abandoned";
  }
  return go_on;
}

}  // namespace coring::http::detail

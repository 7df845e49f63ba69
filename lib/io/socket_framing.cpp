// coring::Socket::recv_packet() and its Protocol: Swoole's open_eof_check and
// open_length_check framing over the socket's own buffer (see io/socket_core.hpp).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "core/logging.hpp"
#include "coring/socket.hpp"
#include "io/socket_core.hpp"

namespace coring {
namespace detail {
namespace {

size_t length_field_size(char type) {
  switch (type) {
    case 'C':
      return 1;
    case 'n':
    case 'v':
      return 2;
    default:
      return 4;
  }
}

// The framing state of a Protocol: 0 none, 1 eof, 2 length, -1 invalid.
int framing_of(const Protocol& protocol) {
  if (!protocol.eof.empty()) return protocol.eof.size() <= 8 ? 1 : -1;
  switch (protocol.length_type) {
    case 0:
      return 0;
    case 'C':
    case 'n':
    case 'N':
    case 'v':
    case 'V': {
      // The header (up to the end of the length field) and the body's start must fit in a
      // packet of package_max_length bytes, or no packet ever could.
      size_t header = protocol.length_offset + length_field_size(protocol.length_type);
      bool fits = protocol.length_offset <= protocol.package_max_length &&
                  header <= protocol.package_max_length &&
                  protocol.body_offset <= protocol.package_max_length;
      return protocol.body_offset >= protocol.length_offset && fits ? 2 : -1;
    }
    default:
      return -1;
  }
}

uint64_t decode_length(const unsigned char* p, char type) {
  switch (type) {
    case 'C':
      return p[0];
    case 'n':
      return uint64_t{p[0]} << 8 | p[1];
    case 'v':
      return uint64_t{p[1]} << 8 | p[0];
    case 'N':
      return uint64_t{p[0]} << 24 | uint64_t{p[1]} << 16 | uint64_t{p[2]} << 8 | p[3];
    default:  // 'V'
      return uint64_t{p[3]} << 24 | uint64_t{p[2]} << 16 | uint64_t{p[1]} << 8 | p[0];
  }
}

// Records a framing error that every later read repeats.
void break_framing(SocketCore* core, int error, const char* text) noexcept {
  core->framing_error = error;
  core->framing_error_text = text;
  set_error(core, error, text);
}

// Drops the packet handed out last and reports how many buffered bytes are unread.
size_t unread(SocketCore* core) {
  core->begin += core->packet_size;
  core->packet_size = 0;
  if (core->begin == core->end) core->begin = core->end = core->eof_scan_from = 0;
  return core->end - core->begin;
}

}  // namespace

// Reads are refused after a framing error: the stream cannot be re-synchronised.
bool readable(SocketCore* core) noexcept {
  if (core->framing_error == 0) return true;
  set_error(core, core->framing_error, core->framing_error_text);
  return false;
}

// recv()/recv_all() after recv_packet(): the bytes it buffered come first. Returns how many
// were copied (0 when nothing was buffered).
size_t take_buffered(SocketCore* core, void* out, size_t size) {
  size_t n = std::min(size, unread(core));
  if (n == 0) return 0;
  std::memcpy(out, core->buffer.data() + core->begin, n);
  core->begin += n;
  if (core->begin == core->end) core->begin = core->end = core->eof_scan_from = 0;
  return n;
}

}  // namespace detail

using detail::Call;
using detail::SocketCore;

std::optional<std::string_view> Socket::recv_packet(Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, true);
  if (!call.ok()) return std::nullopt;
  if (core->framing < 0) {
    detail::set_error(core, EINVAL, "invalid Protocol: see set_protocol()");
    return std::nullopt;
  }
  if (!detail::readable(core)) return std::nullopt;
  detail::unread(core);
  int64_t deadline = detail::deadline_for(detail::pick(timeout, core->read_timeout));
  size_t max_length = core->protocol.package_max_length;
  auto oversize = [core]() -> std::optional<std::string_view> {
    detail::break_framing(core, EMSGSIZE, "a packet exceeded package_max_length");
    return std::nullopt;
  };
  for (;;) {
    size_t available = core->end - core->begin;
    size_t wanted = 0;  // total bytes of the packet when known, else 0
    if (core->framing == 1) {
      const std::string& eof = core->protocol.eof;
      size_t from = std::max(core->begin, core->eof_scan_from);
      std::string_view unread(core->buffer.data() + from, core->end - from);
      size_t at = unread.find(eof);
      if (at != std::string_view::npos) {
        size_t length = from + at + eof.size() - core->begin;
        if (length > max_length) return oversize();
        core->packet_size = length;
        core->eof_scan_from = core->begin + length;
        return std::string_view(core->buffer.data() + core->begin, length);
      }
      // The delimiter may straddle what has arrived and what comes next.
      core->eof_scan_from = core->end >= eof.size() - 1 ? core->end - (eof.size() - 1) : 0;
      if (available >= max_length) return oversize();
    } else if (core->framing == 2) {
      size_t header =
          core->protocol.length_offset + detail::length_field_size(core->protocol.length_type);
      if (available >= header) {
        uint64_t body = detail::decode_length(
            reinterpret_cast<const unsigned char*>(core->buffer.data() + core->begin +
                                                   core->protocol.length_offset),
            core->protocol.length_type);
        uint64_t length = core->protocol.body_offset + body;
        if (length < header) {
          // With "length includes the header" layouts (body_offset 0), a length shorter than
          // the header itself: no packet can be that short, and accepting it would hand out
          // packets that end inside their own header, or empty views that read as "closed".
          detail::break_framing(core, EBADMSG,
                                "the length field gives a packet shorter than its own header");
          return std::nullopt;
        }
        if (length > max_length) return oversize();
        if (available >= length) {
          core->packet_size = static_cast<size_t>(length);
          return std::string_view(core->buffer.data() + core->begin, core->packet_size);
        }
        wanted = static_cast<size_t>(length);
      }
    } else if (available > 0) {
      core->packet_size = available;
      return std::string_view(core->buffer.data() + core->begin, available);
    }
    // Need more bytes: make room at the end of the buffer, then read.
    if (core->begin > 0) {
      std::memmove(core->buffer.data(), core->buffer.data() + core->begin, available);
      if (core->eof_scan_from >= core->begin) {
        core->eof_scan_from -= core->begin;
      } else {
        core->eof_scan_from = 0;
      }
      core->begin = 0;
      core->end = available;
    }
    size_t target = std::max<size_t>(wanted, available + 4096);
    if (core->framing == 1) target = std::max(target, std::min(max_length, available * 2));
    // Room for a whole packet and one more read's worth (saturated: max_length may be huge).
    size_t cap = max_length > SIZE_MAX - 4096 ? SIZE_MAX : max_length + 4096;
    target = std::min(std::max(target, size_t{8192}), cap);
    if (core->buffer.size() < target)
      core->buffer.resize(std::max(target, core->buffer.size() * 2));
    ssize_t n = detail::receive(core, call, core->buffer.data() + core->end,
                                core->buffer.size() - core->end, detail::remaining(deadline));
    if (n < 0) return std::nullopt;
    if (n == 0) {
      if (available > 0) {
        detail::set_error(core, ECONNRESET,
                          "the peer closed the connection in the middle of a packet");
        return std::nullopt;
      }
      core->error = 0;
      core->error_text = nullptr;
      return std::string_view();
    }
    core->end += static_cast<size_t>(n);
  }
}

void Socket::set_protocol(const Protocol& protocol) {
  SocketCore* const core = core_;
  if (core == nullptr) return;
  core->protocol = protocol;
  if (core->protocol.package_max_length == 0) core->protocol.package_max_length = 2 * 1024 * 1024;
  core->framing = detail::framing_of(core->protocol);
  core->eof_scan_from = core->begin;
  if (core->framing < 0) {
    detail::log_format(LogLevel::warning,
                       "Socket#%d: invalid Protocol (eof longer than 8 bytes, unknown length_type, "
                       "body_offset < length_offset, or a header or body_offset past "
                       "package_max_length); recv_packet() will fail with EINVAL",
                       core->fd);
  }
}

}  // namespace coring

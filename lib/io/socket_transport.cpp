// coring::Socket's transport: connecting, accepting and moving bytes and datagrams through
// the scheduler's event engine (see io/socket_core.hpp). Calls with a zero timeout ("do not
// wait") use the non-blocking system call directly, whatever the engine (a receive asks the
// engine first, which may hold bytes for the socket: EventEngine::receive_now).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/sendfile.h>
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
#include "io/tls_session.hpp"

namespace coring {
namespace detail {
namespace {

// The most one ring operation moves: an SQE's length is 32 bits and a CQE's result a signed
// 32-bit count, and Linux moves at most this much in one read or write anyway (MAX_RW_COUNT).
// Stream calls move larger buffers in pieces; a datagram this large cannot exist.
constexpr size_t kMaxTransfer = 0x7ffff000;

constexpr const char* kTruncatedText =
    "the datagram was larger than the buffer: the first bytes are in the buffer, the rest is lost";

// A datagram read with MSG_TRUNC returns the datagram's real length: more than `size` means it
// was cut short. Returns the byte count, or -1 with EMSGSIZE for a truncated datagram.
ssize_t datagram_length(SocketCore* core, ssize_t length, size_t size) {
  if (static_cast<size_t>(length) <= size) return length;
  set_error(core, EMSGSIZE, kTruncatedText);
  return -1;
}

bool connect_to(SocketCore* core, Call& call, const SocketAddress& address, int64_t deadline) {
  IoOp op;
  op.kind = OpKind::connect;
  op.fd = core->fd;
  op.address = address.get();
  op.address_length = address.length;
  int32_t result = call.io(deadline, op);
  if (result < 0) {
    failed(core, result);
    return false;
  }
  return true;
}

}  // namespace

// recv() without the packet buffer. Returns bytes, 0 at end of stream, or -1 (error set).
ssize_t receive(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout) {
  if (core->tls != nullptr) return tls_receive(core, call, buffer, size, timeout);
  return receive_bytes(core, call, buffer, size, timeout);
}

ssize_t receive_bytes(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout) {
  // close() from another coroutine during a looping call (recv_all, recv_packet) whose previous
  // read completed before the cancellation landed: stop instead of reading again.
  if (core->closed || call.cancel_requested()) return failed(core, -ECANCELED);
  const bool datagram = is_datagram(core);
  const int flags = datagram ? MSG_TRUNC : 0;  // so that a cut-short datagram is noticed
  if (!datagram) size = std::min(size, kMaxTransfer);
  if (timeout <= Duration::zero()) {  // do not wait: the non-blocking call, whatever the engine
    // Through the engine: it may hold bytes it has already received for this socket.
    int32_t n =
        receive_now(core->fd, buffer, static_cast<uint32_t>(std::min(size, kMaxTransfer)), flags);
    if (n >= 0) return datagram ? datagram_length(core, n, size) : n;
    if (n != -EAGAIN && n != -EWOULDBLOCK) return failed(core, n);
    if (timeout <= Duration::zero()) return failed(core, -ETIMEDOUT);
  }
  IoOp op;
  op.kind = OpKind::recv;
  op.fd = core->fd;
  op.buffer = buffer;
  // A datagram buffer of 4 GiB or more: the kernel caps what it delivers far below that.
  op.length = static_cast<uint32_t>(std::min(size, kMaxTransfer));
  op.flags = flags;
  op.stream = !datagram;
  // When the last recv emptied the socket, the next one usually finds nothing yet (request and
  // response traffic): the engine may wait for data before it tries.
  op.likely_waits = !core->more_to_read;
  int32_t result = call.io(deadline_for(timeout), op);
  core->more_to_read = op.more;
  if (result < 0) return failed(core, result);
  return datagram ? datagram_length(core, result, size) : result;
}

ssize_t transmit(SocketCore* core, Call& call, const void* data, size_t size, Duration timeout) {
  if (core->closed || call.cancel_requested()) return failed(core, -ECANCELED);  // see receive()
  if (core->tls != nullptr) return tls_transmit(core, call, data, size, timeout);
  return send_bytes(core, call, data, size, timeout);
}

ssize_t send_bytes(SocketCore* core, Call& call, const void* data, size_t size, Duration timeout) {
  if (call.cancel_requested()) return failed(core, -ECANCELED);  // see receive()
  if (size > kMaxTransfer) {
    // A stream takes it in pieces (send_all loops); a datagram cannot be split.
    if (is_datagram(core)) return failed(core, -EMSGSIZE);
    size = kMaxTransfer;
  }
  if (timeout <= Duration::zero()) {  // do not wait: the non-blocking call, whatever the engine
    ssize_t n = ::send(core->fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return failed(core, -errno);
    if (timeout <= Duration::zero()) return failed(core, -ETIMEDOUT);
  }
  IoOp op;
  op.kind = OpKind::send;
  op.fd = core->fd;
  op.buffer = const_cast<void*>(data);
  op.length = static_cast<uint32_t>(size);
  op.flags = MSG_NOSIGNAL;
  int32_t result = call.io(deadline_for(timeout), op);
  return result < 0 ? failed(core, result) : result;
}

// The address of host:port for a call on this socket: a Unix path, a numeric address, or a name
// resolved within timeout (which waits: the caller holds a Call then, so that close() from
// another coroutine interrupts the resolution and the core outlives it). False with the error
// recorded; ECANCELED when the socket was closed while the name was resolved.
bool address_for(SocketCore* core, std::string_view host, uint16_t port, Duration timeout,
                 SocketAddress* address) {
  int error;
  if (is_unix(core->type)) {
    error = make_unix_address(host, address);
  } else {
    error = resolve_address(host, port, family_of(core->type), timeout, address);
  }
  if (error != 0) {
    set_error(core, error, error == ENXIO ? "host name could not be resolved" : nullptr);
    return false;
  }
  if (core->closed) {  // closed by another coroutine while we resolved
    set_error(core, ECANCELED);
    return false;
  }
  return true;
}

// Whether finding host's address may wait (a name to resolve), so needs a Call around it.
bool resolving_waits(SocketCore* core, std::string_view host) {
  SocketAddress numeric;
  return !is_unix(core->type) && !parse_numeric_address(host, 0, family_of(core->type), &numeric);
}

}  // namespace detail

using detail::Call;
using detail::SocketCore;

// ---- connection set-up -------------------------------------------------------------------------

bool Socket::connect(std::string_view host, uint16_t port, Duration timeout) {
  SocketCore* const core = core_;
  if (core != nullptr && detail::is_unix(core->type)) return connect(host, timeout);
  Call call(core, false);
  if (!call.ok()) return false;
  int64_t deadline = detail::deadline_for(detail::pick(timeout, core->connect_timeout));
  detail::SocketAddress address;
  if (!detail::address_for(core, host, port, detail::remaining(deadline), &address)) return false;
  core->connect_host.assign(host);  // the name start_tls() checks by default
  return detail::connect_to(core, call, address, deadline);
}

bool Socket::connect(std::string_view unix_path, Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, false);
  if (!call.ok()) return false;
  if (!detail::is_unix(core->type)) {
    detail::set_error(core, EINVAL, "connect(path) needs a Unix socket; use connect(host, port)");
    return false;
  }
  detail::SocketAddress address;
  if (!detail::address_for(core, unix_path, 0, Duration::zero(), &address)) return false;
  return detail::connect_to(core, call, address,
                            detail::deadline_for(detail::pick(timeout, core->connect_timeout)));
}

std::optional<Socket> Socket::accept(Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, true);
  if (!call.ok()) return std::nullopt;
  timeout = detail::pick(timeout, core->read_timeout);
  int32_t fd;
  if (timeout <= Duration::zero()) {
    fd = ::accept4(core->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) fd = (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
  } else {
    detail::IoOp op;
    op.kind = detail::OpKind::accept;
    op.fd = core->fd;
    fd = call.io(detail::deadline_for(timeout), op);
  }
  if (fd < 0) {
    detail::failed(core, fd);
    return std::nullopt;
  }
  // Accepted sockets are non-blocking (SOCK_NONBLOCK) and inherit TCP_NODELAY from the
  // listener, so adopting one costs no syscall.
  std::optional<Socket> accepted(std::in_place, detail::AdoptedTag{}, static_cast<int>(fd),
                                 core->type);
  accepted->core_->connect_timeout = core->connect_timeout;
  accepted->core_->read_timeout = core->read_timeout;
  accepted->core_->write_timeout = core->write_timeout;
  return accepted;
}

// ---- streams -----------------------------------------------------------------------------------

ssize_t Socket::recv(void* buffer, size_t size, Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, true);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
  if (!detail::readable(core)) return -1;
  if (size_t n = detail::take_buffered(core, buffer, size); n > 0) return static_cast<ssize_t>(n);
  return detail::receive(core, call, buffer, size, detail::pick(timeout, core->read_timeout));
}

ssize_t Socket::send(const void* data, size_t size, Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, false);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
  return detail::transmit(core, call, data, size, detail::pick(timeout, core->write_timeout));
}

ssize_t Socket::recv_all(void* buffer, size_t size, Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, true);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
  if (!detail::readable(core)) return -1;
  int64_t deadline = detail::deadline_for(detail::pick(timeout, core->read_timeout));
  auto* out = static_cast<char*>(buffer);
  size_t got = detail::take_buffered(core, out, size);
  core->error = 0;
  core->error_text = nullptr;
  while (got < size) {
    ssize_t n = detail::receive(core, call, out + got, size - got, detail::remaining(deadline));
    if (n < 0) return got > 0 ? static_cast<ssize_t>(got) : -1;
    if (n == 0) {
      core->error = 0;
      break;
    }
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

ssize_t Socket::send_all(const void* data, size_t size, Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, false);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
  int64_t deadline = detail::deadline_for(detail::pick(timeout, core->write_timeout));
  const auto* in = static_cast<const char*>(data);
  size_t sent = 0;
  core->error = 0;
  core->error_text = nullptr;
  while (sent < size) {
    ssize_t n = detail::transmit(core, call, in + sent, size - sent, detail::remaining(deadline));
    if (n < 0) return sent > 0 ? static_cast<ssize_t>(sent) : -1;
    sent += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(sent);
}

bool Socket::check_liveness() {
  SocketCore* const core = core_;
  if (core == nullptr) return false;  // moved from: error() is EBADF
  // Not a Call: it neither waits nor consumes, so it needs no coroutine and may run beside a
  // reader (a pool checks sockets nobody uses; see the header comment).
  if (core->closed || core->fd < 0) {
    detail::set_not_open_error(core);
    return false;
  }
  if (!detail::readable(core)) return false;                     // after a framing error: unusable
  if (core->end - core->begin > core->packet_size) return true;  // recv_packet() kept bytes
  if (core->tls != nullptr) return detail::tls_check_liveness(core);
  // Through the engine, as every read: it may hold bytes it already received for this socket,
  // which a peek of the kernel's queue would miss.
  char byte;
  int32_t n = detail::receive_now(core->fd, &byte, 1, MSG_PEEK);
  if (n > 0 || n == -EAGAIN || n == -EWOULDBLOCK) return true;
  if (n == 0) {
    if (detail::is_datagram(core)) return true;  // an empty datagram, not an end of stream
    detail::set_error(core, 0, "the peer closed the connection");
    return false;
  }
  detail::failed(core, n);
  return false;
}

ssize_t Socket::sendfile(int file_fd, int64_t offset, size_t count, Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, false);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, count)) return -1;
  if (offset < 0) {
    detail::set_error(core, EINVAL, "sendfile: a negative offset");
    return -1;
  }
  // TLS: the file is read into the socket's buffer and sent encrypted (see tls_session.hpp).
  if (core->tls != nullptr) {
    return detail::tls_sendfile(core, call, file_fd, offset, count,
                                detail::pick(timeout, core->write_timeout));
  }
  int64_t deadline = detail::deadline_for(detail::pick(timeout, core->write_timeout));
  off_t position = static_cast<off_t>(offset);
  size_t sent = 0;
  core->error = 0;
  core->error_text = nullptr;
  while (sent < count) {
    ssize_t n =
        ::sendfile(core->fd, file_fd, &position, std::min(count - sent, detail::kMaxTransfer));
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) break;  // the file is shorter than count
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      detail::failed(core, -errno);
      return sent > 0 ? static_cast<ssize_t>(sent) : -1;
    }
    // The socket's buffer is full: wait until it drains (both engines can wait for POLLOUT).
    detail::IoOp op;
    op.kind = detail::OpKind::poll;
    op.fd = core->fd;
    op.flags = POLLOUT;
    int32_t result = call.io(deadline, op);
    if (result < 0) {
      detail::failed(core, result);
      return sent > 0 ? static_cast<ssize_t>(sent) : -1;
    }
  }
  return static_cast<ssize_t>(sent);
}

// ---- datagrams ---------------------------------------------------------------------------------

ssize_t Socket::sendto(std::string_view host, uint16_t port, const void* data, size_t size) {
  SocketCore* const core = core_;
  Call call(core, false);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
  if (core->tls != nullptr) return detail::refuse_on_tls(core);
  detail::SocketAddress address;
  if (!detail::address_for(core, host, port, core->connect_timeout, &address)) return -1;
  iovec vector{const_cast<void*>(data), size};
  msghdr message{};
  message.msg_name = address.get();
  message.msg_namelen = address.length;
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  detail::IoOp op;
  op.kind = detail::OpKind::sendmsg;
  op.fd = core->fd;
  op.message = &message;
  op.flags = MSG_NOSIGNAL;
  int32_t result = call.io(detail::deadline_for(core->write_timeout), op);
  return result < 0 ? detail::failed(core, result) : result;
}

ssize_t Socket::recvfrom(void* buffer, size_t size, std::string* host, uint16_t* port,
                         Duration timeout) {
  SocketCore* const core = core_;
  Call call(core, true);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
  if (core->tls != nullptr) return detail::refuse_on_tls(core);
  detail::SocketAddress from;
  iovec vector{buffer, size};
  msghdr message{};
  message.msg_name = from.get();
  message.msg_namelen = sizeof from.storage;
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  // MSG_TRUNC: the result is the datagram's real length, so that a cut-short one is noticed.
  // (On a stream socket MSG_TRUNC would discard the data instead.)
  const bool datagram = detail::is_datagram(core);
  detail::IoOp op;
  op.kind = detail::OpKind::recvmsg;
  op.fd = core->fd;
  op.message = &message;
  op.flags = datagram ? MSG_TRUNC : 0;
  int32_t result = call.io(detail::deadline_for(detail::pick(timeout, core->read_timeout)), op);
  if (result < 0) return detail::failed(core, result);
  uint16_t from_port = 0;
  std::string from_host = message.msg_namelen > 0
                              ? detail::format_host(from.get(), message.msg_namelen, &from_port)
                              : std::string();
  if (host != nullptr) *host = std::move(from_host);
  if (port != nullptr) *port = from_port;
  return datagram ? detail::datagram_length(core, result, size) : result;
}

}  // namespace coring

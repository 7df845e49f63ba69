// Socket: coroutine sockets on the scheduler's io_uring.
//
// DESIGN NOTE (I/O strategy). Every wait goes through the ring: an IORING_OP_RECV/SEND/ACCEPT/
// CONNECT SQE that the scheduler submits in a batch with everyone else's, completing inline at
// submission when the socket is ready and through the kernel's internal poll otherwise. A recv
// that follows one which emptied the socket (no IORING_CQE_F_SOCK_NONEMPTY) sets
// IORING_RECVSEND_POLL_FIRST: in request/response traffic the next request is not there yet, so
// the kernel arms its poll at once instead of failing a recv first. Calls with a zero timeout
// ("do not wait") use the non-blocking syscall directly.
// Measured with the echo benchmark (scripts/bench.sh's echo section: samples/echo_server against
// bench/peers/echo_load, server and client on one CPU, 64 B, 6 interleaved rounds, median round
// trips/s; CORING_SOCKET_IO and CORING_POLL_FIRST select the variants):
//                                      100 connections   1000 connections
//   ring, poll first (the default)          86.4k             71.0k
//   ring, recv tried first                  79.7k             56.3k
//   send by syscall first, then ring        89.7k             64.4k
//   recv and send by syscall first          ~85k (3 rounds, also the slowest with the client
//                                            on the other CPU: 142k vs 148-164k)
// "Try the syscall first" costs a failed recv per message in request/response traffic and a
// syscall per operation that the ring would have batched; it never won clearly, so the ring is
// the default. The server's CPU time per round trip is 1.4-1.6x lower than Go's net.Conn server
// and on a par with a C epoll server that has no runtime at all (bench/peers/epoll_echo.cpp):
// what is left per message is the kernel's TCP work.
//
// Lifetime. The state lives in a heap SocketCore shared by the Socket object and by every
// coroutine inside a call on it (`active`). close() (or the destructor) marks it closed and asks
// the kernel to cancel the pending read and write; the descriptor is closed when the last of
// those calls has returned, and the core is freed when, in addition, no Socket object refers to
// it. So a recycled fd number can never receive data meant for a socket that is being closed.
#include "coring/socket.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/io_op.hpp"
#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/coroutine.hpp"
#include "coring/detail/wait.hpp"
#include "io/address.hpp"

namespace coring {
namespace detail {

struct SocketCore {
  int fd = -1;
  Socket::Type type = Socket::Type::tcp;
  int error = 0;
  const char* error_text = nullptr;
  bool closed = false;  // close() was called: new calls fail with EBADF
  int open_error = 0;   // why the descriptor could not be made (calls fail with it)
  bool owned = true;    // a Socket object still refers to this core
  // A framing error (EMSGSIZE, EBADMSG): the stream cannot be re-synchronised, so every later
  // read fails with it.
  int framing_error = 0;
  const char* framing_error_text = nullptr;
  bool more_to_read = false;  // the last recv left data in the socket (IORING_CQE_F_SOCK_NONEMPTY)
  int active = 0;             // coroutines inside a call on this socket
  int closers = 0;            // coroutines inside close(), waiting for those calls to leave
  long reader_cid = 0;
  long writer_cid = 0;
  IoOp* read_op = nullptr;
  IoOp* write_op = nullptr;
  WaitList close_waiters;
  Duration connect_timeout;
  Duration read_timeout;
  Duration write_timeout;

  // recv_packet(): bytes [begin, end) of buffer are unread; the first packet_size of them were
  // handed out by the last recv_packet() and are dropped by the next read call.
  Protocol protocol;
  int framing = 0;  // 0 none, 1 eof, 2 length, -1 invalid protocol
  std::string buffer;
  size_t begin = 0;
  size_t end = 0;
  size_t packet_size = 0;
  size_t eof_scan_from = 0;
};

namespace {

std::atomic<int64_t> g_default_connect_ns{10'000'000'000};
std::atomic<int64_t> g_default_read_ns{60'000'000'000};
std::atomic<int64_t> g_default_write_ns{60'000'000'000};

enum class IoStrategy { ring, direct_send, try_first };

IoStrategy io_strategy() {
  static const IoStrategy strategy = [] {
    const char* value = std::getenv("CORING_SOCKET_IO");
    if (value == nullptr) return IoStrategy::ring;
    if (std::strcmp(value, "direct-send") == 0) return IoStrategy::direct_send;
    if (std::strcmp(value, "try-first") == 0) return IoStrategy::try_first;
    return IoStrategy::ring;
  }();
  return strategy;
}

bool poll_first_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("CORING_POLL_FIRST");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return enabled;
}

int family_of(Socket::Type type) {
  switch (type) {
    case Socket::Type::tcp:
    case Socket::Type::udp:
      return AF_INET;
    case Socket::Type::tcp6:
    case Socket::Type::udp6:
      return AF_INET6;
    case Socket::Type::unix_stream:
    case Socket::Type::unix_dgram:
      return AF_UNIX;
  }
  return AF_INET;
}

int socktype_of(Socket::Type type) {
  switch (type) {
    case Socket::Type::tcp:
    case Socket::Type::tcp6:
    case Socket::Type::unix_stream:
      return SOCK_STREAM;
    default:
      return SOCK_DGRAM;
  }
}

bool is_tcp(Socket::Type type) {
  return type == Socket::Type::tcp || type == Socket::Type::tcp6;
}
bool is_unix(Socket::Type type) {
  return type == Socket::Type::unix_stream || type == Socket::Type::unix_dgram;
}

void set_error(SocketCore* core, int error_number, const char* text = nullptr) noexcept {
  core->error = error_number;
  core->error_text = text;
}

Duration remaining(int64_t deadline) noexcept {
  if (deadline == INT64_MAX) return kForever;
  return Duration(deadline - monotonic_ns());
}

// Closes the descriptor once the socket is closed and no call is inside it any more, and frees
// the core once, in addition, no Socket object and no close() refers to it. (The Socket a
// close() was called on may be destroyed while that close() waits: its owner's coroutine, woken
// with ECANCELED, returns.)
void settle(SocketCore* core) noexcept {
  if (core->active > 0) return;
  if (core->closed && core->fd >= 0) {
    if (Scheduler* s = tls_scheduler) s->engine().forget(core->fd);  // before the number is free
    ::close(core->fd);
    core->fd = -1;
    wake_all(core->close_waiters, kWaitOk);
  }
  if (!core->owned && core->closers == 0) delete core;
}

// The error of a call on a socket that is not open: the constructor's (EMFILE...) if the
// descriptor could never be made, else EBADF.
void set_not_open_error(SocketCore* core) noexcept {
  set_error(core, core->open_error != 0 ? core->open_error : EBADF);
}

// For the calls that do not wait (bind, listen, options): false once closed.
bool open_for_call(SocketCore* core) noexcept {
  if (core != nullptr && !core->closed) return true;
  if (core != nullptr) set_not_open_error(core);
  return false;
}

// The result of a plain syscall on the socket: true, or false with errno recorded.
bool syscall_succeeded(SocketCore* core, int result) noexcept {
  if (result == 0) return true;
  set_error(core, errno);
  return false;
}

// Marks the socket closed and cancels whatever waits on it. Returns false if it already was.
// Ends the wait of the coroutine holding one side of the socket: its ring operation, or the
// name resolution connect() may be waiting for.
void interrupt(long holder, IoOp* op) noexcept {
  if (op != nullptr) {
    request_cancel(*op, ECANCELED);
  } else if (Scheduler* s = tls_scheduler; s != nullptr && holder != 0) {
    if (Coroutine* c = s->find(holder)) s->cancel(c);
  }
}

bool begin_close(SocketCore* core) noexcept {
  if (core->closed) return false;
  core->closed = true;
  interrupt(core->reader_cid, core->read_op);
  interrupt(core->writer_cid, core->write_op);
  return true;
}

// One read or write call: binds the calling coroutine as the socket's reader or writer for the
// duration of the call (BindError when another one holds it) and keeps the core alive.
class Call {
 public:
  Call(SocketCore* core, bool reading) : core_(core), reading_(reading) {
    if (core == nullptr) return;  // moved-from Socket: ok() reports EBADF
    if (core->closed || core->fd < 0) {
      set_not_open_error(core);
      return;
    }
    Coroutine* self = running_coroutine();
    if (self == nullptr) {
      set_error(core, EPERM, "socket calls that wait must run inside a coroutine");
      return;
    }
    long& holder = reading ? core->reader_cid : core->writer_cid;
    if (holder != 0 && holder != self->id) {
      throw BindError(core->fd, holder, self->id,
                      reading ? BindError::Side::reading : BindError::Side::writing);
    }
    holder = self->id;
    ++core->active;
    bound_ = true;
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
  ~Call() {
    if (!bound_) return;
    (reading_ ? core_->reader_cid : core_->writer_cid) = 0;
    --core_->active;
    settle(core_);
  }
  bool ok() const noexcept { return bound_; }

  // Carries out op (kind and arguments filled in) as this call's pending read or write and
  // waits for it. Returns the result (-errno on failure, -ETIMEDOUT past the deadline).
  int32_t io(int64_t deadline, IoOp& op) {
    WaitPermit permit = begin_wait();
    if (!permit) return -permit.error;
    IoOp*& pending = reading_ ? core_->read_op : core_->write_op;
    pending = &op;
    struct Clear {
      IoOp*& pending;
      ~Clear() { pending = nullptr; }
    } clear{pending};
    int32_t result = run_io(permit, op, deadline);
    // cancel(cid) that lost the race with the operation's own completion: the data stays
    // delivered, but a looping call (send_all, recv_all, recv_packet) must not start another.
    if (op.cancel_reason == ECANCELED) cancel_requested_ = true;
    return result;
  }
  bool cancel_requested() const noexcept { return cancel_requested_; }

 private:
  SocketCore* core_;
  bool reading_;
  bool bound_ = false;
  bool cancel_requested_ = false;
};

void configure_new_socket(SocketCore* core) {
  if (is_tcp(core->type)) {
    int on = 1;
    ::setsockopt(core->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }
}

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

// Result of a read or write that returned -errno: records it and returns -1.
ssize_t failed(SocketCore* core, int32_t result) {
  set_error(core, -result);
  return -1;
}

// The most one ring operation moves: an SQE's length is 32 bits and a CQE's result a signed
// 32-bit count, and Linux moves at most this much in one read or write anyway (MAX_RW_COUNT).
// Stream calls move larger buffers in pieces; a datagram this large cannot exist.
constexpr size_t kMaxTransfer = 0x7ffff000;

bool is_datagram(const SocketCore* core) noexcept {
  return socktype_of(core->type) == SOCK_DGRAM;
}

constexpr const char* kTruncatedText =
    "the datagram was larger than the buffer: the first bytes are in the buffer, the rest is lost";

// A datagram read with MSG_TRUNC returns the datagram's real length: more than `size` means it
// was cut short. Returns the byte count, or -1 with EMSGSIZE for a truncated datagram.
ssize_t datagram_length(SocketCore* core, ssize_t length, size_t size) {
  if (static_cast<size_t>(length) <= size) return length;
  set_error(core, EMSGSIZE, kTruncatedText);
  return -1;
}

// recv() without the packet buffer. Returns bytes, 0 at end of stream, or -1 (error set).
ssize_t receive(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout) {
  // close() from another coroutine during a looping call (recv_all, recv_packet) whose previous
  // read completed before the cancellation landed: stop instead of reading again.
  if (core->closed || call.cancel_requested()) return failed(core, -ECANCELED);
  const bool datagram = is_datagram(core);
  const int flags = datagram ? MSG_TRUNC : 0;  // so that a cut-short datagram is noticed
  if (!datagram) size = std::min(size, kMaxTransfer);
  if (timeout <= Duration::zero() || io_strategy() == IoStrategy::try_first) {
    ssize_t n = ::recv(core->fd, buffer, size, MSG_DONTWAIT | flags);
    if (n >= 0) return datagram ? datagram_length(core, n, size) : n;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return failed(core, -errno);
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
  op.likely_waits = !core->more_to_read && poll_first_enabled();
  int32_t result = call.io(deadline_for(timeout), op);
  core->more_to_read = op.more;
  if (result < 0) return failed(core, result);
  return datagram ? datagram_length(core, result, size) : result;
}

ssize_t transmit(SocketCore* core, Call& call, const void* data, size_t size, Duration timeout) {
  if (core->closed || call.cancel_requested()) return failed(core, -ECANCELED);  // see receive()
  if (size > kMaxTransfer) {
    // A stream takes it in pieces (send_all loops); a datagram cannot be split.
    if (is_datagram(core)) return failed(core, -EMSGSIZE);
    size = kMaxTransfer;
  }
  if (timeout <= Duration::zero() || io_strategy() != IoStrategy::ring) {
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

// The timeout a call uses: its argument, or the socket's configured one by default.
Duration pick(Duration timeout, Duration configured) noexcept {
  return timeout == Socket::kDefaultTimeout ? configured : timeout;
}

// A size the ssize_t result cannot count (a negative length cast to size_t, usually) is refused.
bool size_fits(SocketCore* core, size_t size) noexcept {
  if (size <= static_cast<size_t>(SSIZE_MAX)) return true;
  set_error(core, EINVAL, "size larger than SSIZE_MAX (a negative length?)");
  return false;
}

// Reads are refused after a framing error: the stream cannot be re-synchronised.
bool readable(SocketCore* core) noexcept {
  if (core->framing_error == 0) return true;
  set_error(core, core->framing_error, core->framing_error_text);
  return false;
}

// Records a framing error that every later read repeats.
void break_framing(SocketCore* core, int error, const char* text) noexcept {
  core->framing_error = error;
  core->framing_error_text = text;
  set_error(core, error, text);
}

size_t unread(SocketCore* core);

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

// Drops the packet handed out last and reports how many buffered bytes are unread.
size_t unread(SocketCore* core) {
  core->begin += core->packet_size;
  core->packet_size = 0;
  if (core->begin == core->end) core->begin = core->end = core->eof_scan_from = 0;
  return core->end - core->begin;
}

}  // namespace
}  // namespace detail

using detail::Call;
using detail::SocketCore;

// ---- construction ------------------------------------------------------------------------------

Socket::Socket(Type type) : core_(new SocketCore) {
  core_->type = type;
  core_->connect_timeout = Duration(detail::g_default_connect_ns.load(std::memory_order_relaxed));
  core_->read_timeout = Duration(detail::g_default_read_ns.load(std::memory_order_relaxed));
  core_->write_timeout = Duration(detail::g_default_write_ns.load(std::memory_order_relaxed));
  core_->fd = ::socket(detail::family_of(type),
                       detail::socktype_of(type) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (core_->fd < 0) {
    core_->open_error = errno;
    detail::set_error(core_, errno);
    core_->closed = true;
    return;
  }
  detail::configure_new_socket(core_);
}

Socket::Socket(int fd, Type type) : core_(new SocketCore) {
  core_->type = type;
  core_->fd = fd;
  core_->connect_timeout = Duration(detail::g_default_connect_ns.load(std::memory_order_relaxed));
  core_->read_timeout = Duration(detail::g_default_read_ns.load(std::memory_order_relaxed));
  core_->write_timeout = Duration(detail::g_default_write_ns.load(std::memory_order_relaxed));
  if (fd < 0) {
    detail::set_error(core_, EBADF);
    core_->closed = true;
    return;
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

Socket::Socket(detail::AdoptedTag, int fd, Type type) : core_(new SocketCore) {
  core_->type = type;
  core_->fd = fd;
  core_->connect_timeout = Duration(detail::g_default_connect_ns.load(std::memory_order_relaxed));
  core_->read_timeout = Duration(detail::g_default_read_ns.load(std::memory_order_relaxed));
  core_->write_timeout = Duration(detail::g_default_write_ns.load(std::memory_order_relaxed));
}

Socket::Socket(Socket&& other) noexcept : core_(other.core_) {
  other.core_ = nullptr;
}

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    Socket old(std::move(*this));  // closes what this held
    core_ = other.core_;
    other.core_ = nullptr;
  }
  return *this;
}

Socket::~Socket() {
  if (core_ == nullptr) return;
  core_->owned = false;
  detail::begin_close(core_);
  detail::settle(core_);
  core_ = nullptr;
}

// ---- connection set-up -------------------------------------------------------------------------

bool Socket::connect(std::string_view host, uint16_t port, Duration timeout) {
  SocketCore* const core = core_;
  if (core != nullptr && detail::is_unix(core->type)) return connect(host, timeout);
  Call call(core, false);
  if (!call.ok()) return false;
  int64_t deadline = detail::deadline_for(detail::pick(timeout, core->connect_timeout));
  detail::SocketAddress address;
  if (!detail::address_for(core, host, port, detail::remaining(deadline), &address)) return false;
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

bool Socket::bind(std::string_view host, uint16_t port) {
  SocketCore* const core = core_;
  if (!detail::open_for_call(core)) return false;
  // A name to resolve waits: as a write call, so that the core outlives the wait and close()
  // interrupts it. (Outside a coroutine, resolve() blocks instead and no call is needed.)
  std::optional<Call> call;
  if (detail::in_coroutine() && detail::resolving_waits(core, host)) {
    call.emplace(core, false);
    if (!call->ok()) return false;
  }
  detail::SocketAddress address;
  if (!detail::address_for(core, host, port, core->connect_timeout, &address)) return false;
  if (detail::socktype_of(core->type) == SOCK_STREAM && !detail::is_unix(core->type)) {
    int on = 1;
    ::setsockopt(core->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  }
  return detail::syscall_succeeded(core, ::bind(core->fd, address.get(), address.length));
}

bool Socket::listen(int backlog) {
  SocketCore* const core = core_;
  if (!detail::open_for_call(core)) return false;
  return detail::syscall_succeeded(core, ::listen(core->fd, backlog));
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

// ---- datagrams ---------------------------------------------------------------------------------

ssize_t Socket::sendto(std::string_view host, uint16_t port, const void* data, size_t size) {
  SocketCore* const core = core_;
  Call call(core, false);
  if (!call.ok()) return -1;
  if (!detail::size_fits(core, size)) return -1;
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

// ---- closing -----------------------------------------------------------------------------------

bool Socket::shutdown(int how) {
  SocketCore* const core = core_;
  if (!detail::open_for_call(core)) return false;
  return detail::syscall_succeeded(core, ::shutdown(core->fd, how));
}

bool Socket::close() {
  // Only `core` from here on: `this` may be destroyed while we wait (the coroutine that owns
  // the socket wakes with ECANCELED and returns), the core lives on while we hold it.
  SocketCore* const core = core_;
  if (core == nullptr) return false;
  if (!detail::begin_close(core)) {
    detail::set_not_open_error(core);  // EBADF, or why the socket could never be made
    return false;
  }
  struct Hold {  // settles (and maybe frees) the core when close() leaves, however it leaves
    SocketCore* core;
    explicit Hold(SocketCore* c) : core(c) { ++core->closers; }
    ~Hold() {
      --core->closers;
      detail::settle(core);
    }
  } hold(core);
  // Wait for the readers and writers we just cancelled to leave, so that when close() returns
  // the descriptor is really closed. Where we may not wait (outside a coroutine, while being
  // unwound), the last of them closes it.
  while (core->active > 0) {
    detail::Waiter waiter;
    if (detail::park(core->close_waiters, waiter, kForever, detail::Cancellable::no) !=
        detail::kWaitOk) {
      break;
    }
  }
  return true;
}

// ---- options -----------------------------------------------------------------------------------

void Socket::set_timeout(Duration timeout) {
  SocketCore* const core = core_;
  if (core == nullptr) return;
  core->read_timeout = timeout;
  core->write_timeout = timeout;
}

void Socket::set_timeouts(Duration connect, Duration read, Duration write) {
  SocketCore* const core = core_;
  if (core == nullptr) return;
  core->connect_timeout = connect;
  core->read_timeout = read;
  core->write_timeout = write;
}

Duration Socket::connect_timeout() const noexcept {
  return core_ != nullptr ? core_->connect_timeout : Duration::zero();
}
Duration Socket::read_timeout() const noexcept {
  return core_ != nullptr ? core_->read_timeout : Duration::zero();
}
Duration Socket::write_timeout() const noexcept {
  return core_ != nullptr ? core_->write_timeout : Duration::zero();
}

void Socket::set_default_timeouts(Duration connect, Duration read, Duration write) {
  detail::g_default_connect_ns.store(connect.count(), std::memory_order_relaxed);
  detail::g_default_read_ns.store(read.count(), std::memory_order_relaxed);
  detail::g_default_write_ns.store(write.count(), std::memory_order_relaxed);
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

namespace {
bool set_option(SocketCore* core, int level, int name, const void* value, socklen_t length) {
  if (!detail::open_for_call(core)) return false;
  return detail::syscall_succeeded(core, ::setsockopt(core->fd, level, name, value, length));
}
}  // namespace

bool Socket::set_nodelay(bool on) {
  SocketCore* const core = core_;
  int value = on ? 1 : 0;
  return set_option(core, IPPROTO_TCP, TCP_NODELAY, &value, sizeof value);
}

bool Socket::set_keepalive(bool on, int idle_seconds, int interval_seconds, int count) {
  SocketCore* const core = core_;
  int value = on ? 1 : 0;
  if (!set_option(core, SOL_SOCKET, SO_KEEPALIVE, &value, sizeof value)) return false;
  if (!on) return true;
  return set_option(core, IPPROTO_TCP, TCP_KEEPIDLE, &idle_seconds, sizeof idle_seconds) &&
         set_option(core, IPPROTO_TCP, TCP_KEEPINTVL, &interval_seconds, sizeof interval_seconds) &&
         set_option(core, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

bool Socket::set_linger(bool on, int seconds) {
  SocketCore* const core = core_;
  linger value{on ? 1 : 0, seconds};
  return set_option(core, SOL_SOCKET, SO_LINGER, &value, sizeof value);
}

// ---- queries -----------------------------------------------------------------------------------

int Socket::fd() const noexcept {
  return core_ != nullptr && !core_->closed ? core_->fd : -1;
}

Socket::Type Socket::type() const noexcept {
  return core_ != nullptr ? core_->type : Type::tcp;
}

uint16_t Socket::local_port() const {
  SocketCore* const core = core_;
  if (fd() < 0) return 0;
  detail::SocketAddress address;
  address.length = sizeof address.storage;
  if (::getsockname(core->fd, address.get(), &address.length) != 0) return 0;
  uint16_t port = 0;
  detail::format_host(address.get(), address.length, &port);
  return port;
}

std::string Socket::peer_address() const {
  SocketCore* const core = core_;
  if (fd() < 0) return "";
  detail::SocketAddress address;
  address.length = sizeof address.storage;
  if (::getpeername(core->fd, address.get(), &address.length) != 0) return "";
  uint16_t port = 0;
  std::string host = detail::format_host(address.get(), address.length, &port);
  if (address.get()->sa_family == AF_UNIX) return host;
  if (address.get()->sa_family == AF_INET6) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::error_code Socket::error() const noexcept {
  SocketCore* const core = core_;
  return std::error_code(core != nullptr ? core->error : EBADF, std::generic_category());
}

std::string_view Socket::error_message() const noexcept {
  SocketCore* const core = core_;
  int error = core != nullptr ? core->error : EBADF;
  if (core != nullptr && core->error_text != nullptr) return core->error_text;
  if (error == 0) return "";
  const char* text = ::strerrordesc_np(error);
  return text != nullptr ? text : "unknown error";
}

}  // namespace coring

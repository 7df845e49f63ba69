// coring::Socket: its lifetime, the one-reader/one-writer rule, bind/listen, options and
// queries (see io/socket_core.hpp for how the files of Socket divide the work).
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
#include <cstring>
#include <string>

#include "core/logging.hpp"
#include "io/socket_core.hpp"
#include "io/tls_session.hpp"

namespace coring {
namespace detail {
namespace {

std::atomic<int64_t> g_default_connect_ns{10'000'000'000};
std::atomic<int64_t> g_default_read_ns{60'000'000'000};
std::atomic<int64_t> g_default_write_ns{60'000'000'000};

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

}  // namespace

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

bool is_datagram(const SocketCore* core) noexcept {
  return socktype_of(core->type) == SOCK_DGRAM;
}

void set_error(SocketCore* core, int error_number, const char* text) noexcept {
  core->error = error_number;
  core->error_text = text;
}

// The error of a call on a socket that is not open: the constructor's (EMFILE...) if the
// descriptor could never be made, else EBADF.
void set_not_open_error(SocketCore* core) noexcept {
  set_error(core, core->open_error != 0 ? core->open_error : EBADF);
}

// Result of a read or write that returned -errno: records it and returns -1.
ssize_t failed(SocketCore* core, int32_t result) {
  set_error(core, -result);
  return -1;
}

Duration remaining(int64_t deadline) noexcept {
  if (deadline == INT64_MAX) return kForever;
  return Duration(deadline - monotonic_ns());
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

// Closes the descriptor once the socket is closed and no call is inside it any more, and frees
// the core once, in addition, no Socket object and no close() refers to it. (The Socket a
// close() was called on may be destroyed while that close() waits: its owner's coroutine, woken
// with ECANCELED, returns.)
void settle(SocketCore* core) noexcept {
  if (core->active > 0) {
    // Only the close() that sends a TLS close_notify is still inside: the calls it cancelled
    // have left, so it may send (see finish_tls()).
    if (core->finishing_tls && core->active == 1) wake_all(core->close_waiters, kWaitOk);
    return;
  }
  if (core->closed && core->fd >= 0) {
    if (core->tls != nullptr) release_tls(core);
    if (Scheduler* s = tls_scheduler) s->engine().forget(core->fd);  // before the number is free
    ::close(core->fd);
    core->fd = -1;
    wake_all(core->close_waiters, kWaitOk);
  }
  if (!core->owned && core->closers == 0) {
    destroy_tls(core);
    delete core;
  }
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

bool begin_close(SocketCore* core) noexcept {
  if (core->closed) return false;
  core->closed = true;
  interrupt(core->reader_cid, core->read_op);
  interrupt(core->writer_cid, core->write_op);
  return true;
}

void configure_new_socket(SocketCore* core) {
  if (is_tcp(core->type)) {
    int on = 1;
    ::setsockopt(core->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }
}

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
  // A TLS close_notify only if the kernel takes it at once: a destructor does not wait.
  if (core_->tls != nullptr && !core_->closed) detail::close_notify_now(core_);
  detail::begin_close(core_);
  detail::settle(core_);
  core_ = nullptr;
}

// ---- set-up ------------------------------------------------------------------------------------

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

// ---- closing -----------------------------------------------------------------------------------

bool Socket::shutdown(int how) {
  SocketCore* const core = core_;
  if (!detail::open_for_call(core)) return false;
  // TLS: the close_notify goes out before the TCP side ends writing. If it cannot, writing
  // stays open so that close() can try again (its bytes would be lost behind a FIN).
  if (core->tls != nullptr && !detail::tls_shutdown(core, how)) {
    if (how == SHUT_RDWR) ::shutdown(core->fd, SHUT_RD);  // a waiting reader still sees the end
    return false;
  }
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
  // TLS: the close_notify (and what an interrupted writer left unsent) goes out once the calls
  // we just cancelled have left, within a short bound (see socket.hpp). The descriptor closes
  // either way; false says that bytes send() had counted as sent never left.
  const bool delivered = core->tls == nullptr || detail::finish_tls(core);
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
  return delivered;
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

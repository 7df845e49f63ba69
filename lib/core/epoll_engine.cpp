#include "core/epoll_engine.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/fork.hpp"
#include "core/logging.hpp"

namespace coring::detail {
namespace {

bool reads(const IoOp& op) noexcept {
  switch (op.kind) {
    case OpKind::recv:
    case OpKind::recvmsg:
    case OpKind::accept:
    case OpKind::read:
      return true;
    case OpKind::poll:
      return (op.flags & POLLIN) != 0;
    default:
      return false;
  }
}

int32_t result_of(ssize_t n) noexcept {
  return n >= 0 ? static_cast<int32_t>(n) : -errno;
}

constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
constexpr uint32_t kWriteEvents = EPOLLOUT | EPOLLHUP | EPOLLERR;

}  // namespace

EpollEngine::~EpollEngine() {
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

bool EpollEngine::forked() const noexcept {
  return fork_generation_ != fork_generation();
}

int EpollEngine::init(const RunOptions&) {
  fork_generation_ = fork_generation();
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    int error = errno;
    why_ = std::string("epoll_create1: ") + std::strerror(error);
    return -error;
  }
  return 0;
}

EpollEngine::Descriptor& EpollEngine::descriptor(int fd) {
  if (static_cast<size_t>(fd) >= descriptors_.size()) {
    descriptors_.resize(std::max(descriptors_.size() * 2, static_cast<size_t>(fd) + 64));
  }
  return descriptors_[static_cast<size_t>(fd)];
}

int32_t EpollEngine::attempt(IoOp& op, bool again) noexcept {
  switch (op.kind) {
    case OpKind::recv:
      return result_of(::recv(op.fd, op.buffer, op.length, op.flags | MSG_DONTWAIT));
    case OpKind::send:
      return result_of(::send(op.fd, op.buffer, op.length, op.flags | MSG_DONTWAIT));
    case OpKind::recvmsg:
      return result_of(::recvmsg(op.fd, op.message, op.flags | MSG_DONTWAIT));
    case OpKind::sendmsg:
      return result_of(::sendmsg(op.fd, op.message, op.flags | MSG_DONTWAIT));
    case OpKind::accept:
      return result_of(::accept4(op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    case OpKind::connect: {
      if (!again) {
        if (::connect(op.fd, op.address, op.address_length) == 0) return 0;
        return errno == EINPROGRESS ? -EAGAIN : -errno;
      }
      // Writable after a connect in progress: it is done, one way or the other.
      int error = 0;
      socklen_t length = sizeof error;
      if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return -errno;
      return -error;
    }
    case OpKind::read:
      return result_of(::read(op.fd, op.buffer, op.length));
    case OpKind::poll: {
      pollfd check{op.fd, static_cast<short>(op.flags), 0};
      int ready = ::poll(&check, 1, 0);
      if (ready < 0) return -errno;
      return ready == 0 ? -EAGAIN : check.revents;
    }
    case OpKind::file_read:
    case OpKind::file_write:
    case OpKind::file_open:
      break;
  }
  return -ENOSYS;  // files go to the offload pool with this engine (native_files() is false)
}

// What a finished call says about the descriptor's readiness.
void EpollEngine::learn(Descriptor& d, const IoOp& op, int32_t result) noexcept {
  if (reads(op)) {
    if (result == -EAGAIN) {
      d.may_read = false;
    } else if (op.stream && !d.hung_up && result > 0 && static_cast<uint32_t>(result) < op.length) {
      d.may_read = false;  // a stream that gave less than was asked for is empty now
    }
  } else if (result == -EAGAIN || (op.kind == OpKind::send && result >= 0 &&
                                   static_cast<uint32_t>(result) < op.length)) {
    d.may_write = false;
  }
}

bool EpollEngine::start(IoOp& op) {
  if (failure_ != 0 || forked()) [[unlikely]] {
    op.result = -(failure_ != 0 ? failure_ : EPERM);
    return true;
  }
  if (op.fd < 0) {
    op.result = -EBADF;
    return true;
  }
  const bool reader = reads(op);
  Descriptor& d = descriptor(op.fd);
  if (!d.registered || (reader ? d.may_read : d.may_write)) {
    int32_t result = attempt(op, false);
    learn(d, op, result);
    if (result != -EAGAIN) {
      op.result = result;
      op.more = reader && result > 0 && static_cast<uint32_t>(result) == op.length;
      return true;
    }
  }
  if (!d.registered || (!reader && !d.watching_output)) {
    if (int error = watch(op.fd, d, !reader || d.writer != nullptr); error != 0) {
      op.result = error;  // EPERM: a regular file, which is always ready (it never got here)
      return true;
    }
  }
  (reader ? d.reader : d.writer) = &op;
  ++inflight_;
  return false;
}

int EpollEngine::watch(int fd, Descriptor& d, bool output) noexcept {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (output ? EPOLLOUT : 0u);
  event.data.fd = fd;
  int how = d.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (::epoll_ctl(epoll_fd_, how, fd, &event) != 0) {
    // Registered by a descriptor this table forgot about (a number closed behind our back and
    // reused): take the registration over.
    if (how == EPOLL_CTL_ADD && errno == EEXIST) {
      if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event) != 0) return -errno;
    } else {
      return -errno;
    }
  }
  d.registered = true;
  d.watching_output = output;
  return 0;
}

void EpollEngine::complete(IoOp& op, int32_t result) noexcept {
  --inflight_;
  op.result = result;
  op.more = reads(op) && result > 0 && static_cast<uint32_t>(result) == op.length;
  op.on_complete(&op);
}

void EpollEngine::cancel(IoOp& op) noexcept {
  if (forked()) return;
  if (op.fd < 0 || static_cast<size_t>(op.fd) >= descriptors_.size()) return;
  Descriptor& d = descriptors_[static_cast<size_t>(op.fd)];
  if (d.reader == &op) {
    d.reader = nullptr;
  } else if (d.writer == &op) {
    d.writer = nullptr;
    if (d.watching_output) watch(op.fd, d, false);
  } else {
    return;  // not waiting: it has completed already
  }
  complete(op, -ECANCELED);
}

// A readiness event for fd's reader (or writer): try its call again.
void EpollEngine::retry(int fd, bool reader, uint32_t events) {
  Descriptor& d = descriptors_[static_cast<size_t>(fd)];
  (reader ? d.may_read : d.may_write) = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) d.hung_up = true;
  IoOp* op = reader ? d.reader : d.writer;
  if (op == nullptr) return;  // nobody waits: the next call will try first
  int32_t result = attempt(*op, true);
  learn(d, *op, result);
  if (result == -EAGAIN) return;  // not ready after all: wait for the next event
  (reader ? d.reader : d.writer) = nullptr;
  if (!reader && d.watching_output) watch(fd, d, false);  // no writer waits any more
  // on_complete may start other operations (and grow descriptors_): d is not used after it.
  complete(*op, result);
}

void EpollEngine::wait(int64_t timeout_ns) {
  if (failure_ != 0 || forked()) return;
  if (next_event_ < event_count_) return;  // collected events come first
  if (timeout_ns == 0 && inflight_ == 0) return;
  epoll_event* events = events_;
  int count = 0;
#ifdef SYS_epoll_pwait2
  if (has_pwait2_) {
    timespec timeout{};
    if (timeout_ns > 0) {
      timeout.tv_sec = timeout_ns / 1'000'000'000;
      timeout.tv_nsec = timeout_ns % 1'000'000'000;
    }
    count = static_cast<int>(::syscall(SYS_epoll_pwait2, epoll_fd_, events, kBatch,
                                       timeout_ns < 0 ? nullptr : &timeout, nullptr, 0));
    if (count < 0 && errno == ENOSYS) has_pwait2_ = false;
  }
  if (!has_pwait2_)
#endif
  {
    // Milliseconds, rounded up: waking before the deadline would only loop back here.
    int timeout_ms =
        timeout_ns < 0
            ? -1
            : static_cast<int>(std::min<int64_t>((timeout_ns + 999'999) / 1'000'000, INT32_MAX));
    count = ::epoll_wait(epoll_fd_, events, kBatch, timeout_ms);
  }
  if (count < 0) {
    if (errno == EINTR) {
      event_count_ = next_event_ = 0;
      return;
    }
    failure_ = errno;
    log_format(LogLevel::error, "epoll_wait failed: %s; the engine is unusable",
               std::strerror(failure_));
    return;
  }
  event_count_ = count;
  next_event_ = 0;
}

bool EpollEngine::dispatch_one() {
  if (next_event_ >= event_count_) return false;
  const epoll_event& event = events_[next_event_++];
  int fd = event.data.fd;
  uint32_t happened = event.events;
  if (fd >= 0 && static_cast<size_t>(fd) < descriptors_.size()) {
    if (happened & kReadEvents) retry(fd, true, happened);
    if (happened & kWriteEvents) retry(fd, false, happened);
  }
  return true;
}

void EpollEngine::forget(int fd) noexcept {
  if (forked()) return;
  if (fd < 0 || static_cast<size_t>(fd) >= descriptors_.size()) return;
  Descriptor& d = descriptors_[static_cast<size_t>(fd)];
  if (d.registered) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  d = Descriptor{};
}

}  // namespace coring::detail

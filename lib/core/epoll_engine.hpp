// The epoll engine (see event_engine.hpp for the contract): readiness-based, for kernels and
// sandboxes without io_uring (Docker's default seccomp profile refuses it).
//
// start() tries the non-blocking system call first; only when it would block (EAGAIN, or a
// connect in progress) does the operation wait, in the descriptor's one slot for its direction
// (a reader: recv, recvmsg, accept, read, poll for input; a writer: send, sendmsg, connect, poll
// for output), so one reader and one writer on one descriptor both wait correctly. Each
// descriptor is registered once, edge-triggered for both directions (EPOLLIN | EPOLLOUT |
// EPOLLRDHUP | EPOLLET), the first time an operation on it has to wait, and unregistered by
// forget() before it is closed: no epoll_ctl per operation. Edge-triggered means an event is
// reported once, when the descriptor becomes ready; so the engine remembers per direction
// whether it may be ready (an event came, or nothing is known) or is known not to be (a call
// found it empty: EAGAIN, a short read of a stream, a short write), and a call on a descriptor
// known not to be ready waits for the next event without trying first, which spares the
// failing system call request/response traffic would otherwise make on every message (the
// approach of Go's netpoll, pollDesc's ready state).
//
// cancel() takes the operation out of its slot and completes it with -ECANCELED at once. wait()
// is epoll_pwait2 (nanosecond timeouts, Linux 5.11) or epoll_wait (milliseconds, rounded up)
// where the kernel lacks it. Regular files cannot be waited for: native_files() is false and
// file I/O goes to the offload pool. In a child forked while it ran, the epoll instance is the
// parent's (shared by fork()): the engine refuses to touch it (EPERM), so that a child closing a
// socket never unregisters the parent's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/event_engine.hpp"

namespace coring::detail {

class EpollEngine final : public EventEngine {
 public:
  EpollEngine() = default;
  ~EpollEngine() override;

  Engine kind() const noexcept override { return Engine::epoll; }
  int init(const RunOptions& options) override;
  bool start(IoOp& op) override;
  void cancel(IoOp& op) noexcept override;
  void wait(int64_t timeout_ns) override;
  size_t inflight() const noexcept override { return inflight_; }
  void forget(int fd) noexcept override;
  int failure() const noexcept override { return failure_; }
  bool native_files() const noexcept override { return false; }

 private:
  struct Descriptor {
    IoOp* reader = nullptr;
    IoOp* writer = nullptr;
    bool registered = false;
    bool may_read = true;   // false: known empty until the next event
    bool may_write = true;  // false: known full until the next event
    // The peer closed its side, or an error is pending: reads never block again, so no short
    // read may be taken for "empty" (the event that said so will not come a second time).
    bool hung_up = false;
  };

  Descriptor& descriptor(int fd);
  // The operation's non-blocking system call; -EAGAIN when it would block. `again`: a retry
  // after a readiness event (a connect then asks for its outcome).
  static int32_t attempt(IoOp& op, bool again) noexcept;
  void learn(Descriptor& d, const IoOp& op, int32_t result) noexcept;
  void retry(int fd, bool reader, uint32_t events);
  void complete(IoOp& op, int32_t result) noexcept;

  bool forked() const noexcept;

  int epoll_fd_ = -1;
  unsigned fork_generation_ = 0;  // a forked child shares the epoll instance: it must not touch it
  std::vector<Descriptor> descriptors_;  // by fd
  size_t inflight_ = 0;
  int failure_ = 0;
  bool has_pwait2_ = true;
};

}  // namespace coring::detail

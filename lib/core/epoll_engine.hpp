// The epoll engine (see event_engine.hpp for the contract): readiness-based, for kernels and
// sandboxes without io_uring (Docker's default seccomp profile refuses it).
//
// start() tries the non-blocking system call first; only when it would block (EAGAIN, or a
// connect in progress) does the operation wait, in the descriptor's one slot for its direction
// (a reader: recv, recvmsg, accept, read, poll for input; a writer: send, sendmsg, connect, poll
// for output), so one reader and one writer on one descriptor both wait correctly. Each
// descriptor is registered once, edge-triggered (EPOLLIN | EPOLLRDHUP | EPOLLET), the first time
// an operation on it has to wait, and unregistered by forget() before it is closed: no
// epoll_ctl per read. EPOLLOUT is added only while a writer waits (a full send buffer, a connect
// in progress) and taken off when it is done: registered always, every ACK that frees send
// buffer space would wake the epoll instance for nothing (measured at 1000 echo connections,
// 64 B, server and client on one CPU: 3.10-3.16 us of server CPU per round trip with it,
// 2.78-3.01 us without). Edge-triggered means an event is
// reported once, when the descriptor becomes ready; so the engine remembers per direction
// whether it may be ready (an event came, or nothing is known) or is known not to be (a call
// found it empty: EAGAIN, a short read of a stream, a short write), and a call on a descriptor
// known not to be ready waits for the next event without trying first, which spares the
// failing system call request/response traffic would otherwise make on every message (the
// approach of Go's netpoll, pollDesc's ready state).
//
// wait() collects events and dispatch_one() hands them out one at a time, so that the
// scheduler runs the coroutine an event woke (which answers on the socket it just read) before
// it reads the next socket: the socket's kernel state is still in the cache. All reads first,
// then all writes, cost 2.78-3.01 us per round trip at 1000 connections; one at a time
// 2.60-2.88 us (the C epoll server with no runtime, bench/peers/epoll_echo: 2.37-2.59 us).
//
// cancel() takes the operation out of its slot and completes it with -ECANCELED at once. wait()
// is epoll_pwait2 (nanosecond timeouts, Linux 5.11) or epoll_wait (milliseconds, rounded up)
// where the kernel lacks it. Regular files cannot be waited for: native_files() is false and
// file I/O goes to the offload pool. In a child forked while it ran, the epoll instance is the
// parent's (shared by fork()): the engine refuses to touch it (EPERM), so that a child closing a
// socket never unregisters the parent's.
#pragma once

#include <sys/epoll.h>

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
  bool dispatch_one() override;
  size_t inflight() const noexcept override { return inflight_; }
  void forget(int fd) noexcept override;
  int failure() const noexcept override { return failure_; }
  bool native_files() const noexcept override { return false; }

 private:
  struct Descriptor {
    IoOp* reader = nullptr;
    IoOp* writer = nullptr;
    bool registered = false;
    bool watching_output = false;  // EPOLLOUT is in the registration
    bool may_read = true;          // false: known empty until the next event
    bool may_write = true;         // false: known full until the next event
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
  // Registers fd, or changes its registration, so that it reports output readiness or not.
  // 0 or -errno.
  int watch(int fd, Descriptor& d, bool output) noexcept;
  void complete(IoOp& op, int32_t result) noexcept;

  bool forked() const noexcept;

  static constexpr int kBatch = 256;
  epoll_event events_[kBatch];  // collected by wait(), dispatched by dispatch_one()
  int event_count_ = 0;
  int next_event_ = 0;

  int epoll_fd_ = -1;
  unsigned fork_generation_ = 0;  // a forked child shares the epoll instance: it must not touch it
  std::vector<Descriptor> descriptors_;  // by fd
  size_t inflight_ = 0;
  int failure_ = 0;
  bool has_pwait2_ = true;
};

}  // namespace coring::detail

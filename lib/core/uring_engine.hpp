// The io_uring engine (see event_engine.hpp for the contract): one ring per scheduler.
//
// Operations are submitted in batches: an SQE filled by a coroutine stays in the submission
// queue until the scheduler has run every ready coroutine, then one io_uring_enter submits the
// whole batch and waits for completions, with the nearest timer deadline as its timeout.
// Completions are reaped in a batch too. Each SQE's user_data is the IoOp it carries out;
// user_data 0 marks a request whose completion nobody waits for (a cancellation).
//
// What it guarantees beyond the contract:
// - init() accepts a kernel only if it has every feature and opcode the library uses; it
//   refuses with ENOSYS and says what is missing otherwise (why()).
// - A request is never dropped: with the submission queue full it submits the batch (and reaps
//   completions when the kernel asks for room in the completion queue) until a slot is free.
// - The ring is unusable when io_uring_enter keeps failing with an error that no retry fixes
//   (a seccomp filter installed after set-up, say): after the first failure it logs one ERROR,
//   backs off (1 ms, doubling up to 100 ms) and logs at most once a second, and after
//   kGiveUpNs of failures it gives up: failure() holds the errno from then on. Requests that
//   never reached the kernel complete with that errno; those the kernel took stay its own
//   (their buffers may still be written), see Scheduler::loop().
// - A recv whose op says likely_waits asks the kernel to wait for data before trying
//   (IORING_RECVSEND_POLL_FIRST, 5.19), and `more` reports IORING_CQE_F_SOCK_NONEMPTY.
// - Completions dispatched are only the library's own (user_data it set).
//
// DESIGN NOTE (socket I/O through the ring). Every socket wait is an IORING_OP_RECV/SEND/
// ACCEPT/CONNECT SQE submitted in a batch with everyone else's, completing inline at submission
// when the socket is ready and through the kernel's internal poll otherwise. A recv that follows
// one which emptied the socket (likely_waits, from the last CQE's missing SOCK_NONEMPTY) sets
// IORING_RECVSEND_POLL_FIRST: in request/response traffic the next request is not there yet, so
// the kernel arms its poll at once instead of failing a recv first (CORING_POLL_FIRST=0 turns
// that off, for measurements). Measured when the socket layer was written, with the echo
// benchmark (server and client on one CPU, 64 B, 6 interleaved rounds, median round trips/s):
//                                      100 connections   1000 connections
//   ring, poll first (the default)          86.4k             71.0k
//   ring, recv tried first                  79.7k             56.3k
//   send by syscall first, then ring        89.7k             64.4k
//   recv and send by syscall first          ~85k (3 rounds, also the slowest with the client
//                                            on the other CPU: 142k vs 148-164k)
// "Try the syscall first" costs a failed recv per message in request/response traffic and a
// syscall per operation that the ring would have batched; it never won clearly, so the ring is
// the way. (The epoll engine does try first: it has no other way, and remembers readiness to
// spare the failing recv; see epoll_engine.hpp.)
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/event_engine.hpp"

namespace coring::detail {

class UringEngine final : public EventEngine {
 public:
  // How long io_uring_enter may keep failing before the ring is declared unusable.
  static constexpr int64_t kGiveUpNs = 1'000'000'000;

  UringEngine() = default;
  ~UringEngine() override;

  Engine kind() const noexcept override { return Engine::io_uring; }
  int init(const RunOptions& options) override;
  bool start(IoOp& op) override;
  void cancel(IoOp& op) noexcept override;
  void wait(int64_t timeout_ns) override;
  size_t inflight() const noexcept override { return inflight_; }
  void forget(int) noexcept override {}
  int failure() const noexcept override { return failure_; }
  bool native_files() const noexcept override { return true; }
  unsigned setup_flags() const noexcept override { return setup_flags_; }

  // Tests only: init() then behaves as if the kernel lacked these feature bits and opcode
  // (-1: none). Reset by passing 0 and -1.
  static void hide_for_test(uint32_t features, int opcode) noexcept;

 private:
  // A free SQE, counted as in flight until its final CQE; nullptr once the ring is unusable, and
  // in a child forked while it ran (the ring's memory is shared with the parent: a child that
  // wrote into it would corrupt the parent's queue).
  io_uring_sqe* get_sqe();
  void submit_and_wait(int64_t timeout_ns);
  unsigned reap();
  bool check_kernel();
  void submit_failed(int error);
  void give_up(int error);

  io_uring ring_{};
  bool initialized_ = false;
  unsigned setup_flags_ = 0;
  size_t inflight_ = 0;
  bool poll_first_supported_ = false;
  unsigned fork_generation_ = 0;  // see core/fork.hpp: the ring is not a forked child's
  int failure_ = 0;
  int64_t failing_since_ns_ = -1;  // when io_uring_enter started failing; -1: it works
  int64_t backoff_ns_ = 0;
  int64_t last_report_ns_ = 0;
  uint64_t failures_ = 0;
};

}  // namespace coring::detail

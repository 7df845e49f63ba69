// The event engine a scheduler waits in: one io_uring instance per scheduler (per thread).
//
// Operations are submitted in batches: an SQE filled by a coroutine stays in the submission
// queue until the scheduler has run every ready coroutine, then one io_uring_enter submits the
// whole batch and waits for completions, with the nearest timer deadline as its timeout.
// Completions are reaped in a batch too. Each SQE's user_data points to a Completion (usually
// an operation record on the waiting coroutine's stack); user_data 0 marks a request whose
// completion nobody waits for (a cancellation).
//
// What the engine guarantees:
// - init() accepts a kernel only if it has every feature and opcode the library uses; it
//   refuses with ENOSYS and says what is missing otherwise.
// - get_sqe() never drops a request: with the submission queue full it submits the batch (and
//   reaps completions when the kernel asks for room in the completion queue) until a slot is
//   free. It returns nullptr only once the ring is unusable.
// - The ring is unusable when io_uring_enter keeps failing with an error that no retry fixes
//   (a seccomp filter installed after set-up, say): after the first failure it logs one ERROR,
//   backs off (1 ms, doubling up to 100 ms) and logs at most once a second, and after
//   kGiveUpNs of failures it gives up: failure() holds the errno from then on. Requests that
//   never reached the kernel are completed with that errno; those the kernel took stay its own
//   (their buffers may still be written), see Scheduler::loop().
// - reap() dispatches only user_data the library created.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace coring::detail {

struct Completion {
  // Called by the engine for each CQE; IORING_CQE_F_MORE in flags marks a multishot CQE after
  // which the request stays armed.
  void (*complete)(Completion* self, int32_t result, uint32_t flags) = nullptr;
};

class Engine {
 public:
  // How long io_uring_enter may keep failing before the ring is declared unusable.
  static constexpr int64_t kGiveUpNs = 1'000'000'000;

  Engine() = default;
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Sets up the ring, trying the fastest setup flags first and dropping those the kernel
  // refuses, then checks the kernel's features and opcodes. Returns 0 or a negative errno: the
  // last refusal, or -ENOSYS when something the library needs is missing (missing() says what).
  int init(unsigned entries);
  const std::string& missing() const noexcept { return missing_; }

  // A free SQE, counted as in flight until its final CQE; nullptr once the ring is unusable, and
  // in a child forked while it ran (the ring's memory is shared with the parent: a child that
  // wrote into it would corrupt the parent's queue).
  io_uring_sqe* get_sqe();

  // Submits what is queued and waits for at least one completion, at most timeout_ns
  // (negative: no limit; 0: just submit and collect what is there, no syscall at all when
  // nothing is queued or in flight). Failures are handled here (see the header comment).
  void submit_and_wait(int64_t timeout_ns);

  // Calls complete() of every completion that arrived. Returns how many CQEs it consumed.
  unsigned reap();

  // 0 while the ring works; the errno of io_uring_enter once it is unusable.
  int failure() const noexcept { return failure_; }
  size_t inflight() const noexcept { return inflight_; }
  unsigned setup_flags() const noexcept { return setup_flags_; }
  // Whether recv may ask for IORING_RECVSEND_POLL_FIRST (5.19's flags: see init()).
  bool poll_first_supported() const noexcept { return poll_first_supported_; }

  // Tests only: init() then behaves as if the kernel lacked these feature bits and opcode
  // (-1: none). Reset by passing 0 and -1.
  static void hide_for_test(uint32_t features, int opcode) noexcept;

 private:
  bool check_kernel();
  void submit_failed(int error);
  void give_up(int error);

  io_uring ring_{};
  bool initialized_ = false;
  unsigned setup_flags_ = 0;
  size_t inflight_ = 0;
  bool poll_first_supported_ = false;
  unsigned fork_generation_ = 0;  // see core/fork.hpp: the ring is not a forked child's
  std::string missing_;
  int failure_ = 0;
  int64_t failing_since_ns_ = -1;  // when io_uring_enter started failing; -1: it works
  int64_t backoff_ns_ = 0;
  int64_t last_report_ns_ = 0;
  uint64_t failures_ = 0;
};

}  // namespace coring::detail

// The event engine a scheduler waits in: one io_uring instance per scheduler (per thread).
//
// Operations are submitted in batches: an SQE filled by a coroutine stays in the submission
// queue until the scheduler has run every ready coroutine, then one io_uring_enter submits the
// whole batch and waits for completions, with the nearest timer deadline as its timeout.
// Completions are reaped in a batch too. Each SQE's user_data points to a Completion (usually
// an operation record on the waiting coroutine's stack); user_data 0 marks a request whose
// completion nobody waits for (a cancellation).
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>

namespace coring::detail {

struct Completion {
  // Called by the scheduler for each CQE; `more` is set for a multishot CQE after which the
  // request stays armed.
  void (*complete)(Completion* self, int32_t result, uint32_t flags) = nullptr;
};

class Engine {
 public:
  Engine() = default;
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Sets up the ring, trying the fastest setup flags first and dropping those the kernel
  // refuses. Returns 0 or a negative errno (the last refusal).
  int init(unsigned entries);

  // A free SQE, counted as in flight until its final CQE. When the submission queue is full the
  // queued batch is submitted first. Returns nullptr only if the kernel refuses the submit.
  io_uring_sqe* get_sqe();

  // Submits what is queued and waits for at least one completion, at most timeout_ns
  // (negative: no limit; 0: just submit and collect what is there, no syscall at all when
  // nothing is queued or in flight).
  void submit_and_wait(int64_t timeout_ns);

  // Calls on_cqe(Completion*, result, flags) for every completion that arrived. Returns how many.
  template <class OnCompletion>
  unsigned reap(OnCompletion&& on_cqe);

  size_t inflight() const noexcept { return inflight_; }
  bool has_pending_sqes() const noexcept { return io_uring_sq_ready(&ring_) > 0; }
  unsigned setup_flags() const noexcept { return setup_flags_; }
  io_uring* ring() noexcept { return &ring_; }

 private:
  io_uring ring_{};
  bool initialized_ = false;
  unsigned setup_flags_ = 0;
  size_t inflight_ = 0;
};

template <class OnCompletion>
unsigned Engine::reap(OnCompletion&& on_cqe) {
  unsigned head;
  unsigned count = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++count;
    uint32_t flags = cqe->flags;
    if (!(flags & IORING_CQE_F_MORE)) --inflight_;
    if (cqe->user_data != 0) {
      on_cqe(reinterpret_cast<Completion*>(static_cast<uintptr_t>(cqe->user_data)), cqe->res,
             flags);
    }
  }
  io_uring_cq_advance(&ring_, count);
  return count;
}

}  // namespace coring::detail

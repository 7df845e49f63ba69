// The one waiting primitive that channels, wait groups, mutexes and the connection pool are
// built on. Not part of the public contract.
//
// A Waiter lives on the waiting coroutine's stack and is linked into a WaitList owned by the
// object it waits on. park() suspends the coroutine until someone calls wake() on its waiter,
// the timeout passes, cancel(cid) interrupts it, or run() unwinds it after a deadlock. Exactly
// one of those ends a wait: whoever takes the waiter off its list decides the result, so a
// timer that fires after a wake-up, or a wake-up after a timeout, finds the waiter gone and
// does nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "coring/common.hpp"
#include "coring/detail/switch.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring::detail {

class WaitList;

struct Waiter {
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  WaitList* list = nullptr;   // the list this waiter is queued on; null once taken off it
  void* coroutine = nullptr;  // set when it is queued: null after park() means it never waited
  void* slot = nullptr;       // what the waker hands over or takes (a channel's value)
  uint32_t flags = 0;         // meaning defined by the owner of the list
  int result = 0;             // kWaitOk, ETIMEDOUT, ECANCELED, or one of the values below
};

inline constexpr int kWaitOk = 0;
inline constexpr int kWaitClosed = -1;     // the object was closed while waiting
inline constexpr int kWaitDestroyed = -2;  // the object was destroyed while waiting
inline constexpr int kWaitFailed = -3;     // the waker could not complete the hand-over

// Intrusive FIFO of waiters; O(1) push, pop and removal. Never allocates.
class WaitList {
 public:
  WaitList() = default;
  WaitList(const WaitList&) = delete;
  WaitList& operator=(const WaitList&) = delete;

  // Where a wait that ends by timeout or cancellation records ETIMEDOUT or ECANCELED, at the
  // moment its waiter leaves this list, while the object that owns the list certainly exists:
  // once its coroutine resumes, the object may be gone (a cancel() followed by the object's
  // destruction). Null: nowhere.
  void record_failures_in(int* failure) noexcept { failure_ = failure; }
  int* failure_record() const noexcept { return failure_; }

  bool empty() const noexcept { return head_ == nullptr; }
  size_t size() const noexcept { return size_; }
  Waiter* front() const noexcept { return head_; }

  void push_back(Waiter* w) noexcept {
    w->list = this;
    w->next = nullptr;
    w->prev = tail_;
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
    ++size_;
  }

  void remove(Waiter* w) noexcept {
    if (w->prev != nullptr) {
      w->prev->next = w->next;
    } else {
      head_ = w->next;
    }
    if (w->next != nullptr) {
      w->next->prev = w->prev;
    } else {
      tail_ = w->prev;
    }
    w->prev = w->next = nullptr;
    w->list = nullptr;
    --size_;
  }

  Waiter* pop_front() noexcept {
    Waiter* w = head_;
    if (w != nullptr) remove(w);
    return w;
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  size_t size_ = 0;
  int* failure_ = nullptr;
};

enum class Cancellable : bool { no = false, yes = true };

// Room on the waiting coroutine's stack for the library's record of one park() (what cancel()
// and the deadline need to end it); the library checks that its record fits.
struct ParkRecord {
  alignas(8) unsigned char bytes[96];
};

// park() in halves, so that the switch away can happen in the caller's own frame (see
// coring/detail/switch.hpp for why): prepare_park queues w and plans the switch (no context:
// nothing to jump to, the wait failed at once or needs no switch), finish_park runs once the
// coroutine is back and returns park()'s result.
SwitchPlan prepare_park(WaitList& list, Waiter& w, Duration timeout, Cancellable cancellable,
                        ParkRecord& record);
int finish_park(Waiter& w, ParkRecord& record);
int park_out_of_line(WaitList& list, Waiter& w, Duration timeout, Cancellable cancellable);

inline namespace CORING_DETAIL_SWITCH_VARIANT {

// Queues w at the back of list and suspends the running coroutine until w is woken, the timeout
// passes (ETIMEDOUT), or it is cancelled (ECANCELED, only if cancellable). Returns w.result.
// A timeout of zero fails at once with ETIMEDOUT without queueing. Outside a coroutine it
// cannot wait: it returns EPERM and records it in last_error().
inline __attribute__((always_inline)) int park(WaitList& list, Waiter& w, Duration timeout,
                                               Cancellable cancellable = Cancellable::yes) {
#if CORING_DETAIL_INLINE_SWITCH
  ParkRecord record;
  SwitchPlan plan = prepare_park(list, w, timeout, cancellable, record);
  if (plan.to_context != nullptr) complete_switch(plan);
  return finish_park(w, record);
#else
  return park_out_of_line(list, w, timeout, cancellable);
#endif
}

}  // namespace CORING_DETAIL_SWITCH_VARIANT

// Takes w off its list, stores result in it and makes its coroutine ready to run. The caller
// goes on; the woken coroutine runs at the scheduler's next turn.
void wake(Waiter& w, int result) noexcept;

// Wakes every waiter of list with result (close(), destruction).
void wake_all(WaitList& list, int result) noexcept;

// True when the calling code runs inside a coroutine (so it may wait).
bool in_coroutine() noexcept;

// True when the calling code runs in a coroutine that is being unwound after a deadlock.
bool running_is_unwinding() noexcept;

// Records an errno value as the running coroutine's (or thread's) last_error().
void set_last_error(int error_number) noexcept;

}  // namespace coring::detail

#pragma GCC visibility pop

// Wait groups and mutexes for the coroutines of one container (one thread).
//
// WaitGroup: add(n) before starting work, done() when a piece ends, wait() until the counter
// is zero, as Go's sync.WaitGroup. Mutex: mutual exclusion across waits (a coroutine that holds
// it may sleep or do I/O); waiters get the lock in arrival order, handed over directly on
// unlock() so no newcomer can barge in. It works with std::lock_guard and std::unique_lock.
//
// How things fail:
// - WaitGroup::wait() returns false on timeout (ETIMEDOUT in last_error()), when cancelled
//   (ECANCELED), or when it would have to wait outside a coroutine (EPERM). A counter pushed
//   below zero by add()/done() throws std::logic_error and leaves the counter at zero; one
//   pushed past INT_MAX throws std::overflow_error and leaves it as it was.
// - Mutex::lock() cannot time out and cancel(cid) does not interrupt it (use try_lock() in a
//   loop with sleeps if you need that). The mutex knows which coroutine holds it (code outside
//   any coroutine counts as one holder). lock() that would have to wait outside a coroutine,
//   unlock() of a mutex that is not locked, unlock() by a coroutine that does not hold it, and
//   lock() that would have to wait in a process forked while the container ran throw
//   std::logic_error; lock() by the coroutine that already holds it throws
//   std::system_error with EDEADLK (it is not recursive).
// - While its coroutine is unwound after a deadlock, lock() cannot wait: it throws the
//   unwinding, or, in a destructor run by that unwinding (where a throw would end the program),
//   returns without the lock and with ECANCELED in last_error(). The matching unlock() (a
//   std::lock_guard's) then does nothing, so the coroutine that really holds the lock keeps it.
// Both belong to the thread that uses them; neither is safe to share between containers.
#pragma once

#include <cerrno>

#include "coring/common.hpp"
#include "coring/detail/wait.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

class WaitGroup {
 public:
  WaitGroup() = default;
  WaitGroup(const WaitGroup&) = delete;
  WaitGroup& operator=(const WaitGroup&) = delete;
  ~WaitGroup();

  void add(int n = 1);
  void done() { add(-1); }
  // Inline, so that the wait happens in the caller's frame (see Channel::pop()).
  __attribute__((always_inline)) bool wait(Duration timeout = kForever) {
    if (count_ == 0) return true;
    detail::Waiter waiter;
    int result = detail::park(waiters_, waiter, timeout);
    if (result == detail::kWaitOk) return true;
    if (result == detail::kWaitDestroyed) detail::set_last_error(ECANCELED);
    return false;
  }
  int count() const noexcept { return count_; }

 private:
  int count_ = 0;
  detail::WaitList waiters_;
};

class Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  ~Mutex();

  void lock();
  bool try_lock() noexcept;
  void unlock();
  bool locked() const noexcept { return holder_ != kUnlocked; }

 private:
  static constexpr long kUnlocked = 0;  // coroutine ids start at 1; -1 is "outside"
  long holder_ = kUnlocked;             // this_coroutine::id() of whoever holds it
  detail::WaitList waiters_;
};

}  // namespace coring

#pragma GCC visibility pop

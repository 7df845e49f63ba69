#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

#include "coring/coroutine.hpp"
#include "coring/log.hpp"
#include "coring/sync.hpp"

namespace coring {

Mutex::~Mutex() {
  if (!waiters_.empty()) {
    log(LogLevel::warning, "Mutex destroyed while coroutines wait on it");
    detail::wake_all(waiters_, detail::kWaitDestroyed);
  }
}

void Mutex::lock() {
  long self = this_coroutine::id();
  if (holder_ == kUnlocked) {
    holder_ = self;
    return;
  }
  if (holder_ == self) {
    throw std::system_error(EDEADLK, std::generic_category(),
                            "Mutex::lock(): the calling coroutine already holds it");
  }
  if (!detail::in_coroutine()) {
    throw std::logic_error("Mutex::lock() would have to wait outside a coroutine");
  }
  detail::Waiter waiter;
  waiter.slot = &self;  // unlock() hands the lock over to this id
  // Not cancellable: lock() has no way to report failure to a std::lock_guard. On wake-up the
  // lock has been handed over to us by unlock() (holder_ is already our id).
  int result = detail::park(waiters_, waiter, kForever, detail::Cancellable::no);
  if (result == detail::kWaitDestroyed) {
    throw std::logic_error("Mutex destroyed while a coroutine waited to lock it");
  }
  if (result == EPERM) {  // a forked child: it cannot wait in its parent's container
    throw std::logic_error(
        "Mutex::lock() would have to wait in a process forked while its "
        "container ran");
  }
  // Otherwise failed only where its coroutine may not wait (unwinding, see the header):
  // without the lock, ECANCELED in last_error(), and the matching unlock() does nothing.
}

bool Mutex::try_lock() noexcept {
  if (holder_ != kUnlocked) return false;
  holder_ = this_coroutine::id();
  return true;
}

void Mutex::unlock() {
  long self = this_coroutine::id();
  if (holder_ != self) {
    // The guard of a lock() that failed because its coroutine is being unwound: not ours.
    if (detail::running_is_unwinding()) return;
    if (holder_ == kUnlocked)
      throw std::logic_error("Mutex::unlock() of a mutex that is not locked");
    throw std::logic_error("Mutex::unlock() by coroutine#" + std::to_string(self) +
                           ", which does not hold it (coroutine#" + std::to_string(holder_) +
                           " does)");
  }
  if (detail::Waiter* next = waiters_.front()) {
    holder_ = *static_cast<const long*>(next->slot);  // handed over: nobody can barge in
    detail::wake(*next, detail::kWaitOk);
  } else {
    holder_ = kUnlocked;
  }
}

}  // namespace coring

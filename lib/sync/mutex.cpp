#include <stdexcept>

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
  if (!locked_) {
    locked_ = true;
    return;
  }
  if (!detail::in_coroutine()) {
    throw std::logic_error("Mutex::lock() would have to wait outside a coroutine");
  }
  detail::Waiter waiter;
  // Not cancellable: lock() has no way to report failure. On wake-up the lock has been handed
  // over to us by unlock() (locked_ stayed true).
  int result = detail::park(waiters_, waiter, kForever, detail::Cancellable::no);
  if (result == detail::kWaitDestroyed) {
    throw std::logic_error("Mutex destroyed while a coroutine waited to lock it");
  }
}

bool Mutex::try_lock() noexcept {
  if (locked_) return false;
  locked_ = true;
  return true;
}

void Mutex::unlock() {
  if (!locked_) throw std::logic_error("Mutex::unlock() of a mutex that is not locked");
  if (detail::Waiter* next = waiters_.front()) {
    detail::wake(*next, detail::kWaitOk);  // hand over: locked_ stays true
  } else {
    locked_ = false;
  }
}

}  // namespace coring

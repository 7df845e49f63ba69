#include <cerrno>
#include <climits>
#include <stdexcept>

#include "coring/log.hpp"
#include "coring/sync.hpp"

namespace coring {

WaitGroup::~WaitGroup() {
  if (!waiters_.empty()) {
    log(LogLevel::warning, "WaitGroup destroyed while coroutines wait on it");
    detail::wake_all(waiters_, detail::kWaitDestroyed);
  }
}

void WaitGroup::add(int n) {
  long count = static_cast<long>(count_) + n;
  if (count > INT_MAX) {
    throw std::overflow_error("WaitGroup counter overflow (more than INT_MAX pending)");
  }
  if (count < 0) {
    count_ = 0;
    detail::wake_all(waiters_, detail::kWaitOk);
    throw std::logic_error("WaitGroup counter went negative (more done() than add())");
  }
  count_ = static_cast<int>(count);
  if (count_ == 0) detail::wake_all(waiters_, detail::kWaitOk);
}

}  // namespace coring

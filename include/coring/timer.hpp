// Timers: run a function later, once (after) or periodically (tick), each time in a new
// coroutine of the calling thread's container.
//
// Timers share the scheduler's timer heap with sleeps and timeouts; the scheduler waits for the
// nearest deadline inside io_uring's submit-and-wait, so an idle container costs no CPU. A
// container does not end while a timer is armed: clear() every tick to let run() return.
//
// How things fail: after() and tick() return -1 outside a container (EPERM) and tick() with a
// non-positive period (EINVAL). A timer that fires while the container is at max_coroutines
// skips that firing with a WARNING. clear() of an unknown or already fired id returns false.
// fn may take the timer id as its only argument (as Swoole's callbacks do) or no argument.
// A tick fires every d after the previous deadline; when the container falls behind by more
// than a period, the missed firings are skipped rather than run in a burst.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include "coring/common.hpp"
#include "coring/detail/callable.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

template <class F>
long after(Duration d, F&& fn);
template <class F>
long tick(Duration d, F&& fn);
bool clear(long timer_id);

namespace detail {

class TimerCallback {
 public:
  virtual ~TimerCallback() = default;
  virtual void call(long timer_id) = 0;
};

template <class Fn>
class TimerCallbackFor final : public TimerCallback {
 public:
  template <class F>
  explicit TimerCallbackFor(F&& fn) : fn_(std::forward<F>(fn)) {}
  void call(long timer_id) override {
    if constexpr (std::is_invocable_v<Fn&, long>) {
      fn_(timer_id);
    } else {
      fn_();
    }
  }

 private:
  Fn fn_;
};

long add_timer(Duration d, bool repeat, std::shared_ptr<TimerCallback> callback);

}  // namespace detail

template <class F>
long after(Duration d, F&& fn) {
  return detail::add_timer(
      d, false, std::make_shared<detail::TimerCallbackFor<std::decay_t<F>>>(std::forward<F>(fn)));
}

template <class F>
long tick(Duration d, F&& fn) {
  return detail::add_timer(
      d, true, std::make_shared<detail::TimerCallbackFor<std::decay_t<F>>>(std::forward<F>(fn)));
}

}  // namespace coring

#pragma GCC visibility pop

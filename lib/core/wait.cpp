// park()/wake(): the waiting primitive under channels, wait groups, mutexes and pools.
#include "coring/detail/wait.hpp"

#include <cerrno>

#include "core/scheduler.hpp"

namespace coring::detail {
namespace {

struct ParkWait : WaitContext {
  Waiter* waiter = nullptr;
  Coroutine* self = nullptr;
};

// Ends the wait with result unless someone else already took the waiter off its list.
void end_park(ParkWait* park, int result) {
  Waiter* waiter = park->waiter;
  if (waiter->list == nullptr) return;
  waiter->list->remove(waiter);
  waiter->result = result;
  tls_scheduler->make_ready(park->self);
}

void park_fire(TimerNode* node) {
  end_park(static_cast<ParkWait*>(node), ETIMEDOUT);
}

void park_abort(WaitContext* context) {
  auto* park = static_cast<ParkWait*>(context);
  tls_scheduler->disarm(*park);
  end_park(park, ECANCELED);
}

}  // namespace

int park(WaitList& list, Waiter& w, Duration timeout, Cancellable cancellable) {
  WaitPermit permit = begin_wait();
  if (!permit) {
    set_last_error(permit.error);
    return permit.error;
  }
  if (timeout <= Duration::zero()) {
    set_last_error(ETIMEDOUT);
    return ETIMEDOUT;
  }
  w.coroutine = permit.self;
  w.result = kWaitOk;
  list.push_back(&w);
  ParkWait park;
  park.waiter = &w;
  park.self = permit.self;
  park.abort = &park_abort;
  park.cancellable = cancellable == Cancellable::yes;
  park.fire = &park_fire;
  // Whoever takes the waiter off the list (wake(), the deadline, an abort) ends the wait.
  tls_scheduler->wait_until(permit, park, deadline_for(timeout), [&] { return w.list == nullptr; });
  if (w.result == ETIMEDOUT || w.result == ECANCELED) set_last_error(w.result);
  return w.result;
}

void wake(Waiter& w, int result) noexcept {
  w.list->remove(&w);
  w.result = result;
  tls_scheduler->make_ready(static_cast<Coroutine*>(w.coroutine));
}

bool running_is_unwinding() noexcept {
  Coroutine* self = running_coroutine();
  return self != nullptr && self->unwinding;
}

void wake_all(WaitList& list, int result) noexcept {
  while (Waiter* w = list.front()) wake(*w, result);
}

}  // namespace coring::detail

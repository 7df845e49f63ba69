// park()/wake(): the waiting primitive under channels, wait groups, mutexes and pools.
#include "coring/detail/wait.hpp"

#include <cerrno>
#include <new>

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
  if (int* failure = waiter->list->failure_record()) *failure = result;
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

// What park() keeps in its caller's ParkRecord.
struct ParkState {
  ParkWait wait;
  bool waiting = false;  // false: the park failed before it queued anything
};
static_assert(sizeof(ParkState) <= sizeof(ParkRecord) && alignof(ParkState) <= 8,
              "ParkRecord (coring/detail/wait.hpp) must hold a ParkState");

SwitchPlan prepare_park(WaitList& list, Waiter& w, Duration timeout, Cancellable cancellable,
                        ParkRecord& record) {
  auto* state = ::new (record.bytes) ParkState;
  WaitPermit permit = begin_wait();
  if (!permit || timeout <= Duration::zero()) {
    w.result = permit ? ETIMEDOUT : permit.error;
    set_last_error(w.result);
    return SwitchPlan{nullptr, nullptr};
  }
  w.coroutine = permit.self;
  w.result = kWaitOk;
  list.push_back(&w);
  ParkWait& park = state->wait;
  park.waiter = &w;
  park.self = permit.self;
  park.abort = &park_abort;
  park.cancellable = cancellable == Cancellable::yes;
  park.fire = &park_fire;
  state->waiting = true;
  Scheduler* s = tls_scheduler;
  SwitchPlan plan = s->plan_wait(permit.self, park, deadline_for(timeout));
#if CORING_ASAN
  // The sanitizer must see the stack switch: make it here (as prepare_yield does).
  if (plan.to_context != nullptr) s->jump_planned(plan);
  return SwitchPlan{nullptr, plan.self};
#else
  return plan;
#endif
}

int finish_park(Waiter& w, ParkRecord& record) {
  auto* state = std::launder(reinterpret_cast<ParkState*>(record.bytes));
  if (!state->waiting) return w.result;
  // Whoever takes the waiter off the list (wake(), the deadline, an abort) ends the wait.
  tls_scheduler->finish_wait(state->wait.self, state->wait, [&] { return w.list == nullptr; });
  if (w.result == ETIMEDOUT || w.result == ECANCELED) set_last_error(w.result);
  return w.result;
}

int park_out_of_line(WaitList& list, Waiter& w, Duration timeout, Cancellable cancellable) {
  ParkRecord record;
  SwitchPlan plan = prepare_park(list, w, timeout, cancellable, record);
  if (plan.to_context != nullptr) tls_scheduler->jump_planned(plan);
  return finish_park(w, record);
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

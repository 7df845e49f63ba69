// The public functions of coroutine.hpp and timer.hpp: thin checks in front of the scheduler.
#include <cerrno>
#include <memory>
#include <new>

#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/coroutine.hpp"
#include "coring/timer.hpp"

namespace coring {
namespace detail {
namespace {

thread_local int tls_thread_error = 0;

struct SleepWait : WaitContext {
  Coroutine* self = nullptr;
  bool ended = false;
};

void sleep_end(SleepWait* wait) {
  wait->ended = true;
  tls_scheduler->make_ready(wait->self);
}

void sleep_fire(TimerNode* node) {
  sleep_end(static_cast<SleepWait*>(node));
}

void sleep_abort(WaitContext* context) {
  auto* wait = static_cast<SleepWait*>(context);
  tls_scheduler->disarm(*wait);
  sleep_end(wait);
}

void join_end(JoinWait* wait, int result) {
  if (wait->finished) return;
  wait->finished = true;
  wait->result = result;
  for (JoinNode& node : wait->nodes) unlink_join_node(&node);
  tls_scheduler->make_ready(wait->self);
}

void join_fire(TimerNode* node) {
  join_end(static_cast<JoinWait*>(node), ETIMEDOUT);
}
void join_abort(WaitContext* context) {
  auto* wait = static_cast<JoinWait*>(context);
  tls_scheduler->disarm(*wait);
  join_end(wait, ECANCELED);
}

// Fails a call made outside a coroutine.
template <class R>
R outside(R failure) {
  set_last_error(EPERM);
  return failure;
}

}  // namespace

void set_last_error(int error_number) noexcept {
  if (Coroutine* c = running_coroutine()) {
    c->last_error = error_number;
  } else {
    tls_thread_error = error_number;
  }
}

bool in_coroutine() noexcept {
  return running_coroutine() != nullptr;
}

int run_container(const CallableOps& ops, void* fn, const RunOptions& options) {
  if (tls_scheduler != nullptr) {
    set_last_error(EBUSY);
    log_format(LogLevel::warning, "run: a container already runs on this thread");
    return -1;
  }
  if (options.stack_size > kMaxStackSize) {
    set_last_error(EINVAL);
    log_format(LogLevel::error, "run: RunOptions::stack_size (%zu bytes) is larger than %zu",
               options.stack_size, kMaxStackSize);
    return -1;
  }
  if (options.ring_entries == 0) {
    set_last_error(EINVAL);
    log_format(LogLevel::error,
               "run: RunOptions::ring_entries must be at least 1 (it sizes the io_uring queue)");
    return -1;
  }
  auto scheduler = std::make_unique<Scheduler>(options);
  return scheduler->run(ops, fn);
}

SpawnPlan prepare_spawn(const CallableOps& ops, void* fn) {
  Scheduler* s = tls_scheduler;
  if (s == nullptr) {
    log_format(LogLevel::warning, "create: called outside a container (use coring::run)");
    return SpawnPlan{SwitchPlan{nullptr, nullptr}, outside(-1L)};
  }
#if CORING_ASAN
  return SpawnPlan{SwitchPlan{nullptr, nullptr}, s->spawn(ops, fn)};
#else
  return s->plan_spawn(ops, fn);
#endif
}

long spawn(const CallableOps& ops, void* fn) {
  Scheduler* s = tls_scheduler;
  if (s == nullptr) {
    log_format(LogLevel::warning, "create: called outside a container (use coring::run)");
    return outside(-1L);
  }
  return s->spawn(ops, fn);
}

// What sleep() keeps in its caller's SleepRecord.
struct SleepState {
  enum class Kind : uint8_t { refused, turn, timed };
  SleepWait wait;
  Kind kind = Kind::refused;
};
static_assert(sizeof(SleepState) <= sizeof(SleepRecord) && alignof(SleepState) <= 8,
              "SleepRecord (coring/coroutine.hpp) must hold a SleepState");

SwitchPlan prepare_sleep(Duration d, SleepRecord& record) {
  auto* state = ::new (record.bytes) SleepState;
  WaitPermit permit = begin_wait();
  if (!permit) {
    set_last_error(permit.error);
    return SwitchPlan{nullptr, nullptr};
  }
  Scheduler* s = tls_scheduler;
  Coroutine* self = permit.self;
  state->wait.self = self;
  SwitchPlan plan;
  if (d <= Duration::zero()) {  // a turn through the ready queue; nothing can interrupt it
    state->kind = SleepState::Kind::turn;
    self->cancelled = false;
    s->make_ready(self);
    plan = s->plan_suspend(self);
  } else {
    state->kind = SleepState::Kind::timed;
    state->wait.fire = &sleep_fire;
    state->wait.abort = &sleep_abort;
    plan = s->plan_wait(self, state->wait, deadline_for(d));
  }
#if CORING_ASAN
  if (plan.to_context != nullptr) s->jump_planned(plan);  // the sanitizer must see it
  return SwitchPlan{nullptr, plan.self};
#else
  return plan;
#endif
}

bool finish_sleep(SleepRecord& record) {
  auto* state = std::launder(reinterpret_cast<SleepState*>(record.bytes));
  SleepWait& wait = state->wait;
  switch (state->kind) {
    case SleepState::Kind::refused:
      return false;
    case SleepState::Kind::turn:
      unwind_after_wait(wait.self);
      return true;
    case SleepState::Kind::timed:
      break;
  }
  tls_scheduler->finish_wait(wait.self, wait, [&] { return wait.ended; });
  if (wait.aborted) {
    set_last_error(ECANCELED);
    return false;
  }
  return true;
}

bool sleep_out_of_line(Duration d) {
  SleepRecord record;
  SwitchPlan plan = prepare_sleep(d, record);
  if (plan.to_context != nullptr) tls_scheduler->jump_planned(plan);
  return finish_sleep(record);
}

void add_defer(std::unique_ptr<Task> task) {
  Coroutine* self = running_coroutine();
  if (self == nullptr) {
    log_format(LogLevel::warning, "defer: called outside a coroutine; the function is dropped");
    return;
  }
  if (self->defers == nullptr) self->defers = new std::vector<std::unique_ptr<Task>>();
  self->defers->push_back(std::move(task));
}

long add_timer(Duration d, bool repeat, std::shared_ptr<TimerCallback> callback) {
  Scheduler* s = tls_scheduler;
  if (s == nullptr) {
    log_format(LogLevel::warning, "%s: called outside a container", repeat ? "tick" : "after");
    return outside(-1L);
  }
  if (repeat && d <= Duration::zero()) {
    set_last_error(EINVAL);
    return -1;
  }
  return s->add_timer(d.count(), repeat, std::move(callback));
}

}  // namespace detail

using detail::Coroutine;
using detail::JoinNode;
using detail::log_format;
using detail::running_coroutine;
using detail::Scheduler;
using detail::set_last_error;
using detail::tls_scheduler;

namespace detail {

// Checks resume(cid) and records why it cannot happen. Null when it cannot.
static Coroutine* resumable(long cid) {
  Scheduler* s = tls_scheduler;
  if (s == nullptr || s->running() == nullptr) return outside<Coroutine*>(nullptr);
  if (s->forked()) [[unlikely]] {
    s->refuse_in_forked_child("resume()");
    return nullptr;
  }
  Coroutine* target = s->find(cid);
  if (target == nullptr) {
    set_last_error(ESRCH);
    return nullptr;
  }
  if (target->state != State::yielded) {
    set_last_error(EINVAL);
    return nullptr;
  }
  return target;
}

static Coroutine* yieldable() {
  Scheduler* s = tls_scheduler;
  Coroutine* self = s == nullptr ? nullptr : s->running();
  if (self == nullptr) {
    log_format(LogLevel::warning, "yield: called outside a coroutine");
    set_last_error(EPERM);
    return nullptr;
  }
  if (s->forked()) [[unlikely]] {
    s->refuse_in_forked_child("yield()");
    return nullptr;
  }
  if (refuse_wait_when_unwinding(self)) return nullptr;
  return self;
}

SwitchPlan prepare_resume(long cid) {
  Coroutine* target = resumable(cid);
  if (target == nullptr) return SwitchPlan{nullptr, nullptr};
#if CORING_ASAN
  Coroutine* self = tls_scheduler->running();
  tls_scheduler->resume(target);  // the sanitizer must see the switch: do it here
  return SwitchPlan{nullptr, self};
#else
  return tls_scheduler->plan_resume(target);
#endif
}

bool resume_out_of_line(long cid) {
  Coroutine* target = resumable(cid);
  if (target == nullptr) return false;
  tls_scheduler->resume(target);
  return true;
}

SwitchPlan prepare_yield() {
  Coroutine* self = yieldable();
  if (self == nullptr) return SwitchPlan{nullptr, nullptr};
  self->state = State::yielded;
#if CORING_ASAN
  tls_scheduler->suspend();
  unwind_after_wait(self);
  return SwitchPlan{nullptr, self};
#else
  return tls_scheduler->plan_suspend(self);
#endif
}

void yield_out_of_line() {
  if (yieldable() == nullptr) return;
  tls_scheduler->yield_running();
}

void land_after_death(CoroutineHead* previous) noexcept {
  tls_scheduler->recycle(static_cast<Coroutine*>(previous));
}

void unwind_after_switch() {
  unwind_after_wait(tls_scheduler->running());
}

}  // namespace detail

bool cancel(long cid) {
  Scheduler* s = tls_scheduler;
  if (s == nullptr) return detail::outside(false);
  if (s->forked()) [[unlikely]] {
    s->refuse_in_forked_child("cancel()");
    return false;
  }
  Coroutine* target = s->find(cid);
  if (target == nullptr) {
    set_last_error(ESRCH);
    return false;
  }
  if (!s->cancel(target)) {
    set_last_error(EINVAL);
    return false;
  }
  return true;
}

bool exists(long cid) {
  Scheduler* s = tls_scheduler;
  return s != nullptr && s->find(cid) != nullptr;
}

bool join(std::span<const long> cids, Duration timeout) {
  detail::WaitPermit permit = detail::begin_wait();
  if (!permit) {
    set_last_error(permit.error);
    return false;
  }
  Scheduler* s = tls_scheduler;
  Coroutine* self = permit.self;
  detail::JoinWait wait;
  wait.self = self;
  for (long cid : cids) {
    if (cid == self->id) {
      set_last_error(EDEADLK);
      return false;
    }
  }
  wait.nodes.resize(cids.size());
  for (long cid : cids) {
    if (Coroutine* target = s->find(cid)) {
      // The same id twice counts once.
      if (target->joiners != nullptr && target->joiners->wait == &wait) continue;
      JoinNode& node = wait.nodes[wait.remaining++];
      node.wait = &wait;
      detail::link_join_node(target, &node);
    }
  }
  if (wait.remaining == 0) return true;
  if (timeout <= Duration::zero()) {
    for (JoinNode& node : wait.nodes) detail::unlink_join_node(&node);
    set_last_error(ETIMEDOUT);
    return false;
  }
  wait.abort = &detail::join_abort;
  wait.fire = &detail::join_fire;
  s->wait_until(permit, wait, detail::deadline_for(timeout), [&] { return wait.finished; });
  if (wait.result != 0) {
    set_last_error(wait.result);
    return false;
  }
  return true;
}

bool join(std::initializer_list<long> cids, Duration timeout) {
  return join(std::span<const long>(cids.begin(), cids.size()), timeout);
}

Stats stats() {
  Scheduler* s = tls_scheduler;
  return s == nullptr ? Stats{} : s->stats();
}

std::vector<long> list() {
  Scheduler* s = tls_scheduler;
  return s == nullptr ? std::vector<long>{} : s->list();
}

std::error_code last_error() {
  Coroutine* c = running_coroutine();
  return std::error_code(c != nullptr ? c->last_error : detail::tls_thread_error,
                         std::generic_category());
}

bool clear(long timer_id) {
  Scheduler* s = tls_scheduler;
  if (s == nullptr) return detail::outside(false);
  if (!s->clear_timer(timer_id)) {
    set_last_error(ENOENT);
    return false;
  }
  return true;
}

namespace this_coroutine {

long id() {
  Coroutine* c = running_coroutine();
  return c == nullptr ? -1 : c->id;
}

long parent_id() {
  Coroutine* c = running_coroutine();
  return c == nullptr ? -1 : c->parent_id;
}

bool is_cancelled() {
  Coroutine* c = running_coroutine();
  return c != nullptr && c->cancelled;
}

}  // namespace this_coroutine
}  // namespace coring

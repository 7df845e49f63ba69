// The scheduler: one per thread that calls run(). Private to the library.
//
// Invariants (read these before changing anything here):
// - A coroutine is a Boost.Context fcontext on a pooled stack; its control block (Coroutine)
//   and its function object live at the top of that stack, so creating one allocates nothing.
// - Exactly one context runs at a time: current_. The scheduler's own loop (the hub) runs on
//   the thread's original stack and is represented by hub_, a Coroutine without a stack.
// - Switches are direct. A coroutine that waits hands the CPU straight to, in this order: the
//   coroutine that started or resumed it (return_to: create() and resume() return to their
//   caller as soon as the callee first waits, as in Swoole); else the next ready coroutine,
//   while the hub's switch budget lasts; else the hub. So a wake-up costs one jump_fcontext,
//   not two, and the hub still gets to poll I/O and timers at least every kSwitchBudget
//   switches.
// - Whoever jumps passes its own Coroutine* as the transfer data; the side that lands stores
//   the returned fcontext into it (landed()). A coroutine that ended is recycled by the side
//   that lands after its last jump, because nothing may free a stack while running on it.
// - The hub runs only when no coroutine is in the middle of create()/resume() (return_to chains
//   always unwind before a coroutine switches anywhere else), so when the hub finds nothing
//   ready, no I/O in flight and no timer armed, every remaining coroutine is stuck: deadlock.
// - A coroutine's state says what it is doing (State, coring/detail/switch.hpp); one store per
//   switch keeps it. A waiting coroutine records what it waits for in `wait` (a WaitContext on
//   its own stack) so that cancel() and the deadlock unwinder can end the wait; the CQE or
//   timer that would have ended it finds it already ended and does nothing.
// - The C++ exception-handling state (caught exceptions, uncaught count) is per coroutine:
//   every switch (switch_to() and plan_switch() alike) saves the thread's into the coroutine it
//   leaves and loads the one it enters (EhState).
#pragma once

#include <absl/container/flat_hash_map.h>
#include <cxxabi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "core/context_switch.hpp"
#include "core/coroutine_table.hpp"
#include "core/event_engine.hpp"
#include "core/fork.hpp"
#include "core/remote.hpp"
#include "core/signal_watch.hpp"
#include "core/stack_pool.hpp"
#include "core/timer_heap.hpp"
#include "coring/coroutine.hpp"
#include "coring/detail/wait.hpp"
#include "coring/timer.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define CORING_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORING_ASAN 1
#endif
#endif
#ifndef CORING_ASAN
#define CORING_ASAN 0
#endif
#if CORING_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace coring::detail {

struct Coroutine;

// What a suspended coroutine waits for, so that cancel() and the deadlock unwinder can end the
// wait early. Lives on the waiting coroutine's stack. The TimerNode is the wait's deadline,
// armed only when it has one: `fire` ends the wait as a timeout.
struct WaitContext : TimerNode {
  // Ends the wait now with ECANCELED: takes the coroutine off whatever it is queued on (or asks
  // the ring to cancel its operation) and arranges for it to become ready. Called at most once
  // per wait (aborted guards it).
  void (*abort)(WaitContext* self) = nullptr;
  bool cancellable = true;
  bool aborted = false;
  bool ring_operation = false;  // the wait is for a ring operation's completion
};

struct JoinWait;

// One link between a joiner and one coroutine it joins (the joiner's stack holds them all).
struct JoinNode {
  JoinNode* prev = nullptr;
  JoinNode* next = nullptr;
  Coroutine* target = nullptr;  // null once unlinked
  JoinWait* wait = nullptr;
};

// The C++ runtime's exception-handling state (the Itanium ABI's __cxa_eh_globals: the stack of
// exceptions being handled and the count of exceptions in flight) is per thread, but it belongs
// to each coroutine: one that waits inside a catch block, or in a destructor during unwinding,
// must find its own state when it resumes, or `throw;` rethrows another coroutine's exception
// and leaving a handler frees an exception that another coroutine still uses. Every switch saves
// the thread's copy into the coroutine it leaves and loads that of the one it enters.
struct EhState {
  void* caught_exceptions = nullptr;
  unsigned int uncaught_exceptions = 0;
  bool empty() const noexcept { return caught_exceptions == nullptr && uncaught_exceptions == 0; }
};
static_assert(sizeof(EhState) == 2 * sizeof(void*), "mirrors __cxa_eh_globals (no ARM EHABI)");

inline EhState* thread_eh_state() noexcept {
  return reinterpret_cast<EhState*>(abi::__cxa_get_globals());
}

// Thrown from a wait to unwind a coroutine that the deadlock detector gave up on. Deliberately
// not a std::exception, so that catch (const std::exception&) does not swallow it.
struct ForcedUnwind {};

// CoroutineHead (context, state, unwinding) comes first: the inline half of yield()/resume()
// in coring/detail/switch.hpp reads it through the same pointers.
struct Coroutine : CoroutineHead {
  Coroutine* return_to = nullptr;
  Coroutine* next_ready = nullptr;
  bool cancelled = false;  // the most recent wait was ended by cancel()
  long id = -1;
  long parent_id = -1;
  WaitContext* wait = nullptr;
  const CallableOps* ops = nullptr;
  void* callable = nullptr;
  char* stack_base = nullptr;  // lowest usable byte of the stack (above the guard)
  std::vector<std::unique_ptr<Task>>* defers = nullptr;
  JoinNode* joiners = nullptr;
  int last_error = 0;        // an errno; last_error() makes the std::error_code
  bool finishing = false;    // its function returned; its function object is being destroyed
  bool in_log_sink = false;  // inside the log sink: what it logs goes to stderr
  EhState eh;                // its exception-handling state while it does not run
#if CORING_ASAN
  void* asan_fake_stack = nullptr;
  const void* asan_stack_bottom = nullptr;
  size_t asan_stack_size = 0;
#endif
};

// The largest RunOptions::stack_size run() accepts (larger: EINVAL); the largest ring it asks
// the kernel for (RunOptions::ring_entries is clamped to it: the kernel's own limit).
inline constexpr size_t kMaxStackSize = size_t{1} << 30;
inline constexpr unsigned kMaxRingEntries = 32768;

class Scheduler;
extern thread_local constinit Scheduler* tls_scheduler __attribute__((tls_model("initial-exec")));

int64_t monotonic_ns() noexcept;
// now + d, saturating: kForever (or any huge d) becomes "never" (INT64_MAX).
int64_t deadline_after(int64_t now, Duration d) noexcept;
// The deadline of a wait that starts now: INT64_MAX for kForever (inline: most waits have no
// deadline, and they should not pay a call to find out).
inline int64_t deadline_for(Duration timeout) noexcept {
  return timeout == kForever ? INT64_MAX : deadline_after(monotonic_ns(), timeout);
}

[[noreturn]] inline void throw_forced_unwind() {
  throw ForcedUnwind{};
}

// Whether a coroutine being unwound after a deadlock may be sent on its way with ForcedUnwind:
// not while an exception is already in flight in it (a destructor running during the
// unwinding, where a second one would end the program), nor once its function has returned
// (its defers and its function object's destructor run, where a wait may sit in a destructor).
inline bool unwinding_may_throw(const Coroutine* self) noexcept {
  return !self->finishing && std::uncaught_exceptions() == 0;
}

// A coroutine marked for unwinding must not wait again. Called before a wait that is not one of
// WaitPermit's (yield): throws ForcedUnwind, or, where that is unsafe, records ECANCELED and
// returns true: the wait then fails at once.
inline bool refuse_wait_when_unwinding(const Coroutine* self) {
  if (!self->unwinding) [[likely]]
    return false;
  if (unwinding_may_throw(self)) throw_forced_unwind();
  set_last_error(ECANCELED);
  return true;
}

// Called after a wait: throws ForcedUnwind if the unwinder ended it and throwing is safe.
inline void unwind_after_wait(const Coroutine* self) {
  if (self->unwinding && unwinding_may_throw(self)) [[unlikely]]
    throw_forced_unwind();
}

// What begin_wait() hands to a blocking call: the coroutine that may wait now, or why not.
struct WaitPermit {
  Coroutine* self = nullptr;  // null: the call must fail at once with `error`
  int error = 0;
  explicit operator bool() const noexcept { return self != nullptr; }
};

class Scheduler {
 public:
  // How many direct coroutine-to-coroutine switches the hub allows before it polls the ring and
  // the timers again. Large enough to amortise an io_uring_enter, small enough to keep I/O
  // latency far below a millisecond under a flood of ready coroutines.
  static constexpr int kSwitchBudget = 128;
  // Pooled stacks kept committed when the scheduler goes idle; the rest are given back.
  static constexpr size_t kStacksKeptWhenIdle = 1024;

  explicit Scheduler(const RunOptions& options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  static Scheduler* current() noexcept { return tls_scheduler; }

  // Sets up the ring and runs main as the first coroutine until everything has ended.
  // Returns 0, or -1 with last_error set.
  int run(const CallableOps& ops, void* fn);

  long spawn(const CallableOps& ops, void* fn);
  // spawn() up to the jump into the new coroutine, which the caller makes (inline).
  SpawnPlan plan_spawn(const CallableOps& ops, void* fn);

  // The running coroutine, or nullptr when the hub runs.
  Coroutine* running() const noexcept { return current_ == &hub_ ? nullptr : current_; }

  // The running coroutine gives up the CPU until something makes it ready (or resume()s it).
  // It may already be in the ready queue (a plain reschedule). Never throws: each wait checks
  // `unwinding` itself once its own bookkeeping is undone (an I/O wait must first see its CQE).
  void suspend() {
    SwitchPlan plan = plan_suspend(current_);
    if (plan.to_context != nullptr) jump_planned(plan);
  }

  // Makes the jump a plan_*() call planned, from inside the library (with ASan told about the
  // stack switch), and lands when something switches back. The plan comes by value: nothing may
  // be read from the old stack's (fake) frames once ASan has been told about the switch.
  void jump_planned(SwitchPlan plan) {
    void* to_context = plan.to_context;
    auto* from = static_cast<Coroutine*>(plan.self);
#if CORING_ASAN
    __sanitizer_start_switch_fiber(from->state == State::dead ? nullptr : &from->asan_fake_stack,
                                   current_->asan_stack_bottom, current_->asan_stack_size);
#endif
    transfer_t from_other = jump_context(to_context, from);
    landed(from_other);
  }

  // Every blocking call of the library waits in two steps, so that the rules of waiting hold
  // for all of them:
  //   WaitPermit permit = begin_wait();   // 1. may we wait at all? (see begin_wait below)
  //   if (!permit) return fail(permit.error);
  //   ...queue a waiter, submit a ring operation or hand a job to a worker...
  //   s->wait_until(permit, wait, deadline, [&] { return finished; });   // 2. wait
  // wait_until suspends the permit's coroutine until finished() holds (whoever makes it hold
  // also makes the coroutine ready, exactly once). `wait` says how cancel() and the deadlock
  // unwinder end the wait early (abort); unless deadline is INT64_MAX (monotonic ns), `wait`'s
  // timer fires at the deadline. It disarms the deadline before it returns, then throws
  // ForcedUnwind if the unwinder ended the wait and throwing is safe: bookkeeping the caller
  // must undo even then belongs in a destructor.
  template <class Finished>
  void wait_until(const WaitPermit& permit, WaitContext& wait, int64_t deadline,
                  Finished&& finished) {
    SwitchPlan plan = plan_wait(permit.self, wait, deadline);
    if (plan.to_context != nullptr) jump_planned(plan);
    finish_wait(permit.self, wait, finished);
  }

  // wait_until() in two halves, for a wait whose caller makes the switch itself (inline, in
  // its own frame: see park() in coring/detail/wait.hpp). plan_wait arms the deadline, records
  // the wait and plans the switch away; finish_wait runs once the coroutine is back.
  SwitchPlan plan_wait(Coroutine* self, WaitContext& wait, int64_t deadline) {
    self->cancelled = false;
    if (deadline != INT64_MAX) {
      wait.deadline = deadline;
      arm(wait);
    }
    self->wait = &wait;
    self->state = State::waiting;
    return plan_suspend(self);
  }
  template <class Finished>
  void finish_wait(Coroutine* self, WaitContext& wait, Finished&& finished) {
    for (;;) {
      self->wait = nullptr;
      if (finished()) break;
      self->wait = &wait;  // woken without the wait being over: wait on
      self->state = State::waiting;
      suspend();
    }
    disarm(wait);
    unwind_after_wait(self);
  }

  // True in a child forked while this scheduler ran: it belongs to the parent.
  bool forked() const noexcept {
    return fork_generation_ != fork_generation();
  }
  // Logs (once per child) that a forked child tried to use its parent's container; EPERM.
  int refuse_in_forked_child(const char* what) noexcept;

  void make_ready(Coroutine* c) noexcept {
    c->state = State::ready;
    c->next_ready = nullptr;
    if (ready_tail_ != nullptr) {
      ready_tail_->next_ready = c;
    } else {
      ready_head_ = c;
    }
    ready_tail_ = c;
    ++ready_num_;
  }

  // The bookkeeping of a switch away from the running coroutine `self`, up to the jump, which
  // the caller then makes (inline, see coring/detail/switch.hpp). No context when it need not
  // switch.
  SwitchPlan plan_suspend(Coroutine* self) noexcept {
    if (self->state == State::running) self->state = State::suspended;
    Coroutine* next = pick_next(self);
    if (next == self) {
      self->state = State::running;
      return SwitchPlan{nullptr, self};
    }
    return plan_switch(self, next);
  }
  SwitchPlan plan_resume(Coroutine* target) noexcept {
    Coroutine* self = current_;
    target->return_to = self;
    self->state = State::suspended;
    return plan_switch(self, target);
  }

  // Suspends the running coroutine until resume(); see this_coroutine::yield.
  void yield_running() {
    Coroutine* self = current_;
    if (refuse_wait_when_unwinding(self)) return;
    self->state = State::yielded;
    suspend();
    unwind_after_wait(self);
  }

  // Switches to `target` (suspended in yield) now; returns when it waits or ends.
  void resume(Coroutine* target) {
    Coroutine* self = current_;
    target->return_to = self;
    self->state = State::suspended;
    switch_to(self, target);
  }

  Coroutine* find(long id) const noexcept {
    return coroutines_.find(id);
  }
  // Ends c's wait with ECANCELED if it is cancellable. False otherwise.
  bool cancel(Coroutine* c);

  void arm(TimerNode& node) {
    timers_.push(&node);
  }
  void disarm(TimerNode& node) noexcept {
    if (node.armed()) timers_.remove(&node);
  }

  EventEngine& engine() noexcept {
    return *engine_;
  }
  const RunOptions& options() const noexcept {
    return options_;
  }
  Stats stats() const;
  std::vector<long> list() const;
  void for_each_coroutine_id(std::vector<long>& out) const;

  // User timers (after/tick) live in the scheduler so that they die with it.
  long add_timer(int64_t interval_ns, bool repeat, std::shared_ptr<TimerCallback> callback);
  bool clear_timer(long timer_id);

  StackPool& stacks() noexcept {
    return stacks_;
  }
  const std::shared_ptr<RemoteInbox>& inbox() const noexcept {
    return inbox_;
  }
  // wait_signal()'s state, made on first use; it goes when the container ends.
  SignalWatch& signals();
  // Runs hook(argument) when the container ends: after its last coroutine, outside any
  // coroutine, while the engine still works (what a layer above keeps per container, such as
  // the one-call HTTP functions' idle connections, is let go there). Last registered first.
  void at_end(void (*hook)(void*), void* argument);

 private:
  friend void coroutine_entry(transfer_t from);
  struct UserTimer;

  friend void land_after_death(CoroutineHead* previous) noexcept;

  Coroutine* pick_next(Coroutine* self) noexcept {
    if (Coroutine* next = self->return_to) {
      self->return_to = nullptr;
      return next;
    }
    if (ready_head_ != nullptr && budget_ > 0) {
      --budget_;
      return pop_ready();
    }
    return &hub_;
  }

  Coroutine* pop_ready() noexcept {
    Coroutine* c = ready_head_;
    ready_head_ = c->next_ready;
    if (ready_head_ == nullptr) ready_tail_ = nullptr;
    --ready_num_;
    return c;
  }

  SwitchPlan plan_switch(Coroutine* from, Coroutine* to) noexcept {
    current_ = to;
    to->state = State::running;
    ++switches_;
    swap_eh_state(from, to);
    return SwitchPlan{to->context, from};
  }

  // A coroutine's `eh` holds its state only while it does not run, and is empty while it runs,
  // so that the common switch, where neither side is inside a handler or an unwinding, moves
  // nothing: it only looks.
  void swap_eh_state(Coroutine* from, Coroutine* to) noexcept {
    EhState leaving = *eh_state_;
    EhState entering = to->eh;
    if (leaving.empty() && entering.empty()) [[likely]]
      return;
    from->eh = leaving;
    *eh_state_ = entering;
    to->eh = EhState{};
  }

  void switch_to(Coroutine* from, Coroutine* to) {
    jump_planned(plan_switch(from, to));
  }

  // Runs first on the stack we just switched to: records where the other side stopped, or
  // recycles it if it ended.
  void landed(transfer_t from_other) {
    auto* previous = static_cast<Coroutine*>(from_other.data);
#if CORING_ASAN
    // No address-taken locals here: with detect_stack_use_after_return they would be placed on
    // a fake stack before the fiber's own fake stack is restored. The stacks' bounds are known
    // (the pool's, and the thread's for the hub: see Scheduler::run).
    __sanitizer_finish_switch_fiber(current_->asan_fake_stack, nullptr, nullptr);
#endif
    if (previous->state == State::dead) [[unlikely]] {
      recycle(previous);
    } else {
      previous->context = from_other.fctx;
    }
  }

  // A new coroutine, registered and ready to be switched to; nullptr (last_error set) if not.
  Coroutine* make_coroutine(const CallableOps& ops, void* fn);
  [[noreturn]] void finish(Coroutine* self);

 public:
  void recycle(Coroutine* c) noexcept;

 private:
  static void fire_user_timer(TimerNode* node);
  void loop();
  void poll(bool may_block);
  void fire_timers(int64_t now);
  // Unwinds the coroutines nothing can wake any more: all of them after a deadlock; after the
  // ring became unusable, those not abandoned with a ring operation (false: none left).
  bool unwind_stuck(bool after_ring_failure);
  void abandon_ring_operations();
  long next_coroutine_id() noexcept;
  void install_signal_stack();
  void remove_signal_stack();

  RunOptions options_;
  EhState* eh_state_ = thread_eh_state();  // this thread's; a scheduler never changes threads
  Coroutine hub_;
  Coroutine* current_ = &hub_;
  Coroutine* ready_head_ = nullptr;
  Coroutine* ready_tail_ = nullptr;
  size_t ready_num_ = 0;
  int budget_ = 0;

  std::unique_ptr<EventEngine> engine_;  // set up by run()
  std::shared_ptr<RemoteInbox> inbox_ = std::make_shared<RemoteInbox>();
  std::unique_ptr<SignalWatch> signals_;
  std::vector<std::pair<void (*)(void*), void*>> end_hooks_;
  TimerHeap timers_;
  StackPool stacks_;
  CoroutineTable coroutines_;
  absl::flat_hash_map<long, std::unique_ptr<UserTimer>> user_timers_;

  size_t coroutine_num_ = 0;
  size_t coroutine_peak_num_ = 0;
  uint64_t switches_ = 0;
  uint64_t coroutines_created_ = 0;
  bool deadlocked_ = false;
  int64_t now_ = 0;  // the clock as fire_timers() last read it

  void* signal_stack_ = nullptr;
  size_t signal_stack_size_ = 0;

  unsigned fork_generation_ = fork_generation();
  bool ring_abandoned_ = false;  // abandon_ring_operations() ran
  long next_id_ = 0;             // the next coroutine id of the current block (next_coroutine_id())
  long id_end_ = 0;
  int pid_ = 0;  // the process that runs this scheduler (for the forked-child message)
};

// A join() in progress: on the joiner's stack, linked into each target's list of joiners.
struct JoinWait : WaitContext {
  Coroutine* self = nullptr;
  size_t remaining = 0;
  bool finished = false;
  int result = 0;
  std::vector<JoinNode> nodes;
};

void link_join_node(Coroutine* target, JoinNode* node) noexcept;
void unlink_join_node(JoinNode* node) noexcept;

// The coroutine running on this thread, or nullptr (no container, or the hub).
inline Coroutine* running_coroutine() noexcept {
  Scheduler* s = tls_scheduler;
  return s == nullptr ? nullptr : s->running();
}

// The first step of every blocking call (see Scheduler::wait_until), taken before it registers
// anything, so that a refusal leaves nothing to undo. The running code may not wait outside a
// coroutine (EPERM), in a child forked while the container ran (EPERM, with one ERROR line:
// the container belongs to the parent), or while its coroutine is being unwound after a
// deadlock: then ForcedUnwind is thrown when that is safe, else the call fails with ECANCELED.
inline WaitPermit begin_wait() {
  Scheduler* s = tls_scheduler;
  Coroutine* self = s == nullptr ? nullptr : s->running();
  if (self == nullptr) return WaitPermit{nullptr, EPERM};
  if (s->forked()) [[unlikely]]
    return WaitPermit{nullptr, s->refuse_in_forked_child("a wait")};
  if (self->unwinding) [[unlikely]] {
    if (unwinding_may_throw(self)) throw_forced_unwind();
    return WaitPermit{nullptr, ECANCELED};
  }
  return WaitPermit{self, 0};
}

// At every container start: SIGPIPE ignored unless the application handles it; once per
// process: the SIGSEGV handler that reports coroutine stack overflows.
void install_process_handlers();

}  // namespace coring::detail

#include "core/scheduler.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>

#include "core/logging.hpp"
#if CORING_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace coring::detail {

thread_local constinit Scheduler* tls_scheduler __attribute__((tls_model("initial-exec"))) =
    nullptr;

std::atomic<unsigned> g_fork_generation{0};

namespace {

// Coroutine ids are unique in the process and never reused. Each scheduler takes them in
// blocks so that creating a coroutine needs no atomic operation (and, in the shared library,
// no thread-local lookup either). A block is one page of the CoroutineTable, so that a page
// belongs to one scheduler.
constexpr long kIdBlock = CoroutineTable::kPageSize;
std::atomic<long> g_next_id_block{0};

std::atomic<long> g_next_timer_id{1};

char* align_down(char* p, size_t alignment) {
  return reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{alignment} - 1));
}

// The least stack a coroutine keeps below its function object.
constexpr size_t kMinimumFreeStack = 4096;

}  // namespace

int64_t monotonic_ns() noexcept {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

int64_t deadline_after(int64_t now, Duration d) noexcept {
  int64_t ns = d.count();
  if (ns < 0) ns = 0;
  return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

void coroutine_entry(transfer_t from) {
  Scheduler* s = tls_scheduler;
  s->landed(from);
  Coroutine* self = s->current_;
  try {
    self->ops->invoke(self->callable);
  } catch (const ForcedUnwind&) {
    // Unwound after a deadlock: destructors have run, defers run below.
  } catch (const std::exception& e) {
    log_format(LogLevel::error, "coroutine#%ld exited with an uncaught exception: %s", self->id,
               e.what());
    std::terminate();
  } catch (...) {
    log_format(LogLevel::error,
               "coroutine#%ld exited with an uncaught exception (not a std::exception)", self->id);
    std::terminate();
  }
  // From here on a wait never throws the unwinding (a defer's destructors run in noexcept
  // contexts): waits of an unwound coroutine fail at once with ECANCELED instead.
  self->finishing = true;
  if (auto* defers = self->defers) {
    while (!defers->empty()) {
      std::unique_ptr<Task> task = std::move(defers->back());
      defers->pop_back();
      try {
        task->call();
      } catch (const ForcedUnwind&) {
      } catch (const std::exception& e) {
        log_format(LogLevel::error, "coroutine#%ld: a deferred function threw: %s", self->id,
                   e.what());
        std::terminate();
      } catch (...) {
        log_format(LogLevel::error, "coroutine#%ld: a deferred function threw", self->id);
        std::terminate();
      }
    }
    delete defers;
    self->defers = nullptr;
  }
  self->ops->destroy(self->callable);
  s->finish(self);
}

Scheduler::Scheduler(const RunOptions& options)
    : options_(options), stacks_(options.stack_size, options.stack_guard) {
  hub_.state = State::running;
}

Scheduler::~Scheduler() = default;

SignalWatch& Scheduler::signals() {
  if (signals_ == nullptr) signals_ = std::make_unique<SignalWatch>();
  return *signals_;
}

long Scheduler::next_coroutine_id() noexcept {
  if (next_id_ == id_end_) [[unlikely]] {
    long block = g_next_id_block.fetch_add(1, std::memory_order_relaxed);
    next_id_ = block == 0 ? 1 : block * kIdBlock;  // ids start at 1
    id_end_ = (block + 1) * kIdBlock;
  }
  return next_id_++;
}

int Scheduler::run(const CallableOps& ops, void* fn) {
  int error = 0;
  engine_ = make_engine(options_, &error);
  if (engine_ == nullptr) {  // make_engine() logged why
    set_last_error(-error);
    return -1;
  }
  install_process_handlers();
  pid_ = static_cast<int>(::getpid());
  fork_generation_ = fork_generation();
#if CORING_ASAN
  // The hub runs on the thread's own stack; ASan needs its bounds to switch back to it.
  pthread_attr_t attributes;
  if (::pthread_getattr_np(::pthread_self(), &attributes) == 0) {
    void* bottom = nullptr;
    size_t size = 0;
    ::pthread_attr_getstack(&attributes, &bottom, &size);
    ::pthread_attr_destroy(&attributes);
    hub_.asan_stack_bottom = bottom;
    hub_.asan_stack_size = size;
  }
#endif
  install_signal_stack();
  tls_scheduler = this;
  // Undone however run() leaves: also when copying or moving main onto its stack throws, so
  // that the thread is free for the next container.
  struct Installed {
    Scheduler* scheduler;
    ~Installed() {
      // What layers above keep for this container goes first, while the engine still works.
      while (!scheduler->end_hooks_.empty()) {
        auto [hook, argument] = scheduler->end_hooks_.back();
        scheduler->end_hooks_.pop_back();
        hook(argument);
      }
      scheduler->inbox_->close();
      scheduler->signals_.reset();  // gives back the signals this container owned
      tls_scheduler = nullptr;
      scheduler->remove_signal_stack();
    }
  } installed{this};
  if (spawn(ops, fn) < 0) return -1;  // spawn() recorded why in this thread's last_error()
  loop();
  if (engine_->failure() != 0) {
    if (!ring_abandoned_) abandon_ring_operations();
    set_last_error(engine_->failure());
    return -1;
  }
  if (deadlocked_) {
    set_last_error(EDEADLK);
    return -1;
  }
  return 0;
}

void Scheduler::at_end(void (*hook)(void*), void* argument) {
  end_hooks_.emplace_back(hook, argument);
}

int Scheduler::refuse_in_forked_child(const char* what) noexcept {
  static std::atomic<unsigned> logged_generation{0};
  unsigned generation = g_fork_generation.load(std::memory_order_relaxed);
  if (logged_generation.exchange(generation, std::memory_order_relaxed) != generation) {
    log_format(LogLevel::error,
               "%s in a process forked (by pid %d) while a coroutine container ran: a forked child "
               "cannot use its parent's container, so it fails with EPERM; fork before run() or "
               "after it returns",
               what, pid_);
  }
  set_last_error(EPERM);
  return EPERM;
}

long Scheduler::spawn(const CallableOps& ops, void* fn) {
  Coroutine* c = make_coroutine(ops, fn);
  if (c == nullptr) return -1;
  long id = c->id;  // c may be gone by the time the switch below comes back
  Coroutine* self = current_;
  c->return_to = self;
  self->state = State::suspended;
  switch_to(self, c);
  return id;
}

SpawnPlan Scheduler::plan_spawn(const CallableOps& ops, void* fn) {
  if (current_ == &hub_) return SpawnPlan{SwitchPlan{nullptr, nullptr}, spawn(ops, fn)};
  Coroutine* c = make_coroutine(ops, fn);
  if (c == nullptr) return SpawnPlan{SwitchPlan{nullptr, nullptr}, -1};
  Coroutine* self = current_;
  c->return_to = self;
  self->state = State::suspended;
  return SpawnPlan{plan_switch(self, c), c->id};
}

Coroutine* Scheduler::make_coroutine(const CallableOps& ops, void* fn) {
  if (forked()) [[unlikely]] {
    refuse_in_forked_child("create()");
    return nullptr;
  }
  if (coroutine_num_ >= options_.max_coroutines) {
    set_last_error(EAGAIN);
    log_format(LogLevel::warning, "create: max_coroutines (%zu) reached", options_.max_coroutines);
    return nullptr;
  }
  char* base = stacks_.acquire();
  if (base == nullptr) {
    set_last_error(ENOMEM);
    log_format(LogLevel::warning,
               "create: cannot map a coroutine stack (%zu alive, %zu stacks mapped)%s",
               coroutine_num_, stacks_.mapped_count(),
               options_.stack_guard ? "; guard pages cost two kernel mappings per stack: raise "
                                      "vm.max_map_count or run with RunOptions::stack_guard = false"
                                    : "");
    return nullptr;
  }
  size_t stack_size = stacks_.stack_size();
#if CORING_ASAN
  // A recycled stack may carry poison from frames its last coroutine abandoned when it ended.
  ASAN_UNPOISON_MEMORY_REGION(base, stack_size);
#endif
  char* top = base + stack_size;
  auto* c = ::new (align_down(top - sizeof(Coroutine), 64)) Coroutine;
  char* callable =
      align_down(reinterpret_cast<char*>(c) - ops.size, std::max<size_t>(ops.align, 16));
  if (callable < base + kMinimumFreeStack) {
    c->~Coroutine();
    stacks_.release(base);
    set_last_error(E2BIG);
    log_format(LogLevel::warning,
               "create: the function object (%zu bytes) does not fit on a %zu-byte stack", ops.size,
               stack_size);
    return nullptr;
  }
  try {
    ops.construct(callable, fn);
  } catch (...) {
    c->~Coroutine();
    stacks_.release(base);
    throw;
  }
  c->ops = &ops;
  c->callable = callable;
  c->stack_base = base;
  c->id = next_coroutine_id();
  c->parent_id = current_ == &hub_ ? -1 : current_->id;
  char* stack_top = align_down(callable, 16);
  c->context = make_context(stack_top, static_cast<size_t>(stack_top - base), &coroutine_entry);
#if CORING_ASAN
  c->asan_stack_bottom = base;
  c->asan_stack_size = stack_size;
#endif
  if (!coroutines_.insert(c->id, c)) {
    ops.destroy(callable);
    c->~Coroutine();
    stacks_.release(base);
    set_last_error(ENOMEM);
    return nullptr;
  }
  ++coroutine_num_;
  ++coroutines_created_;
  coroutine_peak_num_ = std::max(coroutine_peak_num_, coroutine_num_);
  return c;
}

void Scheduler::finish(Coroutine* self) {
  if (forked()) [[unlikely]] {
    // A child forked inside this coroutine: it is the only thread of control the child has, as
    // a thread is after fork(). When it ends, so does the child, as a process does when its
    // last thread ends; the parent's other coroutines never run here.
    // _exit: no stdio flush, which would write the parent's buffered output a second time.
    ::_exit(0);
  }
  while (JoinNode* node = self->joiners) {
    unlink_join_node(node);
    JoinWait* wait = node->wait;
    if (--wait->remaining == 0 && !wait->finished) {
      wait->finished = true;
      wait->result = 0;
      make_ready(wait->self);
    }
  }
  coroutines_.erase(self->id);
  --coroutine_num_;
  self->state = State::dead;
  switch_to(self, pick_next(self));
  __builtin_unreachable();
}

void Scheduler::recycle(Coroutine* c) noexcept {
  char* base = c->stack_base;
  c->~Coroutine();
  stacks_.release(base);
}

bool Scheduler::cancel(Coroutine* c) {
  if (c->state != State::waiting || c->wait == nullptr || !c->wait->cancellable ||
      c->wait->aborted) {
    return false;
  }
  c->wait->aborted = true;
  c->cancelled = true;
  c->wait->abort(c->wait);
  return true;
}

void Scheduler::loop() {
  for (;;) {
    // Events an engine collected but left to dispatch one at a time: each, then the coroutines
    // it woke, then the next (see EventEngine::dispatch_one).
    while (ready_head_ == nullptr && engine_->dispatch_one()) {
    }
    if (ready_head_ != nullptr) {
      budget_ = kSwitchBudget;
      hub_.state = State::suspended;
      switch_to(&hub_, pop_ready());
      if (ready_head_ != nullptr) {
        // The switch budget ran out with work still queued: look at the ring and the clock
        // without blocking, then go on.
        poll(false);
      }
      continue;  // the next collected event, if the engine has one left
    }
    // The ring may have given up anywhere (a coroutine's get_sqe(), a timer's cancellation, or
    // poll()): the coroutines it leaves holding operations are abandoned here, once.
    if (engine_->failure() != 0 && !ring_abandoned_) abandon_ring_operations();
    const bool ring_works = engine_->failure() == 0;
    // What can still wake a coroutine: a ring operation, or (once the ring is unusable, its
    // operations never complete) a delivery from a worker thread; and a timer.
    const size_t pending = ring_works ? engine_->inflight() : inbox_->expected();
    if (pending == 0 && timers_.empty()) {
      if (coroutine_num_ == 0) return;
      if (ring_works) {
        unwind_stuck(/*after_ring_failure=*/false);
      } else if (!unwind_stuck(/*after_ring_failure=*/true)) {
        return;  // only coroutines abandoned with their ring operations are left
      }
      continue;
    }
    if (stacks_.free_count() > kStacksKeptWhenIdle) {
      stacks_.trim(kStacksKeptWhenIdle, monotonic_ns());
    }
    poll(true);
  }
}

void Scheduler::poll(bool may_block) {
  if (forked()) [[unlikely]] {
    // Every way into the hub from a forked child is refused before it gets here; should one be
    // missed, the child must not drive its parent's ring.
    refuse_in_forked_child("the scheduler loop");
    ::_exit(1);
  }
  int64_t timeout_ns = 0;
  if (may_block) {
    if (timers_.empty()) {
      timeout_ns = -1;
    } else {
      timeout_ns = std::max<int64_t>(0, timers_.next_deadline() - monotonic_ns());
    }
  }
  if (engine_->failure() == 0) {
    // Events still collected go first, all of them: a coroutine that keeps the ready queue
    // busy (a yield loop) must not starve them, and wait() collects nothing new while they
    // are left.
    while (engine_->dispatch_one()) {
    }
    if (ready_head_ != nullptr) timeout_ns = 0;  // they woke someone: do not block
    engine_->wait(timeout_ns);
  } else {
    inbox_->wait_without_ring(timeout_ns);
  }
  if (!timers_.empty()) fire_timers(monotonic_ns());
}

// The engine just became unusable (UringEngine::give_up, say). The coroutines waiting on operations
// the kernel took stay suspended for good: the kernel may still write into their buffers, which
// live on their stacks, so those stacks must never be reused or unmapped. Their deadlines go,
// so that they do not keep the container alive.
void Scheduler::abandon_ring_operations() {
  ring_abandoned_ = true;
  stacks_.keep_mapped();
  coroutines_.for_each([&](Coroutine* c) {
    if (c->state == State::waiting && c->wait != nullptr && c->wait->ring_operation) {
      disarm(*c->wait);
    }
  });
}

void Scheduler::fire_timers(int64_t now) {
  now_ = now;
  while (TimerNode* node = timers_.pop_due(now)) node->fire(node);
}

bool Scheduler::unwind_stuck(bool after_ring_failure) {
  std::vector<Coroutine*> stuck;
  stuck.reserve(coroutine_num_);
  size_t abandoned = 0;
  coroutines_.for_each([&](Coroutine* c) {
    if (after_ring_failure && c->state == State::waiting && c->wait != nullptr &&
        c->wait->ring_operation) {
      ++abandoned;
    } else if (!c->unwinding) {
      stuck.push_back(c);
    }
  });
  if (after_ring_failure) {
    if (stuck.empty()) {
      log_format(LogLevel::error,
                 "the container ends: %zu coroutines waiting on ring operations are abandoned "
                 "(io_uring is unusable: %s)",
                 abandoned, std::strerror(engine_->failure()));
      return false;
    }
    log_format(LogLevel::error,
               "io_uring is unusable and nothing can wake %zu coroutines any more: unwinding "
               "them",
               stuck.size());
  } else {
    log_format(LogLevel::error, "all coroutines (count: %zu) are asleep - deadlock!",
               coroutine_num_);
    deadlocked_ = true;
  }
  std::sort(stuck.begin(), stuck.end(),
            [](const Coroutine* a, const Coroutine* b) { return a->id < b->id; });
  for (Coroutine* c : stuck) {
    c->unwinding = true;
    if (c->state == State::yielded) {
      make_ready(c);
    } else if (c->state == State::waiting && c->wait != nullptr && !c->wait->aborted) {
      c->wait->aborted = true;
      c->wait->abort(c->wait);
    }
  }
  return true;
}

Stats Scheduler::stats() const {
  Stats s;
  s.coroutine_num = coroutine_num_;
  s.coroutine_peak_num = coroutine_peak_num_;
  s.switches = switches_;
  s.coroutines_created = coroutines_created_;
  s.ready_num = ready_num_;
  s.timer_num = timers_.size();
  s.io_inflight = engine_->inflight();
  s.engine = engine_->kind();
  s.stack_size = stacks_.stack_size();
  s.stacks_free = stacks_.free_count();
  s.stacks_mapped = stacks_.mapped_count();
  s.ring_setup_flags = engine_->setup_flags();
  return s;
}

std::vector<long> Scheduler::list() const {
  std::vector<long> ids;
  ids.reserve(coroutine_num_);
  coroutines_.for_each([&](Coroutine* c) { ids.push_back(c->id); });
  std::sort(ids.begin(), ids.end());
  return ids;
}

void link_join_node(Coroutine* target, JoinNode* node) noexcept {
  node->target = target;
  node->prev = nullptr;
  node->next = target->joiners;
  if (target->joiners != nullptr) target->joiners->prev = node;
  target->joiners = node;
}

void unlink_join_node(JoinNode* node) noexcept {
  if (node->target == nullptr) return;
  if (node->prev != nullptr) {
    node->prev->next = node->next;
  } else {
    node->target->joiners = node->next;
  }
  if (node->next != nullptr) node->next->prev = node->prev;
  node->prev = node->next = nullptr;
  node->target = nullptr;
}

// ---- user timers ------------------------------------------------------------------------------

struct Scheduler::UserTimer : TimerNode {
  long id = 0;
  int64_t interval_ns = 0;
  bool repeat = false;
  std::shared_ptr<TimerCallback> callback;
};

long Scheduler::add_timer(int64_t interval_ns, bool repeat,
                          std::shared_ptr<TimerCallback> callback) {
  auto timer = std::make_unique<UserTimer>();
  timer->id = g_next_timer_id.fetch_add(1, std::memory_order_relaxed);
  timer->interval_ns = interval_ns;
  timer->repeat = repeat;
  timer->callback = std::move(callback);
  timer->fire = &Scheduler::fire_user_timer;
  timer->deadline = deadline_after(monotonic_ns(), Duration(std::max<int64_t>(0, interval_ns)));
  arm(*timer);
  long id = timer->id;
  user_timers_.emplace(id, std::move(timer));
  return id;
}

bool Scheduler::clear_timer(long timer_id) {
  auto it = user_timers_.find(timer_id);
  if (it == user_timers_.end()) return false;
  disarm(*it->second);
  user_timers_.erase(it);
  return true;
}

void Scheduler::fire_user_timer(TimerNode* node) {
  Scheduler* s = tls_scheduler;
  auto* timer = static_cast<UserTimer*>(node);
  long id = timer->id;
  std::shared_ptr<TimerCallback> callback = timer->callback;
  if (timer->repeat) {
    timer->deadline = deadline_after(timer->deadline, Duration(timer->interval_ns));
    if (timer->deadline <= s->now_) {
      // Fell behind by more than a period: skip the missed firings.
      timer->deadline = deadline_after(s->now_, Duration(timer->interval_ns));
    }
    s->arm(*timer);
  } else {
    s->user_timers_.erase(id);  // destroys timer
  }
  auto body = [callback = std::move(callback), id] { callback->call(id); };
  if (s->spawn(callable_ops<decltype(body)>(), &body) < 0) {
    log_format(LogLevel::warning, "timer#%ld: cannot start its coroutine; this firing is skipped",
               id);
  }
}

// ---- alternate signal stack --------------------------------------------------------------------

void Scheduler::install_signal_stack() {
  stack_t current{};
  if (::sigaltstack(nullptr, &current) != 0 || !(current.ss_flags & SS_DISABLE)) return;
  // The overflow handler runs on this stack: the faulting coroutine's own stack is exhausted.
  size_t size = 64 * 1024;
  void* memory = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return;
  stack_t alternate{};
  alternate.ss_sp = memory;
  alternate.ss_size = size;
  if (::sigaltstack(&alternate, nullptr) != 0) {
    ::munmap(memory, size);
    return;
  }
  signal_stack_ = memory;
  signal_stack_size_ = size;
}

void Scheduler::remove_signal_stack() {
  if (signal_stack_ == nullptr) return;
  stack_t disable{};
  disable.ss_flags = SS_DISABLE;
  ::sigaltstack(&disable, nullptr);
  ::munmap(signal_stack_, signal_stack_size_);
  signal_stack_ = nullptr;
}

}  // namespace coring::detail

// Coroutine containers and coroutines.
//
// run() turns the calling thread into a coroutine container: it starts a scheduler on an
// io_uring instance, runs `main` as the first coroutine and returns when every coroutine has
// ended and no timer is armed. Inside, create() (alias go()) starts a stackful coroutine that
// runs at once; its creator goes on when the new coroutine first waits or ends, as in Swoole.
// Coroutines never move between threads; each thread that calls run() has its own scheduler.
//
// How things fail:
// - run() returns -1 and sets last_error(): EBUSY when a container already runs on this
//   thread; EINVAL for RunOptions out of range (see there); the errno of io_uring_setup
//   (ENOSYS, EPERM, ENOMEM...) when the kernel refuses to give us a ring, or ENOSYS when it
//   lacks a feature the library needs, with one ERROR log line that says so; the errno of
//   io_uring_enter when the ring became unusable while the container ran (the coroutines whose
//   operations the kernel holds are abandoned, their stacks left mapped); EDEADLK when every
//   coroutine left
//   waits on something nothing can wake (no I/O, timer or offloaded job pending). For a
//   deadlock it logs "all coroutines (count: N) are asleep - deadlock!" and unwinds the stuck
//   coroutines (their pending wait throws an internal exception that is not a std::exception),
//   so their destructors and defers run. A coroutine that swallows that exception with
//   catch (...) and waits again is unwound again. A destructor that waits while its coroutine
//   is being unwound (an exception is in flight, so a second one would end the program), or
//   the destructor of the coroutine's function object, does not throw: its wait fails at once
//   with ECANCELED. So does a wait in a defer of an unwound coroutine (the defer goes on), and
//   the defers registered before it still run.
// - create() returns -1 with EPERM outside a container, EAGAIN past RunOptions::max_coroutines,
//   ENOMEM when no stack can be mapped (vm.max_map_count reached with guard pages: see
//   RunOptions::stack_guard), and E2BIG when the function object does not fit on the stack.
// - An exception that escapes a coroutine's function ends the program (std::terminate) after an
//   ERROR log line naming the coroutine id and the exception's what().
// - A stack overflow ends the program with "stack overflow in coroutine#N" on stderr (guard
//   page plus a SIGSEGV handler on an alternate signal stack), never silent corruption.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "coring/common.hpp"
#include "coring/detail/callable.hpp"
#include "coring/detail/switch.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

// Where a container waits for I/O and time. automatic: io_uring when the kernel lets the library
// set up a ring with every feature it needs, else epoll (one INFO line says why); the
// environment variable CORING_ENGINE=io_uring|epoll overrides automatic. io_uring: fail as run()
// describes when no ring can be had. Every public call behaves the same under both.
enum class Engine { automatic, io_uring, epoll };
std::string_view engine_name(Engine engine) noexcept;  // "automatic", "io_uring", "epoll"

struct RunOptions {
  // Address space per coroutine stack. Memory is committed only as the stack grows, and pooled
  // stacks are reused without a syscall. A coroutine that parks with a shallow call chain
  // touches one page. The function object passed to create() lives at the top of the stack.
  // Rounded up to whole pages, and to at least 8 KiB; more than 1 GiB: run() fails with EINVAL.
  size_t stack_size = 256 * 1024;
  // A PROT_NONE guard region below each stack turns an overflow into a clear crash. Each
  // guarded stack costs two kernel memory mappings and vm.max_map_count defaults to 65530, so
  // guarded stacks stop near 32,000 coroutines (create() then fails with ENOMEM). For more,
  // set stack_guard = false (stacks are then carved from large slabs: a few mappings in all)
  // and a small stack_size: {.stack_size = 16 * 1024, .stack_guard = false,
  // .max_coroutines = 2'000'000} runs a million parked coroutines in about 4 GiB.
  bool stack_guard = true;
  size_t max_coroutines = 100'000;  // create() fails with EAGAIN past it
  // io_uring submission queue size (completion queue: 4x); 0: run() fails with EINVAL; more
  // than 32768 (the kernel's limit) is clamped to it.
  unsigned ring_entries = 1024;
  Engine engine = Engine::automatic;
};

// Returns 0 once every coroutine has ended (see the header comment for -1).
template <class F>
int run(F&& main, const RunOptions& options = {});

inline namespace CORING_DETAIL_SWITCH_VARIANT {  // see coring/detail/switch.hpp

// Starts fn(args...) in a new coroutine now; returns its id (> 0) or -1 (last_error()).
// Arguments are bound by value.
template <class F, class... Args>
long create(F&& fn, Args&&... args);
template <class F, class... Args>
long go(F&& fn, Args&&... args) {
  return create(std::forward<F>(fn), std::forward<Args>(args)...);
}

// Switches to coroutine cid, which must be suspended in this_coroutine::yield(); the caller
// goes on when it waits again or ends. False (ESRCH: no such coroutine, EINVAL: not yielded,
// EPERM: outside a coroutine) otherwise.
bool resume(long cid);

}  // namespace CORING_DETAIL_SWITCH_VARIANT

// Interrupts cid's pending wait (sleep, channel, wait group, join, socket I/O): that call
// returns at once with failure and ECANCELED. False when cid does not exist (ESRCH) or is not
// waiting on something cancellable (EINVAL): running, ready, yielded, or in Mutex::lock().
bool cancel(long cid);

bool exists(long cid);

// Waits until every coroutine in cids has ended (ids that are gone count as ended). False with
// ETIMEDOUT, ECANCELED, EDEADLK (joining oneself) or EPERM (outside a coroutine).
bool join(std::span<const long> cids, Duration timeout = kForever);
bool join(std::initializer_list<long> cids, Duration timeout = kForever);

struct Stats {
  size_t coroutine_num = 0;       // alive now
  size_t coroutine_peak_num = 0;  // most alive at once since run() began
  uint64_t switches = 0;          // context switches since run() began
  uint64_t coroutines_created = 0;
  size_t ready_num = 0;           // runnable, waiting for their turn
  size_t timer_num = 0;           // armed: sleeps, timeouts, after/tick
  size_t io_inflight = 0;         // ring operations submitted and not yet completed
  size_t stack_size = 0;          // usable bytes per stack
  size_t stacks_free = 0;         // pooled stacks ready for reuse
  size_t stacks_mapped = 0;       // stacks carved so far (in use + pooled)
  unsigned ring_setup_flags = 0;  // the io_uring setup flags the kernel accepted (io_uring only)
  Engine engine = Engine::automatic;  // the engine running: io_uring or epoll
};
Stats stats();             // all zero outside a container
std::vector<long> list();  // ids of the coroutines alive in this thread's container
std::error_code last_error();

namespace this_coroutine {
long id();         // -1 outside a coroutine
long parent_id();  // -1 for the container's first coroutine and for timer callbacks
inline namespace CORING_DETAIL_SWITCH_VARIANT {
void yield();  // suspend until resume(id()); logs and returns at once outside a coroutine
}  // namespace CORING_DETAIL_SWITCH_VARIANT
inline namespace CORING_DETAIL_SWITCH_VARIANT {
// Sleeps at least d. d <= 0 lets every other ready coroutine run first. False if cancelled
// (ECANCELED) or outside a coroutine (EPERM).
bool sleep(Duration d);
}  // namespace CORING_DETAIL_SWITCH_VARIANT
// Runs fn when this coroutine ends (also when it is unwound), last registered first.
// Outside a coroutine fn is dropped with a WARNING.
template <class F>
void defer(F&& fn);
// True when this coroutine's most recent wait ended because cancel() interrupted it.
bool is_cancelled();
}  // namespace this_coroutine

// ---------------------------------------------------------------------------------------------
// Implementation details below.

namespace detail {
int run_container(const CallableOps& ops, void* fn, const RunOptions& options);
long spawn(const CallableOps& ops, void* fn);

inline namespace CORING_DETAIL_SWITCH_VARIANT {
inline __attribute__((always_inline)) long spawn_here(const CallableOps& ops, void* fn) {
#if CORING_DETAIL_INLINE_SWITCH
  SpawnPlan plan = prepare_spawn(ops, fn);
  if (plan.jump.to_context != nullptr) complete_switch(plan.jump);
  return plan.id;
#else
  return spawn(ops, fn);
#endif
}
}  // namespace CORING_DETAIL_SWITCH_VARIANT
void add_defer(std::unique_ptr<Task> task);

// sleep() in halves, like park() (coring/detail/wait.hpp): the switch happens in the caller's
// frame. SleepRecord is room on the caller's stack for the library's record of the sleep.
struct SleepRecord {
  alignas(8) unsigned char bytes[96];
};
SwitchPlan prepare_sleep(Duration d, SleepRecord& record);
bool finish_sleep(SleepRecord& record);
bool sleep_out_of_line(Duration d);
}  // namespace detail

template <class F>
int run(F&& main, const RunOptions& options) {
  if constexpr (std::is_function_v<std::remove_reference_t<F>>) {  // a plain function
    auto pointer = &main;
    return detail::run_container(detail::callable_ops<decltype(pointer)>(), &pointer, options);
  } else {
    return detail::run_container(detail::callable_ops<F>(),
                                 const_cast<void*>(static_cast<const void*>(std::addressof(main))),
                                 options);
  }
}

inline namespace CORING_DETAIL_SWITCH_VARIANT {

template <class F, class... Args>
long create(F&& fn, Args&&... args) {
  if constexpr (sizeof...(Args) == 0 && std::is_function_v<std::remove_reference_t<F>>) {
    auto pointer = &fn;  // a plain function: the coroutine holds a pointer to it
    return detail::spawn_here(detail::callable_ops<decltype(pointer)>(), &pointer);
  } else if constexpr (sizeof...(Args) == 0) {
    return detail::spawn_here(detail::callable_ops<F>(),
                              const_cast<void*>(static_cast<const void*>(std::addressof(fn))));
  } else {
    auto bound = detail::bind_arguments(std::forward<F>(fn), std::forward<Args>(args)...);
    return detail::spawn_here(detail::callable_ops<decltype(bound)>(), std::addressof(bound));
  }
}

inline __attribute__((always_inline)) bool resume(long cid) {
#if CORING_DETAIL_INLINE_SWITCH
  detail::SwitchPlan plan = detail::prepare_resume(cid);
  if (plan.to_context != nullptr) detail::complete_switch(plan);
  return plan.self != nullptr;
#else
  return detail::resume_out_of_line(cid);
#endif
}

}  // namespace CORING_DETAIL_SWITCH_VARIANT

inline __attribute__((always_inline)) void this_coroutine::CORING_DETAIL_SWITCH_VARIANT::yield() {
#if CORING_DETAIL_INLINE_SWITCH
  detail::SwitchPlan plan = detail::prepare_yield();
  if (plan.to_context != nullptr) {
    detail::complete_switch(plan);
    if (plan.self->unwinding) [[unlikely]]
      detail::unwind_after_switch();
  }
#else
  detail::yield_out_of_line();
#endif
}

inline __attribute__((always_inline)) bool this_coroutine::CORING_DETAIL_SWITCH_VARIANT::sleep(
    Duration d) {
#if CORING_DETAIL_INLINE_SWITCH
  detail::SleepRecord record;
  detail::SwitchPlan plan = detail::prepare_sleep(d, record);
  if (plan.to_context != nullptr) detail::complete_switch(plan);
  return detail::finish_sleep(record);
#else
  return detail::sleep_out_of_line(d);
#endif
}

template <class F>
void this_coroutine::defer(F&& fn) {
  detail::add_defer(detail::make_task(std::forward<F>(fn)));
}

}  // namespace coring

#pragma GCC visibility pop

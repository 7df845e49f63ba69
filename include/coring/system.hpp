// Work that must not block the scheduler: name resolution, blocking functions, files.
//
// offload(fn) runs fn on a bounded pool of worker threads (shared by the process, started on
// first use; CORING_OFFLOAD_THREADS sets its size, default 4) while the calling coroutine waits
// and the other coroutines of its container keep running. resolve() uses that pool for
// getaddrinfo. read_file()/write_file() go through the scheduler's io_uring.
//
// How things fail:
// - resolve() returns an empty vector and sets last_error(): EINVAL for an empty or malformed
//   name (checked locally: labels of letters, digits and '-', 1..63 characters, 253 in all; no
//   query is sent for it), ENXIO when the name does not exist (also, without any query, for
//   names under the reserved ".invalid" domain), EAGAIN for a temporary resolver failure,
//   ETIMEDOUT when the timeout passes (the lookup goes on in the background and its answer
//   still fills the cache). Numeric addresses ("127.0.0.1", "::1") resolve without a syscall.
//   Answers are cached for 60 s (successes) or 5 s (ENXIO), per name and family.
// - offload() cannot be cancelled or timed out: the coroutine waits until fn returns (its
//   result lives in the waiting frame). An exception thrown by fn is rethrown in the coroutine.
//   Outside a coroutine fn simply runs on the calling thread.
// - read_file() returns an empty optional and write_file() false with last_error() set to the
//   errno of the failing step (ENOENT, EACCES, EISDIR, ENOSPC...). Outside a coroutine they use
//   plain blocking syscalls.
//
// wait_signal(signo, timeout) (Swoole's System::waitSignal) suspends the calling coroutine until
// the process receives signo; the container's other coroutines run meanwhile. From the first
// wait_signal(signo) until the container ends, signo belongs to coring: its handler counts the
// signal and wakes the waiters through the event engine, so the signal no longer has its
// previous effect (a SIGTERM no longer ends the process), and one that comes while no coroutine
// waits is kept for the next wait_signal(signo) (one at most, as the kernel keeps one). When the
// container ends, the previous disposition comes back. Every coroutine that waits for signo
// when it comes is woken, in every container (thread) that waits for it. A thread that blocks
// signo in its signal mask never runs the handler; the kernel gives the signal to another.
// - false with last_error(): ETIMEDOUT when the timeout passes (zero or less: only a signal
//   already kept counts), ECANCELED for cancel(cid) or while the coroutine is being unwound,
//   EINVAL for a number that is not a signal or one that cannot be waited for (SIGKILL,
//   SIGSTOP, and the faults SIGSEGV, SIGBUS, SIGILL, SIGFPE), EPERM outside a coroutine, EMFILE
//   when 64 containers watch signals at once.
#pragma once

#include <sys/socket.h>

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "coring/common.hpp"
#include "coring/detail/callable.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

// Addresses of host as text ("127.0.0.1", "::1"), IPv4 first for AF_UNSPEC.
std::vector<std::string> resolve(std::string_view host, int family = AF_UNSPEC,
                                 Duration timeout = std::chrono::seconds(5));

template <class F>
std::invoke_result_t<F&> offload(F&& fn);

std::optional<std::string> read_file(const std::string& path);
bool write_file(const std::string& path, std::string_view data, bool append = false);

// Waits for signal signo; true when it came (see above).
bool wait_signal(int signo, Duration timeout = kForever);

namespace detail {

// Runs task->call() on a worker thread and returns when it is done. Outside a coroutine, runs
// it inline.
void run_offloaded(Task& task);

template <class R>
struct OffloadResult {
  std::optional<R> value;
};
template <class R>
requires std::is_reference_v<R>
struct OffloadResult<R> {  // fn returns a reference: keep the address of what it refers to
  std::remove_reference_t<R>* value = nullptr;
};
template <>
struct OffloadResult<void> {};

}  // namespace detail

template <class F>
std::invoke_result_t<F&> offload(F&& fn) {
  using R = std::invoke_result_t<F&>;
  detail::OffloadResult<R> result;
  std::exception_ptr error;
  auto body = [&] {
    try {
      if constexpr (std::is_void_v<R>) {
        fn();
      } else if constexpr (std::is_reference_v<R>) {
        R&& reference = fn();
        result.value = std::addressof(reference);
      } else {
        result.value.emplace(fn());
      }
    } catch (...) {
      error = std::current_exception();
    }
  };
  detail::TaskFor<decltype(body)&> task(body);
  detail::run_offloaded(task);
  if (error) std::rethrow_exception(error);
  if constexpr (std::is_reference_v<R>) {
    return static_cast<R>(*result.value);
  } else if constexpr (!std::is_void_v<R>) {
    return std::move(*result.value);
  }
}

}  // namespace coring

#pragma GCC visibility pop

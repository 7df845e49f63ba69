// Turns a coroutine stack overflow into a clear message instead of silent corruption: a guard
// region below each stack faults, and this SIGSEGV handler (on an alternate signal stack, since
// the coroutine's own stack is exhausted) names the coroutine and ends the program. Also the
// process-wide SIGPIPE policy (ignored unless the application handles it), and the fork
// generation that tells a forked child its parent's containers are not its own.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "core/scheduler.hpp"

namespace coring::detail {
namespace {

struct sigaction g_previous_action;

// Async-signal-safe formatting: no allocation, no locks, no stdio.
struct Message {
  char text[256];
  size_t length = 0;
  void add(const char* s) {
    while (*s != '\0' && length < sizeof text) text[length++] = *s++;
  }
  void add(unsigned long value, unsigned base = 10) {
    char digits[24];
    size_t n = 0;
    do {
      digits[n++] = "0123456789abcdef"[value % base];
      value /= base;
    } while (value != 0);
    while (n > 0 && length < sizeof text) text[length++] = digits[--n];
  }
};

void restore_default_and_return(int signal_number) {
  // Returning re-executes the faulting instruction, which now kills the process with the
  // original signal (and a core dump where enabled).
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  ::sigemptyset(&default_action.sa_mask);
  ::sigaction(signal_number, &default_action, nullptr);
}

void on_fault(int signal_number, siginfo_t* info, void* context) {
  Scheduler* s = tls_scheduler;
  Coroutine* c = s != nullptr ? s->running() : nullptr;
  if (c != nullptr && s->stacks().guard_size() > 0) {
    auto address = reinterpret_cast<uintptr_t>(info->si_addr);
    auto base = reinterpret_cast<uintptr_t>(c->stack_base);
    if (address < base && address >= base - s->stacks().guard_size()) {
      Message m;
      m.add("coring: stack overflow in coroutine#");
      m.add(static_cast<unsigned long>(c->id));
      m.add(" (stack_size ");
      m.add(static_cast<unsigned long>(s->stacks().stack_size()));
      m.add(" bytes, fault at 0x");
      m.add(static_cast<unsigned long>(address), 16);
      m.add("); give it a larger RunOptions::stack_size\n");
      ssize_t ignored = ::write(STDERR_FILENO, m.text, m.length);
      (void)ignored;
      restore_default_and_return(signal_number);
      return;
    }
  }
  // Not ours: behave as if we had never been installed.
  if (g_previous_action.sa_flags & SA_SIGINFO) {
    if (g_previous_action.sa_sigaction != nullptr) {
      g_previous_action.sa_sigaction(signal_number, info, context);
      return;
    }
  } else if (g_previous_action.sa_handler != SIG_DFL && g_previous_action.sa_handler != SIG_IGN) {
    g_previous_action.sa_handler(signal_number);
    return;
  }
  restore_default_and_return(signal_number);
}

}  // namespace

void install_process_handlers() {
  // A write to a closed pipe or socket must fail with EPIPE, not kill the process (writes that
  // bypass MSG_NOSIGNAL: files opened on pipes, the application's own). Checked at every
  // container start, since the application may reset it in between; its own handler is kept.
  struct sigaction pipe_action {};
  if (::sigaction(SIGPIPE, nullptr, &pipe_action) == 0 && pipe_action.sa_handler == SIG_DFL &&
      !(pipe_action.sa_flags & SA_SIGINFO)) {
    pipe_action.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &pipe_action, nullptr);
  }
  static std::once_flag once;
  std::call_once(once, [] {
    // So that a child forked while a container runs knows the container is not its own.
    ::pthread_atfork(nullptr, nullptr,
                     [] { g_fork_generation.fetch_add(1, std::memory_order_relaxed); });
    struct sigaction action {};
    action.sa_sigaction = &on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    ::sigemptyset(&action.sa_mask);
    ::sigaction(SIGSEGV, &action, &g_previous_action);
  });
}

}  // namespace coring::detail

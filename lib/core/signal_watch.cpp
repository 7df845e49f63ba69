// wait_signal(): the process-wide handler and each container's SignalWatch (see
// signal_watch.hpp).
#include "core/signal_watch.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/system.hpp"

namespace coring::detail {
namespace {

// At most this many containers (threads) watch signals at once; one more fails with EMFILE.
constexpr int kMaxWatchers = 64;

// What the handler reads. Plain atomics, lock-free, so the handler may read them whenever a
// signal comes, on any thread.
std::atomic<uint64_t> g_delivered[NSIG];
// Each slot holds an eventfd plus one (zero-initialised: 0 is a free slot).
std::atomic<int> g_watcher_fds[kMaxWatchers];
// Handlers running now: a container that leaves the list waits for them before it closes its
// eventfd, so a handler never writes to a descriptor number that was closed and reused.
std::atomic<int> g_in_handler{0};

// Who owns which signal, and the dispositions to give back. Never touched by the handler.
struct Registry {
  std::mutex mutex;
  int owners[NSIG] = {};
  struct sigaction previous[NSIG] = {};
  bool atfork_installed = false;
};

Registry& registry() {
  static Registry* instance = new Registry;  // never destroyed: handlers may outlive statics
  return *instance;
}

void on_signal(int signo) {
  int saved_errno = errno;
  g_in_handler.fetch_add(1, std::memory_order_seq_cst);
  g_delivered[signo].fetch_add(1, std::memory_order_seq_cst);
  const uint64_t one = 1;
  for (auto& slot : g_watcher_fds) {
    int fd = slot.load(std::memory_order_seq_cst) - 1;
    if (fd >= 0) {
      ssize_t ignored = ::write(fd, &one, sizeof one);  // EAGAIN: a wake-up is pending anyway
      (void)ignored;
    }
  }
  g_in_handler.fetch_sub(1, std::memory_order_seq_cst);
  errno = saved_errno;
}

// In a child forked while containers owned signals: nothing in it reads their eventfds, so the
// signals get their previous dispositions back (a SIGTERM must not be swallowed) and the
// handler forgets the parent's eventfds (writing to them would wake the parent for nothing).
void forget_in_child() {
  Registry& r = registry();
  for (auto& slot : g_watcher_fds) slot.store(0);
  for (int signo = 1; signo < NSIG; ++signo) {
    if (r.owners[signo] > 0) {
      ::sigaction(signo, &r.previous[signo], nullptr);
      r.owners[signo] = 0;
    }
  }
}

bool waitable(int signo) {
  if (signo <= 0 || signo >= NSIG) return false;
  switch (signo) {
    case SIGKILL:
    case SIGSTOP:  // cannot be caught
    case SIGSEGV:
    case SIGBUS:
    case SIGILL:
    case SIGFPE:  // faults: the thread that caused one cannot wait for it
      return false;
    default:
      return true;
  }
}

}  // namespace

SignalWatch::~SignalWatch() {
  if (slot_ >= 0) {
    g_watcher_fds[slot_].store(0, std::memory_order_seq_cst);
    while (g_in_handler.load(std::memory_order_seq_cst) != 0) ::sched_yield();
  }
  if (eventfd_ >= 0) ::close(eventfd_);
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (int signo = 1; signo < NSIG; ++signo) {
    if (!owned_[signo] || r.owners[signo] == 0) continue;  // (a forked child gave them back)
    if (--r.owners[signo] == 0) ::sigaction(signo, &r.previous[signo], nullptr);
  }
}

int SignalWatch::own(int signo) {
  if (eventfd_ < 0) {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return errno;
    int slot = -1;
    for (int i = 0; i < kMaxWatchers && slot < 0; ++i) {
      int expected = 0;
      if (g_watcher_fds[i].compare_exchange_strong(expected, fd + 1)) slot = i;
    }
    if (slot < 0) {
      ::close(fd);
      return EMFILE;
    }
    eventfd_ = fd;
    slot_ = slot;
    reader_.watch = this;
  }
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (!r.atfork_installed) {
    ::pthread_atfork(nullptr, nullptr, &forget_in_child);
    r.atfork_installed = true;
  }
  if (r.owners[signo] == 0) {
    struct sigaction action {};
    action.sa_handler = &on_signal;
    ::sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (::sigaction(signo, &action, &r.previous[signo]) != 0) return errno;
  }
  ++r.owners[signo];
  owned_[signo] = true;
  // Deliveries before this moment are not this container's.
  seen_[signo] = g_delivered[signo].load(std::memory_order_seq_cst);
  return 0;
}

bool SignalWatch::wait(int signo, Duration timeout) {
  if (!owned_[signo]) {
    if (int error = own(signo); error != 0) {
      set_last_error(error);
      return false;
    }
  }
  uint64_t delivered = g_delivered[signo].load(std::memory_order_seq_cst);
  if (delivered != seen_[signo]) {  // came while nobody waited: it is this wait's
    seen_[signo] = delivered;
    return true;
  }
  if (timeout <= Duration::zero()) {
    set_last_error(ETIMEDOUT);
    return false;
  }
  Waiter waiter;
  ++waiting_;
  arm();
  // However the wait ends (a delivery, the timeout, cancel(), the unwinder's throw), the read
  // goes once nobody waits, so that the watch does not keep the container alive.
  struct Leave {
    SignalWatch* watch;
    ~Leave() {
      if (--watch->waiting_ == 0) watch->disarm();
    }
  } leave{this};
  int result = park(waiters_[signo], waiter, timeout);
  if (result == kWaitOk) return true;
  set_last_error(result > 0 ? result : ECANCELED);
  return false;
}

void SignalWatch::arm() {
  EventEngine& engine = tls_scheduler->engine();
  while (!armed_ && waiting_ > 0) {
    prepare_eventfd_read(reader_, eventfd_, &counter_, &SignalWatch::on_wakeup);
    if (!engine.start(reader_)) {
      armed_ = true;  // in flight: on_wakeup() comes
      return;
    }
    if (reader_.result < 0) return;  // the engine failed: timeouts still end the waits
    deliver();
  }
}

void SignalWatch::disarm() noexcept {
  if (armed_) tls_scheduler->engine().cancel(reader_);
}

void SignalWatch::on_wakeup(IoOp* op) {
  SignalWatch* watch = static_cast<Reader*>(op)->watch;
  watch->armed_ = false;
  if (op->result >= 0) watch->deliver();
  watch->arm();
}

void SignalWatch::deliver() {
  for (int signo = 1; signo < NSIG; ++signo) {
    if (!owned_[signo]) continue;
    uint64_t delivered = g_delivered[signo].load(std::memory_order_seq_cst);
    if (delivered == seen_[signo] || waiters_[signo].empty()) continue;
    seen_[signo] = delivered;
    wake_all(waiters_[signo], kWaitOk);
  }
}

}  // namespace coring::detail

namespace coring {

bool wait_signal(int signo, Duration timeout) {
  using namespace detail;
  if (!waitable(signo)) {
    set_last_error(EINVAL);
    return false;
  }
  Scheduler* s = tls_scheduler;
  if (s == nullptr || s->running() == nullptr) {
    log_format(LogLevel::warning, "wait_signal() called outside a coroutine");
    set_last_error(EPERM);
    return false;
  }
  WaitPermit permit = begin_wait();  // a forked child, an unwinding coroutine: fail at once
  if (!permit) {
    set_last_error(permit.error);
    return false;
  }
  return s->signals().wait(signo, timeout);
}

}  // namespace coring

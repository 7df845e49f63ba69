// wait_signal(): signals delivered to coroutines through the event engine.
//
// A process-wide handler (installed for a signal the first time a container waits for it)
// counts each delivery of the signal and writes to the eventfd of every container that
// watches signals; each container reads its eventfd through its own engine, like any other
// I/O, and wakes the coroutines waiting for a signal whose count moved. So a handler does
// only async-signal-safe work (an atomic add, write(2)), a signal reaches every container
// that waits for it, and a container waiting for nothing else sleeps in the engine.
//
// A container owns a signal from its first wait_signal() for it until it ends: deliveries
// that come while no coroutine waits are remembered (at most one, as the kernel keeps one
// pending signal) for the next wait_signal(). When the last container that owns a signal
// ends, the signal's previous disposition comes back. A child forked while a container owned
// signals gets their previous dispositions back at once (pthread_atfork): nothing there would
// ever read them.
#pragma once

#include <signal.h>

#include <cstdint>

#include "core/io_op.hpp"
#include "coring/common.hpp"
#include "coring/detail/wait.hpp"

namespace coring::detail {

class SignalWatch {
 public:
  SignalWatch() = default;
  ~SignalWatch();
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

  // The running coroutine waits for signo; see wait_signal() in coring/system.hpp.
  bool wait(int signo, Duration timeout);

 private:
  struct Reader : IoOp {
    SignalWatch* watch = nullptr;
  };
  static void on_wakeup(IoOp* op);
  // Takes ownership of signo for this container (installs the handler): 0 or an errno.
  int own(int signo);
  void arm();
  void disarm() noexcept;
  // Wakes the waiters of every signal delivered since it was last seen.
  void deliver();

  int eventfd_ = -1;
  int slot_ = -1;  // this container's place in the handler's list of eventfds
  uint64_t counter_ = 0;
  bool armed_ = false;
  size_t waiting_ = 0;
  Reader reader_;
  bool owned_[NSIG] = {};
  uint64_t seen_[NSIG] = {};  // deliveries of each signal already handed out
  WaitList waiters_[NSIG];
};

}  // namespace coring::detail

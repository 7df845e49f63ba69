// wait_signal(): signals delivered to waiting coroutines, several waiters and signals, kept
// deliveries, timeouts, cancel(), bad numbers, two containers at once, and the disposition that
// comes back when the container ends. The cases that change a process-wide disposition or
// send the process a signal nobody may catch run in a forked child.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coring/coring.hpp>
#include <thread>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers

namespace {

constexpr Co::Duration kLong = 10s;

void send_self(int signo) {
  CHECK(::kill(::getpid(), signo) == 0);
}

}  // namespace

TEST_CASE("wait_signal: a waiting coroutine wakes on the signal; the others run meanwhile") {
  ChildResult child = run_in_child([] {
    int code = 0;
    int ticks = 0;
    int rc = Co::run([&] {
      Co::WaitGroup wg;
      wg.add(1);
      bool got = false;
      Co::create([&] {
        got = Co::wait_signal(SIGUSR1, kLong);
        wg.done();
      });
      // The waiter is parked (create() ran it until it waited); this coroutine goes on.
      for (int i = 0; i < 3; ++i) {
        Co::this_coroutine::sleep(1ms);
        ++ticks;
      }
      ::kill(::getpid(), SIGUSR1);
      if (!wg.wait(kLong)) code = 1;
      if (!got) code = 2;
    });
    if (rc != 0) code = 3;
    if (ticks != 3) code = 4;
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("wait_signal: every waiter of the signal wakes; waiters of another signal do not") {
  ChildResult child = run_in_child([] {
    int code = 0;
    Co::run([&] {
      Co::WaitGroup usr1;
      int woken = 0;
      for (int i = 0; i < 3; ++i) {
        usr1.add(1);
        Co::create([&] {
          if (Co::wait_signal(SIGUSR1, kLong)) ++woken;
          usr1.done();
        });
      }
      bool usr2_got = false;
      Co::WaitGroup usr2;
      usr2.add(1);
      Co::create([&] {
        usr2_got = Co::wait_signal(SIGUSR2, kLong);
        usr2.done();
      });
      ::kill(::getpid(), SIGUSR1);
      if (!usr1.wait(kLong)) code = 1;
      if (woken != 3) code = 2;
      if (usr2_got) code = 3;  // still waiting
      ::kill(::getpid(), SIGUSR2);
      if (!usr2.wait(kLong)) code = 4;
      if (!usr2_got) code = 5;
    });
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("wait_signal: a signal that comes while nobody waits is kept for the next wait, once") {
  ChildResult child = run_in_child([] {
    int code = 0;
    Co::run([&] {
      // The first wait owns SIGUSR1 for this container; nothing has come yet.
      if (Co::wait_signal(SIGUSR1, Co::Duration::zero())) code = 1;
      if (Co::last_error().value() != ETIMEDOUT) code = 2;
      ::kill(::getpid(), SIGUSR1);  // nobody waits: without coring this would end the process
      ::kill(::getpid(), SIGUSR1);  // two deliveries are kept as one, as the kernel does
      if (!Co::wait_signal(SIGUSR1, Co::Duration::zero())) code = 3;
      if (Co::wait_signal(SIGUSR1, 20ms)) code = 4;
      if (Co::last_error().value() != ETIMEDOUT) code = 5;
    });
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("wait_signal: timeout, cancel(), and the container ends once nobody waits") {
  ChildResult child = run_in_child([] {
    int code = 0;
    auto started = std::chrono::steady_clock::now();
    int rc = Co::run([&] {
      if (Co::wait_signal(SIGUSR2, 30ms)) code = 1;
      if (Co::last_error().value() != ETIMEDOUT) code = 2;
      bool result = true;
      int error = 0;
      long waiter = Co::create([&] {
        result = Co::wait_signal(SIGUSR2);
        error = Co::last_error().value();
      });
      if (!Co::cancel(waiter)) code = 3;
      if (!Co::join({waiter}, kLong)) code = 4;
      if (result || error != ECANCELED) code = 5;
    });
    // The wait's eventfd read went with the last waiter: nothing kept the container alive.
    if (rc != 0) code = 6;
    if (std::chrono::steady_clock::now() - started > 5s) code = 7;
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("wait_signal: numbers that are not signals, signals that cannot be waited for") {
  int rc = Co::run([] {
    for (int signo : {0, -1, NSIG, 1000, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) {
      CAPTURE(signo);
      CHECK_FALSE(Co::wait_signal(signo, 1s));
      CHECK(Co::last_error().value() == EINVAL);
    }
  });
  CHECK(rc == 0);
  CHECK_FALSE(Co::wait_signal(SIGUSR1, 1ms));  // outside a coroutine
  CHECK(Co::last_error().value() == EPERM);
}

TEST_CASE("wait_signal: SIGTERM is the container's while it runs; its disposition comes back") {
  ChildResult child = run_in_child([] {
    ::signal(SIGTERM, SIG_DFL);  // (doctest catches it to report a crash)
    int code = 0;
    Co::run([&] {
      if (Co::wait_signal(SIGTERM, Co::Duration::zero())) code = 1;
      send_self(SIGTERM);  // kept, not fatal
      if (!Co::wait_signal(SIGTERM, kLong)) code = 2;
    });
    struct sigaction now {};
    ::sigaction(SIGTERM, nullptr, &now);
    if (now.sa_handler != SIG_DFL) code = 3;
    if (code != 0) return code;
    ::kill(::getpid(), SIGTERM);  // the default again: the child ends here
    return 4;
  });
  CHECK_MESSAGE(child.signal() == SIGTERM, child.describe());
}

TEST_CASE("wait_signal: a handler the application had installed comes back too") {
  static std::atomic<int> handled{0};
  ChildResult child = run_in_child([] {
    struct sigaction mine {};
    mine.sa_handler = [](int) { handled.fetch_add(1); };
    ::sigemptyset(&mine.sa_mask);
    ::sigaction(SIGUSR2, &mine, nullptr);
    int code = 0;
    Co::run([&] {
      send_self(SIGUSR2);  // still the application's
      if (Co::wait_signal(SIGUSR2, Co::Duration::zero())) code = 1;
      send_self(SIGUSR2);  // now the container's
      if (!Co::wait_signal(SIGUSR2, kLong)) code = 2;
    });
    send_self(SIGUSR2);  // the application's again
    if (handled.load() != 2) code = 3;
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("wait_signal: containers on two threads both receive a signal") {
  ChildResult child = run_in_child([] {
    std::atomic<int> waiting{0};
    std::atomic<int> received{0};
    auto container = [&] {
      Co::run([&] {
        // Own the signal first, then say so: a signal sent after that is kept or delivered.
        Co::wait_signal(SIGUSR1, Co::Duration::zero());
        waiting.fetch_add(1);
        if (Co::wait_signal(SIGUSR1, kLong)) received.fetch_add(1);
      });
    };
    std::thread first(container);
    std::thread second(container);
    while (waiting.load() < 2) std::this_thread::sleep_for(1ms);
    ::kill(::getpid(), SIGUSR1);
    first.join();
    second.join();
    return received.load() == 2 ? 0 : 1;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

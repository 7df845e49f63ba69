// WaitGroup and Mutex.
//
// Assertions inside coroutines use CHECK only (a REQUIRE would throw out of the coroutine).
#include <doctest/doctest.h>

#include <climits>
#include <coring/coring.hpp>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::Clock;
using coring_test::elapsed_ms;
using coring_test::LogCapture;

// ---- WaitGroup --------------------------------------------------------------------------------

TEST_CASE("WaitGroup: wait returns once the counter is back to zero") {
  int finished_before_wait = -1, finished_after_wait = -1;
  bool waited = false;
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    Co::Channel<int> gate(0);
    int finished = 0;
    wg.add(3);
    CHECK(wg.count() == 3);
    for (int i = 0; i < 3; ++i) {
      Co::create([&] {
        gate.pop();
        ++finished;
        wg.done();
      });
    }
    Co::create([&] {
      for (int i = 0; i < 3; ++i) gate.push(i);
    });
    finished_before_wait = finished;
    waited = wg.wait();
    finished_after_wait = finished;
    CHECK(wg.count() == 0);
    CHECK(wg.wait(0ms));  // zero: returns at once, and succeeds
  });
  CHECK(rc == 0);
  CHECK(waited);
  CHECK(finished_before_wait == 0);
  CHECK(finished_after_wait == 3);
}

TEST_CASE("WaitGroup: several waiters all wake") {
  int woken = 0;
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    wg.add();
    std::vector<long> ids;
    for (int i = 0; i < 5; ++i) {
      ids.push_back(Co::create([&] {
        if (wg.wait()) ++woken;
      }));
    }
    CHECK(woken == 0);
    wg.done();
    CHECK(Co::join(ids));
  });
  CHECK(rc == 0);
  CHECK(woken == 5);
}

TEST_CASE("WaitGroup: wait with a timeout") {
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    wg.add();
    CHECK_FALSE(wg.wait(0ms));
    CHECK(Co::last_error() == std::errc::timed_out);
    auto start = Clock::now();
    CHECK_FALSE(wg.wait(50ms));
    auto waited = elapsed_ms(start);
    CHECK(Co::last_error() == std::errc::timed_out);
    CHECK(waited >= 50ms);
    CHECK(waited < 5s);
    CHECK(wg.count() == 1);
    Co::create([&] {
      Co::this_coroutine::sleep(10ms);
      wg.done();
    });
    CHECK(wg.wait(5s));
  });
  CHECK(rc == 0);
}

TEST_CASE("WaitGroup: a negative counter throws std::logic_error and resets to zero") {
  Co::WaitGroup outside;
  CHECK_THROWS_AS(outside.done(), std::logic_error);
  CHECK(outside.count() == 0);
  CHECK_THROWS_AS(outside.add(-2), std::logic_error);
  CHECK(outside.count() == 0);
  CHECK(outside.wait());  // zero: nothing to wait for, even outside a coroutine

  bool threw = false, waiter_woke = false;
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    wg.add(2);
    long waiter = Co::create([&] { waiter_woke = wg.wait(); });
    wg.done();
    try {
      wg.add(-5);
    } catch (const std::logic_error&) {
      threw = true;
    }
    CHECK(wg.count() == 0);
    CHECK(Co::join({waiter}));
  });
  CHECK(rc == 0);
  CHECK(threw);
  CHECK(waiter_woke);
}

TEST_CASE("WaitGroup: waiting outside a coroutine fails with EPERM") {
  Co::WaitGroup wg;
  wg.add();
  CHECK_FALSE(wg.wait());
  CHECK(Co::last_error() == std::errc::operation_not_permitted);
  wg.done();
}

TEST_CASE("WaitGroup: destroying it wakes its waiters with ECANCELED and a warning") {
  LogCapture logs;
  bool ok = true;
  std::error_code error;
  int rc = Co::run([&] {
    auto wg = std::make_unique<Co::WaitGroup>();
    wg->add();
    long waiter = Co::create([&, group = wg.get()] {
      ok = group->wait(5s);
      error = Co::last_error();
    });
    wg.reset();
    CHECK(Co::join({waiter}, 10s));
  });
  CHECK(rc == 0);
  CHECK_FALSE(ok);
  CHECK(error == std::errc::operation_canceled);
  CHECK(logs.count(Co::LogLevel::warning, "WaitGroup destroyed") == 1);
}

// ---- Mutex ------------------------------------------------------------------------------------

TEST_CASE("Mutex: coroutines that sleep while holding it never overlap") {
  int inside = 0, most_inside = 0, entries = 0;
  std::vector<std::string> trace;
  int rc = Co::run([&] {
    Co::Mutex m;
    Co::WaitGroup wg;
    for (int c = 0; c < 3; ++c) {
      wg.add();
      Co::create([&, c] {
        for (int round = 0; round < 3; ++round) {
          m.lock();
          ++inside;
          ++entries;
          most_inside = std::max(most_inside, inside);
          trace.push_back("in" + std::to_string(c));
          Co::this_coroutine::sleep(2ms);  // hold it across a wait
          trace.push_back("out" + std::to_string(c));
          --inside;
          m.unlock();
          Co::this_coroutine::sleep(0ms);
        }
        wg.done();
      });
    }
    wg.wait();
  });
  CHECK(rc == 0);
  CHECK(entries == 9);
  CHECK(most_inside == 1);
  REQUIRE(trace.size() == 18);
  for (size_t i = 0; i < trace.size(); i += 2) {  // every "in" is followed by its own "out"
    CHECK(trace[i].substr(0, 2) == "in");
    CHECK(trace[i + 1] == "out" + trace[i].substr(2));
  }
}

TEST_CASE("Mutex: waiters get it in arrival order, handed over directly") {
  std::vector<int> order;
  bool barged = true;
  int rc = Co::run([&] {
    Co::Mutex m;
    m.lock();
    std::vector<long> ids;
    for (int i = 0; i < 4; ++i) {
      ids.push_back(Co::create([&, i] {
        m.lock();
        order.push_back(i);
        Co::this_coroutine::sleep(0ms);
        m.unlock();
      }));
    }
    CHECK(order.empty());
    m.unlock();
    // Handed to the first waiter: it is still locked, and a newcomer cannot take it.
    CHECK(m.locked());
    barged = m.try_lock();
    CHECK(Co::join(ids));
    CHECK_FALSE(m.locked());
  });
  CHECK(rc == 0);
  CHECK_FALSE(barged);
  CHECK(order == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("Mutex: try_lock, unlock of an unlocked mutex, lock outside a coroutine") {
  Co::Mutex m;
  CHECK_THROWS_AS(m.unlock(), std::logic_error);
  CHECK(m.try_lock());
  CHECK_FALSE(m.try_lock());
  CHECK(m.locked());
  // The code outside any coroutine already holds it: locking again would wait forever.
  CHECK_THROWS_AS(m.lock(), std::system_error);
  m.unlock();
  CHECK_FALSE(m.locked());
  CHECK_THROWS_AS(m.unlock(), std::logic_error);
  m.lock();  // free: no waiting needed, works anywhere
  CHECK(m.locked());
  m.unlock();
}

TEST_CASE("Mutex: works with std::lock_guard and std::unique_lock") {
  int inside = 0, most_inside = 0;
  int rc = Co::run([&] {
    Co::Mutex m;
    Co::WaitGroup wg;
    for (int c = 0; c < 4; ++c) {
      wg.add();
      Co::create([&, c] {
        if (c % 2 == 0) {
          std::lock_guard<Co::Mutex> guard(m);
          most_inside = std::max(most_inside, ++inside);
          Co::this_coroutine::sleep(1ms);
          --inside;
        } else {
          std::unique_lock<Co::Mutex> lock(m);
          most_inside = std::max(most_inside, ++inside);
          Co::this_coroutine::sleep(1ms);
          --inside;
          lock.unlock();
          CHECK_FALSE(lock.owns_lock());
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK_FALSE(m.locked());
  });
  CHECK(rc == 0);
  CHECK(most_inside == 1);
}

TEST_CASE("Mutex: lock() would have to wait outside a coroutine: std::logic_error") {
  Co::Mutex m;
  int rc = Co::run([&] { m.lock(); });  // left held by a coroutine that has ended
  CHECK(rc == 0);
  CHECK(m.locked());
  CHECK_THROWS_AS(m.lock(), std::logic_error);  // outside any coroutine it could only wait
}

TEST_CASE("Mutex: it knows its holder: unlock by another coroutine throws, relock is EDEADLK") {
  std::string unlock_error;
  bool relock_deadlock = false;
  int rc = Co::run([&] {
    Co::Mutex m;
    m.lock();
    try {
      m.lock();
    } catch (const std::system_error& e) {
      relock_deadlock = e.code() == std::errc::resource_deadlock_would_occur;
    }
    long holder = Co::this_coroutine::id();
    Co::create([&] {
      try {
        m.unlock();
      } catch (const std::logic_error& e) {
        unlock_error = e.what();
      }
    });
    CHECK(m.locked());  // the failed unlock changed nothing
    m.unlock();
    CHECK_FALSE(m.locked());
    CHECK(unlock_error.find("coroutine#" + std::to_string(holder) + " does") != std::string::npos);
  });
  CHECK(rc == 0);
  CHECK(relock_deadlock);
}

TEST_CASE("Mutex: a lock() refused during the unwinding leaves the holder's lock alone") {
  // B (created first, so unwound first) locks in a destructor run by its unwinding while A,
  // stuck too, holds the lock: B's lock() cannot wait and returns without it; its guard's
  // unlock() must not release A's lock.
  coring_test::LogCapture logs;
  Co::Mutex m;
  Co::Channel<int> ch(0);
  long a_id = -1;
  bool held_after_guard = false;
  bool lock_failed_cancelled = false;
  struct LocksInDestructor {
    Co::Mutex* m;
    bool* held_after_guard;
    bool* lock_failed_cancelled;
    ~LocksInDestructor() {
      {
        std::lock_guard<Co::Mutex> guard(*m);
        *lock_failed_cancelled = Co::last_error() == std::errc::operation_canceled;
      }
      *held_after_guard = m->locked();
    }
  };
  int rc = Co::run([&] {
    Co::create([&] {  // B
      LocksInDestructor guard{&m, &held_after_guard, &lock_failed_cancelled};
      ch.pop();
    });
    a_id = Co::create([&] {  // A: holds the lock (no guard: its unwinding keeps it)
      m.lock();
      ch.pop();
    });
    ch.pop();
  });
  CHECK(rc == -1);
  CHECK(Co::last_error() == std::errc::resource_deadlock_would_occur);
  CHECK(lock_failed_cancelled);
  CHECK(held_after_guard);
  CHECK(m.locked());
}

TEST_CASE("WaitGroup: a counter pushed past INT_MAX throws overflow_error and stays as it was") {
  Co::WaitGroup wg;
  wg.add(INT_MAX);
  CHECK_THROWS_AS(wg.add(1), std::overflow_error);
  CHECK(wg.count() == INT_MAX);
  wg.add(-INT_MAX);
  CHECK(wg.count() == 0);
}

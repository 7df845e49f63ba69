// Timers (after, tick, clear) and the ordering of sleeps.
//
// Assertions inside coroutines use CHECK only (a REQUIRE would throw out of the coroutine).
#include <doctest/doctest.h>

#include <cmath>
#include <coring/coring.hpp>
#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/timer_heap.hpp"  // white-box: the heap every sleep, timeout and timer shares
#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::Clock;
using coring_test::elapsed_ms;
using coring_test::LogCapture;

TEST_CASE("sleep: concurrent sleeps of different lengths end in deadline order") {
  std::vector<int> order;
  int rc = Co::run([&] {
    for (int ms : {100, 20, 80, 40, 60, 0}) {
      Co::create([&, ms] {
        Co::this_coroutine::sleep(std::chrono::milliseconds(ms));
        order.push_back(ms);
      });
    }
  });
  CHECK(rc == 0);
  CHECK(order == std::vector<int>{0, 20, 40, 60, 80, 100});
}

// Conversions that would overflow int64 nanoseconds saturate: longer than ~292 years is
// forever, more negative is "do not wait", NaN is zero; floating-point durations convert.
static_assert(Co::Duration(std::chrono::hours::max()) == Co::kForever);
static_assert(Co::Duration(std::chrono::seconds::max()) == Co::kForever);
static_assert(Co::Duration(std::chrono::years(300)) == Co::kForever);
static_assert(Co::Duration(std::chrono::hours::min()) < Co::Duration::zero());
static_assert(Co::Duration(std::chrono::hours::min()) != Co::Duration::min());
static_assert(Co::Duration(std::chrono::duration<double>(0.5)) == 500ms);
static_assert(Co::Duration(std::chrono::duration<unsigned long long, std::milli>(~0ULL)) ==
              Co::kForever);
static_assert(Co::Duration(std::chrono::years(1)) == std::chrono::seconds(31556952));
// Narrow reps keep their sign and value: zero is zero, not the most negative Duration.
static_assert(Co::Duration(std::chrono::duration<int, std::milli>(0)).count() == 0);
static_assert(Co::Duration(std::chrono::duration<int, std::milli>(-5)) == -5ms);
static_assert(Co::Duration(std::chrono::duration<short>(7)) == 7s);
static_assert(Co::Duration(std::chrono::duration<unsigned>(3)) == 3s);
static_assert(Co::Duration(std::chrono::duration<long long, std::pico>(-2500)) == -2ns);

TEST_CASE("sleep: durations too long to count in nanoseconds wait forever; negative ones not") {
  const std::vector<Co::Duration> forever = {
      std::chrono::hours::max(), std::chrono::seconds::max(), std::chrono::years::max(),
      std::chrono::duration<double>(1e30), std::chrono::duration<double>(INFINITY)};
  int still_sleeping = 0, cancelled = 0;
  bool negative_returned = false, nan_returned = false;
  int rc = Co::run([&] {
    std::vector<long> sleepers;
    for (Co::Duration d : forever) {
      sleepers.push_back(Co::create([&, d] {
        if (!Co::this_coroutine::sleep(d) && Co::last_error() == std::errc::operation_canceled) {
          ++cancelled;
        }
      }));
    }
    // A sleep that overflowed to a negative or tiny value would have ended by now.
    Co::this_coroutine::sleep(20ms);
    for (long cid : sleepers) still_sleeping += Co::exists(cid);
    for (long cid : sleepers) Co::cancel(cid);
    CHECK(Co::join(sleepers, 5s));
    negative_returned = Co::this_coroutine::sleep(std::chrono::hours::min());
    nan_returned = Co::this_coroutine::sleep(std::chrono::duration<double>(NAN));
  });
  CHECK(rc == 0);
  CHECK(still_sleeping == static_cast<int>(forever.size()));
  CHECK(cancelled == static_cast<int>(forever.size()));
  CHECK(negative_returned);
  CHECK(nan_returned);
}

TEST_CASE("channel and wait group waits with hours::max() wait forever too") {
  bool pop_waiting = false, wait_waiting = false;
  int rc = Co::run([&] {
    Co::Channel<int> ch(0);
    Co::WaitGroup wg;
    wg.add(1);
    long popper = Co::create([&] { ch.pop(std::chrono::hours::max()); });
    long waiter = Co::create([&] { wg.wait(std::chrono::hours::max()); });
    Co::this_coroutine::sleep(20ms);
    pop_waiting = Co::exists(popper);
    wait_waiting = Co::exists(waiter);
    ch.close();
    wg.done();
  });
  CHECK(rc == 0);
  CHECK(pop_waiting);
  CHECK(wait_waiting);
}

TEST_CASE("sleep: lasts at least its duration; zero lets the others run first") {
  std::vector<std::string> events;
  int rc = Co::run([&] {
    auto start = Clock::now();
    CHECK(Co::this_coroutine::sleep(30ms));
    auto slept = elapsed_ms(start);
    CHECK(slept >= 30ms);
    CHECK(slept < 5s);

    Co::create([&] {
      events.push_back("child:1");
      Co::this_coroutine::sleep(0ms);
      events.push_back("child:2");
    });
    events.push_back("main:1");
    CHECK(Co::this_coroutine::sleep(0ms));
    events.push_back("main:2");
  });
  CHECK(rc == 0);
  CHECK(events == std::vector<std::string>{"child:1", "main:1", "child:2", "main:2"});
  CHECK_FALSE(Co::this_coroutine::sleep(1ms));  // outside a coroutine
  CHECK(Co::last_error() == std::errc::operation_not_permitted);
}

TEST_CASE("after: fires once, in a new coroutine, with its own timer id") {
  int fired = 0;
  long timer = 0, seen_timer = 0, main_id = 0, cid = 0, parent = 0;
  bool cleared_after_firing = true;
  int rc = Co::run([&] {
    main_id = Co::this_coroutine::id();
    Co::Channel<int> done(1);
    timer = Co::after(10ms, [&](long id) {
      ++fired;
      seen_timer = id;
      cid = Co::this_coroutine::id();
      parent = Co::this_coroutine::parent_id();
      CHECK(Co::this_coroutine::sleep(1ms));  // it is a coroutine: it may wait
      done.push(0);
    });
    CHECK(timer > 0);
    CHECK(done.pop(5s).has_value());
    CHECK(fired == 1);
    cleared_after_firing = Co::clear(timer);  // already fired: nothing to clear
  });
  // run() returned, so nothing stayed armed: the timer did not re-arm itself.
  CHECK(rc == 0);
  CHECK(fired == 1);
  CHECK(seen_timer == timer);
  CHECK(cid > 0);
  CHECK(cid != main_id);
  CHECK(parent == -1);
  CHECK_FALSE(cleared_after_firing);
}

TEST_CASE("after: timers fire in deadline order; a cleared one never fires") {
  std::vector<int> order;
  bool cleared = false, cleared_twice = true;
  int rc = Co::run([&] {
    Co::after(60ms, [&] { order.push_back(60); });
    Co::after(20ms, [&] { order.push_back(20); });
    long doomed = Co::after(30ms, [&] { order.push_back(30); });
    Co::after(40ms, [&] { order.push_back(40); });
    Co::after(0ms, [&] { order.push_back(0); });
    cleared = Co::clear(doomed);
    cleared_twice = Co::clear(doomed);
  });
  CHECK(rc == 0);
  CHECK(cleared);
  CHECK_FALSE(cleared_twice);
  CHECK(order == std::vector<int>{0, 20, 40, 60});
}

TEST_CASE("a container does not end while a timer is armed") {
  bool fired = false;
  auto start = Clock::now();
  int rc = Co::run([&] {
    Co::after(50ms, [&] { fired = true; });
    // main ends at once; the timer keeps the container alive
  });
  auto took = elapsed_ms(start);
  CHECK(rc == 0);
  CHECK(fired);
  CHECK(took >= 50ms);
  CHECK(took < 5s);
}

TEST_CASE("tick: fires repeatedly until cleared from inside, each time in a new coroutine") {
  int fired = 0;
  long timer = 0;
  std::set<long> timer_ids, cids;
  bool cleared = false;
  int rc = Co::run([&] {
    timer = Co::tick(5ms, [&](long id) {
      ++fired;
      timer_ids.insert(id);
      cids.insert(Co::this_coroutine::id());
      if (fired == 5) cleared = Co::clear(id);
    });
    CHECK(timer > 0);
  });
  // run() returned: the tick was really stopped (an armed tick would keep it running forever)
  CHECK(rc == 0);
  CHECK(fired == 5);
  CHECK(cleared);
  CHECK(timer_ids == std::set<long>{timer});
  CHECK(cids.size() == 5);
}

TEST_CASE("tick: cleared before its first firing never fires; clear of unknown ids is false") {
  int fired = 0;
  int rc = Co::run([&] {
    long timer = Co::tick(10ms, [&] { ++fired; });
    CHECK(Co::clear(timer));
    CHECK_FALSE(Co::clear(timer));
    CHECK_FALSE(Co::clear(987654321));
    CHECK_FALSE(Co::clear(-1));
    CHECK(Co::this_coroutine::sleep(40ms));
  });
  CHECK(rc == 0);
  CHECK(fired == 0);
}

TEST_CASE("tick: a non-positive period is refused with EINVAL") {
  int rc = Co::run([&] {
    CHECK(Co::tick(0ms, [] {}) == -1);
    CHECK(Co::last_error() == std::errc::invalid_argument);
    CHECK(Co::tick(-5ms, [] {}) == -1);
    CHECK(Co::last_error() == std::errc::invalid_argument);
  });
  CHECK(rc == 0);
}

TEST_CASE("after/tick/clear outside a container fail with EPERM") {
  LogCapture logs;
  bool ran = false;
  CHECK(Co::after(1ms, [&] { ran = true; }) == -1);
  CHECK(Co::last_error() == std::errc::operation_not_permitted);
  CHECK(Co::tick(1ms, [&] { ran = true; }) == -1);
  CHECK(Co::last_error() == std::errc::operation_not_permitted);
  CHECK_FALSE(Co::clear(1));
  CHECK_FALSE(ran);
}

TEST_CASE("a timer that fires at max_coroutines skips that firing with a warning") {
  LogCapture logs;
  bool fired = false;
  Co::RunOptions options;
  options.max_coroutines = 1;  // main only
  int rc = Co::run(
      [&] {
        Co::after(1ms, [&] { fired = true; });
        Co::this_coroutine::sleep(30ms);
      },
      options);
  CHECK(rc == 0);
  CHECK_FALSE(fired);
  CHECK(logs.count(Co::LogLevel::warning, "skipped") == 1);
}

TEST_CASE("timer heap: deadline order, ties in arming order, removal from anywhere") {
  struct Node : coring::detail::TimerNode {
    int order = 0;
  };
  std::mt19937_64 rng(20261123);
  coring::detail::TimerHeap heap;
  std::vector<std::unique_ptr<Node>> nodes;
  std::vector<Node*> armed;
  int next_order = 0;
  auto arm = [&](int64_t deadline) {
    nodes.push_back(std::make_unique<Node>());
    Node* n = nodes.back().get();
    n->deadline = deadline;
    n->order = next_order++;
    heap.push(n);
    armed.push_back(n);
  };
  // Interleave arming and removing (from the middle, the front and the back of the heap).
  for (int round = 0; round < 3000; ++round) {
    arm(static_cast<int64_t>(rng() % 400));
    if (round % 3 == 2 && !armed.empty()) {
      size_t victim = rng() % armed.size();
      heap.remove(armed[victim]);
      CHECK_FALSE(armed[victim]->armed());
      armed.erase(armed.begin() + static_cast<long>(victim));
    }
  }
  REQUIRE(heap.size() == armed.size());
  CHECK(heap.pop_due(-1) == nullptr);  // nothing is due before every deadline
  int64_t last_deadline = -1;
  int last_order = -1;
  size_t popped = 0;
  bool ordered = true;
  for (int64_t now = 0; now < 400; now += 7) {
    while (auto* node = static_cast<Node*>(heap.pop_due(now))) {
      ++popped;
      CHECK_FALSE(node->armed());
      if (node->deadline > now || node->deadline < last_deadline ||
          (node->deadline == last_deadline && node->order < last_order)) {
        ordered = false;
      }
      last_deadline = node->deadline;
      last_order = node->order;
    }
    if (!heap.empty()) CHECK(heap.next_deadline() > now);
  }
  CHECK(ordered);
  CHECK(popped == armed.size());
  CHECK(heap.empty());
}

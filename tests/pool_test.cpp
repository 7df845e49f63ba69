// coring::ConnectionPool and Socket::check_liveness.
//
// The pool's contract is tested with a plain connection type (Conn) whose factory and
// destructor count what happens; the liveness check and the pool's use of it with real TCP
// connections over 127.0.0.1, to an in-process server that closes or resets them.
//
// Assertions inside coroutines use CHECK only: a REQUIRE throws, and an exception that escapes
// a coroutine ends the program by design. Every wait the test expects to end by itself has a
// finite timeout (kLong), so a missing behaviour fails the test instead of hanging it.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <coring/coring.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers

namespace {

// What the factory and the connections' destructors did.
struct Counts {
  int made = 0;                // connections made (their ids are 1, 2, ...)
  int fail = 0;                // the next `fail` factory calls return null
  std::vector<int> destroyed;  // ids, in the order they were destroyed
};

struct Conn {
  Conn(int id, Counts* counts) : id(id), counts(counts) {}
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() { counts->destroyed.push_back(id); }
  int id;
  Counts* counts;
};

using Pool = Co::ConnectionPool<Conn>;

std::function<std::unique_ptr<Conn>()> factory(Counts& counts) {
  return [&counts]() -> std::unique_ptr<Conn> {
    if (counts.fail > 0) {
      --counts.fail;
      return nullptr;
    }
    return std::make_unique<Conn>(++counts.made, &counts);
  };
}

int error_now() {
  return Co::last_error().value();
}

// The id of the connection a get() handed out, or -errno.
int id_or_error(std::optional<Pool::Handle>& handle) {
  return handle ? (*handle)->id : -error_now();
}

}  // namespace

// ---- creation and limits ------------------------------------------------------------------------

TEST_CASE("pool: connections are made on demand, reused, and limited to size") {
  Counts counts;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 3);
    CHECK(pool.size() == 3);
    CHECK(pool.connections() == 0);
    CHECK(counts.made == 0);  // nothing before the first get()
    {
      auto first = pool.get();
      CO_REQUIRE(first.has_value());
      CHECK((*first)->id == 1);
      CHECK(first->get()->id == 1);
      CHECK((**first).id == 1);
      CHECK(counts.made == 1);
      CHECK(pool.connections() == 1);
      CHECK(pool.idle() == 0);
    }
    CHECK(pool.idle() == 1);  // given back, not destroyed
    CHECK(counts.destroyed.empty());
    {
      auto again = pool.get();
      CO_REQUIRE(again.has_value());
      CHECK((*again)->id == 1);  // the idle one, no new connection
      CHECK(counts.made == 1);
      auto second = pool.get();
      auto third = pool.get();
      CO_REQUIRE(second.has_value());
      CO_REQUIRE(third.has_value());
      CHECK(counts.made == 3);
      CHECK(pool.connections() == 3);
      // All three in use: a fourth does not make another.
      auto fourth = pool.get(0ms);
      CHECK_FALSE(fourth.has_value());
      CHECK(error_now() == ETIMEDOUT);
      CHECK(counts.made == 3);
    }
    CHECK(pool.idle() == 3);
    // The one given back last comes out first.
    auto next = pool.get();
    CO_REQUIRE(next.has_value());
    CHECK((*next)->id == 1);
  });
  CHECK(rc == 0);
  CHECK(counts.destroyed.size() == 3);  // the pool's destruction destroyed them all
}

TEST_CASE("pool: get() waits for a connection given back, and takes that one") {
  Counts counts;
  int waiter_got = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 2);
    auto a = pool.get();
    auto b = pool.get();
    CO_REQUIRE(a && b);
    Co::WaitGroup wg;
    spawn(wg, [&] {
      auto c = pool.get(kLong);
      waiter_got = id_or_error(c);
    });
    CHECK(pool.waiting() == 1);
    CHECK(waiter_got == 0);
    b.reset();  // gives connection 2 back: straight to the waiter
    CHECK(pool.waiting() == 0);
    CHECK(pool.idle() == 0);
    CHECK(settle(wg));
    CHECK(counts.made == 2);
  });
  CHECK(rc == 0);
  CHECK(waiter_got == 2);
}

TEST_CASE("pool: get() times out, and zero or negative timeouts never wait") {
  Counts counts;
  int timed_out = 0, zero = 0, negative = 0, most_negative = 0;
  size_t waiting_seen = 99;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 1);
    auto held = pool.get();
    CO_REQUIRE(held.has_value());
    auto late = pool.get(20ms);
    CHECK_FALSE(late.has_value());
    timed_out = error_now();
    CHECK(pool.waiting() == 0);
    // These must fail at once: run them where a wait would show (waiting() from another
    // coroutine) and bounded, so that a wait fails the test instead of hanging it.
    CHECK(within(kLong, [&] {
      auto h = pool.get(0ms);
      CHECK_FALSE(h.has_value());
      zero = error_now();
      h = pool.get(-1s);
      CHECK_FALSE(h.has_value());
      negative = error_now();
      h = pool.get(Co::Duration::min());
      CHECK_FALSE(h.has_value());
      most_negative = error_now();
      waiting_seen = pool.waiting();
    }));
    // Zero timeout with something to take: it succeeds.
    held.reset();
    auto idle = pool.get(0ms);
    CHECK(idle.has_value());
    CHECK(counts.made == 1);
  });
  CHECK(rc == 0);
  CHECK(timed_out == ETIMEDOUT);
  CHECK(zero == ETIMEDOUT);
  CHECK(negative == ETIMEDOUT);
  CHECK(most_negative == ETIMEDOUT);
  CHECK(waiting_seen == 0);
}

TEST_CASE("pool: a zero timeout still makes a connection in a free slot") {
  Counts counts;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 2);
    auto h = pool.get(0ms);
    CHECK(h.has_value());
    CHECK(counts.made == 1);
  });
  CHECK(rc == 0);
}

TEST_CASE("pool: waiters are served first come, first served, and nobody jumps the queue") {
  Counts counts;
  std::vector<std::string> order;
  int barger = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 1);
    auto held = pool.get();
    CO_REQUIRE(held.has_value());
    Co::WaitGroup wg;
    for (const char* name : {"a", "b", "c"}) {
      spawn(wg, [&, name] {
        auto h = pool.get(kLong);
        CHECK(h.has_value());
        order.emplace_back(name);
        Co::this_coroutine::sleep(0ms);  // keep it a moment: the others must go on waiting
      });
    }
    CHECK(pool.waiting() == 3);
    held.reset();  // owed to "a" now, although "a" has not run yet
    auto newcomer = pool.get(0ms);
    CHECK_FALSE(newcomer.has_value());
    barger = error_now();
    CHECK(settle(wg));
    CHECK(counts.made == 1);  // one connection went round
  });
  CHECK(rc == 0);
  CHECK(order == std::vector<std::string>{"a", "b", "c"});
  CHECK(barger == ETIMEDOUT);
}

// ---- broken connections and failing factories --------------------------------------------------

TEST_CASE("pool: mark_broken() destroys the connection and frees its slot for a new one") {
  Counts counts;
  int waiter_got = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 1);
    {
      auto h = pool.get();
      CO_REQUIRE(h.has_value());
      CHECK_FALSE(h->broken());
      h->mark_broken();
      CHECK(h->broken());
    }
    CHECK(counts.destroyed == std::vector<int>{1});
    CHECK(pool.connections() == 0);
    CHECK(pool.idle() == 0);
    auto h = pool.get();
    CO_REQUIRE(h.has_value());
    CHECK((*h)->id == 2);
    // With a coroutine waiting: the freed slot goes to it, and it makes a new connection.
    Co::WaitGroup wg;
    spawn(wg, [&] {
      auto w = pool.get(kLong);
      waiter_got = id_or_error(w);
    });
    h->mark_broken();
    h.reset();
    CHECK(settle(wg));
    CHECK(pool.connections() == 1);
  });
  CHECK(rc == 0);
  CHECK(waiter_got == 3);
  CHECK(counts.destroyed == std::vector<int>{1, 2, 3});
}

TEST_CASE("pool: a factory that fails does not use up a slot, and get() fails at once") {
  Counts counts;
  int first_error = 0, waiter_error = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 1);
    counts.fail = 1;
    auto failed = pool.get(kLong);
    CHECK_FALSE(failed.has_value());
    first_error = error_now();
    CHECK(pool.connections() == 0);
    auto ok = pool.get(0ms);  // the slot is free: this one succeeds
    CO_REQUIRE(ok.has_value());
    CHECK((*ok)->id == 1);
    // A waiter handed the slot of a broken connection while the factory fails: it fails too,
    // at once, rather than waiting for a connection that will never come.
    Co::WaitGroup wg;
    spawn(wg, [&] {
      auto w = pool.get(kLong);
      CHECK_FALSE(w.has_value());
      waiter_error = error_now();
    });
    counts.fail = 1;
    ok->mark_broken();
    ok.reset();
    CHECK(settle(wg));
    CHECK(pool.connections() == 0);
    auto later = pool.get(0ms);  // and once the factory works again, so does the pool
    CO_REQUIRE(later.has_value());
    CHECK((*later)->id == 2);
  });
  CHECK(rc == 0);
  CHECK(first_error == ENOTCONN);
  CHECK(waiter_error == ENOTCONN);
}

TEST_CASE("pool: get() reports the errno a failing factory left in last_error()") {
  int error = 0;
  int rc = Co::run([&] {
    Co::ConnectionPool<Co::Socket> pool([]() -> std::unique_ptr<Co::Socket> {
      if (Co::resolve("").empty()) return nullptr;  // records EINVAL in last_error()
      return std::make_unique<Co::Socket>();
    });
    auto h = pool.get(0ms);
    CHECK_FALSE(h.has_value());
    error = error_now();
    CHECK(pool.connections() == 0);
  });
  CHECK(rc == 0);
  CHECK(error == EINVAL);
}

TEST_CASE("pool: a factory that throws frees its slot; the exception comes out of get()") {
  Counts counts;
  bool thrown = false;
  int rc = Co::run([&] {
    bool throw_next = true;
    Pool pool(
        [&]() -> std::unique_ptr<Conn> {
          if (std::exchange(throw_next, false)) throw std::runtime_error("no route");
          return std::make_unique<Conn>(++counts.made, &counts);
        },
        1);
    try {
      pool.get();
    } catch (const std::runtime_error& e) {
      thrown = std::string(e.what()) == "no route";
    }
    CHECK(pool.connections() == 0);
    auto h = pool.get(0ms);
    CHECK(h.has_value());
  });
  CHECK(rc == 0);
  CHECK(thrown);
}

// ---- fill, close, lifetime ---------------------------------------------------------------------

TEST_CASE("pool: fill() makes connections up to size, and stops at a failing factory") {
  Counts counts;
  int fill_error = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 3);
    pool.fill();
    CHECK(counts.made == 3);
    CHECK(pool.connections() == 3);
    CHECK(pool.idle() == 3);
    {
      auto a = pool.get(0ms);
      auto b = pool.get(0ms);
      auto c = pool.get(0ms);
      CHECK((a && b && c));
      CHECK(counts.made == 3);  // all three were there already
      b->mark_broken();
      c->mark_broken();
    }
    CHECK(pool.connections() == 1);
    counts.fail = 1;
    pool.fill();  // the factory fails: it stops there
    fill_error = error_now();
    CHECK(pool.connections() == 1);
    pool.fill();
    CHECK(pool.connections() == 3);
    CHECK(counts.made == 5);
  });
  CHECK(rc == 0);
  CHECK(fill_error == ENOTCONN);
}

TEST_CASE("pool: close() fails the waiters, destroys idle connections, and later ones") {
  Counts counts;
  std::vector<int> waiter_errors;
  int after_close = 0;
  std::vector<int> destroyed_at_close, destroyed_at_return;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 2);
    auto held = pool.get();
    { auto idle = pool.get(); }
    auto held2 = pool.get();  // connection 2 is idle again, then taken: both in use
    CO_REQUIRE(held && held2);
    held2.reset();  // 2 idle, 1 in use
    auto held3 = pool.get();
    CO_REQUIRE(held3.has_value());  // 2 again: both in use
    Co::WaitGroup wg;
    for (int i = 0; i < 2; ++i) {
      spawn(wg, [&] {
        auto h = pool.get(kLong);
        CHECK_FALSE(h.has_value());
        waiter_errors.push_back(error_now());
      });
    }
    CHECK(pool.waiting() == 2);
    held3.reset();  // to the first waiter: it must still fail, the pool closes before it runs
    pool.close();
    CHECK(pool.closed());
    // Nothing was idle; the connection owed to the first waiter goes when that waiter runs.
    destroyed_at_close = counts.destroyed;
    CHECK(settle(wg));
    auto h = pool.get(0ms);
    CHECK_FALSE(h.has_value());
    after_close = error_now();
    CHECK(counts.destroyed.size() == 1);
    held.reset();  // a connection given back after close() is destroyed
    destroyed_at_return = counts.destroyed;
    pool.fill();  // does nothing once closed
    CHECK(counts.made == 2);
    CHECK(pool.connections() == 0);
  });
  CHECK(rc == 0);
  CHECK(waiter_errors == std::vector<int>{EBADF, EBADF});
  CHECK(after_close == EBADF);
  CHECK(destroyed_at_close == std::vector<int>{});
  CHECK(counts.destroyed == std::vector<int>{2, 1});
  CHECK(destroyed_at_return == std::vector<int>{2, 1});
}

TEST_CASE("pool: close() destroys the idle connections at once") {
  Counts counts;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 3);
    pool.fill();
    auto held = pool.get();
    pool.close();
    CHECK(counts.destroyed.size() == 2);
    CHECK(pool.idle() == 0);
    CHECK(held.has_value());
    CHECK((*held)->id == 3);  // still usable until given back
  });
  CHECK(rc == 0);
  CHECK(counts.destroyed.size() == 3);
}

TEST_CASE("pool: a Handle may outlive its pool") {
  Counts counts;
  int id = 0;
  std::vector<int> destroyed_with_pool;
  int rc = Co::run([&] {
    std::optional<Pool::Handle> handle;
    {
      Pool pool(factory(counts), 2);
      pool.fill();
      handle = pool.get();
      CO_REQUIRE(handle.has_value());
    }
    destroyed_with_pool = counts.destroyed;  // the idle one only
    Pool::Handle moved = std::move(*handle);
    CHECK(handle->get() == nullptr);
    id = moved->id;
    handle.reset();  // the moved-from Handle holds nothing
    CHECK(counts.destroyed.size() == 1);
  });
  CHECK(rc == 0);
  CHECK(id == 2);
  CHECK(destroyed_with_pool == std::vector<int>{1});
  CHECK(counts.destroyed == std::vector<int>{1, 2});
}

TEST_CASE("pool: destroying the pool while coroutines wait in get() fails their waits") {
  Counts counts;
  int error = 0;
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    auto pool = std::make_unique<Pool>(factory(counts), 1);
    auto held = pool->get();
    spawn(wg, [&] {
      auto h = pool->get(kLong);
      CHECK_FALSE(h.has_value());
      error = error_now();
    });
    pool.reset();
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(error == EBADF);
  CHECK(counts.destroyed == std::vector<int>{1});
}

TEST_CASE("pool: a factory still working when the pool is closed and destroyed") {
  Counts counts;
  int error = 0;
  bool got = true;
  int rc = Co::run([&] {
    Co::Channel<int> gate(0);
    auto pool = std::make_unique<Pool>(
        [&]() -> std::unique_ptr<Conn> {
          gate.pop(kLong);  // a slow connect
          return std::make_unique<Conn>(++counts.made, &counts);
        },
        1);
    Co::WaitGroup wg;
    spawn(wg, [&, raw = pool.get()] {
      auto h = raw->get(kLong);
      got = h.has_value();
      error = error_now();
    });
    CHECK(pool->connections() == 1);  // the slot is taken while the factory works
    pool.reset();                     // the state lives on while the factory runs
    CHECK(gate.push(1, kLong));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK_FALSE(got);
  CHECK(error == EBADF);
  CHECK(counts.made == 1);
  CHECK(counts.destroyed == std::vector<int>{1});  // what it made was destroyed
}

TEST_CASE("pool: misuse and a moved-from pool") {
  Counts counts;
  CHECK_THROWS_AS(Pool(factory(counts), 0), std::invalid_argument);
  CHECK_THROWS_AS(Pool(nullptr, 4), std::invalid_argument);
  int error = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 1);
    Pool other = std::move(pool);
    auto h = pool.get(0ms);  // NOLINT(bugprone-use-after-move): what it does is the test
    CHECK_FALSE(h.has_value());
    error = error_now();
    CHECK(pool.closed());
    CHECK(other.get(0ms).has_value());
  });
  CHECK(rc == 0);
  CHECK(error == EBADF);
}

TEST_CASE("pool: outside a coroutine get() works unless it would have to wait") {
  Counts counts;
  Pool pool(factory(counts), 1);
  auto h = pool.get();
  CHECK(h.has_value());
  auto second = pool.get();  // kForever, but it cannot wait here
  CHECK_FALSE(second.has_value());
  CHECK(Co::last_error().value() == EPERM);
}

// ---- cancellation and unwinding ----------------------------------------------------------------

TEST_CASE("pool: cancel() of a coroutine waiting in get() loses nothing") {
  Counts counts;
  int cancelled_error = 0;
  int raced = 0;
  int rc = Co::run([&] {
    Pool pool(factory(counts), 1);
    auto held = pool.get();
    CO_REQUIRE(held.has_value());
    Co::WaitGroup wg;
    long waiter = spawn(wg, [&] {
      auto h = pool.get(kLong);
      CHECK_FALSE(h.has_value());
      cancelled_error = error_now();
    });
    CHECK(Co::cancel(waiter));
    CHECK(settle(wg));
    CHECK(pool.waiting() == 0);
    held.reset();  // nobody waits: it goes idle, not to the coroutine that is gone
    CHECK(pool.idle() == 1);
    CHECK(pool.connections() == 1);
    // A connection given back before the cancel lands: the waiter was already served, cancel()
    // finds nothing to interrupt, and the waiter has the connection.
    held = pool.get();
    long second = spawn(wg, [&] {
      auto h = pool.get(kLong);
      raced = id_or_error(h);
    });
    held.reset();
    CHECK_FALSE(Co::cancel(second));
    CHECK(settle(wg));
    CHECK(pool.idle() == 1);
    CHECK(pool.connections() == 1);
  });
  CHECK(rc == 0);
  CHECK(cancelled_error == ECANCELED);
  CHECK(raced == 1);
  CHECK(counts.made == 1);
}

TEST_CASE("pool: a coroutine unwound while waiting in get() gives back what it holds") {
  // A deadlock: every coroutine waits in get() on a pool whose one connection the main coroutine
  // holds while it waits too. run() unwinds them; the Handle goes back and the pool's state is
  // freed (ASan would see a leak or a use after free). In a child, so a hang fails the child.
  ChildResult child = run_in_child(
      [] {
        LogCapture logs;
        Counts counts;
        int rc = Co::run([&] {
          Pool pool(factory(counts), 1);
          auto held = pool.get();
          Co::create([&] { auto h = pool.get(); });
          auto never = pool.get();
        });
        bool ok = rc == -1 && Co::last_error() == std::errc::resource_deadlock_would_occur &&
                  counts.made == 1 && counts.destroyed == std::vector<int>{1};
        if (!ok) std::fprintf(stderr, "rc=%d made=%d\n", rc, counts.made);
        return ok ? 0 : 1;
      },
      20);
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

// ---- idle connections: timeout and health check -----------------------------------------------

TEST_CASE("pool: a connection idle longer than idle_timeout is replaced") {
  Counts counts;
  int rc = Co::run([&] {
    Pool pool(factory(counts), {.size = 2, .idle_timeout = 30ms, .health_check = {}});
    { auto h = pool.get(); }
    { auto h = pool.get(); }  // given back a moment ago: reused
    CHECK(counts.made == 1);
    Co::this_coroutine::sleep(60ms);  // the input of the test: let it idle past the timeout
    CHECK(pool.idle() == 1);          // still there: the pool looks when get() is called
    auto h = pool.get();
    CO_REQUIRE(h.has_value());
    CHECK((*h)->id == 2);
    CHECK(counts.destroyed == std::vector<int>{1});
    CHECK(pool.connections() == 1);
  });
  CHECK(rc == 0);
}

TEST_CASE("pool: idle_timeout of zero, negative or kForever means no limit") {
  for (Co::Duration limit : {Co::Duration::zero(), Co::Duration(-1s), Co::kForever}) {
    Counts counts;
    int rc = Co::run([&] {
      Pool pool(factory(counts), {.size = 1, .idle_timeout = limit, .health_check = {}});
      { auto h = pool.get(); }
      Co::this_coroutine::sleep(5ms);
      auto h = pool.get();
      CHECK((h && (*h)->id == 1));
    });
    CHECK(rc == 0);
    CHECK(counts.made == 1);
  }
}

TEST_CASE("pool: the health check runs on idle connections and rejects dead ones") {
  Counts counts;
  std::vector<int> checked;
  std::vector<int> dead;
  int rc = Co::run([&] {
    Pool::Options options;
    options.size = 3;
    options.health_check = [&](Conn& c) {
      checked.push_back(c.id);
      return std::find(dead.begin(), dead.end(), c.id) == dead.end();
    };
    Pool pool(factory(counts), options);
    pool.fill();  // 1, 2, 3 idle; 3 comes out first
    dead = {3};
    {
      auto h = pool.get();
      CO_REQUIRE(h.has_value());
      CHECK((*h)->id == 2);  // 3 failed the check and was destroyed; 2 is next
      CHECK(counts.destroyed == std::vector<int>{3});
      CHECK(checked == std::vector<int>{3, 2});
      CHECK(pool.connections() == 2);
    }
    // Every idle one dead: a new connection, in the slot of the last one rejected.
    dead = {1, 2};
    checked.clear();
    auto h = pool.get();
    CO_REQUIRE(h.has_value());
    CHECK((*h)->id == 4);
    CHECK(checked == std::vector<int>{2, 1});  // not the new one
    CHECK(pool.connections() == 1);
    // Not run on a connection handed straight to a waiting coroutine.
    auto a = pool.get();
    auto b = pool.get();
    CO_REQUIRE((a && b));
    checked.clear();
    Co::WaitGroup wg;
    spawn(wg, [&] { CHECK(pool.get(kLong).has_value()); });
    a.reset();
    CHECK(settle(wg));
    CHECK(checked.empty());
  });
  CHECK(rc == 0);
}

TEST_CASE("pool: a health check that throws destroys the connection and frees its slot") {
  Counts counts;
  bool thrown = false;
  int rc = Co::run([&] {
    bool throw_next = true;
    Pool pool(factory(counts), {.size = 1, .health_check = [&](Conn&) -> bool {
                                  if (std::exchange(throw_next, false))
                                    throw std::runtime_error("check");
                                  return true;
                                }});
    { auto h = pool.get(); }
    try {
      pool.get();
    } catch (const std::runtime_error&) {
      thrown = true;
    }
    CHECK(counts.destroyed == std::vector<int>{1});
    CHECK(pool.connections() == 0);
    auto h = pool.get(0ms);
    CHECK((h && (*h)->id == 2));
  });
  CHECK(rc == 0);
  CHECK(thrown);
}

// ---- Socket::check_liveness
// ----------------------------------------------------------------------

namespace {

// Lets the other coroutines run until the kernel has the peer's FIN or reset for fd (the peer's
// close() may itself wait for a coroutine of its own to leave a call first). False if the close
// never arrives. (check_liveness peeks at the kernel, so no engine poll is needed after that.)
bool peer_close_arrived(int fd) {
  auto until = Clock::now() + kLong;
  for (;;) {
    pollfd p{fd, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) == 1) return true;
    if (Clock::now() > until) return false;
    Co::this_coroutine::sleep(1ms);
  }
}

}  // namespace

TEST_CASE("check_liveness: an open idle connection is alive, and nothing is consumed") {
  std::string got;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    CHECK(p.client.check_liveness());  // nothing pending
    CHECK(p.server.send_all("hello", 5, kLong) == 5);
    CHECK(queued(p.client.fd()) == 5);
    CHECK(p.client.check_liveness());  // data pending
    CHECK(p.client.check_liveness());
    char buffer[8];
    ssize_t n = p.client.recv_all(buffer, 5, kLong);
    if (n > 0) got.assign(buffer, static_cast<size_t>(n));
    // After a read (the io_uring engine may now receive ahead for the socket).
    CHECK(p.client.check_liveness());
    CHECK(p.server.send_all("again", 5, kLong) == 5);
    CHECK(p.client.check_liveness());
    n = p.client.recv_all(buffer, 5, kLong);
    CHECK(n == 5);
    CHECK(std::string(buffer, 5) == "again");
  });
  CHECK(rc == 0);
  CHECK(got == "hello");
}

TEST_CASE("check_liveness: bytes recv_packet() kept count as alive and stay") {
  std::vector<std::string> packets;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Co::Protocol protocol;
    protocol.eof = "\n";
    p.client.set_protocol(protocol);
    CHECK(p.server.send_all("one\ntwo\n", 8, kLong) == 8);
    p.server.close();
    auto first = p.client.recv_packet(kLong);
    CO_REQUIRE(first.has_value());
    packets.emplace_back(*first);
    CHECK(peer_close_arrived(p.client.fd()));
    CHECK(p.client.check_liveness());  // "two\n" is still buffered
    CHECK(*first == "one\n");          // and the view handed out is intact
    auto second = p.client.recv_packet(kLong);
    CO_REQUIRE(second.has_value());
    packets.emplace_back(*second);
    CHECK_FALSE(p.client.check_liveness());  // now only the end of stream is left
  });
  CHECK(rc == 0);
  CHECK(packets == std::vector<std::string>{"one\n", "two\n"});
}

TEST_CASE("check_liveness: a peer that closed is not alive") {
  for (bool read_before : {false, true}) {
    CAPTURE(read_before);
    bool alive = true;
    int error = -1;
    std::string message;
    int rc = Co::run([&] {
      Pair p = tcp_pair();
      CO_REQUIRE(p.ok);
      if (read_before) {  // a socket that has been read from, as a pooled one has
        CHECK(p.server.send_all("x", 1, kLong) == 1);
        char byte;
        CHECK(p.client.recv(&byte, 1, kLong) == 1);
      }
      CHECK(p.client.check_liveness());
      p.server.close();
      CHECK(peer_close_arrived(p.client.fd()));
      alive = p.client.check_liveness();
      error = p.client.error().value();
      message = std::string(p.client.error_message());
      CHECK_FALSE(p.client.check_liveness());  // and stays so
    });
    CHECK(rc == 0);
    CHECK_FALSE(alive);
    CHECK(error == 0);  // the end of stream is not an error
    CHECK(message == "the peer closed the connection");
  }
}

TEST_CASE("check_liveness: a connection the peer reset is not alive") {
  for (bool read_before : {false, true}) {
    CAPTURE(read_before);
    bool alive = true;
    int error = -1;
    int rc = Co::run([&] {
      Pair p = tcp_pair();
      CO_REQUIRE(p.ok);
      if (read_before) {
        CHECK(p.server.send_all("x", 1, kLong) == 1);
        char byte;
        CHECK(p.client.recv(&byte, 1, kLong) == 1);
      }
      CHECK(p.server.set_linger(true, 0));  // close() sends a reset
      p.server.close();
      CHECK(peer_close_arrived(p.client.fd()));
      alive = p.client.check_liveness();
      error = p.client.error().value();
    });
    CHECK(rc == 0);
    CHECK_FALSE(alive);
    CHECK(error == ECONNRESET);
  }
}

TEST_CASE("check_liveness: closed, moved-from, listening and datagram sockets") {
  int closed_error = 0, listener_error = 0;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Co::Socket moved = std::move(p.server);
    CHECK_FALSE(p.server.check_liveness());  // NOLINT(bugprone-use-after-move)
    CHECK(moved.check_liveness());
    p.client.close();
    CHECK_FALSE(p.client.check_liveness());
    closed_error = p.client.error().value();
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    CHECK_FALSE(listener.check_liveness());
    listener_error = listener.error().value();
    Co::Socket udp(Co::Socket::Type::udp);
    CO_REQUIRE(udp.bind("127.0.0.1", 0));
    CHECK(udp.check_liveness());
    Co::Socket sender(Co::Socket::Type::udp);
    CHECK(sender.sendto("127.0.0.1", udp.local_port(), "", 0) == 0);  // an empty datagram
    CHECK(udp.check_liveness());
  });
  CHECK(rc == 0);
  CHECK(closed_error == EBADF);
  CHECK(listener_error == ENOTCONN);
}

TEST_CASE("check_liveness: needs no coroutine and may run beside a waiting reader") {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  {
    Co::Socket ours(fds[0], Co::Socket::Type::unix_stream);
    CHECK(ours.check_liveness());  // outside any container
    ssize_t got = -2;
    int rc = Co::run([&] {
      Co::WaitGroup wg;
      spawn(wg, [&] {
        char byte;
        got = ours.recv(&byte, 1, kLong);
      });
      CHECK(ours.check_liveness());  // no BindError, and the reader still gets its byte
      CHECK(::write(fds[1], "z", 1) == 1);
      CHECK(settle(wg));
    });
    CHECK(rc == 0);
    CHECK(got == 1);
    ::close(fds[1]);
    CHECK_FALSE(ours.check_liveness());
  }
}

// ---- a pool of real sockets --------------------------------------------------------------------

namespace {

// An in-process echo server on 127.0.0.1 that can close the connections it serves, as a server
// with a keep-alive timeout or one that restarts does.
class EchoServer {
 public:
  EchoServer() {
    ok_ = listener_.bind("127.0.0.1", 0) && listener_.listen();
    CHECK(ok_);
    spawn(done_, [this] {
      while (auto accepted = listener_.accept()) {
        auto connection = std::make_shared<Co::Socket>(std::move(*accepted));
        connections_.push_back(connection);
        spawn(done_, [connection] {
          char buffer[256];
          for (;;) {
            ssize_t n = connection->recv(buffer, sizeof buffer, kLong);
            if (n <= 0 || connection->send_all(buffer, static_cast<size_t>(n), kLong) != n) break;
          }
          connection->close();
        });
      }
    });
  }
  uint16_t port() const { return listener_.local_port(); }
  bool ok() const { return ok_; }
  size_t accepted() const { return connections_.size(); }
  // Closes every connection served so far (their handlers wake with ECANCELED and end).
  void close_connections() {
    for (auto& c : connections_) c->close();
  }
  bool stop() {
    listener_.close();
    close_connections();
    return settle(done_);
  }

 private:
  Co::Socket listener_;
  Co::WaitGroup done_;
  std::vector<std::shared_ptr<Co::Socket>> connections_;
  bool ok_ = false;
};

bool round_trip(Co::Socket& socket, const std::string& message) {
  if (socket.send_all(message.data(), message.size(), kLong) !=
      static_cast<ssize_t>(message.size())) {
    return false;
  }
  std::string reply(message.size(), '\0');
  return socket.recv_all(reply.data(), reply.size(), kLong) == static_cast<ssize_t>(reply.size()) &&
         reply == message;
}

}  // namespace

TEST_CASE("pool of sockets: a connection the server closed while idle is replaced") {
  int made = 0;
  std::vector<int> fds;
  bool fresh_works = false;
  int rc = Co::run([&] {
    EchoServer server;
    CO_REQUIRE(server.ok());
    Co::ConnectionPool<Co::Socket> pool(
        [&]() -> std::unique_ptr<Co::Socket> {
          auto socket = std::make_unique<Co::Socket>();
          if (!socket->connect("127.0.0.1", server.port(), kLong)) return nullptr;
          ++made;
          fds.push_back(socket->fd());
          return socket;
        },
        {.size = 2, .health_check = [](Co::Socket& s) { return s.check_liveness(); }});
    {
      auto h = pool.get(kLong);
      CO_REQUIRE(h.has_value());
      CHECK(round_trip(**h, "first"));
    }
    {
      auto h = pool.get(kLong);  // alive: reused
      CO_REQUIRE(h.has_value());
      CHECK(round_trip(**h, "second"));
    }
    CHECK(made == 1);
    server.close_connections();  // the server drops the idle connection
    CO_REQUIRE(!fds.empty());
    CHECK(peer_close_arrived(fds.front()));
    auto h = pool.get(kLong);
    CO_REQUIRE(h.has_value());
    CHECK(made == 2);  // a fresh one, not the dead one
    CHECK(pool.connections() == 1);
    fresh_works = round_trip(**h, "third");
    h.reset();
    CHECK(server.accepted() == 2);
    pool.close();
    CHECK(server.stop());
  });
  CHECK(rc == 0);
  CHECK(fresh_works);
}

TEST_CASE("pool of sockets: many coroutines share a few connections") {
  constexpr int kCoroutines = 50, kRequests = 20;
  int made = 0, done = 0;
  int rc = Co::run([&] {
    EchoServer server;
    CO_REQUIRE(server.ok());
    Co::ConnectionPool<Co::Socket> pool(
        [&]() -> std::unique_ptr<Co::Socket> {
          auto socket = std::make_unique<Co::Socket>();
          if (!socket->connect("127.0.0.1", server.port(), kLong)) return nullptr;
          ++made;
          return socket;
        },
        4);
    Co::WaitGroup wg;
    for (int c = 0; c < kCoroutines; ++c) {
      spawn(wg, [&, c] {
        for (int r = 0; r < kRequests; ++r) {
          auto h = pool.get(kLong);
          if (!h) break;
          if (!round_trip(**h, std::to_string(c) + "/" + std::to_string(r))) {
            h->mark_broken();
            break;
          }
          ++done;
        }
      });
    }
    CHECK(settle(wg));
    pool.close();
    CHECK(server.stop());
  });
  CHECK(rc == 0);
  CHECK(done == kCoroutines * kRequests);
  CHECK(made == 4);
}

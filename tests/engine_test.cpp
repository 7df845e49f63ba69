// The event engines: choosing one (RunOptions::engine, CORING_ENGINE, stats().engine), and what
// every engine must get right with real sockets: a reader and a writer waiting on one
// descriptor at once, a cancelled wait that leaves the descriptor usable, descriptor numbers
// reused after close, many descriptors, and operations counted while in flight. Each case runs
// under both engines explicitly, whatever pass of the suites this is.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <string>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers

namespace {

const Co::Engine kEngines[] = {Co::Engine::io_uring, Co::Engine::epoll};

Co::RunOptions with_engine(Co::Engine engine) {
  Co::RunOptions options;
  options.engine = engine;
  return options;
}

}  // namespace

TEST_CASE("engine: RunOptions::engine chooses it, stats() says which runs") {
  for (Co::Engine engine : kEngines) {
    CAPTURE(Co::engine_name(engine));
    Co::Engine seen = Co::Engine::automatic;
    CHECK(Co::run([&] { seen = Co::stats().engine; }, with_engine(engine)) == 0);
    CHECK(seen == engine);
  }
  CHECK(Co::stats().engine == Co::Engine::automatic);  // outside a container
  CHECK(Co::engine_name(Co::Engine::epoll) == "epoll");
  CHECK(Co::engine_name(Co::Engine::io_uring) == "io_uring");
}

TEST_CASE("engine: CORING_ENGINE overrides automatic, not an explicit choice; junk is ignored") {
  ChildResult child = run_in_child([] {
    auto running = [](Co::RunOptions options) {
      Co::Engine seen = Co::Engine::automatic;
      Co::run([&] { seen = Co::stats().engine; }, options);
      return seen;
    };
    int code = 0;
    ::setenv("CORING_ENGINE", "epoll", 1);
    if (running({}) != Co::Engine::epoll) code = 1;
    if (running(with_engine(Co::Engine::io_uring)) != Co::Engine::io_uring) code = 2;
    ::setenv("CORING_ENGINE", "io_uring", 1);
    if (running({}) != Co::Engine::io_uring) code = 3;
    if (running(with_engine(Co::Engine::epoll)) != Co::Engine::epoll) code = 4;
    ::setenv("CORING_ENGINE", "kqueue", 1);
    if (running({}) != Co::Engine::io_uring) code = 5;  // this kernel has io_uring
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
  CHECK(child.output.find("WARNING CORING_ENGINE=kqueue") != std::string::npos);
}

TEST_CASE("engine: a reader and a writer wait on one descriptor at once, both complete") {
  for (Co::Engine engine : kEngines) {
    CAPTURE(Co::engine_name(engine));
    ssize_t read_got = -2;
    size_t written = 0;
    int rc = Co::run(
        [&] {
          Pair p = tcp_pair(Type::tcp, /*small_buffers=*/true);
          CO_REQUIRE(p.ok);
          size_t queued = fill_send_buffer(p.client);  // the client's writes now wait
          Co::WaitGroup wg;
          spawn(wg, [&] {  // the reader: nothing comes until the server sends
            char byte;
            read_got = p.client.recv(&byte, 1, kLong);
          });
          spawn(wg, [&] {  // the writer: waits until the server reads
            std::string chunk(64 * 1024, 'w');
            if (p.client.send_all(chunk.data(), chunk.size(), kLong) ==
                static_cast<ssize_t>(chunk.size())) {
              written = chunk.size();
            }
          });
          CHECK(Co::stats().io_inflight >= 2);  // both wait, on one descriptor
          // The server drains everything, then answers: each direction wakes its own waiter.
          std::vector<char> sink(256 * 1024);
          size_t drained = 0;
          while (drained < queued + 64 * 1024) {
            ssize_t n = p.server.recv(sink.data(), sink.size(), kLong);
            CHECK(n > 0);
            if (n <= 0) break;
            drained += static_cast<size_t>(n);
          }
          CHECK(p.server.send("x", 1, kLong) == 1);
          CHECK(settle(wg));
        },
        with_engine(engine));
    CHECK(rc == 0);
    CHECK(read_got == 1);
    CHECK(written == 64 * 1024);
  }
}

TEST_CASE("engine: a cancelled wait leaves the descriptor usable; a reused fd number works") {
  for (Co::Engine engine : kEngines) {
    CAPTURE(Co::engine_name(engine));
    int rc = Co::run(
        [&] {
          Pair p = tcp_pair();
          CO_REQUIRE(p.ok);
          long reader = Co::create([&] {
            char byte;
            CHECK(p.server.recv(&byte, 1, kLong) == -1);
            CHECK(p.server.error().value() == ECANCELED);
          });
          CHECK(Co::cancel(reader));
          CHECK(Co::join({reader}, kLong));
          CHECK(Co::stats().io_inflight == 0);
          // The same socket waits and wakes again after the cancellation.
          Co::create([&] {
            Co::this_coroutine::sleep(1ms);
            CHECK(p.client.send("y", 1, kLong) == 1);
          });
          char byte = 0;
          CHECK(p.server.recv(&byte, 1, kLong) == 1);
          CHECK(byte == 'y');
          // A closed socket's number, given to a new socket, waits and wakes like any other.
          int old_fd = p.server.fd();
          CHECK(p.server.close());
          Pair q = tcp_pair();
          CO_REQUIRE(q.ok);
          INFO("old fd " << old_fd << ", new fds " << q.client.fd() << " " << q.server.fd());
          Co::create([&] {
            Co::this_coroutine::sleep(1ms);
            CHECK(q.client.send("z", 1, kLong) == 1);
          });
          CHECK(q.server.recv(&byte, 1, kLong) == 1);
          CHECK(byte == 'z');
        },
        with_engine(engine));
    CHECK(rc == 0);
  }
}

TEST_CASE("engine: descriptors with large numbers, and many waiting at once") {
  for (Co::Engine engine : kEngines) {
    CAPTURE(Co::engine_name(engine));
    int rc = Co::run(
        [&] {
          // Push descriptor numbers up (the epoll engine's table grows by number).
          std::vector<int> spacers;
          for (int i = 0; i < 300; ++i) spacers.push_back(::dup(STDIN_FILENO));
          constexpr int kPairs = 100;
          std::vector<Pair> pairs;
          for (int i = 0; i < kPairs; ++i) {
            pairs.push_back(tcp_pair());
            CO_REQUIRE(pairs.back().ok);
          }
          Co::WaitGroup wg;
          int answered = 0;
          for (Pair& p : pairs) {
            spawn(wg, [&] {
              char byte;
              if (p.server.recv(&byte, 1, kLong) == 1 && p.server.send(&byte, 1, kLong) == 1) {
                ++answered;
              }
            });
          }
          CHECK(Co::stats().io_inflight == static_cast<size_t>(kPairs));
          for (Pair& p : pairs) CHECK(p.client.send("!", 1, kLong) == 1);
          for (Pair& p : pairs) {
            char byte;
            CHECK(p.client.recv(&byte, 1, kLong) == 1);
          }
          CHECK(settle(wg));
          CHECK(answered == kPairs);
          for (int fd : spacers) ::close(fd);
        },
        with_engine(engine));
    CHECK(rc == 0);
  }
}

TEST_CASE("engine: a coroutine that keeps yielding does not starve sockets that became ready") {
  // The epoll engine collects events in batches and dispatches them one at a time between
  // coroutines; a busy coroutine keeping the ready queue full must not hold the rest back.
  for (Co::Engine engine : kEngines) {
    CAPTURE(Co::engine_name(engine));
    int rc = Co::run(
        [&] {
          constexpr int kPairs = 8;
          std::vector<Pair> pairs;
          for (int i = 0; i < kPairs; ++i) {
            pairs.push_back(tcp_pair());
            CO_REQUIRE(pairs.back().ok);
          }
          int received = 0;
          Co::WaitGroup wg;
          for (Pair& p : pairs) {
            spawn(wg, [&] {
              char byte;
              if (p.server.recv(&byte, 1, kLong) == 1) ++received;
            });
          }
          for (Pair& p : pairs) CHECK(p.client.send("!", 1, kLong) == 1);
          // Only zero sleeps from here on (this coroutine is runnable again at once): the
          // readers complete only if the loop dispatches their events meanwhile.
          for (long spins = 0; received < kPairs && spins < 1'000'000; ++spins) {
            Co::this_coroutine::sleep(Co::Duration::zero());
          }
          CHECK(received == kPairs);
          CHECK(settle(wg));
        },
        with_engine(engine));
    CHECK(rc == 0);
  }
}

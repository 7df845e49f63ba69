// Sockets closed, destroyed, moved or cancelled while coroutines wait on them: every waiter
// wakes with ECANCELED, the descriptor is released only after the last one has left, and the
// socket's state outlives whoever still needs it (a close() waiting for the waiters, a waiting
// operation), whatever the owner does meanwhile. Real loopback connections, the real io_uring.
//
// Assertions inside coroutines use CHECK only; every wait the test expects to end early has a
// finite timeout (kLong), so a missing behaviour fails the test instead of hanging it.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers
using Clock = std::chrono::steady_clock;

// ---- close, destroy and cancel while a coroutine waits -----------------------------------------

TEST_CASE("close() from a third coroutine wakes a waiting reader with ECANCELED first") {
  ssize_t got = -2;
  int error = 0;
  long long waited = -1;
  bool reader_woke = false;
  bool woke_before_close_returned = false;
  bool descriptor_released = false;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    int fd = p.server.fd();
    Co::create([&] {
      char buffer[16];
      auto start = Clock::now();
      got = p.server.recv(buffer, sizeof buffer, kLong);
      waited = waited_ms(start);
      error = p.server.error().value();
      reader_woke = true;
    });
    Co::WaitGroup closed;
    closed.add(1);
    Co::create([&] {  // the third coroutine
      CHECK(p.server.close());
      woke_before_close_returned = reader_woke;
      // When close() returns the descriptor is really closed.
      descriptor_released = ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
      closed.done();
    });
    CHECK(settle(closed));
    // Every later call fails with EBADF.
    char buffer[4];
    CHECK(p.server.fd() == -1);
    CHECK_FALSE(p.server.is_open());
    CHECK(p.server.recv(buffer, sizeof buffer, kLong) == -1);
    CHECK(p.server.error().value() == EBADF);
    CHECK(p.server.send("x", 1, kLong) == -1);
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.recv_packet(kLong).has_value());
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.accept(kLong).has_value());
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.shutdown());
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.close());
    CHECK(p.server.error().value() == EBADF);
    // The peer sees the close.
    CHECK(p.client.recv(buffer, sizeof buffer, kLong) == 0);
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(error == ECANCELED);
  CHECK(waited < 2000);
  CHECK(woke_before_close_returned);
  CHECK(descriptor_released);
}

TEST_CASE("close() from a third coroutine wakes a waiting writer (and reader) with ECANCELED") {
  ssize_t sent = -2, got = -2, all_sent = -2;
  int send_error = 0, recv_error = 0, send_all_error = 0;
  bool writer_woke = false, reader_woke = false;
  bool both_woke_before_close_returned = false;
  long long waited = -1;
  int rc = Co::run([&] {
    {
      Pair p = tcp_pair(Type::tcp, true);
      if (!p.ok) return;
      fill_send_buffer(p.client);
      Co::create([&] {  // the writer: the buffers are full, it waits
        std::string chunk(64 * 1024, 'w');
        auto start = Clock::now();
        sent = p.client.send(chunk.data(), chunk.size(), kLong);
        waited = waited_ms(start);
        send_error = p.client.error().value();
        writer_woke = true;
      });
      Co::create([&] {  // the reader: nothing comes
        char buffer[16];
        got = p.client.recv(buffer, sizeof buffer, kLong);
        recv_error = p.client.error().value();
        reader_woke = true;
      });
      CHECK_FALSE(writer_woke);
      CHECK_FALSE(reader_woke);
      Co::WaitGroup closed;
      closed.add(1);
      Co::create([&] {
        CHECK(p.client.close());
        both_woke_before_close_returned = writer_woke && reader_woke;
        closed.done();
      });
      CHECK(settle(closed));
      CHECK(p.client.send("x", 1, kLong) == -1);
      CHECK(p.client.error().value() == EBADF);
    }
    {
      // send_all that already moved some bytes reports them, and stops with ECANCELED.
      Pair p = tcp_pair(Type::tcp, true);
      if (!p.ok) return;
      std::string big = pattern(4 << 20, 5);
      Co::WaitGroup wg;
      wg.add(1);
      Co::create([&] {
        all_sent = p.client.send_all(big.data(), big.size(), kLong);
        send_all_error = p.client.error().value();
        wg.done();
      });
      CHECK(p.client.close());
      CHECK(settle(wg));
    }
  });
  CHECK(rc == 0);
  CHECK(sent == -1);
  CHECK(send_error == ECANCELED);
  CHECK(waited < 2000);
  CHECK(got == -1);
  CHECK(recv_error == ECANCELED);
  CHECK(both_woke_before_close_returned);
  CHECK(all_sent > 0);
  CHECK(all_sent < (4 << 20));
  CHECK(send_all_error == ECANCELED);
}

TEST_CASE("close() wakes a coroutine waiting in accept with ECANCELED") {
  bool accepted = true;
  int error = 0;
  bool woke_first = false;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    bool woke = false;
    Co::create([&] {
      accepted = listener.accept(kLong).has_value();
      error = listener.error().value();
      woke = true;
    });
    CHECK(listener.close());
    woke_first = woke;
  });
  CHECK(rc == 0);
  CHECK_FALSE(accepted);
  CHECK(error == ECANCELED);
  CHECK(woke_first);
}

TEST_CASE("destroying a Socket while another coroutine waits on it acts as close()") {
  ssize_t got = -2;
  long long waited = -1;
  bool open_while_waiter_inside = false;
  bool released_after = false;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    auto socket = std::make_unique<Co::Socket>(std::move(p.server));
    Co::Socket* raw = socket.get();
    int fd = raw->fd();
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      char buffer[16];
      auto start = Clock::now();
      got = raw->recv(buffer, sizeof buffer, kLong);  // must not touch *raw after this
      waited = waited_ms(start);
      wg.done();
    });
    socket.reset();
    // The waiter has not run yet: its descriptor must still be held, so that the number
    // cannot be reused while the kernel may still complete the read on it.
    open_while_waiter_inside = ::fcntl(fd, F_GETFD) != -1;
    CHECK(settle(wg));
    released_after = ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
    // The peer sees the close.
    char buffer[4];
    CHECK(p.client.recv(buffer, sizeof buffer, kLong) == 0);
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(waited < 2000);
  CHECK(open_while_waiter_inside);
  CHECK(released_after);
}

TEST_CASE("moving a Socket while a coroutine waits on it is safe") {
  std::string got;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::Socket* raw = &p.server;
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      char buffer[16];
      ssize_t n = raw->recv(buffer, sizeof buffer, kLong);
      if (n > 0) got.assign(buffer, static_cast<size_t>(n));
      wg.done();
    });
    Co::Socket moved(std::move(p.server));
    CHECK(p.server.fd() == -1);
    CHECK(p.client.send_all("moved", 5, kLong) == 5);
    CHECK(settle(wg));
    CHECK(moved.send_all("back", 4, kLong) == 4);
    char buffer[8];
    CHECK(p.client.recv_all(buffer, 4, kLong) == 4);
    CHECK(std::string_view(buffer, 4) == "back");
  });
  CHECK(rc == 0);
  CHECK(got == "moved");
}

TEST_CASE("cancel(cid) of a coroutine waiting in recv returns -1 with ECANCELED") {
  ssize_t got = -2;
  int error = 0;
  bool saw_cancelled = false;
  long long waited = -1;
  std::string after;
  int rc = Co::run([&] {
    Pair p = tcp_pair(Type::tcp6);
    if (!p.ok) return;
    Co::WaitGroup wg;
    wg.add(1);
    long reader = Co::create([&] {
      char buffer[16];
      auto start = Clock::now();
      got = p.server.recv(buffer, sizeof buffer, kLong);
      waited = waited_ms(start);
      error = p.server.error().value();
      saw_cancelled = Co::this_coroutine::is_cancelled();
      wg.done();
    });
    CHECK(Co::cancel(reader));
    CHECK(settle(wg));
    // The socket is still usable and lost nothing.
    CHECK(p.client.send_all("after", 5, kLong) == 5);
    char buffer[8];
    ssize_t n = p.server.recv_all(buffer, 5, kLong);
    if (n > 0) after.assign(buffer, static_cast<size_t>(n));
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(error == ECANCELED);
  CHECK(saw_cancelled);
  CHECK(waited < 2000);
  CHECK(after == "after");
}

TEST_CASE("cancel(cid) of a coroutine waiting in accept returns ECANCELED") {
  bool accepted = true;
  int error = 0;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    Co::WaitGroup wg;
    wg.add(1);
    long acceptor = Co::create([&] {
      accepted = listener.accept(2 * kLong).has_value();
      error = listener.error().value();
      wg.done();
    });
    CHECK(Co::cancel(acceptor));
    CHECK(settle(wg));
    // Still listening.
    Co::Socket client;
    CHECK(client.connect("127.0.0.1", listener.local_port(), kLong));
    CHECK(listener.accept(kLong).has_value());
  });
  CHECK(rc == 0);
  CHECK_FALSE(accepted);
  CHECK(error == ECANCELED);
}

TEST_CASE("cancel(cid) of a coroutine waiting in connect returns ECANCELED") {
  bool connected = true;
  int error = 0;
  long long waited = -1;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen(0));  // one queued connection, then SYNs are dropped
    Co::Socket first;
    CHECK(first.connect("127.0.0.1", listener.local_port(), kLong));
    Co::Socket second;
    Co::WaitGroup wg;
    wg.add(1);
    long connector = Co::create([&] {
      auto start = Clock::now();
      connected = second.connect("127.0.0.1", listener.local_port(), kLong);
      waited = waited_ms(start);
      error = second.error().value();
      wg.done();
    });
    CHECK(Co::cancel(connector));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK_FALSE(connected);
  CHECK(error == ECANCELED);
  CHECK(waited < 2000);
}

TEST_CASE("writes after the peer closed fail with EPIPE or ECONNRESET, and SIGPIPE kills nobody") {
  // In a child whose SIGPIPE disposition is the default (terminate), so that the library alone
  // must keep the signal from killing the process. The writes go on until one fails with EPIPE:
  // that is the failure that raises SIGPIPE.
  TempDir dir;
  const std::string path = dir.file("pipe.sock");
  for (Type type : {Type::tcp, Type::tcp6, Type::unix_stream}) {
    CAPTURE(static_cast<int>(type));
    int status =
        coring_test::run_in_child([&] {
          ::signal(SIGPIPE, SIG_DFL);
          int result = 10;
          int rc = Co::run([&] {
            const bool unix_socket = type == Type::unix_stream;
            Co::Socket listener(type);
            if (!listener.bind(unix_socket ? path : loopback(type), 0) || !listener.listen())
              return;
            Co::Socket client(type);
            bool connected = unix_socket
                                 ? client.connect(path, kLong)
                                 : client.connect(loopback(type), listener.local_port(), kLong);
            if (!connected) return;
            {
              std::optional<Co::Socket> server = listener.accept(kLong);
              if (!server) return;
            }  // the peer closes
            char b;
            if (client.recv(&b, 1, kLong) != 0) return;
            std::string chunk(1024, 'x');
            // Waiting sends (through the ring), then sends that do not wait (a direct syscall):
            // each path must fail without raising the signal.
            for (Co::Duration timeout : {Co::Duration(kLong), Co::Duration::zero()}) {
              bool epipe = false;
              for (int i = 0; i < 200 && !epipe; ++i) {
                ssize_t n = (i % 2 == 0) ? client.send(chunk.data(), chunk.size(), timeout)
                                         : client.send_all(chunk.data(), chunk.size(), timeout);
                if (n < 0) {
                  int e = client.error().value();
                  epipe = e == EPIPE;
                  if (e != EPIPE && e != ECONNRESET) {
                    result = 11;
                    return;
                  }
                }
                if (!epipe) Co::this_coroutine::sleep(1ms);  // let the peer's RST come back
              }
              if (!epipe) {
                result = 12;
                return;
              }
            }
            result = 0;
          });
          return rc == 0 ? result : 13;
        }).status;
    INFO("child status " << status
                         << (WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE
                                 ? " (killed by SIGPIPE)"
                                 : ""));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

// ---- the watchdog pattern: the owner's socket goes away while close() still waits -------------

namespace {

enum class Blocked { reading, writing, accepting };
enum class OwnerThen { destroys, move_assigns };

// One connection coroutine owns its socket and waits on it; a watchdog closes it to kick the
// owner out. The owner wakes with ECANCELED and destroys its socket (or move-assigns a fresh one
// over it, as a reconnect does) while the watchdog's close() is still waiting for it to leave.
// Many rounds, so that a use of the freed state shows up (ASan, or a double free).
void watchdog_rounds(Blocked blocked, OwnerThen then) {
  constexpr int kRounds = 100;
  int cancelled = 0, closes_ok = 0, rounds_done = 0;
  int rc = Co::run([&] {
    for (int round = 0; round < kRounds; ++round) {
      Co::Socket listener(Type::tcp);
      CO_REQUIRE(listener.bind("127.0.0.1", 0));
      CO_REQUIRE(listener.listen());
      Pair p;
      if (blocked != Blocked::accepting) {
        p = tcp_pair(Type::tcp, /*small_buffers=*/blocked == Blocked::writing);
        CO_REQUIRE(p.ok);
      }
      Co::Socket* target = nullptr;
      Co::WaitGroup wg;
      spawn(wg, [&] {  // the connection coroutine
        // A writer fills the small send buffer of the client side, whose peer reads nothing.
        Co::Socket own = blocked == Blocked::accepting ? std::move(listener)
                         : blocked == Blocked::writing ? std::move(p.client)
                                                       : std::move(p.server);
        target = &own;
        bool failed_cancelled = false;
        if (blocked == Blocked::reading) {
          char byte;
          failed_cancelled = own.recv(&byte, 1, kLong) == -1 && own.error().value() == ECANCELED;
        } else if (blocked == Blocked::writing) {
          std::string chunk(4 << 20, 'w');  // far more than the buffers between them hold
          own.send_all(chunk.data(), chunk.size(), kLong);  // returns what went before the close
          failed_cancelled = own.error().value() == ECANCELED;
        } else {
          failed_cancelled = !own.accept(kLong) && own.error().value() == ECANCELED;
        }
        cancelled += failed_cancelled;
        if (then == OwnerThen::move_assigns) own = Co::Socket(Type::tcp);  // "reconnect"
      });              // `own` is destroyed here, while the watchdog may still be inside close()
      spawn(wg, [&] {  // the watchdog
        if (target != nullptr && target->close()) ++closes_ok;
      });
      CHECK(settle(wg));
      ++rounds_done;
    }
  });
  CHECK(rc == 0);
  CHECK(rounds_done == kRounds);
  CHECK(cancelled == kRounds);
  CHECK(closes_ok == kRounds);
}

}  // namespace

TEST_CASE("watchdog: close() of a reader's socket that its owner then destroys") {
  watchdog_rounds(Blocked::reading, OwnerThen::destroys);
}
TEST_CASE("watchdog: close() of a reader's socket that its owner then move-assigns") {
  watchdog_rounds(Blocked::reading, OwnerThen::move_assigns);
}
TEST_CASE("watchdog: close() of a writer's socket that its owner then destroys") {
  watchdog_rounds(Blocked::writing, OwnerThen::destroys);
}
TEST_CASE("watchdog: close() of a writer's socket that its owner then move-assigns") {
  watchdog_rounds(Blocked::writing, OwnerThen::move_assigns);
}
TEST_CASE("watchdog: close() of a listener's socket (in accept) that its owner then destroys") {
  watchdog_rounds(Blocked::accepting, OwnerThen::destroys);
}
TEST_CASE("watchdog: close() of a listener's socket that its owner then move-assigns") {
  watchdog_rounds(Blocked::accepting, OwnerThen::move_assigns);
}

// ---- socket I/O while a coroutine is unwound after a deadlock ---------------------------------

TEST_CASE("deadlock: socket calls in destructors and defers of unwound coroutines fail at once") {
  // Every coroutine waits on a channel nothing will push to: a deadlock. While they are
  // unwound, a destructor calls recv(), accept() and send_all() with no timeout and a defer
  // calls recv(): each must fail at once (ECANCELED) instead of waiting, or run() would never
  // return; the defer goes on after its failed wait. In a child, so that a regression hangs (and
  // fails) the child, not the suite.
  coring_test::ChildResult child = coring_test::run_in_child(
      [] {
        coring_test::LogCapture logs;
        int recv_error = 0, accept_error = 0, send_error = 0, defer_ran = 0;
        struct UsesSocketsWhenDestroyed {
          Co::Socket* reader;
          Co::Socket* listener;
          Co::Socket* writer;
          int* recv_error;
          int* accept_error;
          int* send_error;
          ~UsesSocketsWhenDestroyed() {
            char byte;
            if (reader->recv(&byte, 1, Co::kForever) == -1) *recv_error = reader->error().value();
            if (!listener->accept(Co::kForever)) *accept_error = listener->error().value();
            std::string chunk(1 << 20, 's');
            if (writer->send_all(chunk.data(), chunk.size(), Co::kForever) < 0 ||
                writer->error().value() != 0) {
              *send_error = writer->error().value();
            }
          }
        };
        Co::Channel<int> never(0);
        // Outside the coroutines, which are unwound in id order: the first coroutine's own
        // locals would be gone before the second one's destructor runs.
        std::optional<Pair> pair;
        Co::Socket listener(Type::tcp);
        int rc = Co::run([&] {
          pair.emplace(tcp_pair(Type::tcp, /*small_buffers=*/true));
          Pair& p = *pair;
          if (!p.ok) return;
          if (!listener.bind("127.0.0.1", 0) || !listener.listen()) return;
          Co::create([&] {
            Co::this_coroutine::defer([&] {
              ++defer_ran;
              char byte;
              if (p.server.recv(&byte, 1, Co::kForever) == -1 &&
                  p.server.error().value() == ECANCELED) {
                ++defer_ran;  // failed at once; the defer goes on
              }
            });
            UsesSocketsWhenDestroyed guard{&p.server,   &listener,     &p.client,
                                           &recv_error, &accept_error, &send_error};
            never.pop();
          });
          never.pop();
        });
        bool ok = rc == -1 && Co::last_error() == std::errc::resource_deadlock_would_occur &&
                  recv_error == ECANCELED && accept_error == ECANCELED && send_error == ECANCELED &&
                  defer_ran == 2;
        if (!ok) {
          std::fprintf(stderr, "rc=%d recv=%d accept=%d send=%d defer=%d\n", rc, recv_error,
                       accept_error, send_error, defer_ran);
        }
        return ok ? 0 : 1;
      },
      20);
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

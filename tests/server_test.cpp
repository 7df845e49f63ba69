// coring::Server over real loopback connections: handlers and connection ids, shutdown that
// waits for handlers, start() failures, max_conn, the heartbeat, keepalive and framing options,
// a handler that throws, a peer that goes away while the handler sends, the graceful close
// against a plain one, and accept() out of descriptors (EMFILE) in a child with a low limit.
#include <dirent.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers

namespace {

Co::Socket connected(uint16_t port) {
  Co::Socket client;
  CHECK(client.connect("127.0.0.1", port, kLong));
  return client;
}

// Echoes whatever comes until the peer closes.
void echo(Co::Connection& connection) {
  char buffer[4096];
  for (;;) {
    ssize_t n = connection.recv(buffer, sizeof buffer, kLong);
    if (n <= 0) return;
    if (connection.send_all(buffer, static_cast<size_t>(n), kLong) != n) return;
  }
}

// Reads what comes and sends it back, once.
bool answer_once(Co::Connection& connection) {
  char buffer[256];
  ssize_t n = connection.recv(buffer, sizeof buffer, kLong);
  return n > 0 && connection.send_all(buffer, static_cast<size_t>(n), kLong) == n;
}

bool round_trip(Co::Socket& client, std::string_view text) {
  if (client.send_all(text.data(), text.size(), kLong) != static_cast<ssize_t>(text.size())) {
    return false;
  }
  std::string back(text.size(), '\0');
  return client.recv_all(back.data(), back.size(), kLong) == static_cast<ssize_t>(text.size()) &&
         back == text;
}

}  // namespace

TEST_CASE("server: one coroutine per connection; ids, peer address, stats") {
  int rc = Co::run([] {
    Co::Server server("127.0.0.1", 0);
    std::set<long> ids;
    std::vector<std::string> peers;
    server.handle([&](Co::Connection& connection) {
      ids.insert(connection.id());
      peers.push_back(connection.peer_host() + ":" + std::to_string(connection.peer_port()));
      echo(connection);
    });
    Running running(server);
    CO_REQUIRE(running.port() != 0);
    std::vector<Co::Socket> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(connected(running.port()));
    // All three are served at once: each has its own handler.
    for (auto& client : clients) CHECK(round_trip(client, "hello"));
    std::set<std::string> expected_peers;
    for (auto& client : clients) {
      expected_peers.insert("127.0.0.1:" + std::to_string(client.local_port()));
    }
    CHECK(std::set<std::string>(peers.begin(), peers.end()) == expected_peers);
    CHECK(ids == std::set<long>{1, 2, 3});
    Co::ServerStats stats = server.stats();
    CHECK(stats.accepted == 3);
    CHECK(stats.connections == 3);
    for (auto& client : clients) client.close();
    CHECK(running.stop());
    stats = server.stats();
    CHECK(stats.connections == 0);
    CHECK(stats.closed == 3);
  });
  CHECK(rc == 0);
}

TEST_CASE("server: IPv6") {
  int rc = Co::run([] {
    Co::Server server("::1", 0);
    server.handle(echo);
    Running running(server);
    Co::Socket client(Co::Socket::Type::tcp6);
    CO_REQUIRE(client.connect("::1", running.port(), kLong));
    CHECK(round_trip(client, "six"));
    client.close();
    CHECK(running.stop());
  });
  CHECK(rc == 0);
}

TEST_CASE("server: shutdown() refuses new connections; start() returns once handlers return") {
  int rc = Co::run([] {
    Co::Server server("127.0.0.1", 0);
    Co::Channel<int> release(0);
    int finished = 0;
    server.handle([&](Co::Connection& connection) {
      CHECK(answer_once(connection));
      release.pop(kLong);  // until the test closes the channel
      ++finished;
    });
    Running running(server);
    uint16_t port = running.port();
    Co::Socket first = connected(port);
    Co::Socket second = connected(port);
    CHECK(round_trip(first, "a"));
    CHECK(round_trip(second, "b"));
    server.shutdown();
    Co::Socket late;
    CHECK_FALSE(late.connect("127.0.0.1", port, kLong));
    CHECK(late.error().value() == ECONNREFUSED);
    CHECK_FALSE(running.returned(50ms));  // two handlers still run
    CHECK(finished == 0);
    release.close();
    first.close();  // (else the server's graceful close waits for them to close)
    second.close();
    CHECK(running.returned(kLong));
    CHECK(running.result());
    CHECK(finished == 2);
  });
  CHECK(rc == 0);
}

TEST_CASE("server: on_stop runs once when accepting stops, and can end long-lived connections") {
  int rc = Co::run([] {
    Co::Server server("127.0.0.1", 0);
    std::vector<Co::Connection*> open;
    int stops = 0;
    Co::Channel<int> arrived(2);
    server.handle([&](Co::Connection& connection) {
      open.push_back(&connection);
      arrived.push(1);
      char byte;
      // A long-lived connection: only a close ends this read.
      CHECK(connection.recv(&byte, 1, Co::kForever) == -1);
      CHECK(connection.error().value() == ECANCELED);
      open.erase(std::find(open.begin(), open.end(), &connection));
    });
    server.on_stop([&] {
      ++stops;
      CHECK(Co::this_coroutine::id() > 0);  // in the server's container
      for (Co::Connection* connection : std::vector<Co::Connection*>(open))
        connection->Socket::close();
    });
    Running running(server);
    Co::Socket first = connected(running.port());
    Co::Socket second = connected(running.port());
    CHECK(arrived.pop(kLong).has_value());
    CHECK(arrived.pop(kLong).has_value());
    CHECK(open.size() == 2);
    CHECK(stops == 0);
    server.shutdown();
    server.shutdown();               // once only
    CHECK(running.returned(kLong));  // without on_stop, the two reads would hold start()
    CHECK(running.result());
    CHECK(stops == 1);
    CHECK(open.empty());
  });
  CHECK(rc == 0);
}

TEST_CASE("server: start() failures say why") {
  int rc = Co::run([] {
    Co::Server first("127.0.0.1", 0);
    first.handle(echo);
    Running running(first);
    Co::Server taken("127.0.0.1", running.port());
    taken.handle(echo);
    CHECK_FALSE(taken.start());
    CHECK(taken.error().value() == EADDRINUSE);
    CHECK_FALSE(first.start());  // running already
    CHECK(first.error().value() == EBUSY);
    Co::Server no_handler("127.0.0.1", 0);
    CHECK_FALSE(no_handler.start());
    CHECK(no_handler.error().value() == EINVAL);
    CHECK(running.stop());
    CHECK_FALSE(first.start());  // after shutdown()
    CHECK(first.error().value() == ECANCELED);
    Co::Server bad_name("no-such-host.invalid", 0);
    bad_name.handle(echo);
    CHECK_FALSE(bad_name.start());
    CHECK(bad_name.error().value() != 0);
    CHECK_FALSE(bad_name.error_message().empty());
  });
  CHECK(rc == 0);
  Co::Server outside("127.0.0.1", 0);
  outside.handle(echo);
  CHECK_FALSE(outside.start());
  CHECK(outside.error().value() == EPERM);
}

TEST_CASE("server: over max_conn a connection is closed at once, with a NOTICE") {
  LogCapture log;
  int rc = Co::run([&] {
    Co::ServerOptions options;
    options.max_conn = 2;
    Co::Server server("127.0.0.1", 0, options);
    Co::Channel<int> release(0);
    server.handle([&](Co::Connection& connection) {
      CHECK(answer_once(connection));
      release.pop(kLong);
    });
    Running running(server);
    uint16_t port = running.port();
    Co::Socket first = connected(port);
    Co::Socket second = connected(port);
    CHECK(round_trip(first, "1"));
    CHECK(round_trip(second, "2"));
    Co::Socket third = connected(port);  // the kernel accepts; the server closes it at once
    char byte;
    CHECK(third.recv(&byte, 1, kLong) <= 0);
    CHECK(server.stats().refused == 1);
    CHECK(log.count(Co::LogLevel::notice, "max_conn (2)") == 1);
    release.push(1, kLong);  // one handler returns: room for one more
    CHECK(first.recv(&byte, 1, kLong) == 0);
    first.close();  // (the server drains a closed connection until the peer closes too)
    auto until = Clock::now() + kLong;
    while (server.stats().connections > 1 && Clock::now() < until) {
      Co::this_coroutine::sleep(1ms);
    }
    Co::Socket fourth = connected(port);
    CHECK(round_trip(fourth, "4"));
    release.close();
    second.close();
    fourth.close();
    CHECK(running.stop());
  });
  CHECK(rc == 0);
}

TEST_CASE("server: heartbeat_idle_time closes idle connections, not busy ones") {
  int rc = Co::run([] {
    Co::ServerOptions options;
    options.heartbeat_idle_time = 300ms;
    options.heartbeat_check_interval = 50ms;
    Co::Server server("127.0.0.1", 0, options);
    server.handle(echo);
    Running running(server);
    Co::Socket idle = connected(running.port());
    Co::Socket busy = connected(running.port());
    CHECK(round_trip(idle, "i"));
    auto started = Clock::now();
    bool idle_closed = false;
    Co::WaitGroup watching;
    spawn(watching, [&] {
      char byte;
      idle_closed = idle.recv(&byte, 1, kLong) == 0;
    });
    // busy talks every 50 ms for three idle periods: it stays open all along.
    while (Clock::now() - started < 900ms) {
      CHECK(round_trip(busy, "b"));
      Co::this_coroutine::sleep(50ms);
    }
    CHECK(settle(watching));
    CHECK(idle_closed);
    CHECK(round_trip(busy, "still here"));
    busy.close();
    CHECK(running.stop());
  });
  CHECK(rc == 0);
}

TEST_CASE("server: tcp_keepalive options on every connection; protocol framing") {
  int rc = Co::run([] {
    Co::ServerOptions options;
    options.tcp_keepalive = true;
    options.keepidle = 7;
    options.keepinterval = 3;
    options.keepcount = 4;
    options.protocol.eof = "\n";
    Co::Server server("127.0.0.1", 0, options);
    int keepalive = 0, idle = 0, interval = 0, count = 0;
    std::string packet;
    server.handle([&](Co::Connection& connection) {
      socklen_t length = sizeof(int);
      ::getsockopt(connection.fd(), SOL_SOCKET, SO_KEEPALIVE, &keepalive, &length);
      ::getsockopt(connection.fd(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, &length);
      ::getsockopt(connection.fd(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, &length);
      ::getsockopt(connection.fd(), IPPROTO_TCP, TCP_KEEPCNT, &count, &length);
      if (auto got = connection.recv_packet(kLong)) packet = std::string(*got);
    });
    Running running(server);
    Co::Socket client = connected(running.port());
    CHECK(client.send_all("one ", 4, kLong) == 4);
    CHECK(until_drained(client.fd()));
    CHECK(client.send_all("line\nnext", 9, kLong) == 9);
    char byte;
    CHECK(client.recv(&byte, 1, kLong) == 0);  // the handler returned: the server closed
    client.close();
    CHECK(running.stop());
    CHECK(keepalive == 1);
    CHECK(idle == 7);
    CHECK(interval == 3);
    CHECK(count == 4);
    CHECK(packet == "one line\n");
  });
  CHECK(rc == 0);
}

TEST_CASE("server: a handler that throws is reported; the server goes on") {
  LogCapture log;
  int rc = Co::run([&] {
    Co::Server server("127.0.0.1", 0);
    int calls = 0;
    server.handle([&](Co::Connection& connection) {
      if (++calls == 1) throw std::runtime_error("boom");
      echo(connection);
    });
    Running running(server);
    Co::Socket first = connected(running.port());
    char byte;
    CHECK(first.recv(&byte, 1, kLong) == 0);  // its connection was closed
    first.close();
    Co::Socket second = connected(running.port());
    CHECK(round_trip(second, "after"));
    second.close();
    CHECK(running.stop());
  });
  CHECK(rc == 0);
  CHECK_MESSAGE(log.count(Co::LogLevel::error, "connection#1: the handler threw: boom") == 1,
                log.dump());
}

TEST_CASE("server: a send to a peer that went away fails cleanly with a NOTICE naming it") {
  LogCapture log;
  int rc = Co::run([&] {
    Co::Server server("127.0.0.1", 0);
    long id = 0;
    int error = 0;
    server.handle([&](Co::Connection& connection) {
      id = connection.id();
      char byte;
      CHECK(connection.recv(&byte, 1, kLong) == 0);  // the peer closed
      std::string reply(165, 'r');
      // The first send may still be taken (the peer's kernel answers it with a reset).
      for (int i = 0; i < 100; ++i) {
        if (connection.send(reply.data(), reply.size(), kLong) < 0) {
          error = connection.error().value();
          break;
        }
        Co::this_coroutine::sleep(1ms);
      }
    });
    Running running(server);
    Co::Socket client = connected(running.port());
    client.close();
    CHECK(running.stop());
    CHECK((error == EPIPE || error == ECONNRESET));
    CHECK(log.count_exact(Co::LogLevel::notice, "send 165 bytes failed, because connection#" +
                                                    std::to_string(id) + " is closed") == 1);
  });
  CHECK(rc == 0);
}

namespace {

// The client of the lingering-close test: asks for a large response, sends a second request the
// server never reads, then reads the response slowly. Returns the bytes read and the error
// that ended the reading (0: a clean end of stream).
struct SlowRead {
  size_t bytes = 0;
  int error = 0;
};

SlowRead read_slowly(uint16_t port) {
  SlowRead out;
  Co::Socket client;
  int small = 64 * 1024;  // a small window: most of the response waits in the server's kernel
  ::setsockopt(client.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  if (!client.connect("127.0.0.1", port, kLong)) {
    out.error = client.error().value();
    return out;
  }
  CHECK(client.send_all("GET\n", 4, kLong) == 4);
  std::vector<char> chunk(64 * 1024);
  bool second_sent = false;
  for (;;) {
    ssize_t n = client.recv(chunk.data(), chunk.size(), kLong);
    if (n == 0) return out;
    if (n < 0) {
      out.error = client.error().value();
      return out;
    }
    out.bytes += static_cast<size_t>(n);
    if (!second_sent) {
      // The server is sending its response now: it will not read this one.
      CHECK(client.send_all("SECOND\n", 7, kLong) == 7);
      second_sent = true;
    }
    Co::this_coroutine::sleep(2ms);
  }
}

SlowRead serve_large_response(Co::Duration linger) {
  constexpr size_t kResponse = 8 * 1024 * 1024;
  SlowRead got;
  int rc = Co::run([&] {
    Co::ServerOptions options;
    options.linger_timeout = linger;
    options.protocol.eof = "\n";
    Co::Server server("127.0.0.1", 0, options);
    server.handle([&](Co::Connection& connection) {
      auto request = connection.recv_packet(kLong);  // the first request only
      CHECK(request.has_value());
      std::string response(kResponse, 'R');
      connection.send_all(response.data(), response.size(), kLong);
      // Returns with "SECOND\n" unread: the server closes the connection.
    });
    Running running(server);
    got = read_slowly(running.port());
    CHECK(running.stop());
  });
  CHECK(rc == 0);
  return got;
}

}  // namespace

TEST_CASE("server: the graceful close delivers a response the peer reads slowly") {
  SlowRead graceful = serve_large_response(std::chrono::seconds(2));
  CHECK(graceful.error == 0);
  CHECK(graceful.bytes == 8 * 1024 * 1024);
  // The same with a plain close: unread input makes the kernel reset the connection and drop
  // what was not yet sent. (What the graceful close is for.)
  SlowRead plain = serve_large_response(Co::Duration::zero());
  CHECK(plain.error == ECONNRESET);
  CHECK(plain.bytes < 8 * 1024 * 1024);
}

namespace {

int open_descriptors() {
  int count = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++count;
    ::closedir(dir);
  }
  return count - 3;  // ".", ".." and the directory's own descriptor
}

}  // namespace

TEST_CASE("server: out of descriptors, it backs off without spinning and goes on when freed") {
  ChildResult child = run_in_child([] {
    constexpr int kClients = 60;
    // The listener first, so the client process (forked before any container) can connect.
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener, 512) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return 10;
    }
    pid_t client = ::fork();
    if (client == 0) {
      // Blocking sockets, no coring: connect all, then for each send a byte, read the answer,
      // close. The server can hold only some of them at once.
      ::close(listener);
      std::vector<int> fds;
      for (int i = 0; i < kClients; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        timeval limit{10, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) ::_exit(1);
        fds.push_back(fd);
      }
      for (int fd : fds) {
        char byte = 'x';
        if (::send(fd, &byte, 1, 0) != 1 || ::recv(fd, &byte, 1, 0) != 1) ::_exit(2);
        ::close(fd);
      }
      ::_exit(0);
    }
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = static_cast<rlim_t>(open_descriptors() + 24);
    ::setrlimit(RLIMIT_NOFILE, &limit);
    LogCapture log;
    int code = 0;
    auto started = Clock::now();
    Co::run([&] {
      Co::Server server(::dup(listener));
      int served = 0;
      server.handle([&](Co::Connection& connection) {
        char byte;
        if (connection.recv(&byte, 1, kLong) != 1) return;
        Co::this_coroutine::sleep(5ms);  // hold the descriptor a little
        if (connection.send(&byte, 1, kLong) == 1) ++served;
        connection.recv(&byte, 1, kLong);  // until the client closes
      });
      Co::WaitGroup done;
      done.add(1);
      Co::create([&] {
        server.start();
        done.done();
      });
      while (served < kClients && Clock::now() - started < 20s) {
        Co::this_coroutine::sleep(10ms);
      }
      server.shutdown();
      done.wait(kLong);
      if (served != kClients) code = 1;
      Co::ServerStats stats = server.stats();
      // Each freed descriptor lets one accept() through and the next fail: about one failure
      // per connection, plus one per 100 ms pause. A spinning acceptor makes many thousands.
      if (stats.accept_errors == 0) code = 2;  // the limit was never reached: no test
      if (stats.accept_errors > 1000) code = 3;
    });
    int status = 0;
    ::waitpid(client, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) code = 4;
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count();
    size_t warnings = log.count(Co::LogLevel::warning, "accept() failed: Too many open files");
    if (warnings == 0 || warnings > static_cast<size_t>(seconds) + 2) code = 5;
    if (code != 0) std::fprintf(stderr, "%s", log.dump().c_str());
    return code;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

// Datagram sockets (UDP over IPv4 and IPv6, Unix datagram) and Unix stream sockets, over real
// sockets: sendto/recvfrom with the peer's address, zero timeouts, truncated datagrams.
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

// ---- datagrams and Unix sockets ----------------------------------------------------------------

TEST_CASE("udp: sendto/recvfrom round trip over IPv4 and IPv6 fill in host and port") {
  int rc = Co::run([&] {
    for (Type type : {Type::udp, Type::udp6}) {
      CAPTURE(static_cast<int>(type));
      Co::Socket server(type);
      CO_REQUIRE(server.bind(loopback(type), 0));
      uint16_t server_port = server.local_port();
      CHECK(server_port != 0);
      Co::Socket client(type);
      CO_REQUIRE(client.bind(loopback(type), 0));
      Co::WaitGroup wg;
      wg.add(1);
      Co::create([&] {  // an echo server for two datagrams
        for (int i = 0; i < 2; ++i) {
          char buffer[2048];
          std::string host;
          uint16_t port = 0;
          ssize_t n = server.recvfrom(buffer, sizeof buffer, &host, &port, kLong);
          CHECK(n > 0);
          if (n <= 0) break;
          CHECK(host == loopback(type));
          CHECK(port == client.local_port());
          CHECK(server.sendto(host, port, buffer, static_cast<size_t>(n)) == n);
        }
        wg.done();
      });
      const std::string datagram = pattern(1200, 8);
      for (std::string_view message : {std::string_view("ping"), std::string_view(datagram)}) {
        CHECK(client.sendto(loopback(type), server_port, message.data(), message.size()) ==
              static_cast<ssize_t>(message.size()));
        char buffer[2048];
        std::string host;
        uint16_t port = 0;
        ssize_t n = client.recvfrom(buffer, sizeof buffer, &host, &port, kLong);
        CHECK(n == static_cast<ssize_t>(message.size()));
        if (n > 0) CHECK(std::string_view(buffer, static_cast<size_t>(n)) == message);
        CHECK(host == loopback(type));
        CHECK(port == server_port);
      }
      CHECK(settle(wg));
      // recvfrom times out, and a zero timeout does not wait.
      char buffer[16];
      auto start = Clock::now();
      ssize_t got = -2;
      CHECK(within(kLong,
                   [&] { got = client.recvfrom(buffer, sizeof buffer, nullptr, nullptr, 30ms); }));
      CHECK(got == -1);
      CHECK(client.error().value() == ETIMEDOUT);
      CHECK(waited_ms(start) >= 30);
      start = Clock::now();
      CHECK(client.recvfrom(buffer, sizeof buffer, nullptr, nullptr, Co::Duration::zero()) == -1);
      CHECK(client.error().value() == ETIMEDOUT);
      CHECK(waited_ms(start) < 1000);
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("udp: recvfrom with a zero timeout returns a datagram that is already queued") {
  int rc = Co::run([&] {
    Co::Socket server(Type::udp);
    CO_REQUIRE(server.bind("127.0.0.1", 0));
    Co::Socket client(Type::udp);
    CHECK(client.sendto("127.0.0.1", server.local_port(), "now", 3) == 3);
    auto until = Clock::now() + kLong;
    while (queued(server.fd()) <= 0 && Clock::now() < until) Co::this_coroutine::sleep(1ms);
    char buffer[8];
    std::string host;
    uint16_t port = 0;
    CHECK(server.recvfrom(buffer, sizeof buffer, &host, &port, Co::Duration::zero()) == 3);
    CHECK(std::string_view(buffer, 3) == "now");
    CHECK(host == "127.0.0.1");
    CHECK(port == client.local_port());
  });
  CHECK(rc == 0);
}

static void unix_stream_round_trip(const std::string& path) {
  CAPTURE(path);
  const std::string request = pattern(300'000, 31);
  std::string echoed(request.size(), '\0');
  std::string peer;
  int rc = Co::run([&] {
    Co::Socket listener(Type::unix_stream);
    CO_REQUIRE(listener.bind(path));
    CO_REQUIRE(listener.listen());
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      accept_and_echo(listener, 32 * 1024);
      wg.done();
    });
    Co::Socket client(Type::unix_stream);
    CHECK(client.connect(path, kLong));
    peer = client.peer_address();
    spawn(wg, [&] {
      CHECK(client.send_all(request.data(), request.size(), kLong) ==
            static_cast<ssize_t>(request.size()));
      CHECK(client.shutdown(SHUT_WR));
    });
    CHECK(client.recv_all(echoed.data(), echoed.size(), kLong) ==
          static_cast<ssize_t>(request.size()));
    char b;
    CHECK(client.recv(&b, 1, kLong) == 0);
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(echoed == request);
  CHECK(peer == path);
}

TEST_CASE("unix stream: round trip over a filesystem path") {
  TempDir dir;
  unix_stream_round_trip(dir.file("stream.sock"));
}

TEST_CASE("unix stream: round trip over an abstract name") {
  unix_stream_round_trip(abstract_name("stream"));
}

TEST_CASE("unix stream: connecting to a path nobody listens on fails") {
  TempDir dir;
  int rc = Co::run([&] {
    Co::Socket client(Type::unix_stream);
    CHECK_FALSE(client.connect(dir.file("nobody.sock"), kLong));
    CHECK(client.error().value() == ENOENT);
    Co::Socket abstract(Type::unix_stream);
    CHECK_FALSE(abstract.connect(abstract_name("nobody"), kLong));
    CHECK(abstract.error().value() == ECONNREFUSED);
  });
  CHECK(rc == 0);
}

TEST_CASE("unix datagram: round trip over paths and abstract names") {
  TempDir dir;
  for (bool abstract : {false, true}) {
    CAPTURE(abstract);
    const std::string server_path = abstract ? abstract_name("dgram-server") : dir.file("s.sock");
    const std::string client_path = abstract ? abstract_name("dgram-client") : dir.file("c.sock");
    int rc = Co::run([&] {
      Co::Socket server(Type::unix_dgram);
      CO_REQUIRE(server.bind(server_path));
      Co::Socket client(Type::unix_dgram);
      CO_REQUIRE(client.bind(client_path));
      Co::WaitGroup wg;
      wg.add(1);
      Co::create([&] {
        char buffer[256];
        std::string from;
        uint16_t port = 7;
        ssize_t n = server.recvfrom(buffer, sizeof buffer, &from, &port, kLong);
        CHECK(n == 5);
        CHECK(from == client_path);
        CHECK(port == 0);
        if (n > 0) {
          std::string reply = "re:" + std::string(buffer, static_cast<size_t>(n));
          CHECK(server.sendto(from, 0, reply.data(), reply.size()) ==
                static_cast<ssize_t>(reply.size()));
        }
        wg.done();
      });
      CHECK(client.sendto(server_path, 0, "hello", 5) == 5);
      char buffer[256];
      std::string from;
      ssize_t n = client.recvfrom(buffer, sizeof buffer, &from, nullptr, kLong);
      CHECK(n == 8);
      if (n > 0) CHECK(std::string_view(buffer, static_cast<size_t>(n)) == "re:hello");
      CHECK(from == server_path);
      CHECK(settle(wg));
    });
    CHECK(rc == 0);
  }
}

TEST_CASE(
    "datagrams larger than the buffer: recvfrom and recv fail with EMSGSIZE, not in silence") {
  int rc = Co::run([&] {
    Co::Socket server(Type::udp);
    CO_REQUIRE(server.bind("127.0.0.1", 0));
    Co::Socket client(Type::udp);
    const std::string big = pattern(1000, 3);
    CHECK(client.sendto("127.0.0.1", server.local_port(), big.data(), big.size()) == 1000);
    CHECK(client.sendto("127.0.0.1", server.local_port(), "next", 4) == 4);
    char buffer[100];
    std::string host;
    uint16_t port = 0;
    CHECK(server.recvfrom(buffer, sizeof buffer, &host, &port, kLong) == -1);
    CHECK(server.error().value() == EMSGSIZE);
    CHECK(std::string_view(buffer, sizeof buffer) == std::string_view(big).substr(0, 100));
    CHECK(host == "127.0.0.1");
    CHECK(port == client.local_port());
    // The next datagram is intact: the truncated one is gone, nothing else.
    CHECK(server.recvfrom(buffer, sizeof buffer, &host, &port, kLong) == 4);
    CHECK(std::string_view(buffer, 4) == "next");
    // recv() on a connected datagram socket, with and without waiting.
    Co::Socket connected(Type::udp);
    CO_REQUIRE(connected.connect("127.0.0.1", server.local_port(), kLong));
    CHECK(connected.send(big.data(), big.size(), kLong) == 1000);
    CHECK(server.recv(buffer, sizeof buffer, kLong) == -1);
    CHECK(server.error().value() == EMSGSIZE);
    CHECK(connected.send(big.data(), big.size(), kLong) == 1000);
    auto until = Clock::now() + kLong;
    while (queued(server.fd()) <= 0 && Clock::now() < until) Co::this_coroutine::sleep(1ms);
    CHECK(server.recv(buffer, sizeof buffer, Co::Duration::zero()) == -1);
    CHECK(server.error().value() == EMSGSIZE);
    // A buffer that fits: the length, as always.
    CHECK(connected.send("fits", 4, kLong) == 4);
    CHECK(server.recv(buffer, sizeof buffer, kLong) == 4);
  });
  CHECK(rc == 0);
}

TEST_CASE("unix: an abstract name that fills sun_path exactly (107 bytes after the @) works") {
  int rc = Co::run([&] {
    std::string name = "@" + std::string(107, 'a');
    std::string pid = std::to_string(::getpid());
    name.replace(1, pid.size(), pid);  // unique per process
    Co::Socket listener(Type::unix_stream);
    CO_REQUIRE(listener.bind(name));
    CO_REQUIRE(listener.listen());
    Co::Socket client(Type::unix_stream);
    CHECK(client.connect(name, kLong));
    CHECK(listener.accept(kLong).has_value());
    Co::Socket too_long(Type::unix_stream);
    CHECK_FALSE(too_long.bind(name + "b"));
    CHECK(too_long.error().value() == ENAMETOOLONG);
  });
  CHECK(rc == 0);
}

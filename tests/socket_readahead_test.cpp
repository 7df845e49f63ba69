// Reading ahead must never change what a reader sees. The io_uring engine keeps one multishot
// receive armed per stream socket that waits for input, and so receives bytes before anybody
// asks for them (into buffers of its own); the epoll engine leaves them in the kernel. Either
// way every byte arrives once, in order, through every kind of read (a waiting one, one that
// does not wait, a read after the peer closed), when the engine runs out of buffers, and when a
// reader does not keep up; and closing a socket with unread input resets the connection, as
// the kernel does. Every case runs under both engines.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <string>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::kLong;
using coring_test::pattern;

TEST_CASE("read-ahead: bytes that arrive while nobody reads are all delivered, in order") {
  // 64 KiB in 100-byte sends (fits in the kernel's buffers, so the sender never waits) arrive
  // while the reader is away: more than a reader may hold in the engine's buffers, so the
  // engine stops reading ahead part-way and resumes afterwards.
  const std::string data = pattern(64 * 1024, 7);
  std::string got;
  int rc = Co::run([&] {
    auto pair = coring_test::tcp_pair();
    CO_REQUIRE(pair.ok);
    CHECK(pair.client.send_all("x", 1, kLong) == 1);
    char first = 0;
    CHECK(pair.server.recv(&first, 1, kLong) == 1);  // the socket is empty now: read-ahead arms
    CHECK(first == 'x');
    for (size_t at = 0; at < data.size(); at += 100) {
      size_t n = std::min<size_t>(100, data.size() - at);
      CHECK(pair.client.send_all(data.data() + at, n, kLong) == static_cast<ssize_t>(n));
    }
    got.resize(data.size());
    CHECK(pair.server.recv_all(got.data(), got.size(), kLong) == static_cast<ssize_t>(got.size()));
  });
  CHECK(rc == 0);
  CHECK(got == data);
}

TEST_CASE("read-ahead: a read that does not wait sees bytes already received") {
  std::string rest;
  ssize_t first_read = 0, second_read = 0;
  int rc = Co::run([&] {
    auto pair = coring_test::tcp_pair();
    CO_REQUIRE(pair.ok);
    char byte = 0;
    Co::WaitGroup wg;
    coring_test::spawn(wg, [&] { first_read = pair.server.recv(&byte, 1, kLong); });
    CHECK(pair.client.send_all("abc", 3, kLong) == 3);
    CHECK(coring_test::settle(wg));
    CHECK(byte == 'a');
    char buffer[16];
    // "bc" is in the kernel (epoll) or in the engine's buffer (io_uring): found either way.
    second_read = pair.server.recv(buffer, sizeof buffer, Co::Duration::zero());
    if (second_read > 0) rest.assign(buffer, static_cast<size_t>(second_read));
  });
  CHECK(rc == 0);
  CHECK(first_read == 1);
  CHECK(second_read == 2);
  CHECK(rest == "bc");
}

TEST_CASE("read-ahead: the bytes before the peer's close come first, then end of stream") {
  std::string got;
  ssize_t end = -2;
  int rc = Co::run([&] {
    auto pair = coring_test::tcp_pair();
    CO_REQUIRE(pair.ok);
    CHECK(pair.client.send_all("1", 1, kLong) == 1);
    char byte = 0;
    CHECK(pair.server.recv(&byte, 1, kLong) == 1);
    CHECK(pair.client.send_all("last words", 10, kLong) == 10);
    CHECK(pair.client.close());
    char buffer[4];  // smaller than what came: three reads, then the end
    for (;;) {
      ssize_t n = pair.server.recv(buffer, sizeof buffer, kLong);
      if (n <= 0) {
        end = n;
        break;
      }
      got.append(buffer, static_cast<size_t>(n));
    }
    char again = 0;
    CHECK(pair.server.recv(&again, 1, kLong) == 0);  // the end stays the end
  });
  CHECK(rc == 0);
  CHECK(got == "last words");
  CHECK(end == 0);
}

TEST_CASE("read-ahead: more waiting connections than engine buffers lose nothing") {
  // 300 connections each wait for input, then 8 KiB arrives on every one before any reads it:
  // more than the io_uring engine's buffers can hold (some receives run out and fall back to
  // plain reads). Every reader gets exactly its own bytes.
  constexpr int kConnections = 300;
  constexpr size_t kBytes = 8 * 1024;
  int intact = 0;
  int rc = Co::run([&] {
    std::vector<coring_test::Pair> pairs;
    pairs.reserve(kConnections);
    for (int i = 0; i < kConnections; ++i) {
      pairs.push_back(coring_test::tcp_pair());
      CO_REQUIRE(pairs.back().ok);
    }
    Co::WaitGroup armed, sent, readers;
    Co::Channel<int> go(kConnections);
    armed.add(kConnections);
    for (int i = 0; i < kConnections; ++i) {
      coring_test::spawn(readers, [&, i] {
        coring::Socket& server = pairs[static_cast<size_t>(i)].server;
        char byte = 0;
        CHECK(server.recv(&byte, 1, kLong) == 1);
        armed.done();
        CHECK(go.pop(kLong).has_value());
        std::string got(kBytes, '\0');
        if (server.recv_all(got.data(), got.size(), kLong) == static_cast<ssize_t>(kBytes) &&
            got == pattern(kBytes, static_cast<uint32_t>(i))) {
          ++intact;
        }
      });
    }
    for (auto& pair : pairs) CHECK(pair.client.send_all("s", 1, kLong) == 1);
    CHECK(armed.wait(kLong));
    for (int i = 0; i < kConnections; ++i) {
      std::string data = pattern(kBytes, static_cast<uint32_t>(i));
      CHECK(pairs[static_cast<size_t>(i)].client.send_all(data.data(), data.size(), kLong) ==
            static_cast<ssize_t>(kBytes));
    }
    // Let the receives run (and run out of buffers) before anybody reads.
    Co::this_coroutine::sleep(20ms);
    for (int i = 0; i < kConnections; ++i) CHECK(go.push(i, kLong));
    CHECK(coring_test::settle(readers));
  });
  CHECK(rc == 0);
  CHECK(intact == kConnections);
}

TEST_CASE("read-ahead: closing with unread input resets the connection, as the kernel does") {
  ssize_t got = 0;
  int error = 0;
  int rc = Co::run([&] {
    auto pair = coring_test::tcp_pair();
    CO_REQUIRE(pair.ok);
    CHECK(pair.client.send_all("abcdef", 6, kLong) == 6);
    char byte = 0;
    CHECK(pair.server.recv(&byte, 1, kLong) == 1);  // "bcdef" stays unread
    CHECK(pair.server.close());
    char buffer[8];
    got = pair.client.recv(buffer, sizeof buffer, kLong);
    error = pair.client.error().value();
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(error == ECONNRESET);
}

TEST_CASE("read-ahead: a descriptor number closed while its read-ahead is armed is reused safely") {
  // The old socket's receive may still be the kernel's when its number is handed out again:
  // the new socket must not see the old one's state, and the old peer must see the close.
  ssize_t old_peer = -2;
  std::string echoed;
  int rc = Co::run([&] {
    auto first = coring_test::tcp_pair();
    CO_REQUIRE(first.ok);
    CHECK(first.client.send_all("1", 1, kLong) == 1);
    char byte = 0;
    CHECK(first.server.recv(&byte, 1, kLong) == 1);  // armed, and idle from here on
    int old_fd = first.server.fd();
    CHECK(first.server.close());
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    Co::Socket client;
    CO_REQUIRE(client.connect("127.0.0.1", listener.local_port(), kLong));
    auto accepted = listener.accept(kLong);
    CO_REQUIRE(accepted.has_value());
    // Whichever of the new descriptors got the old number, both work.
    INFO("old fd " << old_fd << ", new " << listener.fd() << " " << client.fd() << " "
                   << accepted->fd());
    CHECK(client.send_all("ping", 4, kLong) == 4);
    char buffer[8];
    ssize_t n = accepted->recv(buffer, sizeof buffer, kLong);
    CHECK(n == 4);
    CHECK(accepted->send_all(buffer, 4, kLong) == 4);
    n = client.recv(buffer, sizeof buffer, kLong);
    if (n > 0) echoed.assign(buffer, static_cast<size_t>(n));
    old_peer = first.client.recv(&byte, 1, kLong);
  });
  CHECK(rc == 0);
  CHECK(echoed == "ping");
  CHECK(old_peer == 0);
}

TEST_CASE(
    "read-ahead: a socket closed in the turn its read-ahead was armed keeps its number's "
    "next socket whole") {
  // The reader arms the read-ahead and waits; in the same turn of the scheduler, before anything
  // reaches the kernel, the socket is closed and its number at once given to another connected
  // socket with bytes already waiting (dup2). The old socket's receive must not take them.
  std::string got;
  int rc = Co::run([&] {
    auto pair = coring_test::tcp_pair();
    CO_REQUIRE(pair.ok);
    Co::WaitGroup wg;
    coring_test::spawn(wg, [&] {
      char byte;
      CHECK(pair.server.recv(&byte, 1, kLong) == -1);  // woken by the close below
    });
    const int number = pair.server.fd();
    CHECK(pair.server.close());
    // A second connection, made with blocking system calls so that nothing yields.
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    CO_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    CO_REQUIRE(::listen(listener, 4) == 0);
    CO_REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CO_REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    int peer = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    CO_REQUIRE(peer >= 0);
    CO_REQUIRE(::send(peer, "hello", 5, 0) == 5);
    CO_REQUIRE(::dup3(client, number, O_CLOEXEC) == number);
    ::close(client);
    CO_REQUIRE(::fcntl(number, F_SETFL, O_NONBLOCK) == 0);
    Co::Socket fresh(number, Co::Socket::Type::tcp);
    char buffer[8];
    ssize_t n = fresh.recv(buffer, sizeof buffer, kLong);
    if (n > 0) got.assign(buffer, static_cast<size_t>(n));
    CHECK(coring_test::settle(wg));
    ::close(peer);
    ::close(listener);
  });
  CHECK(rc == 0);
  CHECK(got == "hello");
}

TEST_CASE("read-ahead: the peer sees the end of stream as soon as close() returns") {
  // The kernel holds a socket open while a receive of its own is armed on it: close() must end
  // that receive first, or no FIN goes out until the scheduler's next turn.
  ssize_t seen = -2;
  int rc = Co::run([&] {
    auto pair = coring_test::tcp_pair();
    CO_REQUIRE(pair.ok);
    CHECK(pair.client.send_all("x", 1, kLong) == 1);
    char byte = 0;
    CHECK(pair.server.recv(&byte, 1, kLong) == 1);  // armed from here on
    CHECK(pair.server.close());
    seen = pair.client.recv(&byte, 1, Co::Duration::zero());  // no wait: it is there or not
  });
  CHECK(rc == 0);
  CHECK(seen == 0);
}

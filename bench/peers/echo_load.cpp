// Closed-loop load for the echo benchmark, the same for every server under test: one thread,
// epoll, N connections each with exactly one message in flight (send SIZE bytes, wait until all
// SIZE come back, send again). Plain epoll and blocking-free syscalls, so that its own cost is
// the same whichever server it measures.
//
//   echo_load --port P [--conns 100] [--size 64] [--warmup 1] [--seconds 5]
//
// Prints one line: "conns=N size=S round_trips_per_s=R p50_us=A p99_us=B". Exits non-zero if
// the server misbehaves (wrong bytes, closed connection) or nothing was measured.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

uint64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return uint64_t(t.tv_sec) * 1'000'000'000u + uint64_t(t.tv_nsec);
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "echo_load: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

struct Connection {
  int fd = -1;
  size_t received = 0;
  uint64_t sent_at = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int port = 0, connections = 100;
  size_t size = 64;
  double warmup = 1, seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string option = argv[i];
    double value = std::atof(argv[i + 1]);
    if (option == "--port")
      port = int(value);
    else if (option == "--conns")
      connections = int(value);
    else if (option == "--size")
      size = size_t(value);
    else if (option == "--warmup")
      warmup = value;
    else if (option == "--seconds")
      seconds = value;
    else {
      std::fprintf(stderr, "echo_load: unknown option %s\n", option.c_str());
      return 2;
    }
  }
  if (port <= 0 || connections <= 0 || size == 0 || size > 65536) {
    std::fprintf(
        stderr,
        "usage: echo_load --port P [--conns N] [--size BYTES] [--warmup S] [--seconds S]\n");
    return 2;
  }

  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(uint16_t(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) fail("epoll_create1");
  std::vector<Connection> pool(static_cast<size_t>(connections));
  for (int i = 0; i < connections; ++i) {
    int fd = -1;
    for (int attempt = 0;; ++attempt) {  // the server may still be starting
      fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) fail("socket");
      if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) break;
      if (errno != ECONNREFUSED || attempt > 300) fail("connect");
      close(fd);
      usleep(10'000);
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = uint32_t(i);
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) fail("epoll_ctl");
    pool[size_t(i)].fd = fd;
  }

  std::vector<char> message(size), reply(size);
  for (size_t i = 0; i < size; ++i) message[i] = char('a' + i % 26);
  auto send_message = [&](Connection& c, uint64_t now) {
    size_t sent = 0;
    while (sent < size) {  // one message per connection in flight never fills a socket buffer
      ssize_t n = send(c.fd, message.data() + sent, size - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += size_t(n);
      } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
        fail("send");
      }
    }
    c.sent_at = now;
  };

  std::vector<uint32_t> latency_us(1'000'001, 0);
  uint64_t start = now_ns();
  uint64_t measure_from = start + uint64_t(warmup * 1e9);
  uint64_t stop_at = measure_from + uint64_t(seconds * 1e9);
  for (auto& c : pool) send_message(c, start);
  uint64_t measured = 0, measured_since = 0, now = start;
  std::vector<epoll_event> events(512);
  while (now < stop_at) {
    int ready = epoll_wait(epoll, events.data(), int(events.size()), 100);
    if (ready < 0 && errno != EINTR) fail("epoll_wait");
    now = now_ns();
    if (measured_since == 0 && now >= measure_from) measured_since = now;
    for (int e = 0; e < ready; ++e) {
      Connection& c = pool[events[size_t(e)].data.u32];
      ssize_t n = recv(c.fd, reply.data() + c.received, size - c.received, MSG_DONTWAIT);
      if (n == 0) {
        std::fprintf(stderr, "echo_load: the server closed a connection\n");
        return 1;
      }
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        fail("recv");
      }
      c.received += size_t(n);
      if (c.received < size) continue;
      if (std::memcmp(reply.data(), message.data(), size) != 0) {
        std::fprintf(stderr, "echo_load: the server echoed different bytes\n");
        return 1;
      }
      c.received = 0;
      if (measured_since != 0) {
        ++measured;
        uint64_t us = (now - c.sent_at) / 1000;
        ++latency_us[std::min<uint64_t>(us, latency_us.size() - 1)];
      }
      send_message(c, now);
    }
  }
  if (measured == 0) {
    std::fprintf(stderr, "echo_load: no round trip completed in the measured window\n");
    return 1;
  }
  auto percentile = [&](double p) {
    uint64_t wanted = uint64_t(p * double(measured)), seen = 0;
    for (size_t us = 0; us < latency_us.size(); ++us) {
      seen += latency_us[us];
      if (seen > wanted) return us;
    }
    return latency_us.size();
  };
  double elapsed = double(now - measured_since) / 1e9;
  std::printf("conns=%d size=%zu round_trips_per_s=%.0f p50_us=%zu p99_us=%zu\n", connections, size,
              double(measured) / elapsed, percentile(0.50), percentile(0.99));
  for (auto& c : pool) close(c.fd);
  return 0;
}

// The ceiling of the HTTP benchmark: a server that does not speak HTTP. It counts the
// "\r\n\r\n" that end request heads in what it reads (a match split across two reads counts)
// and answers each with the same canned response, the responses of one read in one write.
// Nothing can do less per request, so its figures are what this machine, its kernel's TCP path
// and the load generator allow; a real server is measured against them.
//
// The responses and the counting are canned_http.hpp's, shared with http_limit_uring.cpp (the
// same with io_uring).
//
// One thread, level-triggered epoll: one read per readiness (64 KiB, enough for any batch the
// load generators send) and one write for what it asked for. A write that does not go through
// whole leaves the rest owed: the connection then waits for EPOLLOUT and reads nothing more
// until it is paid.
//
//   http_limit --port P
//
// Prints "listening on 127.0.0.1:P" once ready; runs until killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string_view>
#include <vector>

#include "canned_http.hpp"

namespace {

using namespace canned_http;

struct Connection {
  const Canned* canned = nullptr;  // chosen by the first read
  int matched = 0;                 // how much of "\r\n\r\n" the bytes read so far end with
  size_t owed = 0;                 // responses not yet written whole
  size_t partial = 0;              // bytes of the first owed response already written
  bool writing = false;            // waiting for EPOLLOUT
};

std::vector<Connection> connections;

// Writes what c owes: 1 when all of it went out, 0 when the socket is full, -1 on an error.
int pay(int fd, Connection& c) {
  const size_t length = c.canned->length;
  while (c.owed > 0) {
    size_t count = c.owed < kBatch ? c.owed : kBatch;
    ssize_t n = write(fd, c.canned->bytes.data() + c.partial, count * length - c.partial);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : -1;
    }
    size_t done = c.partial + static_cast<size_t>(n);
    c.owed -= done / length;
    c.partial = done % length;
  }
  return 1;
}

void watch(int epoll, int fd, uint32_t events, int op) {
  epoll_event event{};
  event.events = events;
  event.data.fd = fd;
  epoll_ctl(epoll, op, fd, &event);
}

void drop(int fd) {
  connections[static_cast<size_t>(fd)] = Connection{};
  close(fd);  // leaves the epoll set with it
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--port") != 0) {
    std::fprintf(stderr, "usage: http_limit --port P\n");
    return 2;
  }
  int port = std::atoi(argv[2]);
  render_date(std::time(nullptr));

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  setsockopt(listener, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // inherited when accepted
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 4096) != 0) {
    std::fprintf(stderr, "http_limit: cannot listen on port %d: %s\n", port, std::strerror(errno));
    return 1;
  }
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  watch(epoll, listener, EPOLLIN, EPOLL_CTL_ADD);
  std::printf("listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);

  static epoll_event events[512];
  static char buffer[64 * 1024];
  for (;;) {
    int ready = epoll_wait(epoll, events, 512, -1);
    if (ready < 0) continue;  // EINTR
    time_t now = std::time(nullptr);
    if (now != canned_second) render_date(now);
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int accepted;
        while ((accepted = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
               0) {
          if (static_cast<size_t>(accepted) >= connections.size()) {
            connections.resize(static_cast<size_t>(accepted) * 2 + 1);
          }
          connections[static_cast<size_t>(accepted)] = Connection{};
          watch(epoll, accepted, EPOLLIN, EPOLL_CTL_ADD);
        }
        continue;
      }
      Connection& c = connections[static_cast<size_t>(fd)];
      if (c.writing) {  // EPOLLOUT: pay what is owed, then read again
        int paid = pay(fd, c);
        if (paid < 0) {
          drop(fd);
        } else if (paid > 0) {
          c.writing = false;
          watch(epoll, fd, EPOLLIN, EPOLL_CTL_MOD);
        }
        continue;
      }
      ssize_t n = read(fd, buffer, sizeof buffer);
      if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) drop(fd);
        continue;
      }
      if (c.canned == nullptr) c.canned = choose(buffer, static_cast<size_t>(n));
      c.owed += count_heads(c.matched, buffer, static_cast<size_t>(n));
      int paid = pay(fd, c);
      if (paid < 0) {
        drop(fd);
      } else if (paid == 0) {
        c.writing = true;
        watch(epoll, fd, EPOLLOUT, EPOLL_CTL_MOD);
      }
    }
  }
}

// The floor for the echo benchmark: a TCP echo server with no runtime at all. One thread,
// edge-triggered epoll, read until EAGAIN and write back what came. Any server built on a
// runtime does at least this much work per message, so it shows what the kernel's TCP path
// and the load client cost on this machine, whatever the server.
//
//   epoll_echo --port P
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

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--port") != 0) {
    std::fprintf(stderr, "usage: epoll_echo --port P\n");
    return 2;
  }
  int port = std::atoi(argv[2]);
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
    std::fprintf(stderr, "epoll_echo: cannot listen on port %d: %s\n", port, std::strerror(errno));
    return 1;
  }
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = listener;
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event);
  std::printf("listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);

  static epoll_event events[512];
  static char buffer[4096];
  for (;;) {
    int ready = epoll_wait(epoll, events, 512, -1);
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int connection;
        while ((connection = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
               0) {
          epoll_event added{};
          added.events = EPOLLIN | EPOLLET;
          added.data.fd = connection;
          epoll_ctl(epoll, EPOLL_CTL_ADD, connection, &added);
        }
        continue;
      }
      for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n > 0) {
          // One message per connection in flight: a write of what fits never blocks here.
          if (write(fd, buffer, static_cast<size_t>(n)) != n) {
            close(fd);
            break;
          }
          continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) close(fd);
        break;
      }
    }
  }
}

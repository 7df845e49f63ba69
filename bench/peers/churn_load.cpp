// Connection churn against an echo server: T threads, each in a loop that connects, sends one
// line, reads the same bytes back and closes, with plain blocking sockets (no coring), so that
// what it counts does not depend on the runtime under test. Used by the worker-process tests
// (reloads under load must lose nothing) and by the benchmark.
//
//   churn_load --port P [--threads 4] [--seconds 5] [--size 32] [--signal PID:SIG:COUNT]
//
// --signal sends SIG to PID COUNT times, evenly spread over the run (after a quarter of it
// and until three quarters): a reload under load.
//
// Prints one line:
//   "round_trips=N per_s=R failures=F refused=A reset=B timeout=C short=D"
// and exits 1 if anything failed (or nothing was measured).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

double now_s() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

struct Counts {
  std::atomic<uint64_t> ok{0}, refused{0}, reset{0}, timeout{0}, short_answer{0};
};

void count_error(Counts& counts, int error) {
  if (error == ECONNREFUSED) {
    counts.refused++;
  } else if (error == EAGAIN || error == EWOULDBLOCK || error == ETIMEDOUT) {
    counts.timeout++;
  } else {
    counts.reset++;  // ECONNRESET, EPIPE and the like: the connection was broken
  }
}

// One connection's round trip; true if the same bytes came back.
void round_trip(const sockaddr_in& address, const std::string& line, Counts& counts) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::perror("churn_load: socket");
    std::exit(1);
  }
  timeval limit{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    count_error(counts, errno);
    ::close(fd);
    return;
  }
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    count_error(counts, errno);
    ::close(fd);
    return;
  }
  std::string back(line.size(), '\0');
  size_t got = 0;
  while (got < back.size()) {
    ssize_t n = ::recv(fd, back.data() + got, back.size() - got, 0);
    if (n < 0) {
      count_error(counts, errno);
      ::close(fd);
      return;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got != back.size() || back != line) {
    counts.short_answer++;
  } else {
    counts.ok++;
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, threads = 4;
  double seconds = 5;
  size_t size = 32;
  pid_t signal_pid = 0;
  int signal_number = 0, signal_count = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string option = argv[i];
    const char* value = argv[i + 1];
    if (option == "--port") {
      port = std::atoi(value);
    } else if (option == "--threads") {
      threads = std::atoi(value);
    } else if (option == "--seconds") {
      seconds = std::atof(value);
    } else if (option == "--size") {
      size = static_cast<size_t>(std::atol(value));
    } else if (option == "--signal") {
      if (std::sscanf(value, "%d:%d:%d", &signal_pid, &signal_number, &signal_count) != 3) {
        std::fprintf(stderr, "churn_load: --signal PID:SIG:COUNT\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "churn_load: unknown option %s\n", option.c_str());
      return 2;
    }
  }
  if (port <= 0 || threads <= 0 || seconds <= 0 || size < 2) {
    std::fprintf(stderr,
                 "usage: churn_load --port P [--threads 4] [--seconds 5] [--size 32] "
                 "[--signal PID:SIG:COUNT]\n");
    return 2;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

  Counts counts;
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  const double started = now_s();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::string line(size - 1, static_cast<char>('a' + t % 26));
      line += '\n';
      while (!stop.load(std::memory_order_relaxed)) round_trip(address, line, counts);
    });
  }
  int sent = 0;
  while (now_s() - started < seconds) {
    if (signal_count > 0 && sent < signal_count) {
      double at = seconds * (0.25 + 0.5 * sent / std::max(1, signal_count - 1));
      if (now_s() - started >= at) {
        ::kill(signal_pid, signal_number);
        ++sent;
      }
    }
    struct timespec pause {
      0, 5'000'000
    };
    nanosleep(&pause, nullptr);
  }
  stop = true;
  for (auto& worker : workers) worker.join();
  const double elapsed = now_s() - started;
  uint64_t failures = counts.refused + counts.reset + counts.timeout + counts.short_answer;
  std::printf(
      "round_trips=%llu per_s=%.0f failures=%llu refused=%llu reset=%llu timeout=%llu "
      "short=%llu signals=%d\n",
      static_cast<unsigned long long>(counts.ok.load()), double(counts.ok.load()) / elapsed,
      static_cast<unsigned long long>(failures), static_cast<unsigned long long>(counts.refused),
      static_cast<unsigned long long>(counts.reset),
      static_cast<unsigned long long>(counts.timeout),
      static_cast<unsigned long long>(counts.short_answer), sent);
  return failures == 0 && counts.ok > 0 ? 0 : 1;
}

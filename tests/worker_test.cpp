// coring::WorkerPool with real processes: the master runs in a forked child of the test (it
// blocks in start()), its workers serve a socket the test connects to with plain blocking
// sockets, and the hooks append to a file the test reads. Reload with a request in flight,
// shutdown, the forced kill after max_wait_time, crashes (replaced; a worker that crashes at
// once is restarted with growing pauses), max_request and a reload that does not drain.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers

namespace {

// A master process: start_master() forks it; its stdout and stderr go to a file.
struct Master {
  pid_t pid = -1;
  std::string log_path;

  std::string log() const {
    std::ifstream in(log_path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // Waits up to `limit` for the master to exit; its wait status, or -1 (then it is killed).
  int wait(std::chrono::seconds limit = 15s) {
    auto until = Clock::now() + limit;
    int status = 0;
    while (Clock::now() < until) {
      pid_t done = ::waitpid(pid, &status, WNOHANG);
      if (done == pid) return status;
      std::this_thread::sleep_for(10ms);
    }
    ::kill(-pid, SIGKILL);  // the master and its workers
    ::waitpid(pid, &status, 0);
    return -1;
  }
  ~Master() { ::unlink(log_path.c_str()); }
};

template <class F>
Master start_master(F&& run_master) {
  Master master;
  char path[] = "/tmp/coring-master-XXXXXX";
  int fd = ::mkstemp(path);
  master.log_path = path;
  std::fflush(nullptr);
  master.pid = ::fork();
  if (master.pid == 0) {
    ::setpgid(0, 0);  // a group of its own: a failed test kills it and its workers at once
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::alarm(60);
    int code = run_master();
    std::fflush(nullptr);
    ::_exit(code);
  }
  ::close(fd);
  return master;
}

// Lines the workers' hooks append ("start 0 4242"), shared through a file.
class Events {
 public:
  Events() {
    char path[] = "/tmp/coring-events-XXXXXX";
    int fd = ::mkstemp(path);
    ::close(fd);
    path_ = path;
  }
  ~Events() { ::unlink(path_.c_str()); }
  void add(const std::string& what, int worker_id) const {
    std::string line =
        what + " " + std::to_string(worker_id) + " " + std::to_string(::getpid()) + "\n";
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND);
    ssize_t written = ::write(fd, line.data(), line.size());  // one write: lines never mix
    (void)written;
    ::close(fd);
  }
  size_t count(const std::string& what) const {
    std::ifstream in(path_);
    std::string word, rest;
    size_t n = 0;
    while (in >> word && std::getline(in, rest)) n += word == what;
    return n;
  }
  std::string text() const {
    std::ifstream in(path_);
    std::stringstream all;
    all << in.rdbuf();
    return all.str();
  }

 private:
  std::string path_;
};

// A request over a fresh blocking connection: sends line + "\n" and returns the answer up to
// its "\n", or "" if the connection failed or closed first.
std::string ask(uint16_t port, const std::string& line) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval limit{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  std::string request = line + "\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char c;
    while (::recv(fd, &c, 1, 0) == 1 && c != '\n') answer += c;
  }
  ::close(fd);
  return answer;
}

// The workers' server: answers each line with the worker's pid; "slow" waits 300 ms first,
// "crash" aborts the worker.
void serve_pid(Co::WorkerPool& pool) {
  Co::ServerOptions options;
  options.protocol.eof = "\n";
  Co::Server server(pool.listener(), options);
  server.handle([](Co::Connection& connection) {
    while (auto line = connection.recv_packet(10s)) {
      if (line->empty()) return;
      if (*line == "crash\n") std::abort();
      if (*line == "slow\n") Co::this_coroutine::sleep(300ms);
      std::string answer = std::to_string(::getpid()) + "\n";
      if (connection.send_all(answer.data(), answer.size()) < 0) return;
    }
  });
  server.start();
}

// Waits until `pool` shows `count` workers not stopping (and none stopping, if `settled`).
bool until_workers(const Co::WorkerPool& pool, size_t count, bool settled = true) {
  auto until = Clock::now() + 10s;
  while (Clock::now() < until) {
    size_t running = 0, stopping = 0;
    for (const auto& worker : pool.stats()) (worker.stopping ? stopping : running) += 1;
    if (running == count && (!settled || stopping == 0)) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

std::set<std::string> worker_pids(const Co::WorkerPool& pool) {
  std::set<std::string> pids;
  for (const auto& worker : pool.stats()) pids.insert(std::to_string(worker.pid));
  return pids;
}

// Waits until `pool` runs `count` workers, none of them in `old` and none stopping.
bool until_replaced(const Co::WorkerPool& pool, const std::set<std::string>& old, size_t count) {
  auto until = Clock::now() + 10s;
  while (Clock::now() < until) {
    std::set<std::string> pids = worker_pids(pool);
    bool fresh = pids.size() == count;
    for (const auto& pid : pids) fresh = fresh && old.count(pid) == 0;
    if (fresh && until_workers(pool, count)) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// Polls pred for up to 10 s.
template <class F>
bool eventually(F&& pred) {
  auto until = Clock::now() + 10s;
  while (!pred()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

}  // namespace

TEST_CASE("workers: serve one socket; hooks run; SIGTERM drains them and the master exits 0") {
  Events events;
  Co::WorkerOptions options;
  options.worker_num = 2;
  Co::WorkerPool pool(options);
  REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
  pool.on_worker_start([&](int id) { events.add("start", id); });
  pool.on_worker_exit([&](int id) { events.add("exit", id); });
  pool.on_worker_stop([&](int id) { events.add("stop", id); });
  Master master = start_master([&] { return pool.start([&](int) { serve_pid(pool); }); });
  REQUIRE(until_workers(pool, 2));
  std::set<std::string> pids = worker_pids(pool);
  for (int i = 0; i < 20; ++i) {
    std::string answer = ask(pool.port(), "hello");
    CHECK(pids.count(answer) == 1);  // one of the workers answered
  }
  // A handler ends (a request counted, its connection closed) once the client has closed.
  auto totals = [&] {
    uint64_t requests = 0, accepted = 0, open = 0;
    for (const auto& worker : pool.stats()) {
      requests += worker.requests;
      accepted += worker.accepted;
      open += worker.connections;
    }
    return requests == 20 && accepted == 20 && open == 0;
  };
  CHECK(eventually(totals));
  ::kill(master.pid, SIGTERM);
  int status = master.wait();
  CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
  CHECK(events.count("start") == 2);
  CHECK(events.count("exit") == 2);
  CHECK(events.count("stop") == 2);
  CHECK(pool.stats().empty());
  CHECK(master.log().find("forced to terminate") == std::string::npos);
}

TEST_CASE("workers: reload finishes the request in flight; new workers take over") {
  Events events;
  Co::WorkerOptions options;
  options.worker_num = 2;
  Co::WorkerPool pool(options);
  REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
  pool.on_worker_exit([&](int id) { events.add("exit", id); });
  Master master = start_master([&] { return pool.start([&](int) { serve_pid(pool); }); });
  REQUIRE(until_workers(pool, 2));
  std::set<std::string> old_pids = worker_pids(pool);
  std::string slow_answer;
  std::thread slow([&] { slow_answer = ask(pool.port(), "slow"); });
  // Reload while the slow request is in a handler.
  auto until = Clock::now() + 10s;
  auto busy = [&] {
    for (const auto& worker : pool.stats()) {
      if (worker.connections > 0) return true;
    }
    return false;
  };
  while (!busy() && Clock::now() < until) std::this_thread::sleep_for(1ms);
  ::kill(master.pid, SIGUSR1);
  slow.join();
  CHECK(old_pids.count(slow_answer) == 1);  // answered by an old worker, after the reload began
  CHECK(until_replaced(pool, old_pids, 2));
  std::set<std::string> new_pids = worker_pids(pool);
  for (int i = 0; i < 5; ++i) CHECK(new_pids.count(ask(pool.port(), "after")) == 1);
  CHECK(events.count("exit") == 2);
  ::kill(master.pid, SIGTERM);
  int status = master.wait();
  CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
}

TEST_CASE("workers: one that does not end within max_wait_time is killed, with the warning") {
  Co::WorkerOptions options;
  options.worker_num = 1;
  options.max_wait_time = 300ms;
  Co::WorkerPool pool(options);
  REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
  Master master = start_master([&] {
    return pool.start([&](int) {
      Co::tick(100ms, [] {});  // nobody clears it: the container never ends on its own
      serve_pid(pool);
    });
  });
  REQUIRE(until_workers(pool, 1));
  CHECK_FALSE(ask(pool.port(), "hello").empty());
  ::kill(master.pid, SIGTERM);
  int status = master.wait();
  CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
  CHECK_MESSAGE(
      master.log().find("WARNING worker exit timeout, forced to terminate") != std::string::npos,
      master.log());
}

TEST_CASE("workers: a crashed worker is replaced; one that crashes at once backs off") {
  SUBCASE("crash while serving") {
    Co::WorkerOptions options;
    options.worker_num = 1;
    Co::WorkerPool pool(options);
    REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
    Master master = start_master([&] { return pool.start([&](int) { serve_pid(pool); }); });
    REQUIRE(until_workers(pool, 1));
    std::string first = ask(pool.port(), "hello");
    CHECK(ask(pool.port(), "crash").empty());  // the worker died with the connection
    std::string second;
    auto until = Clock::now() + 10s;
    while (second.empty() && Clock::now() < until) second = ask(pool.port(), "hello");
    CHECK_FALSE(second.empty());
    CHECK(second != first);  // a new worker
    ::kill(master.pid, SIGTERM);
    int status = master.wait();
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
    CHECK_MESSAGE(master.log().find("was killed by signal 6") != std::string::npos, master.log());
  }
  SUBCASE("crash at every start") {
    Events events;
    Co::WorkerOptions options;
    options.worker_num = 2;
    Co::WorkerPool pool(options);
    REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
    pool.on_worker_start([&](int id) { events.add("start", id); });
    Master master = start_master([&] { return pool.start([&](int) { std::abort(); }); });
    std::this_thread::sleep_for(1500ms);  // the workload: let it crash for a while
    ::kill(master.pid, SIGTERM);
    int status = master.wait();
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
    // Pauses of 100, 200, 400, 800 ms per worker id: about 5 starts each in 1.5 s. A master
    // that forks in a loop starts hundreds.
    size_t starts = events.count("start");
    CHECK(starts >= 4);
    CHECK_MESSAGE(starts <= 14, events.text());
    CHECK(master.log().find("within a second of starting; starting it again in") !=
          std::string::npos);
  }
}

TEST_CASE("workers: max_request replaces a worker after that many requests") {
  Co::WorkerOptions options;
  options.worker_num = 1;
  options.max_request = 3;
  Co::WorkerPool pool(options);
  REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
  Master master = start_master([&] { return pool.start([&](int) { serve_pid(pool); }); });
  REQUIRE(until_workers(pool, 1));
  std::set<std::string> answered_by;
  for (int i = 0; i < 10; ++i) {
    std::string answer = ask(pool.port(), "hello");
    CHECK_FALSE(answer.empty());  // none is lost while workers are replaced
    answered_by.insert(answer);
  }
  CHECK(answered_by.size() >= 3);
  ::kill(master.pid, SIGTERM);
  int status = master.wait();
  CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
}

TEST_CASE("workers: max_request counts HTTP requests, not connections") {
  Co::WorkerOptions options;
  options.worker_num = 1;
  options.max_request = 3;
  Co::WorkerPool pool(options);
  REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
  Master master = start_master([&] {
    return pool.start([&](int) {
      Co::http::Server server(pool.listener());
      server.handle("/", [](Co::http::Request&, Co::http::Response& response) {
        response.end(std::to_string(::getpid()));
      });
      server.start();
    });
  });
  REQUIRE(until_workers(pool, 1));
  std::set<std::string> old_pids = worker_pids(pool);
  // Three requests on one keep-alive connection: one connection, three requests.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval limit{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(pool.port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  const std::string request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  std::string received;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(request.size()));
    size_t responses = 0;
    char buffer[4096];
    while (responses < static_cast<size_t>(i + 1)) {
      ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      REQUIRE(n > 0);
      received.append(buffer, static_cast<size_t>(n));
      responses = 0;
      for (size_t at = 0; (at = received.find("HTTP/1.1 200", at)) != std::string::npos; ++at) {
        ++responses;
      }
    }
  }
  ::close(fd);
  CHECK(until_replaced(pool, old_pids, 1));  // counted per connection, it would never be
  ::kill(master.pid, SIGTERM);
  int status = master.wait();
  CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
}

TEST_CASE("workers: reload_async false stops old workers at once, without on_worker_exit") {
  Events events;
  Co::WorkerOptions options;
  options.worker_num = 1;
  options.reload_async = false;
  options.max_wait_time = 5s;
  Co::WorkerPool pool(options);
  REQUIRE(pool.listen("127.0.0.1", 0) >= 0);
  pool.on_worker_exit([&](int id) { events.add("exit", id); });
  pool.on_worker_stop([&](int id) { events.add("stop", id); });
  Master master = start_master([&] { return pool.start([&](int) { serve_pid(pool); }); });
  REQUIRE(until_workers(pool, 1));
  std::set<std::string> old_pids = worker_pids(pool);
  auto started = Clock::now();
  ::kill(master.pid, SIGUSR1);
  REQUIRE(until_replaced(pool, old_pids, 1));
  CHECK(Clock::now() - started < 5s);  // not killed after max_wait_time: it stopped by itself
  CHECK(events.count("stop") == 1);
  CHECK(events.count("exit") == 0);
  ::kill(master.pid, SIGTERM);
  int status = master.wait();
  CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), master.log());
  CHECK(master.log().find("forced to terminate") == std::string::npos);
}

TEST_CASE("workers: start() inside a container is refused; listen() errors") {
  Co::WorkerPool pool;
  int result = 0;
  {
    LogCapture log;
    Co::run([&] { result = pool.start([](int) {}); });
    CHECK(log.count(Co::LogLevel::error, "inside a coroutine container") == 1);
  }
  CHECK(result == -1);
  CHECK(pool.error().value() == EPERM);
  Co::WorkerPool first;
  REQUIRE(first.listen("127.0.0.1", 0) >= 0);
  Co::WorkerPool second;
  CHECK(second.listen("127.0.0.1", first.port()) == -1);
  CHECK(second.error().value() == EADDRINUSE);
  CHECK(first.listen("127.0.0.1", 0) == -1);  // once
  CHECK(first.error().value() == EBUSY);
}

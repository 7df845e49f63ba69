// fork() and coroutine containers: a child forked after the parent's container ended runs
// containers of its own; a child forked inside a coroutine cannot use its parent's container
// (every way into it fails with EPERM and one ERROR line, and the child ends when its coroutine
// ends) while the parent goes on; a child forked while other threads log and resolve names
// does not inherit the library's locks held.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coring/coring.hpp>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::ChildResult;
using coring_test::run_in_child;

namespace {

// A container that uses every kind of wait once; returns 0 when all worked.
int use_a_container() {
  int code = 0;
  int rc = Co::run([&] {
    if (!Co::this_coroutine::sleep(1ms)) code = 1;
    Co::Socket listener;
    if (!listener.bind("127.0.0.1", 0) || !listener.listen()) {
      code = 2;
      return;
    }
    Co::create([&] {
      auto connection = listener.accept(5s);
      if (!connection) return;
      char byte;
      if (connection->recv(&byte, 1, 5s) == 1) connection->send(&byte, 1, 5s);
    });
    Co::Socket client;
    char echoed = 0;
    if (!client.connect("127.0.0.1", listener.local_port(), 5s) || client.send("x", 1) != 1 ||
        client.recv(&echoed, 1, 5s) != 1 || echoed != 'x') {
      code = 3;
    }
    if (Co::offload([] { return 42; }) != 42) code = 4;
    if (Co::resolve("localhost", AF_INET).empty()) code = 5;
    Co::Channel<int> ch(1);
    Co::create([&] { ch.push(7); });
    if (ch.pop(5s).value_or(0) != 7) code = 6;
  });
  return rc == 0 ? code : 10 + Co::last_error().value();
}

}  // namespace

TEST_CASE("fork: a child forked after the parent's container ended runs containers of its own") {
  REQUIRE(use_a_container() == 0);  // the parent has had a container (and offload threads)
  ChildResult child = run_in_child([] { return use_a_container(); });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
  CHECK(use_a_container() == 0);  // and the parent still can
}

TEST_CASE("fork: a child forked inside a coroutine cannot use the parent's container") {
  // The child reports what it saw on a pipe; the parent's container goes on meanwhile.
  int report[2];
  REQUIRE(::pipe(report) == 0);
  int status = -1;
  std::string seen;
  bool parent_went_on = false;
  ssize_t reader_got = -2;
  Co::Mutex mutex;
  int rc = Co::run([&] {
    long sibling = Co::create([&] {  // holds the mutex while the child runs
      mutex.lock();
      Co::this_coroutine::sleep(50ms);
      mutex.unlock();
    });
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
    Co::Socket client;
    CO_REQUIRE(client.connect("127.0.0.1", listener.local_port(), 5s));
    auto server = listener.accept(5s);
    CO_REQUIRE(server.has_value());
    // A reader whose recv the parent's ring holds: a child that wrote a cancellation into the
    // ring (shared memory) would end it with ECANCELED.
    long reader = Co::create([&] {
      char byte;
      reader_got = server->recv(&byte, 1, 5s);
    });
    Co::this_coroutine::sleep(1ms);  // the recv is submitted
    pid_t pid = ::fork();
    if (pid == 0) {  // the child: this coroutine is all it has of the container
      ::close(report[0]);
      ::dup2(report[1], STDERR_FILENO);  // the ERROR line goes to the report too
      ::alarm(10);
      std::string line;
      bool slept = Co::this_coroutine::sleep(1ms);
      line += "sleep=" + std::to_string(slept) + "/" + std::to_string(Co::last_error().value());
      long created = Co::create([] {});
      line += " create=" + std::to_string(created) + "/" + std::to_string(Co::last_error().value());
      Co::Socket socket;
      bool connected = socket.connect("127.0.0.1", 9, 1s);
      line +=
          " connect=" + std::to_string(connected) + "/" + std::to_string(socket.error().value());
      line += " resume=" + std::to_string(Co::resume(sibling));
      Co::Channel<int> ch(0);
      line += " pop=" + std::to_string(ch.pop(1s).has_value());
      bool cancelled = Co::cancel(reader);
      line +=
          " cancel=" + std::to_string(cancelled) + "/" + std::to_string(Co::last_error().value());
      try {
        std::lock_guard<Co::Mutex> guard(mutex);  // held by another of the parent's coroutines
        line += " mutex=locked";
      } catch (const std::logic_error&) {
        line += " mutex=refused";
      }
      server->close();  // must not write into the parent's ring either
      line += "\n";
      ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
      (void)ignored;
      return;  // the coroutine ends: so does the child, with status 0
    }
    ::close(report[1]);
    CHECK(pid > 0);
    // The parent's container is untouched: its sibling coroutine ends, new waits work.
    CHECK(Co::join({sibling}, 5s));
    parent_went_on = Co::this_coroutine::sleep(1ms);
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(report[0], buffer, sizeof buffer)) > 0) {
      seen.append(buffer, static_cast<size_t>(n));
    }
    ::close(report[0]);
    ::waitpid(pid, &status, 0);
    // The parent's ring is intact: its reader still waits and gets the byte.
    CHECK(client.send("x", 1, 5s) == 1);
    CHECK(Co::join({reader}, 5s));
  });
  CHECK(rc == 0);
  CHECK(parent_went_on);
  INFO("child wrote: " << seen);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string eperm = std::to_string(EPERM);
  CHECK(seen.find("sleep=0/" + eperm + " create=-1/" + eperm + " connect=0/" + eperm +
                  " resume=0 pop=0 cancel=0/" + eperm + " mutex=refused") != std::string::npos);
  CHECK(reader_got == 1);
  // One ERROR line that says what happened, not one per call or a loop of them.
  size_t errors = 0;
  for (const std::string& line : coring_test::split_lines(seen)) {
    errors += line.find("ERROR") != std::string::npos;
  }
  CHECK(errors == 1);
  CHECK(seen.find("forked") != std::string::npos);
}

TEST_CASE("fork: a child forked while other threads log and resolve inherits no lock held") {
  // Another thread logs through a slow sink and resolves cached names the whole time, so that
  // a fork often lands while it is inside the library; each child must still log and resolve.
  std::atomic<bool> stop{false};
  auto entry = coring_test::hosts_file_entry();
  std::string name = entry ? entry->first : "localhost";
  // In the cache before the threads start: a child of a threaded process may not call
  // getaddrinfo (glibc's own locks may be held by a thread that does not exist in the child),
  // so the child must find the answer in coring's cache, behind coring's lock.
  REQUIRE_FALSE(Co::resolve(name, AF_INET).empty());
  Co::set_log_sink([](Co::LogLevel, long, std::string_view) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  });
  std::thread busy([&] {
    while (!stop.load()) {
      Co::log(Co::LogLevel::warning, "busy");
      Co::resolve(name, AF_INET);
    }
  });
  int failures = 0;
  for (int i = 0; i < 40; ++i) {
    ChildResult child = run_in_child(
        [&] {
          Co::log(Co::LogLevel::warning, "child logs");
          return Co::resolve(name, AF_INET).empty() ? 1 : 0;
        },
        5);
    if (child.exit_code() != 0) {
      ++failures;
      MESSAGE(child.describe());
    }
  }
  stop = true;
  busy.join();
  Co::set_log_sink({});
  CHECK(failures == 0);
}

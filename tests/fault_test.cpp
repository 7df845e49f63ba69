// Faults that must end the process, or stop run() before it starts: a coroutine stack
// overflow, an exception escaping a coroutine, and io_uring being unavailable. The fatal ones run
// in a forked child (tests/test_util.hpp: run_in_child) whose stderr and exit status we inspect.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <cerrno>
#include <coring/coring.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/uring_engine.hpp"  // white-box: hide kernel features from the engine
#include "seccomp_util.hpp"
#include "test_util.hpp"

using coring_test::child_report;
using coring_test::forbid_syscall;
using coring_test::LogCapture;
using coring_test::run_in_child;
using coring_test::split_lines;

namespace {

// Recurses until the stack runs out. The depth limit is never reached; it only keeps the
// compiler from proving the recursion infinite.
[[gnu::noinline]] int recurse(int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth > 1'000'000'000) return frame[0];
  return recurse(depth + 1) + frame[0];
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The child's report line "RESULT ..." and the other lines (the log).
struct Split {
  std::string result;
  std::vector<std::string> others;
};
Split split_result(const std::string& output) {
  Split s;
  for (std::string& line : split_lines(output)) {
    if (line.rfind("RESULT ", 0) == 0) {
      s.result = line;
    } else {
      s.others.push_back(line);
    }
  }
  return s;
}

}  // namespace

namespace {

// The id a child printed first ("CID <n>"), before the failure under test; the failure's message
// must name it.
std::string reported_cid(const std::vector<std::string>& lines) {
  REQUIRE(!lines.empty());
  REQUIRE(lines[0].rfind("CID ", 0) == 0);
  return lines[0].substr(4);
}

}  // namespace

TEST_CASE("a stack overflow ends the process with a message naming the coroutine") {
  // Under ASan the overflow still hits our guard region, and the handler is ours as long as
  // ASan lets user SIGSEGV handlers in (its default), so this runs in both builds.
  for (bool in_main : {false, true}) {
    CAPTURE(in_main);
    auto child = run_in_child([in_main] {
      Co::RunOptions options;
      options.stack_size = 64 * 1024;
      Co::run(
          [in_main] {
            auto overflow = [] {
              child_report("CID " + std::to_string(Co::this_coroutine::id()));
              recurse(0);
            };
            if (in_main) {
              overflow();
            } else {
              Co::create(overflow);
            }
          },
          options);
      child_report("RESULT survived");
    });
    INFO(child.describe());
    if (coring_test::sanitized() && contains(child.output, "AddressSanitizer: stack-overflow")) {
      // ASAN_OPTIONS kept the SIGSEGV handler to ASan (allow_user_segv_handler=0): it reports
      // the overflow itself. With ASan's defaults our handler runs and the checks below apply.
      MESSAGE("stack overflow reported by AddressSanitizer itself; coroutine naming not checked");
      continue;
    }
    CHECK(child.signaled());
    CHECK(child.signal() == SIGSEGV);
    auto lines = split_lines(child.output);
    std::string cid = reported_cid(lines);
    CHECK(contains(child.output, "stack overflow in coroutine#" + cid + " "));
    CHECK_FALSE(contains(child.output, "RESULT survived"));
  }
}

TEST_CASE("an exception escaping a coroutine ends the process naming the coroutine and what()") {
  for (bool in_main : {false, true}) {
    CAPTURE(in_main);
    auto child = run_in_child([in_main] {
      Co::run([in_main] {
        auto body = [] {
          child_report("CID " + std::to_string(Co::this_coroutine::id()));
          Co::this_coroutine::sleep(std::chrono::milliseconds(1));
          throw std::runtime_error("the answer is 42");
        };
        if (in_main) {
          body();
        } else {
          Co::create(body);
          Co::this_coroutine::sleep(std::chrono::milliseconds(50));
        }
      });
      child_report("RESULT survived");
    });
    INFO(child.describe());
    CHECK(child.signaled());
    CHECK(child.signal() == SIGABRT);  // std::terminate
    auto lines = split_lines(child.output);
    std::string cid = reported_cid(lines);
    bool named = false;
    for (const std::string& line : lines) {
      if (contains(line, "ERROR") && contains(line, "coroutine#" + cid + " ") &&
          contains(line, "the answer is 42")) {
        named = true;
      }
    }
    CHECK(named);
    CHECK_FALSE(contains(child.output, "RESULT survived"));
  }
}

TEST_CASE("a non-std exception or a throwing defer also ends the process naming the coroutine") {
  for (int variant : {0, 1}) {
    CAPTURE(variant);
    auto child = run_in_child([variant] {
      Co::run([variant] {
        Co::create([variant] {
          child_report("CID " + std::to_string(Co::this_coroutine::id()));
          if (variant == 0) throw 42;
          Co::this_coroutine::defer([] { throw std::logic_error("deferred failure"); });
        });
      });
      child_report("RESULT survived");
    });
    INFO(child.describe());
    CHECK(child.signaled());
    CHECK(child.signal() == SIGABRT);
    auto lines = split_lines(child.output);
    std::string cid = reported_cid(lines);
    bool named = false;
    for (const std::string& line : lines) {
      std::string name = "coroutine#" + cid;
      if (contains(line, "ERROR") && (contains(line, name + " ") || contains(line, name + ":")) &&
          (variant == 0 || contains(line, "deferred failure"))) {
        named = true;
      }
    }
    CHECK(named);
    CHECK_FALSE(contains(child.output, "RESULT survived"));
  }
}

TEST_CASE(
    "io_uring refused by a seccomp filter: io_uring fails with one ERROR, automatic uses epoll") {
  // Docker's default seccomp profile refuses io_uring_setup: Engine::io_uring fails as the
  // kernel says (one ERROR line), Engine::automatic falls back to epoll (one INFO line) and
  // serves real sockets.
  for (int error : {EPERM, ENOSYS}) {
    CAPTURE(error);
    auto child = run_in_child([error] {
      ::unsetenv("CORING_ENGINE");
      if (!forbid_syscall(__NR_io_uring_setup, error)) {
        child_report("RESULT no-seccomp");
        return;
      }
      bool ran = false;
      int rc = Co::run([&] { ran = true; }, coring_test::io_uring_options());
      int reported = Co::last_error().value();
      child_report("RESULT rc=" + std::to_string(rc) + " error=" + std::to_string(reported) +
                   " ran=" + std::to_string(ran));
      // automatic: epoll, with a real echo over TCP.
      Co::Engine engine = Co::Engine::automatic;
      std::string echoed;
      rc = Co::run([&] {
        engine = Co::stats().engine;
        Co::Socket listener;
        if (!listener.bind("127.0.0.1", 0) || !listener.listen()) return;
        Co::create([&] {
          auto connection = listener.accept(std::chrono::seconds(5));
          char buffer[16];
          ssize_t n = connection ? connection->recv(buffer, sizeof buffer) : -1;
          if (n > 0) connection->send_all(buffer, static_cast<size_t>(n));
        });
        Co::Socket client;
        char buffer[16];
        if (client.connect("127.0.0.1", listener.local_port()) && client.send_all("ping", 4) == 4 &&
            client.recv_all(buffer, 4) == 4) {
          echoed.assign(buffer, 4);
        }
      });
      child_report("AUTOMATIC rc=" + std::to_string(rc) +
                   " engine=" + std::string(Co::engine_name(engine)) + " echoed=" + echoed);
    });
    INFO(child.describe());
    CHECK(child.exited());
    CHECK(child.exit_code() == 0);
    Split split = split_result(child.output);
    if (split.result == "RESULT no-seccomp") {
      MESSAGE("seccomp filters are not available here; skipped");
      continue;
    }
    CHECK(split.result == "RESULT rc=-1 error=" + std::to_string(error) + " ran=0");
    CHECK(contains(child.output, "AUTOMATIC rc=0 engine=epoll echoed=ping"));
    size_t errors = 0, infos = 0;
    for (const std::string& line : split.others) {
      errors += contains(line, "] ERROR ");
      infos += contains(line, "] INFO ") && contains(line, "epoll") &&
               contains(line, std::strerror(error));
    }
    CHECK(errors == 1);  // one clear line for the io_uring run
    CHECK(infos == 1);   // one line saying why automatic chose epoll
  }
}

TEST_CASE("ring_entries = 0: run() returns -1 with EINVAL and one ERROR line") {
  LogCapture logs;
  bool ran = false;
  Co::RunOptions options;
  options.ring_entries = 0;
  int rc = Co::run([&] { ran = true; }, options);
  CHECK(rc == -1);
  CHECK(Co::last_error() == std::errc::invalid_argument);
  CHECK_FALSE(ran);
  INFO(logs.dump());
  CHECK(logs.count_at(Co::LogLevel::error) == 1);
  CHECK(logs.count(Co::LogLevel::error, "io_uring") == 1);
  // and the thread can run a container afterwards
  CHECK(Co::run([&] { ran = true; }) == 0);
  CHECK(ran);
}

TEST_CASE("SIGPIPE: a container ignores it unless the application installed a handler") {
  // A plain write() to a pipe whose reader is gone: with SIGPIPE at its default the process
  // would die; inside a container it must fail with EPIPE.
  auto child = run_in_child([] {
    ::signal(SIGPIPE, SIG_DFL);
    Co::run([] {
      int fds[2];
      if (::pipe(fds) != 0) return;
      ::close(fds[0]);
      errno = 0;
      ssize_t written = ::write(fds[1], "x", 1);
      child_report(written < 0 && errno == EPIPE ? "RESULT EPIPE" : "RESULT other");
      ::close(fds[1]);
    });
  });
  INFO(child.describe());
  CHECK(child.exited());
  CHECK(contains(child.output, "RESULT EPIPE"));

  // An application's own handler is kept.
  auto handled = run_in_child([] {
    static volatile sig_atomic_t caught = 0;
    ::signal(SIGPIPE, [](int) { caught = 1; });
    Co::run([] {
      int fds[2];
      if (::pipe(fds) != 0) return;
      ::close(fds[0]);
      ssize_t written = ::write(fds[1], "x", 1);
      (void)written;
      ::close(fds[1]);
    });
    child_report(caught ? "RESULT handler ran" : "RESULT handler replaced");
  });
  INFO(handled.describe());
  CHECK(contains(handled.output, "RESULT handler ran"));
}

TEST_CASE("a kernel without a feature or opcode the engine needs: run() fails with ENOSYS") {
  if (coring_test::epoll_pass()) return;  // the io_uring engine's own checks
  // Engine::hide_for_test makes set-up see the kernel without them (this kernel has them all).
  struct Hidden {
    uint32_t features;
    int opcode;
    const char* named;
  };
  for (const Hidden& hidden : {Hidden{IORING_FEAT_EXT_ARG, -1, "IORING_FEAT_EXT_ARG"},
                               Hidden{IORING_FEAT_NODROP, -1, "IORING_FEAT_NODROP"},
                               Hidden{0, IORING_OP_RECV, "IORING_OP_RECV"},
                               Hidden{0, IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"}}) {
    CAPTURE(hidden.named);
    auto child = run_in_child([&] {
      Co::detail::UringEngine::hide_for_test(hidden.features, hidden.opcode);
      bool ran = false;
      int rc = Co::run([&] { ran = true; }, coring_test::io_uring_options());
      child_report("RESULT rc=" + std::to_string(rc) + " error=" +
                   std::to_string(Co::last_error().value()) + " ran=" + std::to_string(ran));
    });
    INFO(child.describe());
    CHECK(child.exit_code() == 0);
    Split split = split_result(child.output);
    CHECK(split.result == "RESULT rc=-1 error=" + std::to_string(ENOSYS) + " ran=0");
    REQUIRE(split.others.size() == 1);
    CHECK(contains(split.others[0], "] ERROR "));
    CHECK(contains(split.others[0], hidden.named));
  }
}

// A seccomp filter installed while the container runs makes every io_uring_enter fail with
// EPERM. The scheduler must back off instead of looping, give up after about a second, fail the
// calls the kernel never saw with EPERM, keep timers and offload() working, and end run() with
// -1 and EPERM. A recv already in the kernel: with multishot receive off, the kernel holds the
// caller's buffer, so the coroutine is abandoned (held=0, its buffer may still be written); with
// it on, the kernel holds only the engine's buffers and the recv waits in the engine, so the
// unwinding at the end cancels it and the coroutine returns (held=1).
static void check_enter_failing(bool multishot) {
  auto child = run_in_child(
      [multishot] {
        ::setenv("CORING_MULTISHOT", multishot ? "1" : "0", 1);
        bool slept = false, held_returned = false;
        ssize_t late_recv = 0;
        int late_error = 0, offloaded = 0;
        bool filtered = true;
        int rc = Co::run(
            [&] {
              Co::Socket listener;
              if (!listener.bind("127.0.0.1", 0) || !listener.listen()) return;
              Co::Socket client;
              if (!client.connect("127.0.0.1", listener.local_port(), std::chrono::seconds(5)))
                return;
              auto accepted = listener.accept(std::chrono::seconds(5));
              if (!accepted) return;
              Co::create([&] {
                char byte;
                accepted->recv(&byte, 1, Co::kForever);  // taken by the kernel, never completes
                held_returned = true;
              });
              Co::this_coroutine::sleep(std::chrono::milliseconds(10));  // the recv is submitted
              filtered = forbid_syscall(__NR_io_uring_enter, EPERM);
              if (!filtered) return;
              slept = Co::this_coroutine::sleep(std::chrono::milliseconds(50));
              char byte;
              late_recv = client.recv(&byte, 1, std::chrono::seconds(30));
              late_error = client.error().value();
              offloaded = Co::offload([] { return 7; });
            },
            coring_test::io_uring_options());
        if (!filtered) {
          child_report("RESULT no-seccomp");
          return;
        }
        child_report("RESULT rc=" + std::to_string(rc) +
                     " error=" + std::to_string(Co::last_error().value()) +
                     " slept=" + std::to_string(slept) + " recv=" + std::to_string(late_recv) +
                     "/" + std::to_string(late_error) + " offload=" + std::to_string(offloaded) +
                     " held=" + std::to_string(held_returned));
      },
      30);
  INFO(child.describe());
  CHECK(child.exit_code() == 0);
  Split split = split_result(child.output);
  if (split.result == "RESULT no-seccomp") {
    MESSAGE("seccomp filters are not available here; skipped");
    return;
  }
  const std::string eperm = std::to_string(EPERM);
  CHECK(split.result == "RESULT rc=-1 error=" + eperm + " slept=1 recv=-1/" + eperm +
                            " offload=7 held=" + (multishot ? "1" : "0"));
  size_t errors = 0;
  for (const std::string& line : split.others) errors += contains(line, "] ERROR ");
  CHECK(errors >= 2);  // the first failure, and giving up
  CHECK(errors <= 5);  // not a loop of them
}

TEST_CASE("io_uring_enter that keeps failing: a few ERROR lines, calls fail with its errno") {
  if (coring_test::epoll_pass()) return;  // the io_uring engine's own machinery
  SUBCASE("plain receives") {
    check_enter_failing(false);
  }
  SUBCASE("multishot receive") {
    check_enter_failing(true);
  }
}

TEST_CASE("a submission queue of one entry: cancellations and wake-ups are never dropped") {
  // With ring_entries 1 every request beyond the first needs the queue flushed first: 64 recvs,
  // their 64 cancellations from one close() loop, and offloaded jobs whose wake-up read is
  // re-armed each time. Every reader must wake with ECANCELED, every close() return.
  int cancelled = 0, closed = 0, offloaded = 0;
  Co::RunOptions options;
  options.ring_entries = 1;
  int rc = Co::run(
      [&] {
        constexpr int kReaders = 64;
        Co::Socket listener;
        CO_REQUIRE(listener.bind("127.0.0.1", 0));
        CO_REQUIRE(listener.listen(kReaders));
        std::vector<Co::Socket> clients, servers;
        for (int i = 0; i < kReaders; ++i) {
          clients.emplace_back();
          CO_REQUIRE(
              clients.back().connect("127.0.0.1", listener.local_port(), std::chrono::seconds(5)));
          auto accepted = listener.accept(std::chrono::seconds(5));
          CO_REQUIRE(accepted.has_value());
          servers.push_back(std::move(*accepted));
        }
        Co::WaitGroup wg;
        for (int i = 0; i < kReaders; ++i) {
          wg.add(1);
          Co::create([&, i] {
            char byte;
            if (servers[i].recv(&byte, 1, std::chrono::seconds(5)) == -1 &&
                servers[i].error().value() == ECANCELED) {
              ++cancelled;
            }
            wg.done();
          });
        }
        for (int i = 0; i < 8; ++i) {
          wg.add(1);
          Co::create([&, i] {
            offloaded += Co::offload([i] { return i; }) == i;
            wg.done();
          });
        }
        for (Co::Socket& server : servers) closed += server.close();
        CHECK(wg.wait(std::chrono::seconds(10)));
      },
      options);
  CHECK(rc == 0);
  CHECK(cancelled == 64);
  CHECK(closed == 64);
  CHECK(offloaded == 8);
}

TEST_CASE("a ring that fails inside a coroutine's request still keeps abandoned stacks mapped") {
  if (coring_test::epoll_pass()) return;  // the io_uring engine's own machinery
  // The ring gives up inside get_sqe() (a full submission queue while io_uring_enter fails),
  // not in the scheduler's own poll: the stack of the coroutine whose recv the kernel holds
  // must stay mapped after run() returns, since the kernel may still write into its buffer.
  // (With multishot receive the kernel holds only the engine's buffers and the recv waits in
  // the engine, so nothing of the stack is the kernel's: the case needs plain receives.)
  auto child = run_in_child(
      [] {
        ::setenv("CORING_MULTISHOT", "0", 1);
        void* held_buffer = nullptr;
        bool filtered = true;
        Co::RunOptions options = coring_test::io_uring_options();
        options.ring_entries = 4;
        int rc = Co::run(
            [&] {
              Co::Socket listener;
              if (!listener.bind("127.0.0.1", 0) || !listener.listen()) return;
              Co::Socket client;
              if (!client.connect("127.0.0.1", listener.local_port(), std::chrono::seconds(5))) {
                return;
              }
              auto accepted = listener.accept(std::chrono::seconds(5));
              if (!accepted) return;
              Co::create([&] {
                char buffer[64];
                held_buffer = buffer;
                accepted->recv(buffer, sizeof buffer, Co::kForever);
              });
              Co::this_coroutine::sleep(std::chrono::milliseconds(10));  // submitted
              filtered = forbid_syscall(__NR_io_uring_enter, EPERM);
              if (!filtered) return;
              for (int i = 0; i < 8; ++i) {
                Co::create([] { Co::read_file("/proc/self/status"); });
              }
            },
            options);
        if (!filtered) {
          child_report("RESULT no-seccomp");
          return;
        }
        unsigned char resident = 0;
        auto page = reinterpret_cast<uintptr_t>(held_buffer) & ~uintptr_t{4095};
        bool mapped = held_buffer != nullptr &&
                      ::mincore(reinterpret_cast<void*>(page), 4096, &resident) == 0;
        child_report("RESULT rc=" + std::to_string(rc) +
                     " error=" + std::to_string(Co::last_error().value()) +
                     " mapped=" + std::to_string(mapped));
      },
      30);
  INFO(child.describe());
  CHECK(child.exit_code() == 0);
  Split split = split_result(child.output);
  if (split.result == "RESULT no-seccomp") return;
  CHECK(split.result == "RESULT rc=-1 error=" + std::to_string(EPERM) + " mapped=1");
}

TEST_CASE("RunOptions out of range: huge stack_size is EINVAL, huge ring_entries is clamped") {
  LogCapture logs;
  bool ran = false;
  Co::RunOptions huge_stack;
  huge_stack.stack_size = SIZE_MAX;
  huge_stack.stack_guard = false;
  CHECK(Co::run([&] { ran = true; }, huge_stack) == -1);
  CHECK(Co::last_error() == std::errc::invalid_argument);
  CHECK_FALSE(ran);
  huge_stack.stack_guard = true;
  huge_stack.stack_size = (size_t{1} << 30) + 1;
  CHECK(Co::run([&] { ran = true; }, huge_stack) == -1);
  CHECK_FALSE(ran);
  Co::RunOptions huge_ring;
  huge_ring.ring_entries = 1u << 30;  // entries * 4 would overflow
  CHECK(Co::run([&] { ran = Co::this_coroutine::sleep(std::chrono::milliseconds(1)); },
                huge_ring) == 0);
  CHECK(ran);
}

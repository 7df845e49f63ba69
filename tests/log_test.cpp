// Logging: level names, the level filter, a custom sink, and the default stderr line format.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <coring/coring.hpp>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.hpp"

using coring_test::LogCapture;
using coring_test::split_lines;

namespace {

// Captures what is written to fd 2 while fn runs (through a temporary file).
template <class F>
std::string capture_stderr(F&& fn) {
  std::fflush(stderr);
  char path[] = "/tmp/coring-log-test-XXXXXX";
  int file = ::mkstemp(path);
  if (file < 0) return "mkstemp failed";
  ::unlink(path);
  int saved = ::dup(STDERR_FILENO);
  ::dup2(file, STDERR_FILENO);
  fn();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string text;
  char buffer[4096];
  ::lseek(file, 0, SEEK_SET);
  ssize_t n;
  while ((n = ::read(file, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  ::close(file);
  return text;
}

}  // namespace

TEST_CASE("level names") {
  CHECK(Co::log_level_name(Co::LogLevel::debug) == "DEBUG");
  CHECK(Co::log_level_name(Co::LogLevel::trace) == "TRACE");
  CHECK(Co::log_level_name(Co::LogLevel::info) == "INFO");
  CHECK(Co::log_level_name(Co::LogLevel::notice) == "NOTICE");
  CHECK(Co::log_level_name(Co::LogLevel::warning) == "WARNING");
  CHECK(Co::log_level_name(Co::LogLevel::error) == "ERROR");
}

TEST_CASE("the default level is info") {
  CHECK(Co::log_level() == Co::LogLevel::info);
}

TEST_CASE("a sink receives level, coroutine id and message; the level filters") {
  LogCapture logs(Co::LogLevel::warning);
  CHECK(Co::log_level() == Co::LogLevel::warning);
  Co::log(Co::LogLevel::info, "dropped info");
  Co::log(Co::LogLevel::debug, "dropped debug");
  Co::log(Co::LogLevel::warning, "kept warning");
  Co::log(Co::LogLevel::error, "kept error");
  Co::log(Co::LogLevel::none, "never");
  long cid = 0;
  int rc = Co::run([&] {
    cid = Co::this_coroutine::id();
    Co::log(Co::LogLevel::error, "from a coroutine");
  });
  CHECK(rc == 0);
  REQUIRE(logs.records().size() == 3);
  CHECK(logs.records()[0].level == Co::LogLevel::warning);
  CHECK(logs.records()[0].cid == -1);
  CHECK(logs.records()[0].message == "kept warning");
  CHECK(logs.records()[1].level == Co::LogLevel::error);
  CHECK(logs.records()[1].message == "kept error");
  CHECK(logs.records()[2].cid == cid);
  CHECK(logs.records()[2].message == "from a coroutine");

  Co::set_log_level(Co::LogLevel::none);  // silences everything, errors included
  Co::log(Co::LogLevel::error, "silenced");
  CHECK(logs.records().size() == 3);

  Co::set_log_level(Co::LogLevel::debug);
  Co::log(Co::LogLevel::debug, "now kept");
  CHECK(logs.records().size() == 4);
}

TEST_CASE("the default sink writes one line to stderr with the level name, pid and cid") {
  Co::set_log_sink([](Co::LogLevel, long, std::string_view) {});
  Co::set_log_sink({});  // back to the default
  long cid = 0;
  std::string text = capture_stderr([&] {
    Co::log(Co::LogLevel::warning, "outside message");
    Co::log(Co::LogLevel::debug, "below the level");
    Co::run([&] {
      cid = Co::this_coroutine::id();
      Co::log(Co::LogLevel::error, "inside message");
    });
  });
  auto lines = split_lines(text);
  REQUIRE(lines.size() == 2);
  CHECK(text.back() == '\n');
  std::string pid = "pid=" + std::to_string(::getpid());
  // [2026-11-23 14:39:37.123456 pid=4242 cid=12] WARNING message
  CHECK(lines[0].front() == '[');
  CHECK(lines[0].find(pid) != std::string::npos);
  CHECK(lines[0].find("cid=-1] WARNING outside message") != std::string::npos);
  CHECK(lines[1].find(pid) != std::string::npos);
  CHECK(lines[1].find("cid=" + std::to_string(cid) + "] ERROR inside message") !=
        std::string::npos);
  CHECK(cid > 0);
}

// ---- what a sink may do ------------------------------------------------------------------------

TEST_CASE("a sink that logs: its own message goes to stderr, the outer one to the sink") {
  coring_test::ChildResult child = coring_test::run_in_child([] {
    std::vector<std::string> seen;
    Co::set_log_sink([&](Co::LogLevel, long, std::string_view message) {
      seen.emplace_back(message);
      Co::log(Co::LogLevel::warning, "logged from inside the sink");  // re-entry
    });
    Co::log(Co::LogLevel::warning, "outer");
    Co::run([] { Co::log(Co::LogLevel::warning, "outer, in a coroutine"); });
    Co::set_log_sink({});
    return seen == std::vector<std::string>{"outer", "outer, in a coroutine"} ? 0 : 1;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
  CHECK(child.output.find("WARNING logged from inside the sink") != std::string::npos);
}

TEST_CASE("a sink that waits on coring I/O: the other coroutines log meanwhile, none is lost") {
  // The sink hands every message to a logger coroutine over an unbuffered channel, so a
  // coroutine that logs waits there while the others run and log too.
  coring_test::ChildResult child = coring_test::run_in_child(
      [] {
        std::vector<std::string> written;
        int rc = Co::run([&] {
          Co::Channel<std::string> lines(0);
          long logger = Co::create([&] {
            while (auto line = lines.pop()) written.push_back(*line);
          });
          Co::set_log_sink([&](Co::LogLevel, long cid, std::string_view message) {
            if (cid != logger) lines.push(std::string(message));
          });
          Co::WaitGroup wg;
          for (int i = 0; i < 20; ++i) {
            wg.add(1);
            Co::create([&, i] {
              for (int j = 0; j < 5; ++j) {
                Co::log(Co::LogLevel::warning, std::to_string(i) + "." + std::to_string(j));
              }
              wg.done();
            });
          }
          wg.wait();
          Co::set_log_sink({});
          lines.close();
        });
        return rc == 0 && written.size() == 100 ? 0 : 1;
      },
      10);
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("a sink that throws: the exception does not escape, the message reaches stderr") {
  coring_test::ChildResult child = coring_test::run_in_child([] {
    Co::set_log_sink([](Co::LogLevel, long, std::string_view) { throw std::runtime_error("x"); });
    Co::log(Co::LogLevel::warning, "still written");
    int rc = Co::run([] { Co::log(Co::LogLevel::error, "from a coroutine"); });
    Co::set_log_sink({});
    return rc;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
  CHECK(child.output.find("WARNING still written") != std::string::npos);
  CHECK(child.output.find("ERROR from a coroutine") != std::string::npos);
}

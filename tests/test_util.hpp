// Helpers shared by the doctest suites.
//
// - run_in_child(fn): forks, runs fn in the child with stderr going to a pipe, and returns the
//   child's wait status and everything it wrote to stderr. For behaviour that must end the
//   process (stack overflow, an exception escaping a coroutine) or that needs a process-wide
//   setting we cannot undo (a seccomp filter).
// - LogCapture: routes coring's log into a vector for the lifetime of the object, then restores
//   the default sink (stderr) and the level it found.
// - Counted: bumps a counter when destroyed, to count unwound locals.
// - TempDir: a private directory removed with its contents.
// - sanitized(): true in the ASan+UBSan build (scripts/test.sh also sets CORING_SANITIZED=1).
#pragma once

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <coring/coroutine.hpp>
#include <coring/log.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

// REQUIRE for code that runs inside a coroutine: records the failure and leaves the enclosing
// function (a REQUIRE would throw, and an exception that escapes a coroutine ends the program).
#define CO_REQUIRE(...)                          \
  do {                                           \
    bool co_require_ok_ = !!(__VA_ARGS__);       \
    CHECK_MESSAGE(co_require_ok_, #__VA_ARGS__); \
    if (!co_require_ok_) return;                 \
  } while (false)

namespace coring_test {

inline bool sanitized() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#endif
#endif
  const char* flag = std::getenv("CORING_SANITIZED");
  return flag != nullptr && std::string_view(flag) == "1";
}

// The engine this pass of the suites runs (scripts/test.sh runs every suite with
// CORING_ENGINE=io_uring and again with CORING_ENGINE=epoll). Tests of one engine's own
// machinery say so and skip themselves under the other.
inline bool epoll_pass() {
  const char* engine = std::getenv("CORING_ENGINE");
  return engine != nullptr && std::string_view(engine) == "epoll";
}

// RunOptions for a test of the io_uring engine itself.
inline coring::RunOptions io_uring_options() {
  coring::RunOptions options;
  options.engine = coring::Engine::io_uring;
  return options;
}

struct ChildResult {
  int status = 0;      // as from waitpid()
  std::string output;  // everything the child wrote to stderr or stdout

  bool exited() const { return WIFEXITED(status); }
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  bool signaled() const { return WIFSIGNALED(status); }
  int signal() const { return WIFSIGNALED(status) ? WTERMSIG(status) : 0; }
  std::string describe() const {
    std::string text = signaled() ? "killed by signal " + std::to_string(signal())
                       : exited() ? "exited with status " + std::to_string(exit_code())
                                  : "status " + std::to_string(status);
    return text + "; stderr:\n" + output;
  }
};

// Runs fn() in a forked child whose stderr (and stdout) is captured. The child exits with status 0
// when fn returns (or fn's own return value, if it returns an int), 99 when it throws; it gets an
// alarm so that a hang fails the test instead of blocking the suite, and no core dump so that an
// expected crash stays cheap.
template <class F>
ChildResult run_in_child(F&& fn, unsigned timeout_seconds = 20) {
  ChildResult result;
  int fds[2];
  if (::pipe(fds) != 0) {
    result.status = -1;
    result.output = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid < 0) {
    result.status = -1;
    result.output = std::string("fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return result;
  }
  if (pid == 0) {
    // stdout too: nothing the child prints may pass for the parent's doctest report.
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::alarm(timeout_seconds);
    // doctest's crash handler would report an expected abort as a failed test case.
    ::signal(SIGABRT, SIG_DFL);
    coring::set_log_sink({});
    coring::set_log_level(coring::LogLevel::info);
    int code = 0;
    try {
      if constexpr (std::is_void_v<decltype(fn())>) {
        fn();
      } else {
        code = fn();  // an int: the child's exit status
      }
    } catch (...) {
      ::_exit(99);
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  ::close(fds[1]);
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n > 0) {
      result.output.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  while (::waitpid(pid, &result.status, 0) < 0 && errno == EINTR) {
  }
  return result;
}

// Runs the test case named test_case (a doctest name filter: no commas) again in a fresh
// process of this test binary (fork, then exec), with the environment variable marker set: for
// what a process does once and keeps (the system CA store, say), which a forked child would
// inherit done. The test case tells which side it is on by getenv(marker), and in the fresh
// process calls fresh_process_ran() once it has run: a filter that matches nothing would
// otherwise pass as a doctest run of no test case does. Returns what the fresh process did; a
// child that never said it ran gets status 98.
inline constexpr std::string_view kFreshProcessRan = "fresh process: the test case ran";
inline ChildResult run_fresh(const std::string& test_case, const char* marker,
                             unsigned timeout_seconds = 60) {
  // Everything exec needs is made before fork: the child of a threaded process may only make
  // async-signal-safe calls.
  const std::string filter = "--test-case=" + test_case;
  const std::string marked = std::string(marker) + "=1";
  std::vector<const char*> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) environment.push_back(*entry);
  environment.push_back(marked.c_str());
  environment.push_back(nullptr);
  const char* args[] = {"fresh", filter.c_str(), "--no-version", nullptr};
  ChildResult result = run_in_child(
      [&]() -> int {
        ::execve("/proc/self/exe", const_cast<char* const*>(args),
                 const_cast<char* const*>(environment.data()));
        return 127;
      },
      timeout_seconds);
  if (result.exited() && result.exit_code() == 0 &&
      result.output.find(kFreshProcessRan) == std::string::npos) {
    result.status = 98 << 8;  // as exit(98): nothing ran
  }
  return result;
}

// Writes one line to stderr with a single write(2): how a child reports what it saw.
inline void child_report(const std::string& line) {
  std::string text = line + "\n";
  ssize_t ignored = ::write(STDERR_FILENO, text.data(), text.size());
  (void)ignored;
}

// In the fresh process of run_fresh(): says that the test case ran.
inline void fresh_process_ran() {
  child_report(std::string(kFreshProcessRan));
}

inline std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    size_t end = text.find('\n');
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(0, end));
    text.remove_prefix(end == text.size() ? end : end + 1);
  }
  return lines;
}

struct LogRecord {
  coring::LogLevel level;
  long cid;
  std::string message;
};

class LogCapture {
 public:
  explicit LogCapture(coring::LogLevel level = coring::LogLevel::debug)
      : previous_level_(coring::log_level()) {
    coring::set_log_level(level);
    coring::set_log_sink([this](coring::LogLevel lvl, long cid, std::string_view message) {
      records_.push_back({lvl, cid, std::string(message)});
    });
  }
  ~LogCapture() {
    coring::set_log_sink({});
    coring::set_log_level(previous_level_);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  const std::vector<LogRecord>& records() const { return records_; }

  // How many records at `level` contain `text`.
  size_t count(coring::LogLevel level, std::string_view text) const {
    size_t n = 0;
    for (const LogRecord& r : records_) {
      if (r.level == level && r.message.find(text) != std::string::npos) ++n;
    }
    return n;
  }
  // How many records at `level` are exactly `text`.
  size_t count_exact(coring::LogLevel level, std::string_view text) const {
    size_t n = 0;
    for (const LogRecord& r : records_) n += r.level == level && r.message == text;
    return n;
  }
  size_t count_at(coring::LogLevel level) const {
    size_t n = 0;
    for (const LogRecord& r : records_) n += r.level == level;
    return n;
  }
  std::string dump() const {
    std::string text;
    for (const LogRecord& r : records_) {
      text += std::string(coring::log_level_name(r.level)) + " cid=" + std::to_string(r.cid) + " " +
              r.message + "\n";
    }
    return text;
  }

 private:
  coring::LogLevel previous_level_;
  std::vector<LogRecord> records_;
};

// Counts its own destruction.
class Counted {
 public:
  explicit Counted(int* counter) : counter_(counter) {}
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  ~Counted() { ++*counter_; }

 private:
  int* counter_;
};

using Clock = std::chrono::steady_clock;

inline std::chrono::milliseconds elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since);
}

// A private directory (for Unix socket paths, files), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/coring-test-XXXXXX";
    if (::mkdtemp(name) != nullptr) path_ = name;
    REQUIRE(!path_.empty());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// Bytes that never repeat in a short period, so that a lost, duplicated or reordered chunk
// shows up in a comparison.
inline std::string pattern(size_t size, uint32_t seed) {
  std::string data(size, '\0');
  uint32_t x = seed * 2654435761u + 0x9e3779b9u;
  for (char& c : data) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x >> 11);
  }
  return data;
}

// A name other than localhost that /etc/hosts maps to an IPv4 address, and that address; only
// when /etc/nsswitch.conf says "hosts: files ..." (so glibc answers from the file and never
// asks a DNS server). Nothing otherwise.
inline std::optional<std::pair<std::string, std::string>> hosts_file_entry() {
  std::ifstream nsswitch("/etc/nsswitch.conf");
  std::string line;
  bool files_first = false;
  while (std::getline(nsswitch, line)) {
    std::istringstream words(line);
    std::string key, first;
    words >> key >> first;
    if (key == "hosts:") files_first = first == "files";
  }
  if (!files_first) return std::nullopt;
  std::ifstream hosts("/etc/hosts");
  while (std::getline(hosts, line)) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::string address, name;
    if (!(words >> address) || address.find('.') == std::string::npos ||
        address.find(':') != std::string::npos) {
      continue;
    }
    while (words >> name) {
      bool plain = !name.empty() && name.size() < 64 && name.front() != '-' && name.back() != '-' &&
                   name.find("localhost") == std::string::npos &&
                   std::all_of(name.begin(), name.end(),
                               [](unsigned char c) { return std::isalnum(c) || c == '-'; });
      if (plain) return std::make_pair(name, address);
    }
  }
  return std::nullopt;
}

}  // namespace coring_test

// Name resolution, offload() and whole-file I/O (system.hpp).
//
// resolve() is exercised only with names that need no DNS query: numeric addresses, localhost,
// the reserved ".invalid" domain, malformed names (refused locally), and, when this machine's
// /etc/nsswitch.conf consults /etc/hosts before DNS, a name found in /etc/hosts. No test sends
// a query off this machine.
//
// Assertions inside coroutines use CHECK only (a REQUIRE would throw out of the coroutine);
// offloaded functions run on other threads and only record what they see.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <coring/coring.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::hosts_file_entry;
using coring_test::pattern;
using coring_test::TempDir;

namespace {

constexpr auto kLong = 5s;

// Waits for wg. If that takes longer than `limit` the test fails, and the wait goes on (every
// coroutine in these tests ends by itself), so that no coroutine outlives the frames it uses.
bool settle(Co::WaitGroup& wg, Co::Duration limit = kLong) {
  if (wg.wait(limit)) return true;
  wg.wait();
  return false;
}

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string describe(const std::vector<std::string>& list) {
  std::string text = "{";
  for (const auto& item : list) text += (text.size() > 1 ? ", " : "") + item;
  return text + "}";
}

struct Failure {
  std::string name;
  int family;
  int error;
};

}  // namespace

// ---- resolve -----------------------------------------------------------------------------------

TEST_CASE("resolve: localhost is the loopback, inside and outside a coroutine") {
  std::vector<std::string> unspec, v4, v6, upper, sub;
  int rc = Co::run([&] {
    unspec = Co::resolve("localhost");
    v4 = Co::resolve("localhost", AF_INET);
    v6 = Co::resolve("localhost", AF_INET6);
    upper = Co::resolve("LocalHost.");
    sub = Co::resolve("www.localhost", AF_INET);  // RFC 6761: every *.localhost too
  });
  CHECK(rc == 0);
  INFO("unspec " << describe(unspec));
  CHECK(contains(unspec, "127.0.0.1"));
  CHECK(unspec.front() == "127.0.0.1");  // IPv4 first for AF_UNSPEC
  CHECK(v4 == std::vector<std::string>{"127.0.0.1"});
  CHECK(v6 == std::vector<std::string>{"::1"});
  CHECK(contains(upper, "127.0.0.1"));
  CHECK(sub == std::vector<std::string>{"127.0.0.1"});
  CHECK(contains(Co::resolve("localhost"), "127.0.0.1"));  // outside a container
}

TEST_CASE("resolve: numeric addresses resolve to themselves; the family filters them") {
  struct Row {
    const char* host;
    int family;
    const char* expected;
  };
  const Row rows[] = {{"127.0.0.1", AF_UNSPEC, "127.0.0.1"},
                      {"127.0.0.1", AF_INET, "127.0.0.1"},
                      {"10.1.2.3", AF_UNSPEC, "10.1.2.3"},
                      {"::1", AF_UNSPEC, "::1"},
                      {"::1", AF_INET6, "::1"},
                      {"2001:db8::7", AF_INET6, "2001:db8::7"},
                      {"[::1]", AF_UNSPEC, "::1"}};
  std::vector<std::vector<std::string>> got;
  std::vector<Failure> failures;
  int rc = Co::run([&] {
    for (const Row& row : rows) got.push_back(Co::resolve(row.host, row.family));
    for (const Row& wrong : {Row{"::1", AF_INET, ""}, Row{"127.0.0.1", AF_INET6, ""},
                             Row{"2001:db8::7", AF_INET, ""}}) {
      const char* host = wrong.host;
      const int family = wrong.family;
      std::vector<std::string> answer = Co::resolve(host, family);
      CHECK_MESSAGE(answer.empty(), host << " resolved for the wrong family: " << describe(answer));
      failures.push_back({host, family, Co::last_error().value()});
    }
    CHECK(Co::resolve("localhost", AF_UNIX).empty());
    failures.push_back({"localhost", AF_UNIX, Co::last_error().value()});
  });
  CHECK(rc == 0);
  REQUIRE(got.size() == std::size(rows));
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(rows[i].host);
    CHECK(got[i] == std::vector<std::string>{rows[i].expected});
  }
  for (const Failure& f : failures) {
    CAPTURE(f.name);
    CAPTURE(f.family);
    CHECK(f.error != 0);
  }
  CHECK(failures.back().error == EAFNOSUPPORT);
}

TEST_CASE("resolve: empty and malformed names fail with EINVAL") {
  const std::string too_long = [] {
    std::string name;
    while (name.size() < 300) name += "abcdefghi.";
    name.resize(300);
    return name;
  }();
  const std::string long_label = std::string(64, 'a') + ".com";
  const std::vector<std::string> names = {
      "",  "bad..name", "-x.com",        "x-.com",     too_long,         long_label,
      ".", "..",        "has space.com", "slash/name", "semi;colon.org", ".leading.dot"};
  std::vector<Failure> failures;
  int rc = Co::run([&] {
    for (const std::string& name : names) {
      for (int family : {AF_UNSPEC, AF_INET, AF_INET6}) {
        std::vector<std::string> answer = Co::resolve(name, family);
        CHECK_MESSAGE(answer.empty(), "'" << name << "' resolved: " << describe(answer));
        failures.push_back({name, family, Co::last_error().value()});
      }
    }
  });
  CHECK(rc == 0);
  REQUIRE(failures.size() == names.size() * 3);
  for (const Failure& f : failures) {
    CAPTURE(f.name);
    CAPTURE(f.family);
    CHECK(f.error == EINVAL);
  }
  // Outside a container too.
  CHECK(Co::resolve("bad..name").empty());
  CHECK(Co::last_error().value() == EINVAL);
  CHECK(Co::resolve("").empty());
  CHECK(Co::last_error().value() == EINVAL);
}

TEST_CASE("resolve: names under .invalid fail with ENXIO") {
  std::vector<Failure> failures;
  int rc = Co::run([&] {
    for (const char* name : {"anything.invalid", "a.b.c.invalid", "ANYTHING.INVALID.", "invalid"}) {
      for (int family : {AF_UNSPEC, AF_INET, AF_INET6}) {
        std::vector<std::string> answer = Co::resolve(name, family);
        CHECK_MESSAGE(answer.empty(), name << " resolved: " << describe(answer));
        failures.push_back({name, family, Co::last_error().value()});
      }
    }
  });
  CHECK(rc == 0);
  for (const Failure& f : failures) {
    CAPTURE(f.name);
    CAPTURE(f.family);
    CHECK(f.error == ENXIO);
  }
  CHECK(Co::resolve("anything.invalid").empty());
  CHECK(Co::last_error().value() == ENXIO);
}

TEST_CASE("resolve: a name from /etc/hosts goes through the resolver thread and the cache") {
  auto entry = hosts_file_entry();
  if (!entry) {
    MESSAGE("no /etc/hosts name answered without DNS on this machine; skipped");
    return;
  }
  const std::string name = entry->first;
  const std::string address = entry->second;
  CAPTURE(name);
  CAPTURE(address);
  // In a child, so that the process-wide cache starts empty.
  int status = coring_test::run_in_child([&] {
                 int code = 0;
                 int rc = Co::run([&] {
                   // Not cached yet and no time to wait: ETIMEDOUT without blocking.
                   if (!Co::resolve(name, AF_INET, Co::Duration::zero()).empty()) code = 10;
                   if (code == 0 && Co::last_error().value() != ETIMEDOUT) code = 11;
                   // Asked on a worker thread.
                   std::vector<std::string> answer = Co::resolve(name, AF_INET, kLong);
                   if (code == 0 && !contains(answer, address)) code = 12;
                   // Now cached: a zero timeout succeeds.
                   answer = Co::resolve(name, AF_INET, Co::Duration::zero());
                   if (code == 0 && !contains(answer, address)) code = 13;
                   // Connect resolves the name the same way.
                   Co::Socket listener;
                   if (!listener.bind(address, 0) || !listener.listen()) {
                     if (code == 0) code = 14;
                     return;
                   }
                   Co::Socket client;
                   if (code == 0 && !client.connect(name, listener.local_port(), kLong)) code = 15;
                 });
                 return rc == 0 ? code : 20;
               }).status;
  INFO("child status " << status);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// ---- offload -----------------------------------------------------------------------------------

TEST_CASE("offload: runs on another thread while the other coroutines keep running") {
  std::binary_semaphore release{0};
  std::thread::id caller, worker;
  bool released = false;
  int counter = 0, counter_after = 0;
  int rc = Co::run([&] {
    caller = std::this_thread::get_id();
    Co::WaitGroup ticker_done;
    ticker_done.add(1);
    Co::create([&] {
      // Runs only if the scheduler is free while the offloaded function blocks; only then is
      // the function released (else it gives up after kLong and the test fails).
      for (int i = 0; i < 10; ++i) {
        ++counter;
        Co::this_coroutine::sleep(1ms);
      }
      release.release();
      ticker_done.done();
    });
    released = Co::offload([&] {
      worker = std::this_thread::get_id();
      return release.try_acquire_for(kLong);
    });
    counter_after = counter;
    CHECK(settle(ticker_done));
  });
  CHECK(rc == 0);
  CHECK(released);
  CHECK(counter_after == 10);
  CHECK(worker != std::thread::id());
  CHECK(worker != caller);
}

TEST_CASE("offload: a function that blocks ~100 ms does not stop the scheduler") {
  int counter = 0, during = -1;
  auto start = std::chrono::steady_clock::now();
  long long took = 0;
  int rc = Co::run([&] {
    bool stop = false;
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      while (!stop) {
        ++counter;
        Co::this_coroutine::sleep(2ms);
      }
      wg.done();
    });
    int before = counter;
    Co::offload([] { std::this_thread::sleep_for(100ms); });
    during = counter - before;
    stop = true;
    CHECK(settle(wg));
    took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start)
               .count();
  });
  CHECK(rc == 0);
  CHECK(took >= 100);
  CHECK(during >= 5);  // ~50 ticks of 2 ms fit in 100 ms; a blocked scheduler gives 0
}

TEST_CASE("offload: several jobs run in parallel on the pool") {
  // Four functions that each wait until all four have started: that only finishes if the pool
  // runs four at once (its default size).
  const char* configured = std::getenv("CORING_OFFLOAD_THREADS");
  int jobs = configured != nullptr ? std::clamp(std::atoi(configured), 1, 4) : 4;
  std::mutex mutex;
  std::condition_variable all_started;
  int started = 0;
  int met = 0;
  int rc = Co::run([&] {
    // First leave a worker idle in the pool (jobs must not queue behind an idle worker that
    // was already asked to take another job).
    Co::offload([] {});
    Co::this_coroutine::sleep(20ms);
    Co::WaitGroup wg;
    wg.add(jobs);
    for (int i = 0; i < jobs; ++i) {
      Co::create([&] {
        bool ok = Co::offload([&] {
          std::unique_lock lock(mutex);
          ++started;
          all_started.notify_all();
          return all_started.wait_for(lock, kLong, [&] { return started == jobs; });
        });
        met += ok;
        wg.done();
      });
    }
    CHECK(settle(wg, 2 * kLong));
  });
  CHECK(rc == 0);
  CHECK(met == jobs);
}

namespace {
struct CustomError {
  int code;
};
}  // namespace

TEST_CASE("offload: returns values, void, move-only results, and rethrows exceptions") {
  int number = 0;
  std::string text;
  std::unique_ptr<int> boxed;
  bool void_ran = false;
  std::string what;
  int custom_code = 0;
  bool plain_value_after_throw = false;
  bool ref_is_same = false;
  int rc = Co::run([&] {
    number = Co::offload([] { return 6 * 7; });
    text = Co::offload([] { return std::string(100'000, 'q'); });
    boxed = Co::offload([] { return std::make_unique<int>(9); });
    Co::offload([&] { void_ran = true; });
    // A function that returns a reference: the caller gets that same object.
    static int shared = 0;
    int& ref = Co::offload([]() -> int& { return shared; });
    ref_is_same = &ref == &shared;
    static_assert(std::is_void_v<decltype(Co::offload([] {}))>);
    try {
      Co::offload([]() -> int { throw std::runtime_error("boom from the worker"); });
      FAIL_CHECK("the exception was swallowed");
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    try {
      Co::offload([] { throw CustomError{77}; });
      FAIL_CHECK("the exception was swallowed");
    } catch (const CustomError& e) {
      custom_code = e.code;
    }
    // A later offload in the same coroutine works normally.
    plain_value_after_throw = Co::offload([] { return true; });
  });
  CHECK(rc == 0);
  CHECK(number == 42);
  CHECK(text == std::string(100'000, 'q'));
  REQUIRE(boxed != nullptr);
  CHECK(*boxed == 9);
  CHECK(void_ran);
  CHECK(ref_is_same);
  CHECK(what == "boom from the worker");
  CHECK(custom_code == 77);
  CHECK(plain_value_after_throw);
}

TEST_CASE("offload: outside a coroutine the function runs inline") {
  std::thread::id ran_on;
  int value = Co::offload([&] {
    ran_on = std::this_thread::get_id();
    return 5;
  });
  CHECK(value == 5);
  CHECK(ran_on == std::this_thread::get_id());
  CHECK_THROWS_AS(Co::offload([] { throw std::logic_error("inline"); }), std::logic_error);
}

TEST_CASE("offload: cannot be cancelled; the coroutine still gets its result") {
  bool cancelled = true;
  int cancel_error = 0;
  int value = 0;
  int rc = Co::run([&] {
    std::binary_semaphore release{0};
    Co::WaitGroup wg;
    wg.add(1);
    long waiter = Co::create([&] {
      value = Co::offload([&] { return release.try_acquire_for(kLong) ? 1 : -1; });
      wg.done();
    });
    cancelled = Co::cancel(waiter);
    cancel_error = Co::last_error().value();
    release.release();
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK_FALSE(cancelled);
  CHECK(cancel_error == EINVAL);
  CHECK(value == 1);
}

TEST_CASE("offload: a container whose only coroutine waits for a job is not deadlocked") {
  int value = 0;
  int rc = Co::run([&] {
    value = Co::offload([] {
      std::this_thread::sleep_for(50ms);
      return 3;
    });
  });
  CHECK(rc == 0);
  CHECK(value == 3);
}

TEST_CASE("offload: many coroutines offloading at once all get their own result") {
  constexpr int kJobs = 200;
  std::vector<long> results(kJobs, -1);
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    wg.add(kJobs);
    for (int i = 0; i < kJobs; ++i) {
      Co::create([&, i] {
        results[i] = Co::offload([i] {
          long sum = 0;
          for (int k = 0; k <= i; ++k) sum += k;
          return sum;
        });
        wg.done();
      });
    }
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  for (int i = 0; i < kJobs; ++i) {
    CAPTURE(i);
    CHECK(results[i] == static_cast<long>(i) * (i + 1) / 2);
  }
}

// ---- files -------------------------------------------------------------------------------------

namespace {

// The whole read_file/write_file contract, run either inside a coroutine (through the ring) or
// outside (plain syscalls). Returns nothing; checks as it goes.
void file_round_trips(const TempDir& dir) {
  const std::string text = dir.file("text.txt");
  CHECK(Co::write_file(text, "hello"));
  CHECK(Co::read_file(text) == std::optional<std::string>("hello"));
  CHECK(Co::write_file(text, " world", true));
  CHECK(Co::read_file(text) == std::optional<std::string>("hello world"));
  CHECK(Co::write_file(text, "abc"));  // truncates what was there
  CHECK(Co::read_file(text) == std::optional<std::string>("abc"));

  const std::string empty = dir.file("empty");
  CHECK(Co::write_file(empty, ""));
  std::optional<std::string> nothing = Co::read_file(empty);
  CHECK(nothing.has_value());
  if (nothing) CHECK(nothing->empty());

  std::string binary;
  for (int round = 0; round < 4; ++round) {
    for (int c = 0; c < 256; ++c) binary.push_back(static_cast<char>(c));
    binary.append(10, '\0');
  }
  const std::string bin = dir.file("binary.bin");
  CHECK(Co::write_file(bin, binary));
  CHECK(Co::read_file(bin) == std::optional<std::string>(binary));
  CHECK(Co::write_file(bin, std::string_view("\0\0x", 3), true));
  CHECK(Co::read_file(bin) == std::optional<std::string>(binary + std::string("\0\0x", 3)));

  // Several MiB, not a multiple of any chunk size, then appended to.
  const std::string large = pattern(5 * 1024 * 1024 + 123, 4);
  const std::string tail = pattern(2 * 1024 * 1024 + 7, 5);
  const std::string big = dir.file("big.bin");
  CHECK(Co::write_file(big, large));
  std::optional<std::string> read_back = Co::read_file(big);
  CO_REQUIRE(read_back.has_value());
  CHECK(read_back->size() == large.size());
  CHECK(*read_back == large);
  CHECK(Co::write_file(big, tail, true));
  read_back = Co::read_file(big);
  CO_REQUIRE(read_back.has_value());
  CHECK(read_back->size() == large.size() + tail.size());
  CHECK(*read_back == large + tail);
  CHECK(std::filesystem::file_size(big) == large.size() + tail.size());

  // Failures: last_error() says why.
  CHECK_FALSE(Co::read_file(dir.file("missing")).has_value());
  CHECK(Co::last_error().value() == ENOENT);
  CHECK_FALSE(Co::write_file(dir.file("no/such/dir/file"), "x"));
  CHECK(Co::last_error().value() == ENOENT);
  CHECK_FALSE(Co::read_file(dir.path()).has_value());
  CHECK(Co::last_error().value() == EISDIR);
  CHECK_FALSE(Co::write_file(dir.path(), "x"));
  CHECK(Co::last_error().value() == EISDIR);
  CHECK_FALSE(Co::read_file(text + "/below-a-file").has_value());
  CHECK(Co::last_error().value() == ENOTDIR);
  if (::geteuid() != 0) {  // root reads anything
    const std::string locked = dir.file("locked");
    CHECK(Co::write_file(locked, "secret"));
    CO_REQUIRE(::chmod(locked.c_str(), 0) == 0);
    CHECK_FALSE(Co::read_file(locked).has_value());
    CHECK(Co::last_error().value() == EACCES);
  }
}

}  // namespace

TEST_CASE("read_file/write_file in a coroutine: round trips, append, binary, MiBs, errors") {
  TempDir dir;
  int rc = Co::run([&] { file_round_trips(dir); });
  CHECK(rc == 0);
}

TEST_CASE("read_file/write_file outside a coroutine") {
  TempDir dir;
  file_round_trips(dir);
}

TEST_CASE("read_file/write_file: coroutines doing file I/O at once each get their own file") {
  TempDir dir;
  constexpr int kFiles = 32;
  int intact = 0;
  int rc = Co::run([&] {
    Co::WaitGroup wg;
    wg.add(kFiles);
    for (int i = 0; i < kFiles; ++i) {
      Co::create([&, i] {
        const std::string path = dir.file("f" + std::to_string(i));
        const std::string data = pattern(100'000 + static_cast<size_t>(i) * 1000, i);
        CHECK(Co::write_file(path, data.substr(0, 1000)));
        CHECK(Co::write_file(path, std::string_view(data).substr(1000), true));
        if (Co::read_file(path) == std::optional<std::string>(data)) ++intact;
        wg.done();
      });
    }
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(intact == kFiles);
}

TEST_CASE("deadlock: offload, resolve and files in destructors of unwound coroutines") {
  // While a coroutine is unwound (an exception in flight, so nothing may throw), offload()
  // runs its function right there (it has no failure value), resolve() fails at once with
  // ECANCELED, and files are read with plain syscalls: nothing waits, run() returns EDEADLK.
  coring_test::TempDir dir;
  const std::string path = dir.file("kept");
  REQUIRE(Co::write_file(path, "kept"));
  coring_test::ChildResult child = coring_test::run_in_child(
      [&] {
        coring_test::LogCapture logs;
        int offloaded = 0, resolve_error = 0;
        std::string read_back;
        struct WorksWhenDestroyed {
          int* offloaded;
          int* resolve_error;
          std::string* read_back;
          const std::string* path;
          ~WorksWhenDestroyed() {
            *offloaded = Co::offload([] { return 7; });
            if (Co::resolve("example.com", AF_INET, Co::kForever).empty()) {
              *resolve_error = Co::last_error().value();
            }
            *read_back = Co::read_file(*path).value_or("");
          }
        };
        Co::Channel<int> never(0);
        int rc = Co::run([&] {
          WorksWhenDestroyed guard{&offloaded, &resolve_error, &read_back, &path};
          never.pop();
        });
        bool ok = rc == -1 && offloaded == 7 && resolve_error == ECANCELED && read_back == "kept";
        if (!ok) {
          std::fprintf(stderr, "rc=%d offloaded=%d resolve=%d read=%s\n", rc, offloaded,
                       resolve_error, read_back.c_str());
        }
        return ok ? 0 : 1;
      },
      20);
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("resolve: a NUL inside the name is EINVAL; IPv6 literals with a scope id resolve") {
  using namespace std::string_view_literals;
  auto check_all = [] {
    CHECK(Co::resolve("127.0.0.1\0evil"sv).empty());
    CHECK(Co::last_error() == std::errc::invalid_argument);
    CHECK(Co::resolve("localhost\0.example.com"sv).empty());
    CHECK(Co::last_error() == std::errc::invalid_argument);
    CHECK(Co::resolve("fe80::1%lo") == std::vector<std::string>{"fe80::1%lo"});
    CHECK(Co::resolve("[fe80::1%lo]", AF_INET6) == std::vector<std::string>{"fe80::1%lo"});
    CHECK(Co::resolve("::1%lo", AF_INET6) == std::vector<std::string>{"::1%lo"});
    CHECK(Co::resolve("fe80::1%1") == std::vector<std::string>{"fe80::1%lo"});  // lo is 1
    CHECK(Co::resolve("fe80::1%no-such-interface").empty());
    CHECK(Co::last_error() == std::errc::invalid_argument);
    CHECK(Co::resolve("fe80::1%").empty());
    CHECK(Co::resolve("127.0.0.1%lo").empty());  // a scope is IPv6 only
  };
  check_all();  // outside a container
  CHECK(Co::run(check_all) == 0);
}

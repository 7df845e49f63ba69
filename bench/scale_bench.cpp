// coring at scale: a million coroutines in one container. Each mode wants a fresh process (the
// RSS figures are deltas of this process's VmRSS), so scripts/bench.sh runs one mode per process.
//
//   scale_bench parked [n]   n coroutines parked in pop() on one unbuffered Channel<long>:
//                            RSS per coroutine (VmRSS delta, bytes), time to create them until
//                            all are parked (create() runs each at once, so when the loop ends
//                            every one has parked), then close() + wake all until every one has
//                            ended (a WaitGroup)
//   scale_bench sleep [n]    n coroutines each in this_coroutine::sleep(1s): wall time from the
//                            first create() until the last has woken (a WaitGroup), the time
//                            the create() loop took, peak RSS; then the same again in the same
//                            container ("warm": the stacks of the first round are pooled, so
//                            no page is faulted in and what remains is timers and switches)
//   scale_bench touch [n]    not coring: the machine's cost of n first-touch page faults, one
//                            per 16 KiB slot (what n fresh stacks cost at least)
//
// Options of the container: 16 KiB stacks without guard pages, up to 2,000,000 coroutines (see
// RunOptions in <coring/coroutine.hpp>). Output: one line per figure,
//   RESULT<TAB>coring<TAB><name><TAB><value><TAB><unit>
// Exit status 0 when every coroutine did what it should, 1 otherwise (with a message on stderr).
#include <sys/mman.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A "Name:   123 kB" field of /proc/self/status, in KiB (-1 when missing).
long status_kib(const char* name) {
  std::ifstream status("/proc/self/status");
  std::string line;
  size_t length = std::strlen(name);
  while (std::getline(status, line)) {
    if (line.compare(0, length, name) == 0 && line.size() > length && line[length] == ':') {
      return std::strtol(line.c_str() + length + 1, nullptr, 10);
    }
  }
  return -1;
}

// The implementation column of the RESULT lines: "coring", or what CORING_BENCH_IMPL says
// (scripts/bench.sh runs the static LTO build as "coring-lto").
const char* implementation() {
  const char* name = std::getenv("CORING_BENCH_IMPL");
  return name != nullptr && *name != '\0' ? name : "coring";
}

void result(const char* name, double value, const char* unit) {
  std::printf("RESULT\t%s\t%s\t%.6g\t%s\n", implementation(), name, value, unit);
  std::fflush(stdout);
}

constexpr coring::RunOptions kOptions{
    .stack_size = 16 * 1024, .stack_guard = false, .max_coroutines = 2'000'000};

int fail(const char* what) {
  std::fprintf(stderr, "scale_bench: %s (last error: %s)\n", what,
               coring::last_error().message().c_str());
  return 1;
}

int parked(int n) {
  long rss_before = 0, rss_parked = 0, created = 0;
  size_t waiting = 0, stacks = 0;
  double spawn_ms = 0, wake_ms = 0;
  bool woken = false;
  int rc = coring::run(
      [&] {
        coring::Channel<long> channel(0);
        coring::WaitGroup ended;
        ended.add(n);
        rss_before = status_kib("VmRSS");
        auto t0 = Clock::now();
        for (; created < n; ++created) {
          long id = coring::create([&channel, &ended] {
            channel.pop();
            ended.done();
          });
          if (id < 0) break;
        }
        spawn_ms = ms_since(t0);
        rss_parked = status_kib("VmRSS");
        waiting = channel.consumer_num();
        stacks = coring::stats().stacks_mapped;
        if (created < n) ended.add(static_cast<int>(created - n));
        auto t1 = Clock::now();
        channel.close();
        woken = ended.wait();
        wake_ms = ms_since(t1);
      },
      kOptions);
  if (rc != 0) return fail("run() failed");
  if (created < n) return fail("create() failed before every coroutine was started");
  if (waiting != static_cast<size_t>(n)) return fail("not every coroutine parked on the channel");
  if (!woken) return fail("WaitGroup::wait() failed");
  std::fprintf(stderr,
               "scale_bench parked: %d coroutines, %zu stacks mapped, VmRSS %ld -> %ld KiB\n", n,
               stacks, rss_before, rss_parked);
  result("park_rss", (rss_parked - rss_before) * 1024.0 / n, "bytes/coroutine");
  result("park_spawn", spawn_ms, "ms");
  result("park_wake", wake_ms, "ms");
  return 0;
}

int sleepers(int n) {
  long rss_before = 0;
  long created[2] = {0, 0};
  double wall_ms[2] = {0, 0}, spawn_ms[2] = {0, 0};
  bool woken[2] = {false, false};
  int rc = coring::run(
      [&] {
        rss_before = status_kib("VmRSS");
        for (int round = 0; round < 2; ++round) {
          coring::WaitGroup awake;
          awake.add(n);
          auto t0 = Clock::now();
          long& started = created[round];
          for (; started < n; ++started) {
            long id = coring::create([&awake] {
              coring::this_coroutine::sleep(std::chrono::seconds(1));
              awake.done();
            });
            if (id < 0) break;
          }
          spawn_ms[round] = ms_since(t0);
          if (started < n) awake.add(static_cast<int>(started - n));
          woken[round] = awake.wait();
          wall_ms[round] = ms_since(t0);
        }
      },
      kOptions);
  if (rc != 0) return fail("run() failed");
  for (int round = 0; round < 2; ++round) {
    if (created[round] < n) return fail("create() failed before every coroutine was started");
    if (!woken[round]) return fail("WaitGroup::wait() failed");
    if (wall_ms[round] < 1000) return fail("the sleepers woke before their second was up");
  }
  long peak = status_kib("VmHWM");
  std::fprintf(
      stderr,
      "scale_bench sleep: %d coroutines created in %.0f ms (warm: %.0f ms), VmHWM %ld KiB\n", n,
      spawn_ms[0], spawn_ms[1], peak);
  result("sleep_wall", wall_ms[0], "ms");
  result("sleep_spawn", spawn_ms[0], "ms");
  result("sleep_wall_warm", wall_ms[1], "ms");
  result("sleep_spawn_warm", spawn_ms[1], "ms");
  result("sleep_peak_rss", peak / 1024.0, "MiB");
  result("sleep_rss", (peak - rss_before) * 1024.0 / n, "bytes/coroutine");
  return 0;
}

// Not coring: the machine's floor for n stacks. Touches one byte at the top of each of n fresh
// 16 KiB slots of an anonymous mapping (as n coroutines each touch the top page of their
// stack): n first-touch page faults, nothing else.
int touch(int n) {
  constexpr size_t kSlot = 16 * 1024;
  size_t bytes = kSlot * static_cast<size_t>(n);
  void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) {
    std::perror("scale_bench touch: mmap");
    return 1;
  }
  auto* slots = static_cast<volatile char*>(memory);
  auto t0 = Clock::now();
  for (size_t i = 1; i <= static_cast<size_t>(n); ++i) slots[i * kSlot - 64] = 1;
  double ms = ms_since(t0);
  ::munmap(memory, bytes);
  std::printf("RESULT\tmachine\ttouch\t%.6g\tms\n", ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  int n = argc > 2 ? std::atoi(argv[2]) : 1'000'000;
  if (n <= 0 || n >= 2'000'000) mode.clear();
  if (mode == "parked") return parked(n);
  if (mode == "sleep") return sleepers(n);
  if (mode == "touch") return touch(n);
  std::fprintf(stderr, "usage: %s parked|sleep|touch [n < 2000000, default 1000000]\n", argv[0]);
  return 2;
}

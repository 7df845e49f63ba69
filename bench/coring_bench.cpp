// coring's micro benchmarks (Google Benchmark), through the public API only.
//
// Every benchmark runs in its own container: the function starts coring::run(), and the timed
// loop runs inside the container's first coroutine ("main" below). One iteration is one unit of
// the figure's name:
//   yield_rt      main resume()s a coroutine that loops this_coroutine::yield(): one round
//                 trip, two context switches (main -> A -> main).
//   sched_rt      main and a partner loop this_coroutine::sleep(0) (yield through the ready
//                 queue, like Go's Gosched or Boost.Fiber's yield): one round trip, 2 switches.
//   create_end    create() an empty coroutine; it runs at once and ends (pooled stacks, one
//                 at a time): ns per coroutine.
//   create_wait   WaitGroup::add(1), create() a coroutine that calls done(), wait(): Go's
//                 spawn + wg.Wait().
//   chan_rt       unbuffered Channel<long> ping-pong: main pushes on ping and pops from pong, an
//                 echo coroutine pops ping and pushes pong: ns per round trip.
//   chan_timeout_rt   the same with a 1 s timeout on every pop (a deadline armed and disarmed
//                 per wait, as socket timeouts do).
//   timer_after_clear after(1h, fn) + clear(): a user timer armed and cancelled, ns per timer.
// The "switches" counter is coring's own count of context switches per iteration (from
// stats()), a check that the figure measures what it says.
//
// With --results (our flag, removed before Google Benchmark sees the rest), every benchmark also
// prints one machine-readable line for scripts/bench.sh:
//   RESULT<TAB>coring<TAB><name><TAB><real ns per iteration><TAB><unit>
// (CORING_BENCH_IMPL replaces "coring": scripts/bench.sh runs the static LTO build as
// "coring-lto", beside the program built against the installed shared library.)
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace {

// Runs body() as the first coroutine of a fresh container and reports what went wrong, if
// anything, as a benchmark error. body returns nullptr on success, else a message.
template <class Body>
void in_container(benchmark::State& state, Body&& body) {
  const char* failure = nullptr;
  uint64_t switches = 0;
  int rc = coring::run([&] {
    uint64_t before = coring::stats().switches;
    failure = body();
    switches = coring::stats().switches - before;
  });
  if (rc != 0) {
    std::string message = "coring::run failed: " + coring::last_error().message();
    state.SkipWithError(message.c_str());
    return;
  }
  if (failure != nullptr) {
    state.SkipWithError(failure);
    return;
  }
  // Counted over the whole body (setup and teardown included): a few switches more than the
  // loop alone, negligible at the iteration counts used.
  state.counters["switches"] =
      benchmark::Counter(static_cast<double>(switches), benchmark::Counter::kAvgIterations);
}

void yield_rt(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    bool stop = false;
    long a = coring::create([&stop] {
      while (!stop) coring::this_coroutine::yield();
    });
    if (a < 0) return "create failed";
    long failures = 0;
    for (auto _ : state) failures += !coring::resume(a);
    stop = true;
    coring::resume(a);
    return failures == 0 ? nullptr : "resume failed";
  });
}

void sched_rt(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    bool stop = false;
    long partner = coring::create([&stop] {
      while (!stop) coring::this_coroutine::sleep(coring::Duration::zero());
    });
    if (partner < 0) return "create failed";
    for (auto _ : state) coring::this_coroutine::sleep(coring::Duration::zero());
    stop = true;
    return coring::join({partner}) ? nullptr : "join failed";
  });
}

void create_end(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    long failures = 0;
    for (auto _ : state) failures += coring::create([] {}) < 0;
    return failures == 0 ? nullptr : "create failed";
  });
}

void create_wait(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    coring::WaitGroup wg;
    long failures = 0;
    for (auto _ : state) {
      wg.add(1);
      failures += coring::create([&wg] { wg.done(); }) < 0;
      failures += !wg.wait();
    }
    return failures == 0 ? nullptr : "create or wait failed";
  });
}

void chan_rt(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    coring::Channel<long> ping(0);
    coring::Channel<long> pong(0);
    long echo = coring::create([&] {
      while (std::optional<long> v = ping.pop()) pong.push(*v);
    });
    if (echo < 0) return "create failed";
    long sent = 0;
    long sum = 0;
    for (auto _ : state) {
      ping.push(sent++);
      std::optional<long> v = pong.pop();
      sum += v.value_or(-1);
    }
    ping.close();
    coring::join({echo});
    // Every value came back: sum of 0..sent-1.
    return sum == sent * (sent - 1) / 2 ? nullptr : "values lost in the ping-pong";
  });
}

// chan_rt with a 1 s timeout on every pop: what arming and disarming a deadline adds to a wait.
void chan_timeout_rt(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    constexpr auto kTimeout = std::chrono::seconds(1);
    coring::Channel<long> ping(0);
    coring::Channel<long> pong(0);
    long echo = coring::create([&] {
      while (std::optional<long> v = ping.pop(kTimeout)) pong.push(*v);
    });
    if (echo < 0) return "create failed";
    long sent = 0;
    long sum = 0;
    for (auto _ : state) {
      ping.push(sent++);
      std::optional<long> v = pong.pop(kTimeout);
      sum += v.value_or(-1);
    }
    ping.close();
    coring::join({echo});
    return sum == sent * (sent - 1) / 2 ? nullptr : "values lost in the ping-pong";
  });
}

// A user timer armed and cleared before it fires (after() + clear()).
void timer_after_clear(benchmark::State& state) {
  in_container(state, [&]() -> const char* {
    long failures = 0;
    for (auto _ : state) {
      long id = coring::after(std::chrono::hours(1), [] {});
      failures += !coring::clear(id);
    }
    return failures == 0 ? nullptr : "after or clear failed";
  });
}

// The console output as usual, plus one RESULT line per benchmark (see the header comment).
class ResultReporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal (the default reporter decides from the flags, which a
  // reporter of our own does not see).
  explicit ResultReporter(bool results)
      : ConsoleReporter(::isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular),
        results_(results) {}
  bool failed() const { return failed_; }

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      failed_ |= run.error_occurred;
      if (!results_ || run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      double ns = run.GetAdjustedRealTime() *
                  benchmark::GetTimeUnitMultiplier(benchmark::kNanosecond) /
                  benchmark::GetTimeUnitMultiplier(run.time_unit);
      const char* implementation = std::getenv("CORING_BENCH_IMPL");
      if (implementation == nullptr || *implementation == '\0') implementation = "coring";
      std::printf("RESULT\t%s\t%s\t%.6g\t%s\n", implementation, run.benchmark_name().c_str(), ns,
                  unit_of(run.benchmark_name()));
      std::fflush(stdout);
    }
  }

 private:
  static const char* unit_of(const std::string& name) {
    if (name.starts_with("create")) return "ns/coroutine";
    if (name.starts_with("timer")) return "ns/timer";
    return "ns/round trip";
  }

  bool results_;
  bool failed_ = false;
};

}  // namespace

BENCHMARK(yield_rt);
BENCHMARK(sched_rt);
BENCHMARK(create_end);
BENCHMARK(create_wait);
BENCHMARK(chan_rt);
BENCHMARK(chan_timeout_rt);
BENCHMARK(timer_after_clear);

int main(int argc, char** argv) {
  bool results = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--results") == 0) {
      results = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 2;
  coring::set_log_level(coring::LogLevel::warning);
  ResultReporter reporter(results);
  size_t ran = benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return ran > 0 && !reporter.failed() ? 0 : 1;
}

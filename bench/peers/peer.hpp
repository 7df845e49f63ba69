// What the C++ peer programs share: a wall clock and the one output format scripts/bench.sh
// reads, one line per figure:
//   RESULT<TAB><implementation><TAB><figure><TAB><value><TAB><unit>
// Every peer is single-threaded, runs a discarded warm-up pass first, then a fixed number of
// iterations timed with steady_clock (as coring's own benchmarks measure wall time).
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace peer {

using Clock = std::chrono::steady_clock;

// Nanoseconds per iteration since t0.
inline double ns_per(Clock::time_point t0, long iterations) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() /
         static_cast<double>(iterations);
}

inline void result(const char* implementation, const char* figure, double value, const char* unit) {
  std::printf("RESULT\t%s\t%s\t%.6g\t%s\n", implementation, figure, value, unit);
  std::fflush(stdout);
}

// argv[i] as a positive count, or fallback.
inline long count_arg(int argc, char** argv, int i, long fallback) {
  if (argc <= i) return fallback;
  long n = std::strtol(argv[i], nullptr, 10);
  return n > 0 ? n : fallback;
}

}  // namespace peer

// printf-style logging for the library's own messages (the public API is coring/log.hpp).
#pragma once

#include <cstdint>

#include "coring/log.hpp"

namespace coring::detail {

bool log_enabled(LogLevel level) noexcept;

// Formats and logs only when level is enabled.
void log_format(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// One message a second at most, for a condition that can repeat in a hot loop (accept()
// failing with EMFILE, connections over a limit): the first occurrence is logged, later ones
// within the second are counted, and the next message logged says how many there were.
class RateLimitedLog {
 public:
  void log(LogLevel level, const char* format, ...) __attribute__((format(printf, 3, 4)));
  uint64_t suppressed() const noexcept { return suppressed_; }

 private:
  int64_t last_ns_ = INT64_MIN;
  uint64_t suppressed_ = 0;
};

}  // namespace coring::detail

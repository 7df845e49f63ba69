// printf-style logging for the library's own messages (the public API is coring/log.hpp).
#pragma once

#include "coring/log.hpp"

namespace coring::detail {

bool log_enabled(LogLevel level) noexcept;

// Formats and logs only when level is enabled.
void log_format(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace coring::detail

// Logging: one process-wide level and one process-wide sink.
//
// The default sink writes one line per message to stderr with a single write(2):
//   [2026-11-23 14:39:37.123456 pid=4242 cid=12] WARNING message
// (cid=-1 outside a coroutine). set_log_sink() replaces it, for example to route coring's
// messages into an application's logger; the sink is called under a process-wide lock, so it
// needs no locking of its own but must not log through coring itself. Messages below the level
// (default info) are dropped before they are formatted.
#pragma once

#include <functional>
#include <string_view>

namespace coring {

enum class LogLevel { debug, trace, info, notice, warning, error, none };

using LogSink = std::function<void(LogLevel level, long cid, std::string_view message)>;

void set_log_level(LogLevel level) noexcept;
LogLevel log_level() noexcept;
void set_log_sink(LogSink sink);  // an empty sink restores the default (stderr)
std::string_view log_level_name(LogLevel level) noexcept;  // "DEBUG", ..., "ERROR"

// Logs message at level with the calling coroutine's id.
void log(LogLevel level, std::string_view message);

}  // namespace coring

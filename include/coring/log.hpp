// Logging: one process-wide level and one process-wide sink.
//
// The default sink writes one line per message to stderr with a single write(2):
//   [2026-11-23 14:39:37.123456 pid=4242 cid=12] WARNING message
// (cid=-1 outside a coroutine). set_log_sink() replaces it, for example to route coring's
// messages into an application's logger. Messages below the level (default info) are dropped
// before they are formatted.
//
// What a sink may do: coring holds no lock while it calls the sink, so the sink may be called
// from several threads at once (each container's thread, offload workers) and must do its own
// locking if it keeps state. It may wait on coring I/O (write to a Socket, push to a Channel):
// other coroutines go on meanwhile, and what they log reaches the sink too. What the sink
// itself logs through coring (directly, or through a coring call that logs) goes to stderr
// instead of back into the sink. An exception thrown by the sink does not escape: coring
// writes its message to stderr instead. set_log_sink() may be called while another thread is
// inside the old sink, which stays alive until that call returns.
#pragma once

#include <functional>
#include <string_view>

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

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

#pragma GCC visibility pop

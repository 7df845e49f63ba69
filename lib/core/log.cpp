#include "coring/log.hpp"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/coroutine.hpp"

namespace coring {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::info)};

// The sink is shared_ptr-held and copied out under the lock, then called without it: a sink may
// log (re-entry), wait on coring I/O (so switch to other coroutines, which log too), or be
// replaced by set_log_sink() while another thread is inside it.
struct SinkHolder {
  std::mutex mutex;
  std::shared_ptr<const LogSink> sink;
};

// Never destroyed: coroutines on other threads may still log while static destructors run.
SinkHolder& sink_holder() {
  static SinkHolder* holder = [] {
    auto* created = new SinkHolder;
    // A child forked while another thread held the lock must not inherit it locked.
    ::pthread_atfork([] { sink_holder().mutex.lock(); }, [] { sink_holder().mutex.unlock(); },
                     [] { new (&sink_holder().mutex) std::mutex; });
    return created;
  }();
  return *holder;
}

// Whether the running coroutine (or, outside coroutines, the thread) is inside the sink: a
// message it logs from there goes to stderr instead of recursing into the sink.
thread_local bool tls_in_sink = false;

bool& in_sink_flag() {
  if (detail::Coroutine* self = detail::running_coroutine()) return self->in_log_sink;
  return tls_in_sink;
}

void write_to_stderr(LogLevel level, long cid, std::string_view message) {
  timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm local;
  ::localtime_r(&now.tv_sec, &local);
  char prefix[96];
  size_t length = std::strftime(prefix, sizeof prefix, "[%Y-%m-%d %H:%M:%S", &local);
  length += std::snprintf(prefix + length, sizeof prefix - length, ".%06ld pid=%d cid=%ld] ",
                          now.tv_nsec / 1000, static_cast<int>(::getpid()), cid);
  std::string line(prefix, length);
  line += log_level_name(level);
  line += ' ';
  line += message;
  line += '\n';
  // One write per line, so lines from several threads or processes do not interleave.
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t written = ::write(STDERR_FILENO, data, left);
    if (written <= 0) break;
    data += written;
    left -= static_cast<size_t>(written);
  }
}

}  // namespace

void set_log_level(LogLevel level) noexcept {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

LogLevel log_level() noexcept {
  return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}

void set_log_sink(LogSink sink) {
  std::shared_ptr<const LogSink> replacement;
  if (sink) replacement = std::make_shared<const LogSink>(std::move(sink));
  SinkHolder& holder = sink_holder();
  std::lock_guard lock(holder.mutex);
  holder.sink.swap(replacement);
  // The old sink is destroyed after the lock is released (replacement's destructor), or later
  // by whoever is still calling it.
}

std::string_view log_level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug:
      return "DEBUG";
    case LogLevel::trace:
      return "TRACE";
    case LogLevel::info:
      return "INFO";
    case LogLevel::notice:
      return "NOTICE";
    case LogLevel::warning:
      return "WARNING";
    case LogLevel::error:
      return "ERROR";
    case LogLevel::none:
      break;
  }
  return "NONE";
}

void log(LogLevel level, std::string_view message) {
  if (!detail::log_enabled(level)) return;
  long cid = this_coroutine::id();
  bool& in_sink = in_sink_flag();
  std::shared_ptr<const LogSink> sink;
  if (!in_sink) {
    SinkHolder& holder = sink_holder();
    std::lock_guard lock(holder.mutex);
    sink = holder.sink;
  }
  if (!sink) {
    write_to_stderr(level, cid, message);
    return;
  }
  in_sink = true;
  try {
    (*sink)(level, cid, message);
  } catch (const detail::ForcedUnwind&) {  // the sink waited in a coroutine being unwound
    in_sink = false;
    throw;
  } catch (...) {
    // The library logs from places that cannot fail; a sink's exception must not escape there.
    write_to_stderr(LogLevel::error, cid, "the log sink threw an exception; its message follows");
    write_to_stderr(level, cid, message);
  }
  in_sink = false;
}

namespace detail {

bool log_enabled(LogLevel level) noexcept {
  return level != LogLevel::none &&
         static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void log_format(LogLevel level, const char* format, ...) {
  if (!log_enabled(level)) return;
  char buffer[512];
  va_list arguments;
  va_start(arguments, format);
  int length = std::vsnprintf(buffer, sizeof buffer, format, arguments);
  va_end(arguments);
  if (length < 0) return;
  if (static_cast<size_t>(length) < sizeof buffer) {
    log(level, std::string_view(buffer, static_cast<size_t>(length)));
    return;
  }
  std::string long_message(static_cast<size_t>(length) + 1, '\0');
  va_start(arguments, format);
  std::vsnprintf(long_message.data(), long_message.size(), format, arguments);
  va_end(arguments);
  long_message.pop_back();
  log(level, long_message);
}

void RateLimitedLog::log(LogLevel level, const char* format, ...) {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t now_ns = int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
  if (last_ns_ != INT64_MIN && now_ns - last_ns_ < 1'000'000'000) {
    ++suppressed_;
    return;
  }
  last_ns_ = now_ns;
  if (!log_enabled(level)) return;
  char buffer[512];
  va_list arguments;
  va_start(arguments, format);
  int length = std::vsnprintf(buffer, sizeof buffer, format, arguments);
  va_end(arguments);
  if (length < 0) return;
  std::string message(buffer, std::min(static_cast<size_t>(length), sizeof buffer - 1));
  if (suppressed_ > 0) {
    message += " (" + std::to_string(suppressed_) + " more since the last report)";
    suppressed_ = 0;
  }
  coring::log(level, message);
}

}  // namespace detail
}  // namespace coring

// Choosing and setting up the event engine.
#include "core/event_engine.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "core/epoll_engine.hpp"
#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "core/uring_engine.hpp"

namespace coring {

std::string_view engine_name(Engine engine) noexcept {
  switch (engine) {
    case Engine::automatic:
      return "automatic";
    case Engine::io_uring:
      return "io_uring";
    case Engine::epoll:
      return "epoll";
  }
  return "unknown";
}

namespace detail {

int32_t EventEngine::receive_now(int fd, void* buffer, uint32_t length, int flags) noexcept {
  ssize_t n = ::recv(fd, buffer, length, flags | MSG_DONTWAIT);
  return n >= 0 ? static_cast<int32_t>(n) : -errno;
}

int32_t receive_now(int fd, void* buffer, uint32_t length, int flags) noexcept {
  if (Scheduler* s = tls_scheduler) return s->engine().receive_now(fd, buffer, length, flags);
  ssize_t n = ::recv(fd, buffer, length, flags | MSG_DONTWAIT);
  return n >= 0 ? static_cast<int32_t>(n) : -errno;
}

namespace {

// RunOptions::engine, or for automatic what CORING_ENGINE says (so that a user can compare and
// CI can test both without changing code).
Engine wanted_engine(const RunOptions& options) {
  if (options.engine != Engine::automatic) return options.engine;
  const char* variable = std::getenv("CORING_ENGINE");
  if (variable == nullptr || *variable == '\0') return Engine::automatic;
  std::string_view value(variable);
  if (value == "io_uring") return Engine::io_uring;
  if (value == "epoll") return Engine::epoll;
  if (value != "automatic") {
    log_format(LogLevel::warning,
               "CORING_ENGINE=%s is not io_uring, epoll or automatic; choosing automatically",
               variable);
  }
  return Engine::automatic;
}

}  // namespace

std::unique_ptr<EventEngine> make_engine(const RunOptions& options, int* error) {
  Engine wanted = wanted_engine(options);
  if (wanted != Engine::epoll) {
    auto uring = std::make_unique<UringEngine>();
    int result = uring->init(options);
    if (result == 0) return uring;
    if (wanted == Engine::io_uring) {
      log_format(LogLevel::error,
                 "cannot use io_uring (%u entries): %s; coring's io_uring engine needs Linux "
                 "5.19+, not disabled by sysctl kernel.io_uring_disabled or a seccomp filter "
                 "(Engine::automatic falls back to epoll)",
                 options.ring_entries, uring->why().c_str());
      *error = result;
      return nullptr;
    }
    log_format(LogLevel::info, "io_uring is not available (%s): using the epoll engine",
               uring->why().c_str());
  }
  auto epoll = std::make_unique<EpollEngine>();
  int result = epoll->init(options);
  if (result == 0) return epoll;
  log_format(LogLevel::error, "cannot set up the epoll engine: %s", epoll->why().c_str());
  *error = result;
  return nullptr;
}

}  // namespace detail
}  // namespace coring

// Telling a forked child that the containers its parent was running are not its own.
#pragma once

#include <atomic>

namespace coring::detail {

// Bumped in every child that fork() makes (pthread_atfork, installed by the first container).
// A scheduler, and its engine, remember the value they started with: a different one means
// this process is a child forked while they ran, and they (their ring, their eventfd) belong
// to the parent.
extern std::atomic<unsigned> g_fork_generation;

inline unsigned fork_generation() noexcept {
  return g_fork_generation.load(std::memory_order_relaxed);
}

}  // namespace coring::detail

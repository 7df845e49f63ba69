// Vocabulary shared by every coring header: time, the one programming error every layer can
// raise (BindError), and how run-time failures are reported.
//
// Time. Every timeout is a Duration (std::chrono::nanoseconds); any integral std::chrono
// duration converts implicitly. kForever means "no timeout". A timeout of zero or less means
// "do not wait": the call succeeds only if it can complete at once, otherwise it fails with
// ETIMEDOUT (so a deadline computed as `deadline - now` that has passed never waits forever).
//
// Failures. Waiting calls never throw for run-time conditions (timeout, reset, refusal, close,
// cancel); they return a failure value and record why, on the object (obj.error()) or, for free
// functions, per coroutine (coring::last_error()). Programming errors throw: BindError when two
// coroutines read (or write) one socket or one client at the same time, std::logic_error for
// misuse such as a negative WaitGroup counter or unlocking a Mutex that is not locked.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>

namespace coring {

using Duration = std::chrono::nanoseconds;
inline constexpr Duration kForever = Duration::max();

// Thrown when a coroutine starts a read (or write) on a socket or client that another coroutine
// is reading (or writing) right now. The message is exactly Swoole's:
//   Socket#<fd> has already been bound to another coroutine#<cid>, reading of the same socket
//   in coroutine#<cid> at the same time is not allowed
class BindError : public std::logic_error {
 public:
  enum class Side { reading, writing };
  BindError(int fd, long bound_cid, long current_cid, Side side);

  int fd() const noexcept { return fd_; }
  long bound_cid() const noexcept { return bound_cid_; }      // the coroutine that holds it
  long current_cid() const noexcept { return current_cid_; }  // the coroutine that was refused
  Side side() const noexcept { return side_; }

 private:
  int fd_;
  long bound_cid_;
  long current_cid_;
  Side side_;
};

}  // namespace coring

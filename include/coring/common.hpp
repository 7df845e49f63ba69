// Vocabulary shared by every coring header: time, the one programming error every layer can
// raise (BindError), and how run-time failures are reported.
//
// Time. Every timeout is a Duration: a std::chrono::nanoseconds that every std::chrono
// duration converts to implicitly, floating-point ones (0.5s) included. The conversion
// saturates instead of overflowing: a duration longer than int64 nanoseconds can count (about
// 292 years: std::chrono::hours::max(), seconds::max()...) is kForever, one more negative than
// that is the most negative Duration that still means "do not wait", and NaN is zero. kForever
// means "no timeout". A timeout of zero or less means "do not wait": the call succeeds only if
// it can complete at once, otherwise it fails with ETIMEDOUT (so a deadline computed as
// `deadline - now` that has passed never waits forever).
//
// Failures. Waiting calls never throw for run-time conditions (timeout, reset, refusal, close,
// cancel); they return a failure value and record why, on the object (obj.error()) or, for free
// functions, per coroutine (coring::last_error()). Programming errors throw: BindError when two
// coroutines read (or write) one socket or one client at the same time, std::logic_error for
// misuse such as a negative WaitGroup counter or unlocking a Mutex that is not locked.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <ratio>
#include <stdexcept>
#include <string>
#include <type_traits>

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

namespace detail {
// d in nanoseconds, saturated to [INT64_MIN + 1, INT64_MAX] (INT64_MIN is Socket's "use the
// configured timeout"); truncated toward zero like duration_cast.
template <class Rep, class Period>
constexpr std::chrono::nanoseconds saturating_nanoseconds(
    const std::chrono::duration<Rep, Period>& d) noexcept {
  using Ratio = std::ratio_divide<Period, std::nano>;  // nanoseconds per tick: num / den
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min() + 1;
  if constexpr (std::is_floating_point_v<Rep>) {
    long double ns = static_cast<long double>(d.count()) * Ratio::num / Ratio::den;
    if (ns != ns) return std::chrono::nanoseconds(0);  // NaN
    if (ns >= static_cast<long double>(kMax)) return std::chrono::nanoseconds(kMax);
    if (ns <= static_cast<long double>(kMin)) return std::chrono::nanoseconds(kMin);
    return std::chrono::nanoseconds(static_cast<int64_t>(ns));
  } else {
    // Counts int64 cannot hold saturate first (only wider or unsigned 64-bit reps have any).
    if constexpr (std::is_unsigned_v<Rep> && sizeof(Rep) >= sizeof(int64_t)) {
      if (d.count() > static_cast<Rep>(kMax)) return std::chrono::nanoseconds(kMax);
    } else if constexpr (std::is_signed_v<Rep> && sizeof(Rep) > sizeof(int64_t)) {
      if (d.count() > static_cast<Rep>(kMax)) return std::chrono::nanoseconds(kMax);
      if (d.count() < static_cast<Rep>(kMin)) return std::chrono::nanoseconds(kMin);
    }
    const auto count = static_cast<int64_t>(d.count());
    if constexpr (Ratio::den == 1) {
      if (count > kMax / Ratio::num) return std::chrono::nanoseconds(kMax);
      if (count < kMin / Ratio::num) return std::chrono::nanoseconds(kMin);
      return std::chrono::nanoseconds(count * Ratio::num);
    } else if constexpr (Ratio::num == 1) {
      return std::chrono::nanoseconds(count / Ratio::den);
    } else {  // an unusual period (1/3 s...): exactness matters less than never overflowing
      long double ns = static_cast<long double>(count) * Ratio::num / Ratio::den;
      if (ns >= static_cast<long double>(kMax)) return std::chrono::nanoseconds(kMax);
      if (ns <= static_cast<long double>(kMin)) return std::chrono::nanoseconds(kMin);
      return std::chrono::nanoseconds(static_cast<int64_t>(ns));
    }
  }
}
}  // namespace detail

// A std::chrono::nanoseconds that any std::chrono duration converts to without overflowing
// (see the header comment). Use it as you would nanoseconds: count(), comparisons and
// arithmetic are nanoseconds'. (std::chrono::duration_cast needs nanoseconds as its target.)
class Duration : public std::chrono::nanoseconds {
 public:
  constexpr Duration() noexcept : std::chrono::nanoseconds(0) {}
  constexpr explicit Duration(rep count) noexcept : std::chrono::nanoseconds(count) {}
  constexpr Duration(std::chrono::nanoseconds d) noexcept : std::chrono::nanoseconds(d) {}
  template <class Rep, class Period>
  constexpr Duration(const std::chrono::duration<Rep, Period>& d) noexcept
      : std::chrono::nanoseconds(detail::saturating_nanoseconds(d)) {}

  static constexpr Duration zero() noexcept { return Duration(0); }
  static constexpr Duration min() noexcept { return Duration(std::chrono::nanoseconds::min()); }
  static constexpr Duration max() noexcept { return Duration(std::chrono::nanoseconds::max()); }
};

inline constexpr Duration kForever{std::chrono::nanoseconds::max()};

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

#pragma GCC visibility pop

// Go-style channels between the coroutines of one container (one thread).
//
// Channel<T>(0) is unbuffered: push() waits until a pop() takes the value (a rendezvous).
// Channel<T>(n) holds up to n values; push() waits only when it is full. Waiting producers and
// consumers are served first come, first served, and values come out in the order they went
// in. Nothing allocates after construction: a waiting push hands its value over straight from
// the producer's frame.
//
// How things fail (error() says why, as ChannelError):
// - timeout: the wait ran out (a timeout of zero fails at once when the call would wait;
//   outside a coroutine a call that would wait fails the same way, with EPERM in last_error()).
// - closed: push() after close() fails; pop() still returns the values queued before close(),
//   then fails. close() wakes every waiting producer and consumer with this error.
// - canceled: cancel(cid) interrupted the wait.
// A push that fails leaves its argument as it was: a move-only value is not moved from.
// A value whose copy (or move) throws: the exception comes out of the push() that offered the
// value, never out of a pop(), and no value already queued is lost; a pop() that finds such a
// producer waiting carries on with the next value.
// Destroying a channel while coroutines wait on it is a bug in the caller; they are woken with
// failure (no error() to read then) and a WARNING is logged. close() followed at once by the
// channel's destruction is fine: the calls it woke do not touch the channel again.
// A channel belongs to the thread that uses it; it is not safe to share between containers.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "coring/common.hpp"
#include "coring/detail/wait.hpp"
#include "coring/log.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

enum class ChannelError { ok, timeout, closed, canceled };

template <class T>
class Channel {
 public:
  explicit Channel(size_t capacity = 0)
      : capacity_(capacity),
        buffer_(capacity == 0 ? nullptr : std::allocator<T>().allocate(capacity)) {
    producers_.record_failures_in(&failure_);
    consumers_.record_failures_in(&failure_);
  }

  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  ~Channel() {
    if (!producers_.empty() || !consumers_.empty()) {
      log(LogLevel::warning, "Channel destroyed while coroutines wait on it");
      detail::wake_all(producers_, detail::kWaitDestroyed);
      detail::wake_all(consumers_, detail::kWaitDestroyed);
    }
    while (count_ > 0) drop_front();
    if (buffer_ != nullptr) std::allocator<T>().deallocate(buffer_, capacity_);
  }

  // push() and pop() are forced inline, and do their waiting in the caller's own frame: a wait
  // resumes after a context switch, and returning from a frame of our own then would mispredict
  // (about 7 ns a switch; measured on the ping-pong benchmark: 48 ns per round trip out of line,
  // 34 ns inline). What needs no wait is done out of line (take_now, put_now).
  __attribute__((always_inline)) bool push(T&& v, Duration timeout = kForever) {
    return push_value<true>(&v, timeout);
  }
  __attribute__((always_inline)) bool push(const T& v, Duration timeout = kForever) {
    return push_value<false>(const_cast<T*>(&v), timeout);
  }

  __attribute__((always_inline)) std::optional<T> pop(Duration timeout = kForever) {
    if (count_ > 0 || !producers_.empty() || closed_) return take_now();
    std::optional<T> out;
    detail::Waiter waiter;
    waiter.slot = &out;
    int result = detail::park(consumers_, waiter, timeout);
    if (result == detail::kWaitOk) return out;
    failed_without_waiting(waiter, result);
    return std::nullopt;
  }

  // Wakes every waiter with ChannelError::closed; idempotent.
  void close() {
    if (closed_) return;
    closed_ = true;
    // The woken calls fail with `closed`; recorded here, so that they need not touch the
    // channel again when they resume: the common `close(); return;` may destroy it before.
    if (!producers_.empty() || !consumers_.empty()) failure_ = detail::kWaitClosed;
    detail::wake_all(producers_, detail::kWaitClosed);
    detail::wake_all(consumers_, detail::kWaitClosed);
  }

  size_t size() const noexcept { return count_; }  // values queued (0 when unbuffered)
  size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return count_ == 0; }
  bool full() const noexcept { return count_ >= capacity_; }  // always true when unbuffered
  bool closed() const noexcept { return closed_; }
  size_t consumer_num() const noexcept { return consumers_.size(); }
  size_t producer_num() const noexcept { return producers_.size(); }
  ChannelError error() const noexcept {  // reason of the last failed call
    switch (failure_) {
      case 0:
        return ChannelError::ok;
      case detail::kWaitClosed:
        return ChannelError::closed;
      case ECANCELED:
        return ChannelError::canceled;
      default:
        return ChannelError::timeout;
    }
  }

 private:
  static constexpr uint32_t kCopyValue = 1;  // Waiter::flags: the producer passed a const T&

  // A call that failed: what a wait that ended (timeout, cancel) had to say, its list recorded
  // in failure_ while the channel certainly existed; close() and the destructor record their
  // own. A resumed call never touches the channel again, which may be gone by then (close() or
  // cancel() followed by the channel's destruction). Only a park() that failed before it
  // queued anything (zero timeout, outside a coroutine, refused while unwinding) records here.
  void failed_without_waiting(const detail::Waiter& waiter, int result) noexcept {
    if (waiter.coroutine != nullptr) return;
    failure_ = result == ECANCELED ? ECANCELED : ETIMEDOUT;
  }

  // What a waiting producer offers: its value, and where a consumer that fails to take it
  // leaves the exception (so that it lands in the producer's push(), never in the pop()).
  struct Offer {
    T* value;
    std::exception_ptr failure;
  };

  // pop() without waiting: a queued value, a waiting producer's, or the failure of a closed
  // channel. Only called when one of them is there.
  __attribute__((noinline)) std::optional<T> take_now() {
    if (count_ > 0) {
      std::optional<T> out;
      out.emplace(std::move(buffer_[head_]));  // if this throws, the value stays queued
      drop_front();
      refill_from_producers();  // a slot just opened
      return out;
    }
    while (detail::Waiter* producer = producers_.front()) {  // unbuffered rendezvous
      std::optional<T> out;
      if (hand_over(*producer,
                    [&](auto&& value) { out.emplace(std::forward<decltype(value)>(value)); })) {
        return out;
      }
      // That producer's value could not be taken (its push() fails); try the next one.
    }
    if (!closed_) return pop();  // every producer failed: wait after all
    failure_ = detail::kWaitClosed;
    return std::nullopt;
  }

  // kMove: the caller passed T&& (move from *value on success); else const T& (copy). A
  // template parameter, not a run-time flag, so that a move-only T compiles.
  template <bool kMove>
  __attribute__((always_inline)) bool push_value(T* value, Duration timeout) {
    if (closed_ || !consumers_.empty() || count_ < capacity_) return put_now<kMove>(value);
    Offer offer{value, nullptr};
    detail::Waiter waiter;
    waiter.slot = &offer;
    waiter.flags = kMove ? 0 : kCopyValue;
    int result = detail::park(producers_, waiter, timeout);
    if (result == detail::kWaitOk) return true;
    if (result == detail::kWaitFailed) std::rethrow_exception(offer.failure);
    failed_without_waiting(waiter, result);
    return false;
  }

  // push() without waiting: to a waiting consumer, into the buffer, or the failure of a closed
  // channel. Only called when one of them applies.
  template <bool kMove>
  __attribute__((noinline)) bool put_now(T* value) {
    if (closed_) {
      failure_ = detail::kWaitClosed;
      return false;
    }
    if (detail::Waiter* consumer = consumers_.front()) {
      auto* slot = static_cast<std::optional<T>*>(consumer->slot);
      if constexpr (kMove) {
        slot->emplace(std::move(*value));
      } else {
        slot->emplace(*value);  // if the copy throws, it throws here: the consumer waits on
      }
      detail::wake(*consumer, detail::kWaitOk);
      return true;
    }
    if constexpr (kMove) {
      ::new (buffer_ + index(count_)) T(std::move(*value));
    } else {
      ::new (buffer_ + index(count_)) T(*value);
    }
    ++count_;
    return true;
  }

  // Builds the waiting producer's value through place(value) (a copy or a move, as it was
  // pushed) and wakes it with success. If that throws, the producer's push() fails with the
  // exception instead (it is woken with kWaitFailed) and false is returned: the consumer's
  // call carries on, and no value is lost.
  template <class Place>
  static bool hand_over(detail::Waiter& producer, Place&& place) {
    auto* offer = static_cast<Offer*>(producer.slot);
    try {
      if constexpr (std::is_copy_constructible_v<T>) {
        if (producer.flags & kCopyValue) {
          place(static_cast<const T&>(*offer->value));
          detail::wake(producer, detail::kWaitOk);
          return true;
        }
      }
      place(std::move(*offer->value));
    } catch (...) {
      offer->failure = std::current_exception();
      detail::wake(producer, detail::kWaitFailed);
      return false;
    }
    detail::wake(producer, detail::kWaitOk);
    return true;
  }

  // A slot opened in a full buffer: the longest-waiting producer's value joins the queue.
  void refill_from_producers() {
    while (detail::Waiter* producer = producers_.front()) {
      T* slot = buffer_ + index(count_);
      if (hand_over(*producer,
                    [&](auto&& value) { ::new (slot) T(std::forward<decltype(value)>(value)); })) {
        ++count_;
        return;
      }
    }
  }

  size_t index(size_t offset) const noexcept {
    size_t i = head_ + offset;
    return i >= capacity_ ? i - capacity_ : i;
  }

  void drop_front() noexcept {
    buffer_[head_].~T();
    head_ = index(1);
    --count_;
  }

  size_t capacity_;
  T* buffer_;
  size_t head_ = 0;
  size_t count_ = 0;
  bool closed_ = false;
  int failure_ = 0;  // 0, ETIMEDOUT, ECANCELED or kWaitClosed: see error()
  detail::WaitList producers_;
  detail::WaitList consumers_;
};

}  // namespace coring

#pragma GCC visibility pop

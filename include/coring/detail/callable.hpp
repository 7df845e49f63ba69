// Type erasure for the functions a coroutine runs. Not part of the public contract.
//
// A coroutine's function object is moved (or copied) straight into the top of its own stack,
// so create() allocates nothing on the heap; CallableOps is the per-type table that lets the
// non-template scheduler construct, call and destroy it there.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring::detail {

struct CallableOps {
  size_t size;
  size_t align;
  // Builds the callable at dst from *src (moving or copying, as the caller passed it).
  void (*construct)(void* dst, void* src);
  void (*invoke)(void* self);
  void (*destroy)(void* self) noexcept;
};

template <class Fn, bool kMove>
struct CallableOpsFor {
  static void construct(void* dst, void* src) {
    if constexpr (kMove) {
      ::new (dst) Fn(std::move(*static_cast<Fn*>(src)));
    } else {
      ::new (dst) Fn(*static_cast<const Fn*>(src));
    }
  }
  static void invoke(void* self) { std::invoke(*static_cast<Fn*>(self)); }
  static void destroy(void* self) noexcept { static_cast<Fn*>(self)->~Fn(); }
  static constexpr CallableOps ops{sizeof(Fn), alignof(Fn), &construct, &invoke, &destroy};
};

// The ops for a forwarding reference F: move from rvalues, copy from lvalues.
template <class F>
constexpr const CallableOps& callable_ops() {
  using Fn = std::decay_t<F>;
  return CallableOpsFor<Fn, !std::is_lvalue_reference_v<F>>::ops;
}

// Binds arguments by value, as std::thread and Swoole's go(fn, ...args) do.
template <class F, class... Args>
auto bind_arguments(F&& fn, Args&&... args) {
  return [fn = std::forward<F>(fn),
          arguments = std::make_tuple(std::forward<Args>(args)...)]() mutable {
    std::apply(fn, std::move(arguments));
  };
}

// A heap-held nullary callable, for the rare paths that must keep one beyond the caller's
// frame (defer, timers). std::function cannot hold move-only lambdas.
class Task {
 public:
  virtual ~Task() = default;
  virtual void call() = 0;
};

template <class Fn>
class TaskFor final : public Task {
 public:
  template <class F>
  explicit TaskFor(F&& fn) : fn_(std::forward<F>(fn)) {}
  void call() override { std::invoke(fn_); }

 private:
  Fn fn_;
};

template <class F>
std::unique_ptr<Task> make_task(F&& fn) {
  return std::make_unique<TaskFor<std::decay_t<F>>>(std::forward<F>(fn));
}

}  // namespace coring::detail

#pragma GCC visibility pop

// coring::ConnectionPool<T>: many coroutines share a few connections (sockets, clients,
// anything a factory makes), as Swoole's ConnectionPool and Go's database/sql pool do.
//
// get() hands out a connection wrapped in a Handle, which gives it back when it is destroyed.
// The connection comes from, in this order: the idle connections (the one given back last
// first, so the others can reach idle_timeout and go); else a new one from the factory, while
// fewer than size() connections exist (they are made on demand, or all at once by fill());
// else get() waits until a Handle gives one back or a slot frees up. Waiting coroutines are
// served first come, first served: a connection given back, or a free slot, goes straight to
// the coroutine that has waited longest, and nobody who arrives later can take it first.
// A connection that went wrong in use is dropped with Handle::mark_broken(): the pool destroys
// it when its Handle goes, and makes a new one when one is next needed.
//
// Idle connections (Options): one idle longer than idle_timeout is destroyed instead of handed
// out, and health_check runs on an idle connection before it is handed out; a connection that
// fails it is destroyed and get() tries the next idle one or makes a new one. For sockets,
// `[](Socket& s) { return s.check_liveness(); }` finds a peer that closed the connection while
// it sat idle (a server's keep-alive timeout, a server restart), so that the pool does not hand
// out a dead connection. Neither runs on a connection handed straight from one coroutine to a
// waiting one (it was in use a moment ago), nor on a new one. Idle connections are looked at
// when get() is called; the pool keeps no timer of its own.
//
// How things fail. get() returns an empty optional and records why in coring::last_error()
// (per coroutine: many coroutines share a pool, and one's failure must not be overwritten by
// another's call before it is read):
// - ETIMEDOUT: every connection was in use and none came back within timeout. A timeout of zero
//   or less does not wait (it still takes an idle connection, or makes a new one); kForever
//   waits as long as it takes. The timeout bounds the wait for a connection or a slot, not the
//   factory's or the health check's own work (give the factory's connect() its own timeout).
// - ECANCELED: cancel(cid) interrupted the wait. Nothing is lost: a connection or slot given
//   back meanwhile goes to the next waiter.
// - EBADF: the pool is closed (close(), or the ConnectionPool was destroyed), also for a wait
//   that close() ended.
// - The factory failed (returned null): the errno the factory left in last_error(), or
//   ECANCELED if cancel(cid) interrupted it, else ENOTCONN. The slot it would have used stays
//   free, and the next waiting coroutine (if any) is woken to try the factory itself, so that
//   while the factory fails every get() fails at once instead of waiting forever.
// - EPERM: it would have to wait, outside a coroutine.
// - An exception thrown by the factory or by the health check comes out of get() (or fill());
//   the slot is freed first, and a connection whose health check threw is destroyed.
// - While its coroutine is being unwound (see coroutine.hpp), get() that would have to wait
//   does not: the unwinding goes on (or, in a destructor, get() returns empty with ECANCELED).
//   A Handle destroyed by the unwinding gives its connection back as usual.
// Programming errors throw std::invalid_argument: a size of 0, or an empty factory.
//
// Lifetime. close() wakes every waiting get() with EBADF, destroys the idle connections, and
// makes every later get() fail; connections handed out are destroyed when their Handles go.
// A factory call in progress during close() has its connection destroyed and its get() fails
// with EBADF. Destroying the ConnectionPool closes it; Handles may outlive it (their
// connections are destroyed when they go: the pool's state lives until its last Handle does).
//
// Threads and processes. A pool, its Handles and its connections belong to the container
// (thread) that made them, like a Socket; use one pool per container. Never share a connection
// across processes (two processes on one socket interleave their requests and answers): with
// WorkerPool, each worker creates its own pool in on_worker_start, or in worker_main, never the
// master before start(). A pool's connections must not outlive the container they were made in.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "coring/common.hpp"
#include "coring/detail/wait.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

namespace detail {

// The part of a pool that does not depend on T: slots, idle connections and waiters, kept on
// the heap and counted (the ConnectionPool and every Handle hold a reference) so that Handles
// may outlive the pool. Connections are void* here; the typed subclass makes and destroys them.
class PoolCore {
 public:
  PoolCore(size_t size, Duration idle_timeout, bool health_check);
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  // One thread uses a pool: plain counts, no atomics.
  void retain() noexcept { ++references_; }
  void release() noexcept {
    if (--references_ == 0) delete this;
  }

  void* acquire(Duration timeout);  // null: last_error() says why
  void give_back(void* connection, bool broken) noexcept;
  void fill();
  void close() noexcept;

  size_t size() const noexcept { return size_; }
  size_t idle() const noexcept { return idle_.size(); }
  size_t connections() const noexcept { return slots_used_; }
  size_t waiting() const noexcept { return waiters_.size(); }
  bool closed() const noexcept { return closed_; }

 protected:
  virtual ~PoolCore();
  virtual void* create() = 0;  // a new connection, or null
  virtual void destroy(void* connection) noexcept = 0;
  virtual bool healthy(void* connection) = 0;

 private:
  struct Idle {
    void* connection;
    int64_t since_ns;  // when it was given back (0 without an idle timeout)
  };
  struct Grant;
  class Claim;

  void* wait_for_grant(Duration timeout);
  void* make(Claim& claim);  // the factory, in the slot the claim holds
  void release_slot() noexcept;
  void drop_expired();

  size_t size_;
  int64_t idle_timeout_ns_;  // 0: off
  bool health_check_;
  bool closed_ = false;
  size_t references_ = 1;
  // Slots in use: connections that exist (idle or handed out), plus factory calls in progress
  // and free slots granted to a woken waiter.
  size_t slots_used_ = 0;
  std::vector<Idle> idle_;  // oldest first; handed out from the back
  WaitList waiters_;
};

}  // namespace detail

template <class T>
class ConnectionPool {
 public:
  struct Options {
    // The most connections that exist at once. 0: std::invalid_argument; a huge one (a negative
    // number cast to size_t) is no limit in practice: the factory's failures then bound it.
    size_t size = 64;
    // A connection idle longer than this is destroyed instead of handed out. Zero or less, or
    // kForever: no limit.
    Duration idle_timeout = Duration::zero();
    // Runs on an idle connection before it is handed out; false: destroy it (see the header
    // comment). Empty: no check.
    std::function<bool(T&)> health_check;
  };

  // Move-only access to one connection; gives it back to the pool when destroyed (or assigned
  // to). A moved-from Handle holds nothing (get() is null).
  class Handle {
   public:
    Handle(Handle&& other) noexcept
        : core_(std::exchange(other.core_, nullptr)),
          connection_(std::exchange(other.connection_, nullptr)),
          broken_(std::exchange(other.broken_, false)) {}
    Handle& operator=(Handle&& other) noexcept {
      if (this != &other) {
        reset();
        core_ = std::exchange(other.core_, nullptr);
        connection_ = std::exchange(other.connection_, nullptr);
        broken_ = std::exchange(other.broken_, false);
      }
      return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { reset(); }

    T* operator->() const noexcept { return connection_; }
    T& operator*() const noexcept { return *connection_; }
    T* get() const noexcept { return connection_; }
    explicit operator bool() const noexcept { return connection_ != nullptr; }

    // The connection is unusable (a failed exchange, a protocol error): the pool destroys it
    // when this Handle goes instead of handing it out again, which frees its slot for a new one.
    void mark_broken() noexcept { broken_ = true; }
    bool broken() const noexcept { return broken_; }

   private:
    friend class ConnectionPool;
    Handle(detail::PoolCore* core, T* connection) noexcept : core_(core), connection_(connection) {
      core_->retain();
    }
    void reset() noexcept {
      if (core_ == nullptr) return;
      detail::PoolCore* core = std::exchange(core_, nullptr);
      core->give_back(std::exchange(connection_, nullptr), broken_);
      core->release();
    }

    detail::PoolCore* core_ = nullptr;
    T* connection_ = nullptr;
    bool broken_ = false;
  };

  ConnectionPool(std::function<std::unique_ptr<T>()> factory, size_t size = 64)
      : ConnectionPool(std::move(factory), Options{size, Duration::zero(), {}}) {}
  ConnectionPool(std::function<std::unique_ptr<T>()> factory, Options options)
      : core_(new State(std::move(factory), std::move(options))) {}
  ConnectionPool(ConnectionPool&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  ConnectionPool& operator=(ConnectionPool&& other) noexcept {
    if (this != &other) {
      drop();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;
  ~ConnectionPool() { drop(); }  // close()s the pool

  // A connection, or empty with last_error() (see the header comment).
  std::optional<Handle> get(Duration timeout = kForever) {
    if (core_ == nullptr) return failed_on_moved_from();
    void* connection = core_->acquire(timeout);
    if (connection == nullptr) return std::nullopt;
    return Handle(core_, static_cast<T*>(connection));
  }

  // Makes connections until size() exist (a waiting get() gets the first ones); stops at the
  // first failure of the factory, with last_error() saying why (connections() tells how many
  // exist). With a huge size it makes connections until the factory fails.
  void fill() {
    if (core_ != nullptr) core_->fill();
  }
  void close() {
    if (core_ != nullptr) core_->close();
  }

  size_t size() const noexcept { return core_ ? core_->size() : 0; }  // the limit
  // Idle connections, ones past idle_timeout that get() has not looked at yet included.
  size_t idle() const noexcept { return core_ ? core_->idle() : 0; }
  // Connections that exist now: idle, handed out, or being made.
  size_t connections() const noexcept { return core_ ? core_->connections() : 0; }
  size_t waiting() const noexcept { return core_ ? core_->waiting() : 0; }  // in get() now
  bool closed() const noexcept { return core_ == nullptr || core_->closed(); }

 private:
  class State final : public detail::PoolCore {
   public:
    State(std::function<std::unique_ptr<T>()> factory, Options options)
        : PoolCore(options.size, options.idle_timeout, static_cast<bool>(options.health_check)),
          factory_(std::move(factory)),
          health_check_(std::move(options.health_check)) {
      if (!factory_) throw std::invalid_argument("ConnectionPool: an empty factory");
    }

   private:
    void* create() override { return factory_().release(); }
    void destroy(void* connection) noexcept override { delete static_cast<T*>(connection); }
    bool healthy(void* connection) override { return health_check_(*static_cast<T*>(connection)); }

    std::function<std::unique_ptr<T>()> factory_;
    std::function<bool(T&)> health_check_;
  };

  void drop() noexcept {
    if (core_ == nullptr) return;
    core_->close();
    std::exchange(core_, nullptr)->release();
  }
  static std::optional<Handle> failed_on_moved_from() {
    detail::set_last_error(EBADF);
    return std::nullopt;
  }

  detail::PoolCore* core_;
};

}  // namespace coring

#pragma GCC visibility pop

// coring::ConnectionPool's untyped part (see coring/pool.hpp).
//
// Invariants:
// - slots_used_ counts every connection that exists (idle or handed out), every factory call in
//   progress, and every free slot granted to a woken waiter that has not run yet; it never
//   exceeds size_. A slot is freed in one place, release_slot(), which hands it to the
//   longest-waiting get() instead when there is one.
// - Coroutines wait only while no connection is idle: give_back() hands a connection to the
//   longest-waiting get() before it would make it idle, and get() queues only after finding
//   nothing idle and no free slot, without a suspension in between. So nobody who arrives
//   later takes what a waiter is owed.
// - A waiter is owed something only once wake() took it off the list; cancel(cid) and the
//   timeout take it off themselves, so a wait that ended that way is owed nothing and nothing
//   can be granted to a coroutine that is gone. What was granted lives in the waiter's frame
//   (Grant) and goes back to the pool if that frame unwinds before it is used.
// - User code (the factory, the health check, T's destructor) may suspend, and other coroutines
//   then use the pool: no iterator, and no conclusion about the pool's state, is kept across
//   such a call.
#include "coring/pool.hpp"

#include <cerrno>
#include <stdexcept>
#include <utility>

#include "core/scheduler.hpp"
#include "coring/coroutine.hpp"

namespace coring::detail {

// What a waker hands the get() it wakes: a connection given back, or a free slot to make one in.
struct PoolCore::Grant {
  void* connection = nullptr;
  bool slot = false;
};

namespace {

int64_t idle_limit_ns(Duration idle_timeout) noexcept {
  return idle_timeout <= Duration::zero() || idle_timeout == kForever ? 0 : idle_timeout.count();
}

// Keeps the pool's state alive while a call on it may suspend: the ConnectionPool may be
// destroyed meanwhile (by another coroutine).
class Reference {
 public:
  explicit Reference(PoolCore* core) noexcept : core_(core) { core_->retain(); }
  Reference(const Reference&) = delete;
  Reference& operator=(const Reference&) = delete;
  ~Reference() { core_->release(); }

 private:
  PoolCore* core_;
};

int fail(int error) noexcept {
  set_last_error(error);
  return error;
}

}  // namespace

// A slot this get() holds, and the connection in it if any: unless taken, the connection is
// destroyed and the slot freed when it goes (a throw from user code, or the unwinding).
class PoolCore::Claim {
 public:
  Claim(PoolCore* core, void* connection) noexcept : core_(core), connection_(connection) {}
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;
  ~Claim() {
    if (!held_) return;
    if (connection_ != nullptr) core_->destroy(connection_);
    core_->release_slot();
  }
  void* connection() const noexcept { return connection_; }
  void hold(void* connection) noexcept { connection_ = connection; }
  // Destroys the connection; the slot stays held.
  void drop_connection() noexcept {
    if (void* connection = std::exchange(connection_, nullptr)) core_->destroy(connection);
  }
  void* take() noexcept {
    held_ = false;
    return connection_;
  }

 private:
  PoolCore* core_;
  void* connection_;
  bool held_ = true;
};

PoolCore::PoolCore(size_t size, Duration idle_timeout, bool health_check)
    : size_(size), idle_timeout_ns_(idle_limit_ns(idle_timeout)), health_check_(health_check) {
  if (size == 0) {
    throw std::invalid_argument("ConnectionPool: size 0 (no connection could ever be handed out)");
  }
}

// By now close() has run (the ConnectionPool's destructor) and every Handle has gone.
PoolCore::~PoolCore() = default;

void* PoolCore::acquire(Duration timeout) {
  Reference reference(this);
  for (;;) {
    if (closed_) {
      fail(EBADF);
      return nullptr;
    }
    drop_expired();
    if (closed_) continue;
    if (!idle_.empty()) {
      Claim claim(this, idle_.back().connection);
      idle_.pop_back();
      if (!health_check_) return claim.take();
      bool healthy_now = healthy(claim.connection());
      if (healthy_now && !closed_) return claim.take();
      claim.drop_connection();
      if (closed_ || !idle_.empty()) continue;  // the claim frees the slot: try the next one
      return make(claim);                       // none idle: a new connection in this slot
    }
    if (slots_used_ < size_) {
      ++slots_used_;
      Claim claim(this, nullptr);
      return make(claim);
    }
    return wait_for_grant(timeout);
  }
}

void* PoolCore::wait_for_grant(Duration timeout) {
  Grant grant;
  // What was granted goes back if this frame unwinds before using it.
  struct Unused {
    PoolCore* core;
    Grant& grant;
    ~Unused() {
      if (void* connection = std::exchange(grant.connection, nullptr)) {
        core->give_back(connection, false);
      } else if (std::exchange(grant.slot, false)) {
        core->release_slot();
      }
    }
  } unused{this, grant};
  Waiter waiter;
  waiter.slot = &grant;
  int result = park(waiters_, waiter, timeout);  // records ETIMEDOUT, ECANCELED, EPERM
  if (result == kWaitClosed || (result == kWaitOk && closed_)) {
    fail(EBADF);  // `unused` destroys a connection granted just before close()
    return nullptr;
  }
  if (result != kWaitOk) return nullptr;
  if (grant.connection != nullptr) return std::exchange(grant.connection, nullptr);
  grant.slot = false;
  Claim claim(this, nullptr);
  return make(claim);
}

void* PoolCore::make(Claim& claim) {
  set_last_error(0);
  const bool cancelled_before = this_coroutine::is_cancelled();
  claim.hold(create());  // a throw: the claim frees the slot
  if (closed_) {
    fail(EBADF);  // the claim destroys what the factory made
    return nullptr;
  }
  if (claim.connection() == nullptr) {
    int error = last_error().value();
    if (error == 0)
      error = !cancelled_before && this_coroutine::is_cancelled() ? ECANCELED : ENOTCONN;
    fail(error);
    return nullptr;  // the claim frees the slot: a waiter, if any, tries the factory itself
  }
  return claim.take();
}

void PoolCore::release_slot() noexcept {
  if (!closed_) {
    if (Waiter* waiter = waiters_.front()) {
      static_cast<Grant*>(waiter->slot)->slot = true;
      wake(*waiter, kWaitOk);
      return;
    }
  }
  --slots_used_;
}

void PoolCore::give_back(void* connection, bool broken) noexcept {
  if (connection == nullptr) return;
  if (broken || closed_) {
    destroy(connection);
    release_slot();
    return;
  }
  if (Waiter* waiter = waiters_.front()) {
    static_cast<Grant*>(waiter->slot)->connection = connection;
    wake(*waiter, kWaitOk);
    return;
  }
  try {
    // The clock only when it is needed: most pools have no idle timeout.
    idle_.push_back(Idle{connection, idle_timeout_ns_ > 0 ? monotonic_ns() : 0});
  } catch (...) {  // no memory to keep it idle: let it go
    destroy(connection);
    release_slot();
  }
}

void PoolCore::drop_expired() {
  if (idle_timeout_ns_ == 0 || idle_.empty()) return;
  const int64_t now = monotonic_ns();
  size_t expired = 0;  // idle_ is oldest first
  while (expired < idle_.size() && now - idle_[expired].since_ns > idle_timeout_ns_) ++expired;
  if (expired == 0) return;
  std::vector<Idle> dropped(idle_.begin(), idle_.begin() + static_cast<ptrdiff_t>(expired));
  idle_.erase(idle_.begin(), idle_.begin() + static_cast<ptrdiff_t>(expired));
  for (Idle& entry : dropped) {
    destroy(entry.connection);
    release_slot();
  }
}

void PoolCore::fill() {
  Reference reference(this);
  while (!closed_ && slots_used_ < size_) {
    ++slots_used_;
    Claim claim(this, nullptr);
    void* connection = make(claim);
    if (connection == nullptr) return;
    give_back(connection, false);  // to a waiting get(), else idle
  }
}

void PoolCore::close() noexcept {
  if (closed_) return;
  closed_ = true;
  wake_all(waiters_, kWaitClosed);
  std::vector<Idle> idle;
  idle.swap(idle_);
  slots_used_ -= idle.size();
  for (Idle& entry : idle) destroy(entry.connection);
}

}  // namespace coring::detail

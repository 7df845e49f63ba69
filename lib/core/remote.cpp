#include "core/remote.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "core/scheduler.hpp"

namespace coring::detail {

RemoteInbox::~RemoteInbox() {
  if (eventfd_ >= 0) ::close(eventfd_);
}

bool RemoteInbox::expect(int* error) {
  if (eventfd_ < 0) {
    eventfd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (eventfd_ < 0) {
      *error = errno;
      return false;
    }
    reader_.inbox = this;
  }
  ++expected_;
  arm();
  return true;
}

void RemoteInbox::unexpect() noexcept {
  if (expected_ > 0) --expected_;
  // Nobody waits any more: let the pending read go so the container can end. A later expect()
  // arms it again and whatever was delivered meanwhile is drained then.
  if (expected_ == 0 && armed_) tls_scheduler->engine().cancel(reader_);
}

void RemoteInbox::arm() {
  EventEngine& engine = tls_scheduler->engine();
  while (!armed_ && expected_ > 0) {
    prepare_eventfd_read(reader_, eventfd_, &counter_, &RemoteInbox::on_wakeup);
    if (!engine.start(reader_)) {
      armed_ = true;  // in flight: on_wakeup() comes
      return;
    }
    // Done at once: something was delivered already (or the engine is unusable, which
    // wait_without_ring() takes over from).
    if (reader_.result < 0) return;
    drain();
  }
}

void RemoteInbox::on_wakeup(IoOp* op) {
  RemoteInbox* inbox = static_cast<Reader*>(op)->inbox;
  inbox->armed_ = false;
  inbox->drain();
  inbox->arm();
}

void RemoteInbox::wait_without_ring(int64_t timeout_ns) {
  timespec timeout{};
  if (timeout_ns >= 0) {
    timeout.tv_sec = timeout_ns / 1'000'000'000;
    timeout.tv_nsec = timeout_ns % 1'000'000'000;
  }
  if (eventfd_ >= 0 && expected_ > 0) {
    pollfd ready{eventfd_, POLLIN, 0};
    ::ppoll(&ready, 1, timeout_ns >= 0 ? &timeout : nullptr, nullptr);
    uint64_t value;
    ssize_t ignored = ::read(eventfd_, &value, sizeof value);  // non-blocking: resets it
    (void)ignored;
  } else if (timeout_ns > 0) {
    ::nanosleep(&timeout, nullptr);  // only timers are left to wait for
  }
  drain();
}

void RemoteInbox::drain() {
  std::vector<std::unique_ptr<RemoteJob>> jobs;
  {
    std::lock_guard lock(mutex_);
    jobs.swap(delivered_);
  }
  for (auto& job : jobs) job->finish();
}

void RemoteInbox::deliver(std::unique_ptr<RemoteJob> job) {
  {
    std::lock_guard lock(mutex_);
    if (!open_) return;  // the scheduler is gone: drop the job (here, on this thread)
    delivered_.push_back(std::move(job));
  }
  uint64_t one = 1;
  ssize_t written = ::write(eventfd_, &one, sizeof one);
  (void)written;  // EAGAIN only when the counter is saturated: a wake-up is pending anyway
}

void RemoteInbox::close() noexcept {
  std::vector<std::unique_ptr<RemoteJob>> dropped;
  std::lock_guard lock(mutex_);
  open_ = false;
  dropped.swap(delivered_);
}

}  // namespace coring::detail

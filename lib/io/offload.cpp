// offload(): run a blocking function on a worker thread while the coroutine waits.
#include <cerrno>
#include <cstring>

#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/system.hpp"
#include "io/offload_pool.hpp"

namespace coring::detail {
namespace {

class OffloadDone final : public RemoteJob {
 public:
  OffloadDone(Coroutine* waiter, bool* done) : waiter_(waiter), done_(done) {}
  void finish() override {
    *done_ = true;
    tls_scheduler->make_ready(waiter_);
  }

 private:
  Coroutine* waiter_;
  bool* done_;
};

void ignore_abort(WaitContext*) {}

}  // namespace

void run_offloaded(Task& task) {
  if (running_coroutine() == nullptr) {  // no scheduler to wait in
    task.call();
    return;
  }
  // offload() has no failure value: where its coroutine may not wait (unwound after a deadlock
  // with an exception in flight, or a forked child), the work runs right here rather than not
  // at all. Where throwing is safe, begin_wait() unwinds instead, and fn does not run.
  WaitPermit permit = begin_wait();
  if (!permit) {
    task.call();
    return;
  }
  Scheduler* s = tls_scheduler;
  ExpectDelivery expect(*s->inbox());
  if (!expect.ok()) {
    log_format(LogLevel::warning, "offload: no wake-up channel (%s); running on the scheduler",
               std::strerror(expect.error()));
    task.call();
    return;
  }
  bool done = false;
  auto job = std::make_unique<OffloadDone>(permit.self, &done);
  std::shared_ptr<RemoteInbox> inbox = s->inbox();
  submit_to_workers(make_task([&task, job = std::move(job), inbox]() mutable {
    task.call();
    inbox->deliver(std::move(job));
  }));
  // The worker uses this frame until it is done, so this wait cannot end early: not
  // cancellable, and the deadlock unwinder's abort does nothing (the wait is not stuck: the
  // wake-up read is in flight).
  WaitContext wait;
  wait.cancellable = false;
  wait.abort = &ignore_abort;
  s->wait_until(permit, wait, INT64_MAX, [&] { return done; });
}

}  // namespace coring::detail

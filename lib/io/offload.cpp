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
  Scheduler* s = tls_scheduler;
  Coroutine* self = running_coroutine();
  if (self == nullptr) {
    task.call();
    return;
  }
  int error = 0;
  if (!s->inbox()->expect(&error)) {
    log_format(LogLevel::warning, "offload: no wake-up channel (%s); running on the scheduler",
               std::strerror(error));
    task.call();
    return;
  }
  bool done = false;
  auto job = std::make_unique<OffloadDone>(self, &done);
  std::shared_ptr<RemoteInbox> inbox = s->inbox();
  submit_to_workers(make_task([&task, job = std::move(job), inbox]() mutable {
    task.call();
    inbox->deliver(std::move(job));
  }));
  // The worker uses this frame until it is done, so this wait cannot end early.
  WaitContext wait;
  wait.cancellable = false;
  wait.abort = &ignore_abort;
  do {
    s->block(self, wait);
  } while (!done);
  s->inbox()->unexpect();
}

}  // namespace coring::detail

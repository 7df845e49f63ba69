#include "core/io_op.hpp"

#include <cerrno>

#include "core/scheduler.hpp"

namespace coring::detail {
namespace {

struct IoWait : WaitContext {
  IoOp* op = nullptr;
};

void complete_io(IoOp* op) {
  op->completed = true;
  tls_scheduler->make_ready(op->waiter);
}

void io_deadline_passed(TimerNode* node) {
  request_cancel(*static_cast<IoWait*>(node)->op, ETIMEDOUT);
}

void io_abort(WaitContext* context) {
  auto* wait = static_cast<IoWait*>(context);
  tls_scheduler->disarm(*wait);
  request_cancel(*wait->op, ECANCELED);
}

}  // namespace

int32_t run_io(const WaitPermit& permit, IoOp& op, int64_t deadline_ns) {
  op.waiter = permit.self;
  op.on_complete = &complete_io;
  op.completed = false;
  op.cancel_reason = 0;
  Scheduler* s = tls_scheduler;
  if (s->engine().start(op)) {  // done at once (the epoll engine's usual case)
    op.completed = true;
    return op.result;
  }
  IoWait wait;
  wait.op = &op;
  wait.abort = &io_abort;
  wait.fire = &io_deadline_passed;
  wait.ring_operation = true;
  // Only the completion readies us: the deadline and aborts merely request a cancellation.
  s->wait_until(permit, wait, deadline_ns, [&] { return op.completed; });
  if (op.result == -ECANCELED && op.cancel_reason != 0) return -op.cancel_reason;
  if (op.result == -EINTR && op.cancel_reason != 0) return -op.cancel_reason;
  return op.result;
}

void request_cancel(IoOp& op, int reason) noexcept {
  if (op.completed || op.cancel_reason != 0) return;
  op.cancel_reason = reason;
  tls_scheduler->engine().cancel(op);
}

}  // namespace coring::detail

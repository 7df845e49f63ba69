#include "core/io_op.hpp"

#include <cerrno>

#include "core/scheduler.hpp"

namespace coring::detail {
namespace {

struct IoWait : WaitContext {
  IoOp* op = nullptr;
};

void complete_io(Completion* completion, int32_t result, uint32_t flags) {
  auto* op = static_cast<IoOp*>(completion);
  op->result = result;
  op->cqe_flags = flags;
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

io_uring_sqe* prepare_io(const WaitPermit&, IoOp& op, int* error) {
  Scheduler* s = tls_scheduler;
  io_uring_sqe* sqe = s->engine().get_sqe();
  if (sqe == nullptr) {  // the ring is unusable: fail with what made it so
    *error = s->engine().failure();
    return nullptr;
  }
  op.complete = &complete_io;
  op.completed = false;
  op.cancel_reason = 0;
  io_uring_sqe_set_data(sqe, &op);
  return sqe;
}

int32_t wait_io(const WaitPermit& permit, IoOp& op, int64_t deadline_ns) {
  op.waiter = permit.self;
  IoWait wait;
  wait.op = &op;
  wait.abort = &io_abort;
  wait.fire = &io_deadline_passed;
  wait.ring_operation = true;
  // Only the CQE readies us: the deadline and aborts merely request a cancellation.
  tls_scheduler->wait_until(permit, wait, deadline_ns, [&] { return op.completed; });
  if (op.result == -ECANCELED && op.cancel_reason != 0) return -op.cancel_reason;
  if (op.result == -EINTR && op.cancel_reason != 0) return -op.cancel_reason;
  return op.result;
}

void request_cancel(IoOp& op, int reason) noexcept {
  if (op.completed || op.cancel_reason != 0) return;
  op.cancel_reason = reason;
  io_uring_sqe* sqe = tls_scheduler->engine().get_sqe();
  // Null only once the ring is unusable: the operation then either failed already (it never
  // reached the kernel) or is abandoned with its coroutine (see Scheduler::loop).
  if (sqe == nullptr) return;
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(&op), 0);
  io_uring_sqe_set_data64(sqe, 0);  // nobody waits for the cancellation's own CQE
}

}  // namespace coring::detail

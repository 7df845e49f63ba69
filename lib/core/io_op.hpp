// Waiting for one io_uring operation from a coroutine, with a deadline and cancellation.
//
// The IoOp lives on the waiting coroutine's stack and is the SQE's user_data. Whatever ends the
// wait early (the deadline, cancel(cid), Socket::close() from another coroutine, the deadlock
// unwinder) only asks the kernel to cancel the operation; the coroutine still waits for the
// operation's own CQE before its frame goes away, so a completion can never land in a dead
// frame. If the operation completed anyway (it raced the cancellation), its real result wins:
// data that arrived is returned, not dropped.
#pragma once

#include <liburing.h>

#include <cstdint>

#include "core/engine.hpp"

namespace coring::detail {

struct Coroutine;
struct WaitPermit;

struct IoOp : Completion {
  Coroutine* waiter = nullptr;
  int32_t result = 0;
  uint32_t cqe_flags = 0;
  bool completed = false;
  int cancel_reason = 0;  // ETIMEDOUT or ECANCELED once a cancellation was requested
};

// An SQE whose completion will be delivered to op, or nullptr (the ring refused; errno-style
// code in *error). The permit (begin_wait(), taken first) is the proof that the coroutine may
// wait for it.
io_uring_sqe* prepare_io(const WaitPermit& permit, IoOp& op, int* error);

// Suspends the permit's coroutine until op completes; deadline_ns is on the monotonic clock
// (INT64_MAX: none). Returns the CQE's result (a byte count or -errno); an operation cancelled
// for its deadline returns -ETIMEDOUT, one cancelled by cancel(cid) or request_cancel(op,
// ECANCELED) returns -ECANCELED. Throws ForcedUnwind (after the CQE) when unwound.
int32_t wait_io(const WaitPermit& permit, IoOp& op, int64_t deadline_ns);

// Asks the kernel to cancel op if it is still in flight; its CQE still arrives.
void request_cancel(IoOp& op, int reason) noexcept;

}  // namespace coring::detail

// Waiting for one engine operation from a coroutine, with a deadline and cancellation.
//
// The IoOp (core/event_engine.hpp) lives on the waiting coroutine's stack. Whatever ends the
// wait early (the deadline, cancel(cid), Socket::close() from another coroutine, the deadlock
// unwinder) only asks the engine to cancel the operation; the coroutine still waits for the
// operation's own completion before its frame goes away, so a completion can never land in a
// dead frame. If the operation completed anyway (it raced the cancellation), its real result
// wins: data that arrived is returned, not dropped.
#pragma once

#include <cstdint>

#include "core/event_engine.hpp"

namespace coring::detail {

struct WaitPermit;

// Starts op (its kind and arguments filled in by the caller) and waits for it; deadline_ns is on
// the monotonic clock (INT64_MAX: none). The permit (begin_wait(), taken first) is the proof
// that the coroutine may wait. Returns the result (a byte count, a descriptor, or -errno); an
// operation ended by its deadline returns -ETIMEDOUT, one cancelled by cancel(cid) or
// request_cancel(op, ECANCELED) -ECANCELED. Throws ForcedUnwind (after the completion) when
// unwound.
int32_t run_io(const WaitPermit& permit, IoOp& op, int64_t deadline_ns);

// Asks the engine to cancel op if it is still in flight; its completion still comes.
void request_cancel(IoOp& op, int reason) noexcept;

}  // namespace coring::detail

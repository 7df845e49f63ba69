// The event engine a scheduler waits in, and the contract every engine keeps.
//
// An engine carries out I/O operations for the coroutines of one scheduler (one thread) and
// tells the scheduler when they are done. Two engines exist: io_uring (lib/core/uring_engine.*,
// completion-based: operations are submitted in batches and the kernel does them) and epoll
// (lib/core/epoll_engine.*, readiness-based: the engine tries the non-blocking system call and,
// when it would block, waits for the descriptor to become ready and tries again). Nothing above
// this interface knows which one runs; io_uring details (SQEs, CQE flags, POLL_FIRST) and epoll
// details (registrations, readiness) stay inside their engine. Like Go's runtime/netpoll.go,
// this header is the list of what an engine must provide:
//
// - start(op): begin an operation described by an IoOp (below), which lives on the waiting
//   coroutine's stack. It either completes at once (start returns true, op.result is set, and
//   nothing else happens: no callback) or is in flight (start returns false): then the engine
//   calls op.on_complete(&op) exactly once, later, from wait() or from cancel(), never from
//   start() itself, and never after that.
// - cancel(op): ask an operation in flight to end early. It still completes exactly once, with
//   -ECANCELED or with the result that raced the cancellation (data that arrived is delivered,
//   not dropped). This is the rule that makes Socket::close() and coring::cancel() safe: the
//   coroutine always sees its operation's completion before its frame can go away.
// - wait(timeout): wait up to timeout_ns for completions (negative: no limit; 0: only collect
//   what is there, without blocking when nothing is in flight) and dispatch them, or leave them
//   for dispatch_one(), which dispatches one at a time so that the scheduler can run the
//   coroutine each one woke before the next (the epoll engine: the socket a coroutine just read
//   from is still in the cache when it writes the answer). wait() does not collect more while
//   collected ones are left.
// - inflight(): how many started operations have not completed: while it is not zero, the
//   scheduler does not declare a deadlock.
// - forget(fd): the descriptor is about to be closed; every operation on it has completed.
// - receive_now(fd...): a read that does not wait, which sees what the engine holds for fd.
// - failure(): 0 while the engine works; an errno once it cannot (the io_uring engine gives up
//   on a ring whose io_uring_enter keeps failing, see uring_engine.hpp). Operations started
//   after that complete at once with that errno.
// Files: an engine with native_files() reads, writes and opens regular files itself (file_*
// kinds); the epoll engine cannot wait for a regular file to become ready (it always is), so
// file I/O goes to the offload pool there (lib/io/file.cpp decides).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "coring/coroutine.hpp"

namespace coring::detail {

struct Coroutine;

enum class OpKind : uint8_t {
  recv,        // fd, buffer, length, flags (MSG_*): bytes received, 0 at end of stream
  send,        // fd, buffer, length, flags: bytes sent
  recvmsg,     // fd, message, flags
  sendmsg,     // fd, message, flags
  accept,      // fd: a new descriptor, non-blocking and close-on-exec
  connect,     // fd, address, address_length: 0
  read,        // fd (a pipe, an eventfd: something that can be waited for), buffer, length
  poll,        // fd, flags (POLLIN, POLLOUT): the events that became ready
  file_read,   // fd, buffer, length, offset: only where native_files()
  file_write,  // fd, buffer, length, offset (-1: the file position)
  file_open,   // path, flags (O_*), mode: a new descriptor
};

// One operation, on the stack of the coroutine that waits for it.
struct IoOp {
  void (*on_complete)(IoOp* self) = nullptr;  // see the header comment
  OpKind kind = OpKind::recv;
  bool completed = false;     // set by the layer above when it sees the completion
  bool likely_waits = false;  // in: the last read on fd emptied it (a hint, see the engines)
  bool stream = false;        // in: fd is a byte stream: a short read means it is empty now
  bool more = false;          // out: a read left data behind (a hint for the next read)
  int fd = -1;
  int flags = 0;
  uint32_t length = 0;  // engines move at most 2^31 - 4096 bytes per operation
  void* buffer = nullptr;
  msghdr* message = nullptr;
  const sockaddr* address = nullptr;
  socklen_t address_length = 0;
  mode_t mode = 0;
  int64_t offset = -1;
  const char* path = nullptr;
  int32_t result = 0;     // out: as the system call's, with -errno for a failure
  int cancel_reason = 0;  // set by request_cancel (io_op.hpp): why it was asked to end
  Coroutine* waiter = nullptr;
  IoOp* engine_next = nullptr;  // the engine's own bookkeeping
};

class EventEngine {
 public:
  EventEngine() = default;
  virtual ~EventEngine() = default;
  EventEngine(const EventEngine&) = delete;
  EventEngine& operator=(const EventEngine&) = delete;

  virtual Engine kind() const noexcept = 0;
  // Sets the engine up. 0, or a negative errno with why() saying what went wrong.
  virtual int init(const RunOptions& options) = 0;
  const std::string& why() const noexcept { return why_; }

  virtual bool start(IoOp& op) = 0;
  virtual void cancel(IoOp& op) noexcept = 0;
  virtual void wait(int64_t timeout_ns) = 0;
  // Dispatches one collected event; false when none is left (always, for an engine whose
  // wait() dispatches everything).
  virtual bool dispatch_one() { return false; }
  virtual size_t inflight() const noexcept = 0;
  virtual void forget(int fd) noexcept = 0;
  // A receive that does not wait, as recv(fd, buffer, length, flags | MSG_DONTWAIT): bytes,
  // 0 at end of stream, or -errno (-EAGAIN: nothing yet). Engines that receive ahead of the
  // caller (the io_uring engine's multishot receive) serve what they hold first: a direct
  // ::recv on a socket an engine reads would skip those bytes.
  virtual int32_t receive_now(int fd, void* buffer, uint32_t length, int flags) noexcept;
  virtual int failure() const noexcept = 0;
  virtual bool native_files() const noexcept = 0;
  // For Stats: the io_uring setup flags the kernel accepted (0 for other engines).
  virtual unsigned setup_flags() const noexcept { return 0; }

 protected:
  std::string why_;
};

// Fills op with a read of an eventfd's counter (a wake-up from another thread or a signal
// handler), to be started with EventEngine::start(): one read empties the eventfd.
inline void prepare_eventfd_read(IoOp& op, int fd, uint64_t* counter,
                                 void (*on_complete)(IoOp*)) noexcept {
  op.kind = OpKind::read;
  op.fd = fd;
  op.buffer = counter;
  op.length = sizeof *counter;
  op.stream = true;
  op.on_complete = on_complete;
}

// The engine RunOptions::engine (or CORING_ENGINE, for Engine::automatic) asks for, set up:
// automatic tries io_uring, then epoll, logging one INFO line that says why it fell back.
// nullptr with *error (a negative errno) when none could be set up; it has logged one ERROR.
std::unique_ptr<EventEngine> make_engine(const RunOptions& options, int* error);

// EventEngine::receive_now on this thread's engine, or the plain non-blocking recv outside a
// scheduler.
int32_t receive_now(int fd, void* buffer, uint32_t length, int flags) noexcept;

}  // namespace coring::detail

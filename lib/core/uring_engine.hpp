// The io_uring engine (see event_engine.hpp for the contract): one ring per scheduler.
//
// Operations are submitted in batches: an SQE filled by a coroutine stays in the submission
// queue until the scheduler has run every ready coroutine, then one io_uring_enter submits the
// whole batch and waits for completions, with the nearest timer deadline as its timeout.
// Completions are reaped in a batch too. Each SQE's user_data is the IoOp it carries out;
// user_data 0 marks a request whose completion nobody waits for (a cancellation).
//
// What it guarantees beyond the contract:
// - init() accepts a kernel only if it has every feature and opcode the library uses; it
//   refuses with ENOSYS and says what is missing otherwise (why()).
// - A request is never dropped: with the submission queue full it submits the batch (and reaps
//   completions when the kernel asks for room in the completion queue) until a slot is free.
// - The ring is unusable when io_uring_enter keeps failing with an error that no retry fixes
//   (a seccomp filter installed after set-up, say): after the first failure it logs one ERROR,
//   backs off (1 ms, doubling up to 100 ms) and logs at most once a second, and after
//   kGiveUpNs of failures it gives up: failure() holds the errno from then on. Requests that
//   never reached the kernel complete with that errno; those the kernel took stay its own
//   (their buffers may still be written), see Scheduler::loop().
// - A recv whose op says likely_waits asks the kernel to wait for data before trying
//   (IORING_RECVSEND_POLL_FIRST, 5.19), and `more` reports IORING_CQE_F_SOCK_NONEMPTY.
// - Completions dispatched are only the library's own (user_data it set).
// - Stream sockets that wait for input read ahead (multishot receive, Linux 6.0), see below;
//   what a reader sees is the same as without: every byte once and in order, the end of stream
//   and errors after the bytes before them, reads that do not wait (receive_now) included.
//
// DESIGN NOTE (socket I/O through the ring). Every socket wait is an IORING_OP_RECV/SEND/
// ACCEPT/CONNECT SQE submitted in a batch with everyone else's, completing inline at submission
// when the socket is ready and through the kernel's internal poll otherwise. A recv that follows
// one which emptied the socket (likely_waits, from the last CQE's missing SOCK_NONEMPTY) sets
// IORING_RECVSEND_POLL_FIRST: in request/response traffic the next request is not there yet, so
// the kernel arms its poll at once instead of failing a recv first (CORING_POLL_FIRST=0 turns
// that off, for measurements). Measured when the socket layer was written, with the echo
// benchmark (server and client on one CPU, 64 B, 6 interleaved rounds, median round trips/s):
//                                      100 connections   1000 connections
//   ring, poll first (the default)          86.4k             71.0k
//   ring, recv tried first                  79.7k             56.3k
//   send by syscall first, then ring        89.7k             64.4k
//   recv and send by syscall first          ~85k (3 rounds, also the slowest with the client
//                                            on the other CPU: 142k vs 148-164k)
// "Try the syscall first" costs a failed recv per message in request/response traffic and a
// syscall per operation that the ring would have batched; it never won clearly, so the ring is
// the way. (The epoll engine does try first: it has no other way, and remembers readiness to
// spare the failing recv; see epoll_engine.hpp.)
//
// DESIGN NOTE (multishot receive). A recv whose socket the last read emptied (likely_waits),
// with no flags and a buffer of at most 16 KiB, arms one IORING_OP_RECV with
// IORING_RECV_MULTISHOT for its socket instead: a "receiver" that stays armed and receives into
// buffers of a provided-buffer ring the engine registers on first use (256 of 4 KiB per
// scheduler). The recv waits in the receiver (parked_, no SQE); each completion's bytes are
// copied into the waiting caller's buffer at once, or queued in the receiver until the next
// read. So a request/response connection costs one SQE once, not one SQE plus one poll armed
// and torn down in the kernel per message. Rules that keep it invisible:
// - Order: while a receiver is armed or holds bytes, every read of its socket goes through it
//   (receive_now too); a plain recv is issued only when it is neither.
// - A reader that does not keep up holds at most 4 buffers: then the multishot is cancelled and
//   the kernel's socket buffer (and TCP's window) hold the rest. A ring that runs dry ends a
//   multishot with ENOBUFS: the waiting read becomes a plain recv.
// - cancel() of a parked read completes it at once with -ECANCELED: nothing of the caller's is
//   in the kernel. forget() (before close) cancels the multishot; the receiver is recycled at its
//   final CQE, so a reused descriptor number starts afresh. Unread bytes at close make the
//   close reset the connection (a zero linger), as unread input in the kernel would.
// - CORING_MULTISHOT=0 turns it off (for measurements).
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/event_engine.hpp"

namespace coring::detail {

class UringEngine final : public EventEngine {
 public:
  // How long io_uring_enter may keep failing before the ring is declared unusable.
  static constexpr int64_t kGiveUpNs = 1'000'000'000;

  UringEngine() = default;
  ~UringEngine() override;

  Engine kind() const noexcept override { return Engine::io_uring; }
  int init(const RunOptions& options) override;
  bool start(IoOp& op) override;
  void cancel(IoOp& op) noexcept override;
  void wait(int64_t timeout_ns) override;
  size_t inflight() const noexcept override { return inflight_ + parked_; }
  void forget(int fd) noexcept override;
  int32_t receive_now(int fd, void* buffer, uint32_t length, int flags) noexcept override;
  int failure() const noexcept override { return failure_; }
  bool native_files() const noexcept override { return true; }
  unsigned setup_flags() const noexcept override { return setup_flags_; }

  // Tests only: init() then behaves as if the kernel lacked these feature bits and opcode
  // (-1: none). Reset by passing 0 and -1.
  static void hide_for_test(uint32_t features, int opcode) noexcept;

 private:
  // A free SQE, counted as in flight until its final CQE; nullptr once the ring is unusable, and
  // in a child forked while it ran (the ring's memory is shared with the parent: a child that
  // wrote into it would corrupt the parent's queue).
  io_uring_sqe* get_sqe();
  void submit_and_wait(int64_t timeout_ns);
  unsigned reap();
  bool check_kernel();
  void submit_failed(int error);
  void give_up(int error);

  // Multishot receive (uring_receive.cpp).
  struct Receiver {
    int fd = -1;
    bool armed = false;       // its multishot SQE is the kernel's: its final CQE has not come
    bool cancelling = false;  // a cancellation of that SQE is on its way
    bool retired = false;     // forget() was called: nobody's, recycled at the final CQE
    bool at_end = false;      // the peer closed: reads after the queued bytes return 0
    int32_t error = 0;        // what the kernel reported (-errno): the next read gets it, once
    IoOp* waiter = nullptr;   // the recv parked here (one reader per socket)
    int32_t head = -1;        // queued buffers, in order, linked through slots_[id].next
    int32_t tail = -1;
    uint32_t queued = 0;
    unsigned arm_tail = 0;  // the submission queue's tail just after its SQE was queued

    bool holds_something() const noexcept { return head >= 0 || error != 0 || at_end; }
  };
  struct BufferSlot {
    uint32_t offset;  // bytes of the buffer already handed out
    uint32_t length;  // bytes the kernel put in it
    int32_t next;     // the next queued buffer of the same receiver, -1: none
  };
  static constexpr uint64_t kReceiverTag = 1;  // user_data's low bit: a Receiver, not an IoOp
  bool setup_buffers() noexcept;
  void release_buffers() noexcept;
  void drain_receivers() noexcept;  // ends every armed multishot (the engine goes away)
  void keep_buffers() noexcept;     // never frees the buffers (the kernel may write there)
  Receiver* receiver_of(int fd) const noexcept;
  // Starts a stream recv through fd's receiver: true when it completed at once (op.result set)
  // or was parked (*parked), false when the receiver does not apply and a plain SQE should do it.
  bool receive_start(IoOp& op, bool* parked);
  bool arm(Receiver& receiver);
  void cancel_multishot(Receiver& receiver) noexcept;
  bool cancel_parked(IoOp& op) noexcept;
  void receiver_completion(Receiver* receiver, int32_t result, uint32_t flags);
  void receiver_give_up(Receiver* receiver, int error);
  void serve_waiter(Receiver& receiver);
  // What a read gets from a receiver that holds something: the queued bytes (MSG_PEEK: copied,
  // not taken), else the error (once), else 0 for the end of stream.
  int32_t read_held(Receiver& receiver, void* buffer, uint32_t length, bool peek) noexcept;
  uint32_t take_queued(Receiver& receiver, void* buffer, uint32_t length, bool peek) noexcept;
  void give_back(int32_t id) noexcept;
  void drop_queued(Receiver& receiver) noexcept;
  void recycle(Receiver* receiver) noexcept;

  io_uring ring_{};
  bool initialized_ = false;
  unsigned setup_flags_ = 0;
  size_t inflight_ = 0;
  bool poll_first_supported_ = false;
  bool multishot_supported_ = false;  // the kernel has it (6.0) and CORING_MULTISHOT is not 0
  bool buffers_ready_ = false;  // set up on first use: a scheduler without sockets pays nothing
  size_t parked_ = 0;           // recvs waiting in a receiver, not in the kernel
  io_uring_buf_ring* buffer_ring_ = nullptr;  // the provided buffers' ring, shared with the kernel
  char* buffer_memory_ = nullptr;
  std::vector<BufferSlot> slots_;                          // by buffer id
  std::vector<Receiver*> receivers_;                       // by fd; nullptr: none
  std::vector<std::unique_ptr<Receiver>> receiver_store_;  // every receiver ever made
  std::vector<Receiver*> free_receivers_;                  // reused: no allocation per connection
  unsigned fork_generation_ = 0;  // see core/fork.hpp: the ring is not a forked child's
  int failure_ = 0;
  int64_t failing_since_ns_ = -1;  // when io_uring_enter started failing; -1: it works
  int64_t backoff_ns_ = 0;
  int64_t last_report_ns_ = 0;
  uint64_t failures_ = 0;
};

}  // namespace coring::detail

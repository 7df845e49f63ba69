// The io_uring engine's multishot receive: one SQE per socket that stays armed and receives into
// buffers the engine provides, instead of one SQE (and one poll armed and disarmed in the
// kernel) per recv. See the design note in uring_engine.hpp.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/fork.hpp"
#include "core/logging.hpp"
#include "core/uring_engine.hpp"

namespace coring::detail {
namespace {

constexpr uint32_t kBufferSize = 4096;
constexpr uint32_t kBufferCount = 256;  // a power of two: the ring's size
constexpr uint16_t kBufferGroup = 0;
// A receiver whose reader does not keep up holds at most about this many buffers: then its
// multishot is cancelled and the socket's own buffer (and TCP's window) hold the rest, so that
// one idle reader cannot take every buffer from the others.
constexpr uint32_t kMaxQueued = 4;
// Larger reads (recv_all of a big body) are better done by one plain recv into the caller's
// buffer than by many buffer-sized completions and copies.
constexpr uint32_t kMaxArmLength = 4 * kBufferSize;

}  // namespace

bool UringEngine::setup_buffers() noexcept {
  buffers_ready_ = true;  // one attempt: a refusal falls back to plain recvs for good
  void* ring_memory = nullptr;
  if (posix_memalign(&ring_memory, 4096, kBufferCount * sizeof(io_uring_buf)) != 0) {
    multishot_supported_ = false;
    return false;
  }
  buffer_ring_ = static_cast<io_uring_buf_ring*>(ring_memory);
  io_uring_buf_ring_init(buffer_ring_);
  io_uring_buf_reg registration{};
  registration.ring_addr = reinterpret_cast<uint64_t>(ring_memory);
  registration.ring_entries = kBufferCount;
  registration.bgid = kBufferGroup;
  int error = io_uring_register_buf_ring(&ring_, &registration, 0);
  void* memory = nullptr;
  if (error < 0 || posix_memalign(&memory, 64, size_t{kBufferCount} * kBufferSize) != 0) {
    log_format(LogLevel::debug, "io_uring provided buffers unavailable (%s): plain receives",
               std::strerror(error < 0 ? -error : ENOMEM));
    if (error == 0) io_uring_unregister_buf_ring(&ring_, kBufferGroup);
    std::free(buffer_ring_);
    buffer_ring_ = nullptr;
    multishot_supported_ = false;
    return false;
  }
  buffer_memory_ = static_cast<char*>(memory);
  slots_.assign(kBufferCount, BufferSlot{0, 0, -1});
  for (uint32_t id = 0; id < kBufferCount; ++id) {
    io_uring_buf_ring_add(buffer_ring_, buffer_memory_ + size_t{id} * kBufferSize, kBufferSize,
                          static_cast<unsigned short>(id), io_uring_buf_ring_mask(kBufferCount),
                          static_cast<int>(id));
  }
  io_uring_buf_ring_advance(buffer_ring_, kBufferCount);
  return true;
}

void UringEngine::release_buffers() noexcept {
  // After io_uring_queue_exit: the kernel no longer writes into them.
  std::free(buffer_ring_);
  std::free(buffer_memory_);
  buffer_ring_ = nullptr;
  buffer_memory_ = nullptr;
}

void UringEngine::give_back(int32_t id) noexcept {
  io_uring_buf_ring_add(buffer_ring_, buffer_memory_ + size_t(id) * kBufferSize, kBufferSize,
                        static_cast<unsigned short>(id), io_uring_buf_ring_mask(kBufferCount), 0);
  io_uring_buf_ring_advance(buffer_ring_, 1);
}

UringEngine::Receiver* UringEngine::receiver_of(int fd) const noexcept {
  return fd >= 0 && static_cast<size_t>(fd) < receivers_.size() ? receivers_[fd] : nullptr;
}

uint32_t UringEngine::take_queued(Receiver& receiver, void* buffer, uint32_t length,
                                  bool peek) noexcept {
  auto* out = static_cast<char*>(buffer);
  uint32_t copied = 0;
  int32_t id = receiver.head;
  while (id >= 0 && copied < length) {
    BufferSlot& slot = slots_[id];
    uint32_t n = std::min(slot.length - slot.offset, length - copied);
    std::memcpy(out + copied, buffer_memory_ + size_t(id) * kBufferSize + slot.offset, n);
    copied += n;
    if (peek) {
      id = slot.next;
      continue;
    }
    slot.offset += n;
    if (slot.offset < slot.length) break;  // the caller's buffer is full
    int32_t next = slot.next;
    receiver.head = next;
    if (next < 0) receiver.tail = -1;
    --receiver.queued;
    give_back(id);
    id = next;
  }
  return copied;
}

bool UringEngine::arm(Receiver& receiver) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  // Not an operation anybody waits for: a recv parked on the receiver is counted (parked_).
  --inflight_;
  io_uring_prep_recv(sqe, receiver.fd, nullptr, 0, 0);
  sqe->ioprio |= IORING_RECV_MULTISHOT;
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&receiver) | kReceiverTag);
  receiver.armed = true;
  receiver.cancelling = false;
  receiver.arm_tail = ring_.sq.sqe_tail;  // taken by the kernel once its head reaches this
  return true;
}

void UringEngine::cancel_multishot(Receiver& receiver) noexcept {
  if (!receiver.armed || receiver.cancelling) return;
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return;  // the ring is unusable: nothing comes from it any more
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(&receiver) | kReceiverTag, 0);
  io_uring_sqe_set_data64(sqe, 0);
  receiver.cancelling = true;
}

int32_t UringEngine::read_held(Receiver& receiver, void* buffer, uint32_t length,
                               bool peek) noexcept {
  if (receiver.head >= 0) return static_cast<int32_t>(take_queued(receiver, buffer, length, peek));
  if (receiver.error != 0) {
    int32_t error = receiver.error;
    if (!peek) receiver.error = 0;
    return error;
  }
  return 0;  // at_end
}

bool UringEngine::receive_start(IoOp& op, bool* parked) {
  if (!multishot_supported_ || !op.stream || op.length == 0) return false;
  Receiver* receiver = receiver_of(op.fd);
  const bool peek = (op.flags & MSG_PEEK) != 0;
  if (receiver == nullptr || (!receiver->armed && !receiver->holds_something())) {
    // Nothing held: arm only where it pays, a plain read of a socket the last read emptied.
    if (op.flags != 0 || !op.likely_waits || op.length > kMaxArmLength) return false;
    if (!buffers_ready_ && !setup_buffers()) return false;
    if (receiver == nullptr) {
      if (!free_receivers_.empty()) {
        receiver = free_receivers_.back();
        free_receivers_.pop_back();
      } else {
        receiver_store_.push_back(std::make_unique<Receiver>());
        receiver = receiver_store_.back().get();
      }
      *receiver = Receiver{};
      receiver->fd = op.fd;
      if (static_cast<size_t>(op.fd) >= receivers_.size()) {
        receivers_.resize(std::max<size_t>(size_t(op.fd) + 1, receivers_.size() * 2), nullptr);
      }
      receivers_[op.fd] = receiver;
    }
    if (!arm(*receiver)) return false;
  }
  if (receiver->holds_something()) {
    op.result = read_held(*receiver, op.buffer, op.length, peek);
    op.more = receiver->head >= 0;
    return true;
  }
  if ((op.flags & MSG_DONTWAIT) != 0 || receiver->waiter != nullptr) {
    op.result = receiver->waiter != nullptr ? -EBUSY : -EAGAIN;
    return true;
  }
  receiver->waiter = &op;
  ++parked_;
  *parked = true;
  return true;
}

int32_t UringEngine::receive_now(int fd, void* buffer, uint32_t length, int flags) noexcept {
  if (Receiver* receiver = receiver_of(fd)) {
    if (receiver->holds_something())
      return read_held(*receiver, buffer, length, (flags & MSG_PEEK) != 0);
    // Anything that comes is the receiver's, in order; but a peek takes nothing, and the kernel
    // knows at once of an end of stream or a reset the receiver has not been told of yet.
    if (receiver->armed && (flags & MSG_PEEK) == 0) return -EAGAIN;
  }
  return EventEngine::receive_now(fd, buffer, length, flags);
}

bool UringEngine::cancel_parked(IoOp& op) noexcept {
  if (op.kind != OpKind::recv) return false;
  Receiver* receiver = receiver_of(op.fd);
  if (receiver == nullptr || receiver->waiter != &op) return false;
  receiver->waiter = nullptr;
  --parked_;
  op.result = -ECANCELED;
  op.more = false;
  op.on_complete(&op);
  return true;
}

void UringEngine::serve_waiter(Receiver& receiver) {
  IoOp* op = receiver.waiter;
  if (!receiver.holds_something()) {
    if (receiver.armed) return;  // still waiting for data
    // The multishot ended with nothing to deliver (the buffers ran out, or a cancellation):
    // the waiting read goes to the kernel as a plain recv.
    receiver.waiter = nullptr;
    --parked_;
    io_uring_sqe* sqe = get_sqe();
    if (sqe == nullptr) {
      op->result = -(failure_ != 0 ? failure_ : EPERM);
      op->more = false;
      op->on_complete(op);
      return;
    }
    io_uring_prep_recv(sqe, op->fd, op->buffer, op->length, op->flags);
    io_uring_sqe_set_data(sqe, op);
    return;
  }
  receiver.waiter = nullptr;
  --parked_;
  op->result = read_held(receiver, op->buffer, op->length, (op->flags & MSG_PEEK) != 0);
  op->more = receiver.head >= 0;
  op->on_complete(op);
}

void UringEngine::receiver_completion(Receiver* receiver, int32_t result, uint32_t flags) {
  const bool final = (flags & IORING_CQE_F_MORE) == 0;
  if (flags & IORING_CQE_F_BUFFER) {
    auto id = static_cast<int32_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    if (result > 0 && !receiver->retired) {
      slots_[id] = BufferSlot{0, static_cast<uint32_t>(result), -1};
      if (receiver->tail >= 0) {
        slots_[receiver->tail].next = id;
      } else {
        receiver->head = id;
      }
      receiver->tail = id;
      ++receiver->queued;
    } else {
      give_back(id);
    }
  }
  if (result == 0) {
    receiver->at_end = true;
  } else if (result < 0 && result != -ENOBUFS && result != -ECANCELED) {
    receiver->error = result;  // ECONNRESET...: the socket reports it once, so must we
  }
  if (final) {
    receiver->armed = false;
    receiver->cancelling = false;
  }
  if (receiver->retired) {
    if (final) recycle(receiver);
    return;
  }
  if (receiver->waiter != nullptr) serve_waiter(*receiver);
  if (receiver->queued >= kMaxQueued) cancel_multishot(*receiver);
}

void UringEngine::receiver_give_up(Receiver* receiver, int error) {
  // Its SQE never reached the kernel (see give_up): nothing more will come for it.
  receiver->armed = false;
  receiver->cancelling = false;
  if (receiver->retired) {
    recycle(receiver);
    return;
  }
  if (IoOp* op = receiver->waiter) {
    receiver->waiter = nullptr;
    --parked_;
    op->result = -error;
    op->more = false;
    op->on_complete(op);
  }
}

void UringEngine::drop_queued(Receiver& receiver) noexcept {
  for (int32_t id = receiver.head; id >= 0;) {
    int32_t next = slots_[id].next;
    give_back(id);
    id = next;
  }
  receiver.head = receiver.tail = -1;
  receiver.queued = 0;
}

void UringEngine::recycle(Receiver* receiver) noexcept {
  drop_queued(*receiver);
  receiver->fd = -1;
  free_receivers_.push_back(receiver);
}

void UringEngine::forget(int fd) noexcept {
  Receiver* receiver = receiver_of(fd);
  if (receiver == nullptr) return;
  receivers_[fd] = nullptr;  // a new socket with this number starts afresh
  if (receiver->head >= 0) {
    // Bytes the application never read: closing a socket with unread input resets the
    // connection (RFC 2525 2.17), and that must not change because the engine read them
    // ahead. A zero linger makes the close send the RST the kernel would have sent.
    linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  if (!receiver->armed) {
    recycle(receiver);
    return;
  }
  // The kernel holds the socket open until the multishot ends: cancel it now, recycle the
  // receiver at its final CQE. Its bytes go back to the ring at once.
  receiver->retired = true;
  drop_queued(*receiver);
  cancel_multishot(*receiver);
  // Both now, not at the end of the turn: the kernel looks the descriptor up only when it takes
  // an SQE, so an arm still queued would find whatever socket gets the number after the close
  // (an accept, say) and swallow its first bytes; and until the cancelled receive is freed the
  // kernel holds the socket open, so the close that follows would send no FIN (a peer would not
  // see the end of stream when close() returns). Submitting and running the completion work
  // frees it: one system call per close of a socket that read ahead.
  // (Never in a forked child: the ring is the parent's.) As get_sqe() does, nothing gives up
  // while the ring works: a full completion queue (EBUSY, EAGAIN) is reaped and the batch
  // submitted again; any other failure, or a refusal with nothing to reap, backs off in
  // submit_failed() until the submission works or the ring is given up (which completes what
  // it never took).
  if (failure_ != 0 || fork_generation_ != fork_generation()) return;
  for (;;) {
    int result = io_uring_submit_and_get_events(&ring_);
    if (result >= 0 || failure_ != 0) return;
    if ((result == -EBUSY || result == -EAGAIN) && reap() > 0) continue;  // room made: again
    if (result != -EINTR) {
      submit_failed(-result);  // backs off: a refusal that reaping does not end is no hot loop
      if (failure_ != 0) return;
    }
  }
}

void UringEngine::drain_receivers() noexcept {
  if (buffer_ring_ == nullptr || fork_generation_ != fork_generation()) return;
  if (failure_ != 0) {
    // The ring is unusable: the receives the kernel holds can be neither cancelled nor
    // reaped, so the kernel may still write into their buffers. Keep them for the process's
    // life (reachable, so that a leak checker does not count them).
    keep_buffers();
    return;
  }
  // The kernel may write into the provided buffers as long as a multishot is armed, and a
  // socket may outlive its container (a Client kept for reuse, a Socket declared outside
  // run()): end them all before the buffers are freed. Only receivers' completions are looked
  // at: everything else is being torn down.
  auto armed = [this] {
    size_t count = 0;
    for (const auto& receiver : receiver_store_) count += receiver->armed;
    return count;
  };
  for (const auto& receiver : receiver_store_) {
    if (receiver->armed) cancel_multishot(*receiver);
  }
  for (int attempt = 0; attempt < 100 && armed() > 0; ++attempt) {
    __kernel_timespec pause{0, 10'000'000};
    io_uring_cqe* cqe = nullptr;
    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &pause, nullptr);
    unsigned head, count = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++count;
      if ((cqe->user_data & kReceiverTag) && !(cqe->flags & IORING_CQE_F_MORE)) {
        reinterpret_cast<Receiver*>(cqe->user_data & ~kReceiverTag)->armed = false;
      }
    }
    io_uring_cq_advance(&ring_, count);
  }
  if (armed() > 0) {
    log_format(LogLevel::warning,
               "io_uring: %zu multishot receives did not end; their buffers "
               "are kept",
               armed());
    keep_buffers();
  }
}

void UringEngine::keep_buffers() noexcept {
  // Never freed while the kernel may still write there.
  static std::vector<void*>* kept = new std::vector<void*>;
  try {
    kept->push_back(buffer_ring_);
    kept->push_back(buffer_memory_);
  } catch (...) {
    // Out of memory: unreachable then, but still never freed.
  }
  buffer_ring_ = nullptr;
  buffer_memory_ = nullptr;
}

}  // namespace coring::detail

#include "core/uring_engine.hpp"

#include <fcntl.h>
#include <poll.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/fork.hpp"
#include "core/logging.hpp"

namespace coring::detail {
namespace {

// From fastest to plainest. SINGLE_ISSUER + DEFER_TASKRUN (6.1+) run completion work only when
// we ask for events, in our own thread, with no inter-processor interrupts; COOP_TASKRUN (5.19+)
// at least avoids interrupting us for it. CLAMP keeps large ring_entries from failing.
constexpr unsigned kFlagSets[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

// What the library relies on. EXT_ARG (5.11): io_uring_submit_and_wait_timeout passes its
// timeout to the kernel; without it liburing queues a timeout SQE of its own whose CQE is not
// one of ours. NODROP (5.5): a full completion queue never loses a completion.
struct Feature {
  uint32_t bit;
  const char* name;
};
constexpr Feature kFeatures[] = {
    {IORING_FEAT_EXT_ARG, "IORING_FEAT_EXT_ARG (Linux 5.11)"},
    {IORING_FEAT_NODROP, "IORING_FEAT_NODROP (Linux 5.5)"},
};

struct Opcode {
  int op;
  const char* name;
};
constexpr Opcode kOpcodes[] = {
    {IORING_OP_RECV, "IORING_OP_RECV"},
    {IORING_OP_SEND, "IORING_OP_SEND"},
    {IORING_OP_ACCEPT, "IORING_OP_ACCEPT"},
    {IORING_OP_CONNECT, "IORING_OP_CONNECT"},
    {IORING_OP_SENDMSG, "IORING_OP_SENDMSG"},
    {IORING_OP_RECVMSG, "IORING_OP_RECVMSG"},
    {IORING_OP_READ, "IORING_OP_READ"},
    {IORING_OP_WRITE, "IORING_OP_WRITE"},
    {IORING_OP_OPENAT, "IORING_OP_OPENAT"},
    {IORING_OP_CLOSE, "IORING_OP_CLOSE"},
    {IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"},
    {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"},
};

std::atomic<uint32_t> g_hidden_features{0};
std::atomic<int> g_hidden_opcode{-1};

std::string describe_flags(unsigned flags) {
  std::string text;
  auto add = [&](unsigned bit, const char* name) {
    if (flags & bit) text += text.empty() ? name : std::string("|") + name;
  };
  add(IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER");
  add(IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN");
  add(IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN");
  add(IORING_SETUP_TASKRUN_FLAG, "TASKRUN_FLAG");
  add(IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL");
  add(IORING_SETUP_CQSIZE, "CQSIZE");
  add(IORING_SETUP_CLAMP, "CLAMP");
  return text.empty() ? "none" : text;
}

int64_t now_ns() noexcept {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// Errors of io_uring_enter that a later call can get past: a timeout or a signal, or a
// completion queue that needs reaping (EBUSY), or a transient shortage (EAGAIN, ENOMEM...
// counts as persistent if it lasts).
bool transient(int error) noexcept {
  return error == ETIME || error == EINTR || error == EBUSY || error == EAGAIN;
}

}  // namespace

void UringEngine::hide_for_test(uint32_t features, int opcode) noexcept {
  g_hidden_features.store(features, std::memory_order_relaxed);
  g_hidden_opcode.store(opcode, std::memory_order_relaxed);
}

UringEngine::~UringEngine() {
  if (initialized_) {
    drain_receivers();
    io_uring_queue_exit(&ring_);
  }
  release_buffers();
}

int UringEngine::init(const RunOptions& options) {
  // The kernel's limits (IORING_MAX_ENTRIES, and twice that for the completion queue): larger
  // requests are clamped, and entries * 4 must not overflow.
  unsigned entries = std::min(options.ring_entries, 32768u);
  int error = -EINVAL;
  for (unsigned flags : kFlagSets) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    params.cq_entries = std::min(entries * 4, 65536u);
    error = io_uring_queue_init_params(entries, &ring_, &params);
    if (error == 0) {
      initialized_ = true;
      setup_flags_ = params.flags;
      break;
    }
    // EINVAL is how the kernel refuses a flag it does not know; anything else (ENOSYS: no
    // io_uring, EPERM: disabled by sysctl or seccomp, ENOMEM: locked memory) no flag can fix.
    if (error != -EINVAL) break;
  }
  if (!initialized_) {
    why_ = std::string("io_uring_setup: ") + std::strerror(-error);
    return error;
  }
  fork_generation_ = fork_generation();
  if (!check_kernel()) {
    io_uring_queue_exit(&ring_);
    initialized_ = false;
    return -ENOSYS;
  }
  // A registered ring fd spares the kernel an fd table lookup on every io_uring_enter.
  bool registered = io_uring_register_ring_fd(&ring_) == 1;
  log_format(LogLevel::debug, "io_uring ready: %u entries, flags %s, features 0x%x%s",
             ring_.sq.ring_entries, describe_flags(setup_flags_).c_str(), ring_.features,
             registered ? ", ring fd registered" : "");
  return 0;
}

bool UringEngine::check_kernel() {
  std::string missing;
  uint32_t features = ring_.features & ~g_hidden_features.load(std::memory_order_relaxed);
  for (const Feature& feature : kFeatures) {
    if (!(features & feature.bit))
      missing += missing.empty() ? feature.name : std::string(", ") + feature.name;
  }
  io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
  int hidden = g_hidden_opcode.load(std::memory_order_relaxed);
  auto supported = [&](int op) {
    return probe != nullptr && op != hidden && io_uring_opcode_supported(probe, op);
  };
  if (probe == nullptr) {
    missing += missing.empty() ? "" : ", ";
    missing += "IORING_REGISTER_PROBE (Linux 5.6)";
  } else {
    for (const Opcode& opcode : kOpcodes) {
      if (!supported(opcode.op)) {
        missing += missing.empty() ? "" : ", ";
        missing += opcode.name;
      }
    }
  }
  // IORING_RECVSEND_POLL_FIRST and IORING_CQE_F_SOCK_NONEMPTY came with Linux 5.19, like
  // IORING_OP_SOCKET, the one of the three a probe can see. CORING_POLL_FIRST=0: never (for
  // measurements, see the design note in the header).
  const char* poll_first = std::getenv("CORING_POLL_FIRST");
  poll_first_supported_ =
      supported(IORING_OP_SOCKET) && (poll_first == nullptr || std::strcmp(poll_first, "0") != 0);
  // Multishot recv (IORING_RECV_MULTISHOT) came with Linux 6.0, like IORING_OP_SEND_ZC, which a
  // probe can see. CORING_MULTISHOT=0: never (for measurements).
  const char* multishot = std::getenv("CORING_MULTISHOT");
  multishot_supported_ =
      supported(IORING_OP_SEND_ZC) && (multishot == nullptr || std::strcmp(multishot, "0") != 0);
  if (probe != nullptr) io_uring_free_probe(probe);
  if (!missing.empty()) why_ = "the kernel's io_uring lacks " + missing;
  return missing.empty();
}

io_uring_sqe* UringEngine::get_sqe() {
  if (failure_ != 0 || fork_generation_ != fork_generation()) [[unlikely]]
    return nullptr;
  for (int attempt = 0;; ++attempt) {
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) {
      ++inflight_;
      return sqe;
    }
    // The submission queue is full: push the batch to the kernel to make room. Never drop the
    // request: a lost cancellation leaves close() waiting forever.
    int submitted = io_uring_submit(&ring_);
    if (submitted >= 0 && attempt < 64) continue;
    if (submitted == -EBUSY || submitted == -EAGAIN) {
      reap();  // room in the completion queue lets the kernel take the batch
    } else if (submitted != -EINTR) {
      submit_failed(submitted < 0 ? -submitted : EAGAIN);
      if (failure_ != 0) return nullptr;
    }
  }
}

void UringEngine::submit_and_wait(int64_t timeout_ns) {
  if (failure_ != 0) return;
  int result;
  if (timeout_ns == 0) {
    if (inflight_ == 0) return;
    result = io_uring_submit_and_get_events(&ring_);
  } else if (timeout_ns < 0) {
    result = io_uring_submit_and_wait(&ring_, 1);
  } else {
    __kernel_timespec timeout{};
    timeout.tv_sec = timeout_ns / 1'000'000'000;
    timeout.tv_nsec = timeout_ns % 1'000'000'000;
    io_uring_cqe* cqe = nullptr;
    result = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &timeout, nullptr);
  }
  if (result >= 0 || transient(-result)) {
    if (failing_since_ns_ >= 0) {
      log_format(LogLevel::warning, "io_uring_enter works again after %llu failures",
                 static_cast<unsigned long long>(failures_));
      failing_since_ns_ = -1;
      failures_ = 0;
    }
    return;
  }
  submit_failed(-result);
}

void UringEngine::submit_failed(int error) {
  int64_t now = now_ns();
  ++failures_;
  if (failing_since_ns_ < 0) {
    failing_since_ns_ = now;
    backoff_ns_ = 1'000'000;
    last_report_ns_ = now;
    log_format(LogLevel::error, "io_uring_enter failed: %s; retrying", std::strerror(error));
  } else if (now - failing_since_ns_ >= kGiveUpNs) {
    give_up(error);
    return;
  } else if (now - last_report_ns_ >= 1'000'000'000) {
    last_report_ns_ = now;
    log_format(LogLevel::error, "io_uring_enter still failing (%llu times): %s",
               static_cast<unsigned long long>(failures_), std::strerror(error));
  }
  // Back off, so that a failure that persists does not become a hot loop.
  timespec pause{0, static_cast<long>(backoff_ns_)};
  ::nanosleep(&pause, nullptr);
  backoff_ns_ = std::min<int64_t>(backoff_ns_ * 2, 100'000'000);
}

void UringEngine::give_up(int error) {
  failure_ = error;
  // What the kernel never took, it will never complete: complete it here. (The SQ array maps
  // slot i to sqes[i & mask], as liburing sets it up.)
  unsigned head = *ring_.sq.khead;
  unsigned tail = ring_.sq.sqe_tail;
  size_t failed = 0;
  for (unsigned i = head; i != tail; ++i) {
    io_uring_sqe* sqe = &ring_.sq.sqes[i & ring_.sq.ring_mask];
    uint64_t data = sqe->user_data;
    if (data & kReceiverTag) {  // not counted in inflight_ (see arm())
      receiver_give_up(reinterpret_cast<Receiver*>(data & ~kReceiverTag), error);
      continue;
    }
    --inflight_;
    if (data == 0 || data == LIBURING_UDATA_TIMEOUT) continue;
    auto* op = reinterpret_cast<IoOp*>(static_cast<uintptr_t>(data));
    op->result = -error;
    op->more = false;
    op->on_complete(op);
    ++failed;
  }
  ring_.sq.sqe_head = ring_.sq.sqe_tail = head;
  log_format(LogLevel::error,
             "io_uring is unusable: io_uring_enter failed %llu times in %lld ms (%s); %zu "
             "queued operations fail with that error, %zu taken by the kernel are abandoned",
             static_cast<unsigned long long>(failures_),
             static_cast<long long>((now_ns() - failing_since_ns_) / 1'000'000),
             std::strerror(error), failed, inflight_);
}

bool UringEngine::start(IoOp& op) {
  if (op.kind == OpKind::recv && multishot_supported_) {
    bool parked = false;
    if (receive_start(op, &parked)) return !parked;
  }
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) {  // unusable, or a forked child's copy: fail at once
    op.result = -(failure_ != 0 ? failure_ : EPERM);
    return true;
  }
  void* buffer = op.buffer;
  switch (op.kind) {
    case OpKind::recv:
      io_uring_prep_recv(sqe, op.fd, buffer, op.length, op.flags);
      // The last recv emptied the socket: in request/response traffic the next one finds
      // nothing yet, so the kernel waits for data before trying instead of failing a try first.
      if (op.likely_waits && poll_first_supported_) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
      break;
    case OpKind::send:
      io_uring_prep_send(sqe, op.fd, buffer, op.length, op.flags);
      break;
    case OpKind::recvmsg:
      io_uring_prep_recvmsg(sqe, op.fd, op.message, static_cast<unsigned>(op.flags));
      break;
    case OpKind::sendmsg:
      io_uring_prep_sendmsg(sqe, op.fd, op.message, static_cast<unsigned>(op.flags));
      break;
    case OpKind::accept:
      io_uring_prep_accept(sqe, op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      break;
    case OpKind::connect:
      io_uring_prep_connect(sqe, op.fd, op.address, op.address_length);
      break;
    case OpKind::read:
      io_uring_prep_read(sqe, op.fd, buffer, op.length, static_cast<uint64_t>(-1));
      break;
    case OpKind::poll:
      io_uring_prep_poll_add(sqe, op.fd, static_cast<unsigned>(op.flags));
      break;
    case OpKind::file_read:
      io_uring_prep_read(sqe, op.fd, buffer, op.length, static_cast<uint64_t>(op.offset));
      break;
    case OpKind::file_write:
      // offset -1: the file position (an O_APPEND file appends there)
      io_uring_prep_write(sqe, op.fd, buffer, op.length, static_cast<uint64_t>(op.offset));
      break;
    case OpKind::file_open:
      io_uring_prep_openat(sqe, AT_FDCWD, op.path, op.flags, op.mode);
      break;
  }
  io_uring_sqe_set_data(sqe, &op);
  return false;
}

void UringEngine::cancel(IoOp& op) noexcept {
  if (parked_ != 0 && cancel_parked(op)) return;  // it waited in a receiver, not in the kernel
  io_uring_sqe* sqe = get_sqe();
  // Null only once the ring is unusable: the operation then either failed already (it never
  // reached the kernel) or is abandoned with its coroutine (see Scheduler::loop).
  if (sqe == nullptr) return;
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(&op), 0);
  io_uring_sqe_set_data64(sqe, 0);  // nobody waits for the cancellation's own CQE
}

void UringEngine::wait(int64_t timeout_ns) {
  if (failure_ != 0) return;
  submit_and_wait(timeout_ns);
  reap();
}

unsigned UringEngine::reap() {
  // Completions are copied out and the queue advanced before any is dispatched: a completion
  // handler may reach get_sqe(), which may reap (a full queue), and that nested reap must not
  // see, and dispatch again, what this one has already taken.
  struct Done {
    uint64_t data;
    int32_t result;
    uint32_t flags;
  };
  constexpr unsigned kBatch = 64;
  unsigned total = 0;
  for (;;) {
    Done batch[kBatch];
    unsigned taken = 0;
    unsigned count = 0;
    unsigned head;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++count;
      uint32_t flags = cqe->flags;
      uint64_t data = cqe->user_data;
      // LIBURING_UDATA_TIMEOUT: liburing's own timeout, which only kernels without EXT_ARG
      // (refused by init()) would make; 0: a request nobody waits for (a cancellation).
      if (data & kReceiverTag) {  // a receiver's multishot: not counted in inflight_
        batch[taken++] = {data, cqe->res, flags};
      } else if (data != LIBURING_UDATA_TIMEOUT) {
        if (!(flags & IORING_CQE_F_MORE)) --inflight_;
        if (data != 0) batch[taken++] = {data, cqe->res, flags};
      }
      if (count == kBatch) break;
    }
    if (count == 0) return total;
    io_uring_cq_advance(&ring_, count);
    total += count;
    for (unsigned i = 0; i < taken; ++i) {
      if (batch[i].data & kReceiverTag) {
        receiver_completion(reinterpret_cast<Receiver*>(batch[i].data & ~kReceiverTag),
                            batch[i].result, batch[i].flags);
        continue;
      }
      auto* op = reinterpret_cast<IoOp*>(static_cast<uintptr_t>(batch[i].data));
      op->result = batch[i].result;
      op->more = (batch[i].flags & IORING_CQE_F_SOCK_NONEMPTY) != 0;
      op->on_complete(op);
    }
    if (count < kBatch) return total;
  }
}

}  // namespace coring::detail

#include "core/engine.hpp"

#include <cerrno>
#include <cstring>
#include <string>

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

}  // namespace

Engine::~Engine() {
  if (initialized_) io_uring_queue_exit(&ring_);
}

int Engine::init(unsigned entries) {
  int error = -EINVAL;
  for (unsigned flags : kFlagSets) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    params.cq_entries = entries * 4;
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
  if (!initialized_) return error;
  // A registered ring fd spares the kernel an fd table lookup on every io_uring_enter.
  bool registered = io_uring_register_ring_fd(&ring_) == 1;
  log_format(LogLevel::debug, "io_uring ready: %u entries, flags %s, features 0x%x%s",
             ring_.sq.ring_entries, describe_flags(setup_flags_).c_str(), ring_.features,
             registered ? ", ring fd registered" : "");
  return 0;
}

io_uring_sqe* Engine::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The submission queue is full: push the batch to the kernel to make room.
    int submitted = io_uring_submit(&ring_);
    if (submitted < 0) {
      log_format(LogLevel::error, "io_uring_submit failed: %s", std::strerror(-submitted));
      return nullptr;
    }
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return nullptr;
  }
  ++inflight_;
  return sqe;
}

void Engine::submit_and_wait(int64_t timeout_ns) {
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
  // ETIME: the timeout passed (a timer is due); EINTR: a signal; EBUSY: the completion queue
  // overflowed and must be reaped first. All are handled by reaping and looping.
  if (result < 0 && result != -ETIME && result != -EINTR && result != -EBUSY && result != -EAGAIN) {
    log_format(LogLevel::error, "io_uring_enter failed: %s", std::strerror(-result));
  }
}

}  // namespace coring::detail

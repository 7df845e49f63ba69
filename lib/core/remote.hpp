// Completions handed to a scheduler from other threads (the offload workers).
//
// A worker finishes a RemoteJob and deliver()s it; the scheduler thread runs job->finish() in
// its loop. The wake-up is an eventfd that the scheduler reads through its own engine (a read
// operation), so a scheduler waiting for I/O wakes up like for any other I/O. The read is armed
// only while some coroutine waits for a job (expect()/unexpect()), so that an abandoned job (a
// resolve() that timed out) neither keeps the container alive nor counts as pending work in
// deadlock detection. The inbox is shared with the jobs (shared_ptr): jobs delivered after
// the scheduler ended are simply dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/io_op.hpp"

namespace coring::detail {

class RemoteJob {
 public:
  virtual ~RemoteJob() = default;
  // On the scheduler's thread, in its loop (not in a coroutine). The job is deleted after.
  virtual void finish() = 0;
};

class RemoteInbox {
 public:
  RemoteInbox() = default;
  ~RemoteInbox();
  RemoteInbox(const RemoteInbox&) = delete;
  RemoteInbox& operator=(const RemoteInbox&) = delete;

  // Scheduler thread: a coroutine now waits for a job's finish(); arms the wake-up. False if no
  // eventfd could be made (errno in *error).
  bool expect(int* error);
  // Scheduler thread: a waiting coroutine gave up (or was woken by finish()).
  void unexpect() noexcept;
  // Any thread.
  void deliver(std::unique_ptr<RemoteJob> job);
  // Scheduler thread, when the scheduler ends: later deliveries are dropped.
  void close() noexcept;
  // How many coroutines wait for a delivery now.
  size_t expected() const noexcept { return expected_; }
  // Scheduler thread, once the engine is unusable (its eventfd read can no longer complete):
  // waits up to timeout_ns (negative: no limit) for a delivery with ppoll, then finishes what
  // was delivered.
  void wait_without_ring(int64_t timeout_ns);

 private:
  struct Reader : IoOp {
    RemoteInbox* inbox = nullptr;
  };
  static void on_wakeup(IoOp* op);
  void arm();
  void drain();

  std::mutex mutex_;
  std::vector<std::unique_ptr<RemoteJob>> delivered_;  // guarded by mutex_
  bool open_ = true;                                   // guarded by mutex_
  int eventfd_ = -1;
  uint64_t counter_ = 0;  // the eventfd read's target
  size_t expected_ = 0;
  bool armed_ = false;
  Reader reader_;
};

// A coroutine's wait for one delivery: expect() for as long as the object lives (ok() says
// whether the wake-up could be armed), unexpect() when it goes, however the wait ends.
class ExpectDelivery {
 public:
  explicit ExpectDelivery(RemoteInbox& inbox) : inbox_(inbox), ok_(inbox.expect(&error_)) {}
  ~ExpectDelivery() {
    if (ok_) inbox_.unexpect();
  }
  ExpectDelivery(const ExpectDelivery&) = delete;
  ExpectDelivery& operator=(const ExpectDelivery&) = delete;
  bool ok() const noexcept { return ok_; }
  int error() const noexcept { return error_; }

 private:
  RemoteInbox& inbox_;
  int error_ = 0;
  bool ok_;
};

}  // namespace coring::detail

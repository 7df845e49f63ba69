#include "io/offload_pool.hpp"

#include <pthread.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <thread>

#include "core/logging.hpp"

namespace coring::detail {
namespace {

class WorkerPool {
 public:
  WorkerPool() {
    const char* configured = std::getenv("CORING_OFFLOAD_THREADS");
    long threads = configured != nullptr ? std::strtol(configured, nullptr, 10) : 4;
    max_threads_ = threads < 1 ? 1 : threads > 256 ? 256 : static_cast<int>(threads);
    // Locked around fork(), so that a child never copies the queue halfway through a change.
    ::pthread_atfork([] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); },
                     [] { instance().reset_after_fork(); });
  }

  static WorkerPool& instance() {
    // Never destroyed: workers may still be blocked in getaddrinfo when the process exits.
    static WorkerPool* pool = new WorkerPool;
    return *pool;
  }

  void submit(std::unique_ptr<Task> work) {
    std::unique_lock lock(mutex_);
    queue_.push_back(std::move(work));
    // An idle worker that was notified but has not woken yet still counts in idle_, so compare
    // with the queue: every queued job beyond the idle workers needs a thread of its own.
    if (queue_.size() > static_cast<size_t>(idle_) && threads_ < max_threads_) {
      ++threads_;
      try {
        std::thread([this] { work_loop(); }).detach();
      } catch (const std::system_error& e) {
        --threads_;
        log_format(LogLevel::error, "offload: cannot start a worker thread: %s", e.what());
        if (threads_ == 0) {
          // No worker at all: run it here rather than never.
          std::unique_ptr<Task> task = std::move(queue_.back());
          queue_.pop_back();
          lock.unlock();
          task->call();
          return;
        }
      }
    }
    lock.unlock();
    wakeup_.notify_one();
  }

 private:
  void work_loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ++idle_;
      wakeup_.wait(lock, [this] { return !queue_.empty(); });
      --idle_;
      std::unique_ptr<Task> work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      work->call();
      work.reset();
      lock.lock();
    }
  }

  // In a forked child only the forking thread exists: forget the parent's workers and locks.
  void reset_after_fork() {
    new (&mutex_) std::mutex;
    new (&wakeup_) std::condition_variable;
    queue_.clear();
    threads_ = 0;
    idle_ = 0;
  }

  std::mutex mutex_;
  std::condition_variable wakeup_;
  std::deque<std::unique_ptr<Task>> queue_;
  int threads_ = 0;
  int idle_ = 0;
  int max_threads_ = 4;
};

}  // namespace

void submit_to_workers(std::unique_ptr<Task> work) {
  WorkerPool::instance().submit(std::move(work));
}

}  // namespace coring::detail

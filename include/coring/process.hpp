// coring::WorkerPool: a master process and worker processes that share one listening socket,
// with graceful reload and shutdown (Swoole's process model).
//
// The master binds the listening socket with listen() before start(), so there is one accept
// queue: a connection waiting in it is served by whichever worker accepts it, and nothing
// waiting there is lost when a worker goes. start() forks worker_num workers and then
// supervises them until shutdown; it runs outside any container (fork before run()). Each
// worker runs worker_main(worker_id) in a container of its own, where it typically serves the
// shared socket with `Server server(pool.listener())`; on_worker_start runs first, in the same
// container: open per-worker database and cache connections there, as connections must never
// be shared across processes.
//
// Stopping a worker (reload, shutdown, max_request): every Server running in the worker stops
// accepting (others take the queue), on_worker_exit(worker_id) runs, in-flight handlers
// finish; when worker_main returns, on_worker_stop(worker_id) runs, and the worker exits when
// its container ends. A worker still running max_wait_time after it was asked to stop (a
// handler that never returns, a long-lived connection, a tick() timer nobody clears) is killed
// and the master logs `WARNING worker exit timeout, forced to terminate`: connections it still
// held are closed by the kill.
//
// Signals to the master: SIGUSR1 (or reload()) starts a new worker for each running one, then
// stops the old ones; SIGTERM or SIGINT (or shutdown()) stops every worker without replacement,
// and start() returns 0 once they have all exited. A worker that exits or dies when nobody
// asked it to is replaced and the master logs an ERROR with its exit status or signal; one
// that dies again within a second of starting is restarted after a growing pause (100 ms
// doubling up to 10 s), so a worker that crashes at once never makes the master fork in a hot
// loop. Workers ignore SIGINT (a Ctrl-C in a terminal reaches every process of the group: the
// master turns it into a graceful shutdown) and get SIGTERM when the master dies.
//
// How things fail: listen() returns -1 with error() (EADDRINUSE...); start() returns -1 with
// error() when called inside a container (EPERM), twice (EBUSY), or when no worker can be
// forked at all (EAGAIN...). The master blocks SIGCHLD, SIGTERM, SIGINT, SIGUSR1 and SIGRTMIN
// in the thread that calls start() and waits for them with sigtimedwait(): call start() from
// the main thread before starting other threads (or block those signals in them).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "coring/common.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

struct WorkerOptions {
  int worker_num = 0;        // 0: the number of online CPUs
  uint64_t max_request = 0;  // replace a worker after this many requests; 0: never
  Duration max_wait_time = std::chrono::seconds(3);  // then a stopping worker is killed
  // true: a stopping worker drains (above). false: it stops at once: its servers stop, its
  // open connections are dropped, on_worker_stop runs and the process exits.
  bool reload_async = true;
};

// One worker as the master sees it (from memory the workers share with it).
struct WorkerStats {
  int worker_id = 0;
  pid_t pid = 0;
  bool stopping = false;   // asked to stop, still running
  size_t connections = 0;  // open now in its servers
  uint64_t accepted = 0;
  uint64_t closed = 0;
  uint64_t requests = 0;  // see max_request
};

class WorkerPool {
 public:
  explicit WorkerPool(WorkerOptions options = {});
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Binds and listens in the master, before start(): the descriptor every worker serves
  // (listener()), or -1 with error(). Port 0 picks a free port (port()).
  int listen(std::string_view host, uint16_t port, int backlog = 512);
  int listener() const noexcept;
  uint16_t port() const noexcept;

  void on_worker_start(std::function<void(int worker_id)> fn);
  void on_worker_stop(std::function<void(int worker_id)> fn);
  void on_worker_exit(std::function<void(int worker_id)> fn);

  // Forks the workers and supervises them until shutdown; 0 then, -1 with error().
  int start(std::function<void(int worker_id)> worker_main);
  // Both may be called from the master (another thread, a signal handler: they only send the
  // master its signal) or from a worker.
  void reload();
  void shutdown();

  // The workers alive now, by worker id (during a reload an id has two: the old one stopping).
  std::vector<WorkerStats> stats() const;
  // In a worker: its id; in the master (or before start()): -1.
  int worker_id() const noexcept;
  std::error_code error() const noexcept;
  std::string_view error_message() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace coring

#pragma GCC visibility pop

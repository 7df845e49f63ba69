// coring::WorkerPool: the master's supervision loop and each worker's life (see
// coring/process.hpp), and the worker context the servers report to (net/worker_context.hpp).
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/coroutine.hpp"
#include "coring/process.hpp"
#include "coring/system.hpp"
#include "net/worker_context.hpp"

namespace coring {
namespace {

using namespace std::chrono_literals;

int64_t now_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// One worker process's record in memory shared by the master and every worker (lock-free
// atomics work across processes).
struct SharedSlot {
  std::atomic<int32_t> pid{0};  // 0: free
  std::atomic<int32_t> worker_id{0};
  std::atomic<uint32_t> stopping{0};
  std::atomic<uint32_t> immediate{0};  // stop without draining (reload_async false)
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> requests{0};
};

// The start of the shared memory: who the master is, for reload() and shutdown() called in a
// worker or in the process that made the pool and forked the master.
struct SharedHeader {
  std::atomic<int32_t> master{0};
};

// A worker asks the master to replace it (max_request) with this signal.
int replace_me_signal() {
  return SIGRTMIN;
}

// The worker process's own view, set in the child after fork().
struct WorkerContext {
  SharedSlot* slot = nullptr;
  uint64_t max_request = 0;
  pid_t master = 0;
  bool stopping = false;
  bool replacement_asked = false;
};

WorkerContext* g_worker = nullptr;  // one per process: a worker is a process
thread_local std::vector<ServerCore*> tls_running_servers;

std::string describe_status(int status) {
  char text[96];
  if (WIFEXITED(status)) {
    std::snprintf(text, sizeof text, "exited with status %d", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    std::snprintf(text, sizeof text, "was killed by signal %d (%s)", WTERMSIG(status),
                  ::strsignal(WTERMSIG(status)));
  } else {
    std::snprintf(text, sizeof text, "ended with status %d", status);
  }
  return text;
}

}  // namespace

namespace detail {

RunningServer::RunningServer(ServerCore* server) : server_(server) {
  tls_running_servers.push_back(server);
  // A server started in a worker that was already asked to stop never accepts.
  if (g_worker != nullptr && g_worker->stopping) shutdown_server(server);
}

RunningServer::~RunningServer() {
  auto& servers = tls_running_servers;
  servers.erase(std::remove(servers.begin(), servers.end(), server_), servers.end());
}

void shutdown_running_servers() {
  std::vector<ServerCore*> servers = tls_running_servers;  // shutting down may end a start()
  for (ServerCore* server : servers) shutdown_server(server);
}

void note_connection_opened() noexcept {
  if (g_worker == nullptr) return;
  g_worker->slot->connections.fetch_add(1, std::memory_order_relaxed);
  g_worker->slot->accepted.fetch_add(1, std::memory_order_relaxed);
}

void note_connection_closed() noexcept {
  if (g_worker == nullptr) return;
  g_worker->slot->connections.fetch_sub(1, std::memory_order_relaxed);
  g_worker->slot->closed.fetch_add(1, std::memory_order_relaxed);
}

void note_request() noexcept {
  if (g_worker == nullptr) return;
  uint64_t served = g_worker->slot->requests.fetch_add(1, std::memory_order_relaxed) + 1;
  if (g_worker->max_request > 0 && served >= g_worker->max_request &&
      !g_worker->replacement_asked && !g_worker->stopping) {
    // This worker accepts no more (the others, or its replacement, take the queue); the
    // master starts the replacement, then stops this worker the way a reload does.
    g_worker->replacement_asked = true;
    shutdown_running_servers();
    ::kill(g_worker->master, replace_me_signal());
  }
}

}  // namespace detail

struct WorkerPool::State {
  WorkerOptions options;
  int worker_num = 1;
  std::function<void(int)> on_start, on_stop, on_exit;
  int listen_fd = -1;
  uint16_t port = 0;
  int error = 0;
  std::string error_text;
  bool started = false;
  pid_t master = 0;
  int worker_id = -1;  // in a worker: its id

  void* shared = nullptr;  // a SharedHeader, then slot_count SharedSlots
  size_t shared_size = 0;
  SharedHeader* header = nullptr;
  SharedSlot* slots = nullptr;
  size_t slot_count = 0;

  // The master's view of its workers.
  struct Worker {
    pid_t pid = 0;
    int id = 0;
    SharedSlot* slot = nullptr;
    int64_t started_ns = 0;
    bool stopping = false;
    bool killed = false;
    int64_t kill_deadline_ns = 0;
  };
  std::vector<Worker> workers;
  std::vector<int64_t> respawn_at_ns;  // per worker id; -1: nothing scheduled
  std::vector<int64_t> backoff_ns;     // per worker id: the pause after the next quick death
  bool shutting_down = false;

  int fail(int error_number, std::string text) {
    error = error_number;
    error_text = std::move(text);
    return -1;
  }

  void spawn(int id, const std::function<void(int)>& worker_main, sigset_t original_mask);
  [[noreturn]] void run_worker(int id, SharedSlot* slot,
                               const std::function<void(int)>& worker_main, sigset_t original_mask);
  void stop(Worker& worker);
  void reap(const std::function<void(int)>& worker_main, sigset_t original_mask);
  void enforce_deadlines();
  int64_t next_deadline() const;
};

WorkerPool::WorkerPool(WorkerOptions options) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.options = options;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  s.worker_num = options.worker_num > 0 ? options.worker_num : static_cast<int>(std::max(1L, cpus));
  // Shared before start() forks the master's children, so that whoever made the pool (a test,
  // a supervisor that forks the master) can read stats() too. Room for every worker twice: a
  // reload runs an old and a new one per id.
  s.slot_count = static_cast<size_t>(s.worker_num) * 2 + 2;
  const size_t slots_offset =
      (sizeof(SharedHeader) + alignof(SharedSlot) - 1) / alignof(SharedSlot) * alignof(SharedSlot);
  s.shared_size = slots_offset + s.slot_count * sizeof(SharedSlot);
  void* memory =
      ::mmap(nullptr, s.shared_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    s.fail(errno, std::string("mmap: ") + std::strerror(errno));
    s.slot_count = 0;
  } else {
    s.shared = memory;
    s.header = new (memory) SharedHeader;
    s.slots = new (static_cast<char*>(memory) + slots_offset) SharedSlot[s.slot_count];
  }
}

WorkerPool::~WorkerPool() {
  State& s = *state_;
  if (s.shared != nullptr) ::munmap(s.shared, s.shared_size);
  if (s.listen_fd >= 0) ::close(s.listen_fd);
}

int WorkerPool::listen(std::string_view host, uint16_t port, int backlog) {
  State& s = *state_;
  if (s.listen_fd >= 0) return s.fail(EBUSY, "listen() was called already");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string host_text(host);
  std::string port_text = std::to_string(port);
  int status = ::getaddrinfo(host_text.empty() ? nullptr : host_text.c_str(), port_text.c_str(),
                             &hints, &found);
  if (status != 0) {
    return s.fail(status == EAI_NONAME ? ENXIO : EINVAL,
                  "cannot resolve " + host_text + ": " + ::gai_strerror(status));
  }
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      ::bind(fd, found->ai_addr, found->ai_addrlen) != 0 ||
      ::listen(fd, backlog > 0 ? backlog : 512) != 0) {
    int error_number = errno;
    ::freeaddrinfo(found);
    if (fd >= 0) ::close(fd);
    return s.fail(error_number, "cannot listen on " + host_text + ":" + port_text + ": " +
                                    std::strerror(error_number));
  }
  ::freeaddrinfo(found);
  // Accepted connections inherit it: every response goes out without Nagle's delay, as on a
  // coring::Socket listener.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  s.port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                             : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  s.listen_fd = fd;
  return fd;
}

int WorkerPool::listener() const noexcept {
  return state_->listen_fd;
}

uint16_t WorkerPool::port() const noexcept {
  return state_->port;
}

void WorkerPool::on_worker_start(std::function<void(int)> fn) {
  state_->on_start = std::move(fn);
}

void WorkerPool::on_worker_stop(std::function<void(int)> fn) {
  state_->on_stop = std::move(fn);
}

void WorkerPool::on_worker_exit(std::function<void(int)> fn) {
  state_->on_exit = std::move(fn);
}

// ---- the worker --------------------------------------------------------------------------------

void WorkerPool::State::run_worker(int id, SharedSlot* slot,
                                   const std::function<void(int)>& worker_main,
                                   sigset_t original_mask) {
  // The worker ends with the master, gracefully; if the master is gone already, at once.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != master) ::_exit(0);
  ::signal(SIGINT, SIG_IGN);
  // The master's mask, but SIGTERM stays blocked until the worker's container owns it: a stop
  // request that comes during start-up waits for it instead of killing the worker.
  sigset_t mask = original_mask;
  ::sigaddset(&mask, SIGTERM);
  ::pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  worker_id = id;
  static WorkerContext context;
  context = WorkerContext{};
  context.slot = slot;
  context.max_request = options.max_request;
  context.master = master;
  g_worker = &context;

  int status = coring::run([&] {
    long watcher = coring::create([&] {
      coring::wait_signal(SIGTERM, Duration::zero());  // owns SIGTERM from here on
      sigset_t term;
      ::sigemptyset(&term);
      ::sigaddset(&term, SIGTERM);
      ::pthread_sigmask(SIG_UNBLOCK, &term, nullptr);  // one that waited is delivered now
      if (!coring::wait_signal(SIGTERM)) return;       // cancelled: worker_main returned
      if (slot->immediate.load()) {  // reload_async false: no drain; the exit closes everything
        if (on_stop) on_stop(id);
        std::fflush(nullptr);
        ::_exit(0);
      }
      context.stopping = true;
      detail::shutdown_running_servers();
      if (on_exit) on_exit(id);
    });
    if (on_start) on_start(id);
    worker_main(id);
    if (on_stop) on_stop(id);
    coring::cancel(watcher);
  });
  std::fflush(nullptr);
  ::_exit(status == 0 ? 0 : 1);
}

// ---- the master --------------------------------------------------------------------------------

void WorkerPool::State::spawn(int id, const std::function<void(int)>& worker_main,
                              sigset_t original_mask) {
  SharedSlot* slot = nullptr;
  for (size_t i = 0; i < slot_count && slot == nullptr; ++i) {
    if (slots[i].pid.load() == 0) slot = &slots[i];
  }
  if (slot == nullptr) {  // cannot happen: two slots per worker id, and one process per slot
    detail::log_format(LogLevel::error, "worker#%d: no free slot; not started", id);
    return;
  }
  slot->worker_id.store(id);
  slot->stopping.store(0);
  slot->immediate.store(0);
  slot->connections.store(0);
  slot->accepted.store(0);
  slot->closed.store(0);
  slot->requests.store(0);
  slot->pid.store(-1);   // taken
  std::fflush(nullptr);  // what the master buffered must not be written twice
  pid_t pid = ::fork();
  if (pid < 0) {
    int error_number = errno;
    slot->pid.store(0);
    detail::log_format(LogLevel::error, "fork() for worker#%d failed: %s; trying again in 1 s", id,
                       std::strerror(error_number));
    respawn_at_ns[static_cast<size_t>(id)] = now_ns() + 1'000'000'000;
    return;
  }
  if (pid == 0) run_worker(id, slot, worker_main, original_mask);
  slot->pid.store(pid);
  workers.push_back(Worker{pid, id, slot, now_ns(), false, false, 0});
}

void WorkerPool::State::stop(Worker& worker) {
  if (worker.stopping) return;
  worker.stopping = true;
  worker.slot->stopping.store(1);
  if (!options.reload_async) worker.slot->immediate.store(1);
  worker.kill_deadline_ns =
      now_ns() +
      std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::nanoseconds>(options.max_wait_time).count());
  ::kill(worker.pid, SIGTERM);
}

void WorkerPool::State::reap(const std::function<void(int)>& worker_main, sigset_t original_mask) {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto found =
        std::find_if(workers.begin(), workers.end(), [&](const Worker& w) { return w.pid == pid; });
    if (found == workers.end()) continue;  // not one of ours
    Worker worker = *found;
    workers.erase(found);
    worker.slot->pid.store(0);
    if (worker.stopping) {
      if (!worker.killed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        detail::log_format(LogLevel::warning, "worker#%d (pid %d) %s while stopping", worker.id,
                           static_cast<int>(pid), describe_status(status).c_str());
      }
      continue;
    }
    if (shutting_down) continue;
    auto id = static_cast<size_t>(worker.id);
    int64_t now = now_ns();
    if (now - worker.started_ns < 1'000'000'000) {
      // Died within a second of starting: it may die at once every time; pause before the next.
      backoff_ns[id] =
          backoff_ns[id] == 0 ? 100'000'000 : std::min<int64_t>(backoff_ns[id] * 2, 10'000'000'000);
      respawn_at_ns[id] = now + backoff_ns[id];
      detail::log_format(LogLevel::error,
                         "worker#%d (pid %d) %s within a second of starting; starting it again "
                         "in %lld ms",
                         worker.id, static_cast<int>(pid), describe_status(status).c_str(),
                         static_cast<long long>(backoff_ns[id] / 1'000'000));
    } else {
      backoff_ns[id] = 0;
      detail::log_format(LogLevel::error, "worker#%d (pid %d) %s; starting a new one", worker.id,
                         static_cast<int>(pid), describe_status(status).c_str());
      spawn(worker.id, worker_main, original_mask);
    }
  }
}

void WorkerPool::State::enforce_deadlines() {
  int64_t now = now_ns();
  for (Worker& worker : workers) {
    if (worker.stopping && !worker.killed && now >= worker.kill_deadline_ns) {
      worker.killed = true;
      ::kill(worker.pid, SIGKILL);
      detail::log_format(LogLevel::warning, "worker exit timeout, forced to terminate");
    }
  }
}

int64_t WorkerPool::State::next_deadline() const {
  int64_t next = INT64_MAX;
  for (const Worker& worker : workers) {
    if (worker.stopping && !worker.killed) next = std::min(next, worker.kill_deadline_ns);
  }
  for (int64_t at : respawn_at_ns) {
    if (at >= 0) next = std::min(next, at);
  }
  return next;
}

int WorkerPool::start(std::function<void(int)> worker_main) {
  State& s = *state_;
  if (detail::tls_scheduler != nullptr) {
    detail::log_format(LogLevel::error,
                       "WorkerPool::start() inside a coroutine container: the master forks its "
                       "workers and must run outside any container (see coring/process.hpp)");
    return s.fail(EPERM, "WorkerPool::start() inside a container");
  }
  if (s.started) return s.fail(EBUSY, "WorkerPool::start() was called already");
  if (s.slots == nullptr) return -1;  // the constructor recorded why
  if (!worker_main) return s.fail(EINVAL, "no worker_main");
  s.started = true;
  s.master = ::getpid();
  s.header->master.store(s.master);
  s.respawn_at_ns.assign(static_cast<size_t>(s.worker_num), -1);
  s.backoff_ns.assign(static_cast<size_t>(s.worker_num), 0);

  sigset_t handled, original_mask;
  ::sigemptyset(&handled);
  for (int signo : {SIGCHLD, SIGTERM, SIGINT, SIGUSR1, replace_me_signal()}) {
    ::sigaddset(&handled, signo);
  }
  ::pthread_sigmask(SIG_BLOCK, &handled, &original_mask);

  for (int id = 0; id < s.worker_num; ++id) s.spawn(id, worker_main, original_mask);
  if (s.workers.empty()) {
    ::pthread_sigmask(SIG_SETMASK, &original_mask, nullptr);
    s.header->master.store(0);
    return s.fail(EAGAIN, "no worker could be forked");
  }

  while (!(s.shutting_down && s.workers.empty())) {
    int64_t now = now_ns();
    // Look at the children at least once a second whatever happens (a missed SIGCHLD, say).
    int64_t wait_ns = std::clamp<int64_t>(s.next_deadline() - now, 0, 1'000'000'000);
    timespec timeout{wait_ns / 1'000'000'000, wait_ns % 1'000'000'000};
    siginfo_t info{};
    int signo = ::sigtimedwait(&handled, &info, &timeout);
    if (signo == SIGUSR1 && !s.shutting_down) {
      detail::log_format(LogLevel::info, "reloading %d workers", s.worker_num);
      std::vector<pid_t> old;
      for (const auto& worker : s.workers) {
        if (!worker.stopping) old.push_back(worker.pid);
      }
      for (pid_t pid : old) {
        auto found = std::find_if(s.workers.begin(), s.workers.end(),
                                  [&](const State::Worker& w) { return w.pid == pid; });
        int id = found->id;
        s.spawn(id, worker_main, original_mask);  // first the new one, then stop the old one
        found = std::find_if(s.workers.begin(), s.workers.end(),
                             [&](const State::Worker& w) { return w.pid == pid; });
        s.stop(*found);
      }
    } else if ((signo == SIGTERM || signo == SIGINT) && !s.shutting_down) {
      detail::log_format(LogLevel::info, "shutting down %zu workers", s.workers.size());
      s.shutting_down = true;
      std::fill(s.respawn_at_ns.begin(), s.respawn_at_ns.end(), -1);
      for (auto& worker : s.workers) s.stop(worker);
    } else if (signo == replace_me_signal() && !s.shutting_down) {
      auto found = std::find_if(s.workers.begin(), s.workers.end(), [&](const State::Worker& w) {
        return w.pid == info.si_pid && !w.stopping;
      });
      if (found != s.workers.end()) {
        pid_t pid = found->pid;
        s.spawn(found->id, worker_main, original_mask);
        found = std::find_if(s.workers.begin(), s.workers.end(),
                             [&](const State::Worker& w) { return w.pid == pid; });
        s.stop(*found);
      }
    }
    s.reap(worker_main, original_mask);
    s.enforce_deadlines();
    now = now_ns();
    for (size_t id = 0; id < s.respawn_at_ns.size(); ++id) {
      if (s.respawn_at_ns[id] >= 0 && now >= s.respawn_at_ns[id]) {
        s.respawn_at_ns[id] = -1;
        s.spawn(static_cast<int>(id), worker_main, original_mask);
      }
    }
  }
  // Signals of ours still pending would act on their default once unblocked (SIGUSR1 ends a
  // process): take them first.
  timespec zero{};
  while (::sigtimedwait(&handled, nullptr, &zero) > 0) {
  }
  ::pthread_sigmask(SIG_SETMASK, &original_mask, nullptr);
  s.header->master.store(0);
  s.started = false;
  return 0;
}

void WorkerPool::reload() {
  const State& s = *state_;
  int32_t master = s.header != nullptr ? s.header->master.load() : 0;
  if (master > 0) ::kill(master, SIGUSR1);
}

void WorkerPool::shutdown() {
  const State& s = *state_;
  int32_t master = s.header != nullptr ? s.header->master.load() : 0;
  if (master > 0) ::kill(master, SIGTERM);
}

std::vector<WorkerStats> WorkerPool::stats() const {
  const State& s = *state_;
  std::vector<WorkerStats> out;
  for (size_t i = 0; i < s.slot_count; ++i) {
    const SharedSlot& slot = s.slots[i];
    int32_t pid = slot.pid.load();
    if (pid <= 0) continue;
    WorkerStats stats;
    stats.worker_id = slot.worker_id.load();
    stats.pid = pid;
    stats.stopping = slot.stopping.load() != 0;
    stats.connections = slot.connections.load();
    stats.accepted = slot.accepted.load();
    stats.closed = slot.closed.load();
    stats.requests = slot.requests.load();
    out.push_back(stats);
  }
  std::sort(out.begin(), out.end(), [](const WorkerStats& a, const WorkerStats& b) {
    return a.worker_id != b.worker_id ? a.worker_id < b.worker_id : a.pid < b.pid;
  });
  return out;
}

int WorkerPool::worker_id() const noexcept {
  return state_->worker_id;
}

std::error_code WorkerPool::error() const noexcept {
  return std::error_code(state_->error, std::generic_category());
}

std::string_view WorkerPool::error_message() const noexcept {
  return state_->error_text;
}

}  // namespace coring

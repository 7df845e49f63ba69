// What connects the servers running in a worker process to its WorkerPool, private to the
// library: the servers a stop request must reach, and the counters the master reads.
//
// A thread that runs no worker (any ordinary container) has no WorkerContext: the calls below
// then only keep the list of running servers.
#pragma once

#include <cstdint>

namespace coring {
class ServerCore;
}

namespace coring::detail {

// Registers a server as running in this thread's container for as long as it lives (the
// scope of Server::start()).
class RunningServer {
 public:
  explicit RunningServer(ServerCore* server);
  ~RunningServer();
  RunningServer(const RunningServer&) = delete;
  RunningServer& operator=(const RunningServer&) = delete;

 private:
  ServerCore* server_;
};

// Server::shutdown() of every server running in this thread's container.
void shutdown_running_servers();
// Defined in server.cpp.
void shutdown_server(ServerCore* server);

// Counters of this worker, published to the master (no-ops outside a worker).
void note_connection_opened() noexcept;
void note_connection_closed() noexcept;
// One request served (the TCP server: a connection whose handler ended; the HTTP server: a
// request answered). At WorkerOptions::max_request the worker asks the master to replace it.
void note_request() noexcept;

}  // namespace coring::detail

// A multi-process TCP echo server on coring: a master binds the port and forks workers that
// share it (coring::WorkerPool); each worker serves it with a coring::Server, one coroutine per
// connection. SIGUSR1 reloads the workers gracefully, SIGTERM or Ctrl-C stops them gracefully.
//
//   tcp_server [--host 127.0.0.1] [--port 9501] [--workers N] [--max-request N]
//              [--max-wait-time MS] [--stuck-timer]
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s [--host HOST] [--port PORT] [--workers N] [--max-request N]\n"
      "          [--max-wait-time MS] [--stuck-timer]\n"
      "  Echoes every byte back, in N worker processes (default: one per CPU) that share one\n"
      "  listening socket (port 0 picks one). Prints \"listening on HOST:PORT\" once the socket\n"
      "  is bound.\n"
      "  Signals to the master (the process this command starts):\n"
      "    SIGUSR1          reload: new workers start, old ones finish their connections\n"
      "    SIGTERM, SIGINT  shut down: workers finish their connections, then the master exits 0\n"
      "  --max-request N    replace a worker after N connections (0: never)\n"
      "  --max-wait-time MS kill a worker still running MS after it was asked to stop (3000)\n"
      "  --stuck-timer      each worker starts a tick() timer it never clears, so it never ends\n"
      "                     on its own: the master kills it after --max-wait-time\n",
      program);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 9501;
  Co::WorkerOptions options;
  bool stuck_timer = false;
  for (int i = 1; i < argc; ++i) {
    std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      usage(argv[0]);
      return 0;
    }
    if (option == "--stuck-timer") {
      stuck_timer = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value (see --help)\n", argv[0], option.c_str());
      return 2;
    }
    std::string value = argv[++i];
    if (option == "--host") {
      host = value;
    } else if (option == "--port") {
      port = std::strtol(value.c_str(), nullptr, 10);
    } else if (option == "--workers") {
      options.worker_num = static_cast<int>(std::strtol(value.c_str(), nullptr, 10));
    } else if (option == "--max-request") {
      options.max_request = std::strtoull(value.c_str(), nullptr, 10);
    } else if (option == "--max-wait-time") {
      options.max_wait_time = std::chrono::milliseconds(std::strtol(value.c_str(), nullptr, 10));
    } else {
      std::fprintf(stderr, "%s: unknown option %s (see --help)\n", argv[0], option.c_str());
      return 2;
    }
  }
  if (port < 0 || port > 65535 || options.worker_num < 0) {
    usage(argv[0]);
    return 2;
  }

  Co::WorkerPool pool(options);
  if (pool.listen(host, static_cast<uint16_t>(port)) < 0) {
    std::fprintf(stderr, "tcp_server: %s\n", std::string(pool.error_message()).c_str());
    return 1;
  }
  std::printf("listening on %s:%u\n", host.c_str(), pool.port());
  std::fflush(stdout);
  pool.on_worker_start([](int id) {
    // Per-worker resources (database and cache clients) are opened here: never share a
    // connection across processes.
    Co::log(Co::LogLevel::info, "worker#" + std::to_string(id) + " started");
  });
  int status = pool.start([&](int) {
    if (stuck_timer) Co::tick(std::chrono::seconds(1), [] {});
    Co::Server server(pool.listener());
    server.handle([](Co::Connection& connection) {
      char buffer[4096];
      for (;;) {
        ssize_t n = connection.recv(buffer, sizeof buffer, Co::kForever);
        if (n <= 0) return;  // the client closed (or reset) the connection
        if (connection.send_all(buffer, static_cast<size_t>(n)) != n) return;
      }
    });
    if (!server.start()) {
      std::fprintf(stderr, "tcp_server: %s\n", std::string(server.error_message()).c_str());
    }
  });
  if (status != 0) {
    std::fprintf(stderr, "tcp_server: %s\n", std::string(pool.error_message()).c_str());
    return 1;
  }
  return 0;
}

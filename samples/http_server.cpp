// An HTTP/1.1 server on coring: a master binds the port and forks workers that share it
// (coring::WorkerPool); each worker serves it with a coring::http::Server, one coroutine per
// connection. GET / answers "Hello, World!" (text/plain): the benchmark's target
// (scripts/bench.sh, section "http"). With --root DIR, /static/... serves the files under DIR.
// SIGUSR1 reloads the workers gracefully, SIGTERM or Ctrl-C stops them gracefully.
//
//   http_server [--host 127.0.0.1] [--port 9501] [--workers N] [--root DIR]
#include <coring/coring.hpp>
#include <coring/http_server.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s [--host HOST] [--port PORT] [--workers N] [--root DIR]\n"
      "  Serves HTTP/1.1 (and HTTP/1.0 keep-alive) in N worker processes (default: one per\n"
      "  CPU) that share one listening socket (port 0 picks one).\n"
      "  Prints \"listening on HOST:PORT\" once the socket is bound.\n"
      "    /           answers \"Hello, World!\" (Content-Type: text/plain)\n"
      "    /static/... with --root DIR: the files under DIR (GET and HEAD; nothing outside DIR)\n"
      "  Signals to the master (the process this command starts):\n"
      "    SIGUSR1          reload: new workers start, old ones finish their requests\n"
      "    SIGTERM, SIGINT  shut down: requests in progress finish, idle connections close,\n"
      "                     then the master exits 0\n"
      "  --host HOST   the address to bind (127.0.0.1)\n"
      "  --port PORT   the port (9501; 0 picks a free one)\n"
      "  --workers N   worker processes (0: one per CPU)\n"
      "  --root DIR    serve DIR under /static\n",
      program);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 9501;
  std::string root;
  Co::WorkerOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      usage(argv[0]);
      return 0;
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
    } else if (option == "--root") {
      root = value;
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
    std::fprintf(stderr, "http_server: %s\n", std::string(pool.error_message()).c_str());
    return 1;
  }
  std::printf("listening on %s:%u\n", host.c_str(), pool.port());
  std::fflush(stdout);
  int status = pool.start([&](int) {
    Co::http::Server server(pool.listener());
    server.handle("/", [](Co::http::Request&, Co::http::Response& response) {
      response.header("Content-Type", "text/plain");
      response.end("Hello, World!");
    });
    if (!root.empty()) server.serve_directory("/static", root);
    if (!server.start()) {
      std::fprintf(stderr, "http_server: %s\n", std::string(server.error_message()).c_str());
    }
  });
  if (status != 0) {
    std::fprintf(stderr, "http_server: %s\n", std::string(pool.error_message()).c_str());
    return 1;
  }
  return 0;
}

// An HTTP/1.1 server on coring: a master binds the port and forks workers that share it
// (coring::WorkerPool); each worker serves it with a coring::http::Server, one coroutine per
// connection. GET / answers "Hello, World!" (text/plain): the benchmark's target
// (scripts/bench.sh, sections "http" and "tls"). With --root DIR, /static/... serves the files
// under DIR. With --cert FILE --key FILE it serves HTTPS instead: the TLS context is made once,
// in the master, before the workers are forked, so that every worker shares its session ticket
// keys (a client resumes its session with whichever worker takes its next connection; see
// coring/server.hpp). SIGUSR1 reloads the workers gracefully, SIGTERM or Ctrl-C stops them
// gracefully.
//
//   http_server [--host 127.0.0.1] [--port 9501] [--workers N] [--root DIR]
//               [--cert FILE --key FILE [--ciphersuites LIST]]
#include <coring/coring.hpp>
#include <coring/http_server.hpp>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s [--host HOST] [--port PORT] [--workers N] [--root DIR]\n"
      "          [--cert FILE --key FILE [--ciphersuites LIST]]\n"
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
      "  --root DIR    serve DIR under /static\n"
      "  --cert FILE   serve HTTPS with this certificate chain (PEM: the certificate first)\n"
      "  --key FILE    and this private key (PEM); both or neither\n"
      "  --ciphersuites LIST   the TLS 1.3 cipher suites, in OpenSSL's syntax\n"
      "                (TLS_AES_128_GCM_SHA256:...; default: OpenSSL's)\n",
      program);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 9501;
  std::string root;
  Co::TlsOptions tls;
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
    } else if (option == "--cert") {
      tls.cert_file = value;
    } else if (option == "--key") {
      tls.key_file = value;
    } else if (option == "--ciphersuites") {
      tls.ciphersuites = value;
    } else {
      std::fprintf(stderr, "%s: unknown option %s (see --help)\n", argv[0], option.c_str());
      return 2;
    }
  }
  if (port < 0 || port > 65535 || options.worker_num < 0 ||
      tls.cert_file.empty() != tls.key_file.empty() ||
      (!tls.ciphersuites.empty() && tls.cert_file.empty())) {
    usage(argv[0]);
    return 2;
  }
  // In the master, before the fork (see the comment at the top).
  std::optional<Co::TlsContext> context;
  if (!tls.cert_file.empty()) {
    context = Co::TlsContext::server(tls);
    if (!context) {
      std::fprintf(stderr, "http_server: %s\n",
                   std::string(Co::TlsContext::last_error_message()).c_str());
      return 1;
    }
  }

  Co::WorkerPool pool(options);
  if (pool.listen(host, static_cast<uint16_t>(port)) < 0) {
    std::fprintf(stderr, "http_server: %s\n", std::string(pool.error_message()).c_str());
    return 1;
  }
  std::printf("listening on %s:%u\n", host.c_str(), pool.port());
  std::fflush(stdout);
  int status = pool.start([&](int) {
    Co::http::ServerOptions server_options;
    server_options.tls = context;
    Co::http::Server server(pool.listener(), server_options);
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

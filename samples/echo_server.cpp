// A TCP echo server: one coroutine per connection, every byte sent back as it arrives.
//
//   echo_server --port 7000 [--host 127.0.0.1] [--buffer 4096]
//
// Prints "listening on HOST:PORT" once it accepts connections; runs until killed.
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s --port PORT [--host HOST] [--buffer BYTES]\n"
      "  A TCP echo server on coring: each connection gets its own coroutine, which reads\n"
      "  up to BYTES (default 4096) and writes them back until the peer closes.\n"
      "  --port 0 picks a free port; the chosen one is printed.\n",
      program);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = -1;
  size_t buffer_size = 4096;
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
    if (option == "--port") {
      port = std::strtol(value.c_str(), nullptr, 10);
    } else if (option == "--host") {
      host = value;
    } else if (option == "--buffer") {
      buffer_size = std::strtoul(value.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "%s: unknown option %s (see --help)\n", argv[0], option.c_str());
      return 2;
    }
  }
  if (port < 0 || port > 65535 || buffer_size == 0 || buffer_size > (1 << 20)) {
    usage(argv[0]);
    return 2;
  }

  Co::RunOptions options;
  options.stack_size = 64 * 1024;
  options.max_coroutines = 1'000'000;
  int status = Co::run(
      [&] {
        Co::Socket listener(host.find(':') != std::string::npos ? Co::Socket::Type::tcp6
                                                                : Co::Socket::Type::tcp);
        if (!listener.bind(host, static_cast<uint16_t>(port)) || !listener.listen(4096)) {
          std::fprintf(stderr, "echo_server: cannot listen on %s:%ld: %s\n", host.c_str(), port,
                       std::string(listener.error_message()).c_str());
          std::exit(1);
        }
        std::printf("listening on %s:%u\n", host.c_str(), listener.local_port());
        std::fflush(stdout);
        for (;;) {
          std::optional<Co::Socket> connection = listener.accept();
          if (!connection) {
            // EMFILE and friends: say so and keep serving the connections we have.
            std::fprintf(stderr, "echo_server: accept: %s\n",
                         std::string(listener.error_message()).c_str());
            Co::this_coroutine::sleep(std::chrono::milliseconds(10));
            continue;
          }
          Co::create([socket = std::move(*connection), buffer_size]() mutable {
            std::vector<char> buffer(buffer_size);
            for (;;) {
              ssize_t n = socket.recv(buffer.data(), buffer.size(), Co::kForever);
              if (n <= 0) return;
              if (socket.send_all(buffer.data(), static_cast<size_t>(n)) != n) return;
            }
          });
        }
      },
      options);
  return status == 0 ? 0 : 1;
}

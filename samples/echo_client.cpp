// An echo client on coring: N connections, each a coroutine that sends a message, reads it back
// and checks it, R times; then prints round trips per second.
//
//   echo_client --port 7000 [--host 127.0.0.1] [--conns 10] [--size 64] [--rounds 1000]
#include <chrono>
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s --port PORT [--host HOST] [--conns N] [--size BYTES] [--rounds R]\n"
      "  Opens N connections to an echo server (default 10, each in its own coroutine) and\n"
      "  on each sends BYTES bytes (default 64), waits for the same bytes back and checks\n"
      "  them, R times (default 1000). Prints the round trips per second. Exit status 1 if a\n"
      "  connection fails or the server echoes different bytes.\n",
      program);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = -1, connections = 10, rounds = 1000;
  size_t size = 64;
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
    } else if (option == "--conns") {
      connections = std::strtol(value.c_str(), nullptr, 10);
    } else if (option == "--size") {
      size = std::strtoul(value.c_str(), nullptr, 10);
    } else if (option == "--rounds") {
      rounds = std::strtol(value.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "%s: unknown option %s (see --help)\n", argv[0], option.c_str());
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || connections <= 0 || size == 0 || rounds <= 0) {
    usage(argv[0]);
    return 2;
  }

  int failures = 0;
  long completed = 0;
  auto started = std::chrono::steady_clock::now();
  int status = Co::run([&] {
    Co::WaitGroup all;
    for (long c = 0; c < connections; ++c) {
      all.add();
      Co::create([&] {
        Co::this_coroutine::defer([&] { all.done(); });
        Co::Socket socket(host.find(':') != std::string::npos ? Co::Socket::Type::tcp6
                                                              : Co::Socket::Type::tcp);
        if (!socket.connect(host, static_cast<uint16_t>(port))) {
          std::fprintf(stderr, "echo_client: connect: %s\n",
                       std::string(socket.error_message()).c_str());
          ++failures;
          return;
        }
        std::string message(size, '\0'), reply(size, '\0');
        for (size_t i = 0; i < size; ++i) message[i] = static_cast<char>('a' + i % 26);
        for (long r = 0; r < rounds; ++r) {
          if (socket.send_all(message.data(), size) != static_cast<ssize_t>(size) ||
              socket.recv_all(reply.data(), size) != static_cast<ssize_t>(size)) {
            std::fprintf(stderr, "echo_client: %s\n",
                         socket.error().value() != 0 ? std::string(socket.error_message()).c_str()
                                                     : "the server closed the connection");
            ++failures;
            return;
          }
          if (reply != message) {
            std::fprintf(stderr, "echo_client: the server echoed different bytes\n");
            ++failures;
            return;
          }
          ++completed;
        }
      });
    }
    all.wait();
  });
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("%ld round trips in %.3f s: %.0f per second, %d failed connection(s)\n", completed,
              seconds, static_cast<double>(completed) / seconds, failures);
  return status == 0 && failures == 0 ? 0 : 1;
}

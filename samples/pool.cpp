// A connection pool on coring: N coroutines share a pool of M connections to an echo server;
// each coroutine takes a connection, does one round trip, and gives it back, K times. Prints the
// round trips done, the connections made, and the time. With --http the same through an
// http::ClientPool of M HTTP clients against an HTTP server (GET /echo?...).
//
//   pool [--coroutines 100] [--size 8] [--requests 100] [--port P] [--http]
//
// Without --port it starts a server of its own, in the same container, on 127.0.0.1.
#include <chrono>
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s [--coroutines N] [--size M] [--requests K] [--port P] [--http]\n"
      "  N coroutines (default 100) share a pool of at most M connections (default 8) to an\n"
      "  echo server on 127.0.0.1: its own, or the one on port P. Each coroutine does K round\n"
      "  trips (default 100), taking a connection from the pool for each. With --http: an\n"
      "  http::ClientPool of M clients and an HTTP server (its own answers GET /echo?TEXT with\n"
      "  TEXT). Exit status 1 if a round trip fails.\n",
      program);
}

// The echo server: one coroutine per connection, sending every byte back.
void echo(Co::Socket connection) {
  char buffer[4096];
  for (;;) {
    ssize_t n = connection.recv(buffer, sizeof buffer);
    if (n <= 0 || connection.send_all(buffer, static_cast<size_t>(n)) != n) return;
  }
}

// --http: N coroutines share an http::ClientPool of M keep-alive clients (a ConnectionPool of
// http::Client inside); each request borrows one and gives it back when its response is read.
long http_round_trips(long coroutines, long size, long requests, long port, long* connections) {
  long round_trips = 0;
  std::optional<Co::http::Server> server;
  Co::WaitGroup serving;
  if (port == 0) {  // no server given: start one
    server.emplace("127.0.0.1", 0);
    server->handle("/echo", [](Co::http::Request& request, Co::http::Response& response) {
      response.end(request.query());
    });
    serving.add();
    Co::create([&] {
      if (!server->start()) std::fprintf(stderr, "pool: the HTTP server did not start\n");
      serving.done();
    });
    port = server->port();
  }
  Co::http::ClientPoolOptions options;
  options.size = static_cast<size_t>(size);
  Co::http::ClientPool pool("127.0.0.1", static_cast<uint16_t>(port), options);
  Co::WaitGroup all;
  for (long c = 0; c < coroutines; ++c) {
    all.add();
    Co::create([&, c] {
      Co::this_coroutine::defer([&] { all.done(); });
      for (long r = 0; r < requests; ++r) {
        std::string text = "c" + std::to_string(c) + "r" + std::to_string(r);
        Co::http::ClientResponse response = pool.get("/echo?" + text);  // waits for a client
        if (response.status != 200 || response.body != text) {
          std::fprintf(stderr, "pool: GET: %d %s\n", response.status,
                       response.error_message.c_str());
          return;
        }
        ++round_trips;
      }
    });
  }
  all.wait();
  *connections = static_cast<long>(pool.connections());
  pool.close();
  if (server) {
    server->shutdown();
    serving.wait();
  }
  return round_trips;
}

}  // namespace

int main(int argc, char** argv) {
  long coroutines = 100, size = 8, requests = 100, port = 0;
  bool http = false;
  for (int i = 1; i < argc; ++i) {
    std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      usage(argv[0]);
      return 0;
    }
    if (option == "--http") {
      http = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value (see --help)\n", argv[0], option.c_str());
      return 2;
    }
    long value = std::strtol(argv[++i], nullptr, 10);
    if (option == "--coroutines") {
      coroutines = value;
    } else if (option == "--size") {
      size = value;
    } else if (option == "--requests") {
      requests = value;
    } else if (option == "--port") {
      port = value;
    } else {
      std::fprintf(stderr, "%s: unknown option %s (see --help)\n", argv[0], option.c_str());
      return 2;
    }
  }
  if (coroutines <= 0 || size <= 0 || requests <= 0 || port < 0 || port > 65535) {
    usage(argv[0]);
    return 2;
  }

  long round_trips = 0, connections_made = 0, failures = 0;
  auto started = std::chrono::steady_clock::now();
  int status = Co::run([&] {
    if (http) {
      round_trips = http_round_trips(coroutines, size, requests, port, &connections_made);
      failures = round_trips == coroutines * requests ? 0 : 1;
      return;
    }
    Co::Socket listener;
    if (port == 0) {  // no server given: start one
      if (!listener.bind("127.0.0.1", 0) || !listener.listen()) {
        std::fprintf(stderr, "pool: listen: %s\n", std::string(listener.error_message()).c_str());
        ++failures;
        return;
      }
      port = listener.local_port();
      Co::create([&] {
        while (auto connection = listener.accept()) Co::create(echo, std::move(*connection));
      });
    }

    // The factory makes one connection; the pool calls it when it needs one more (up to size).
    // The health check drops a connection the server closed while it sat idle in the pool.
    Co::ConnectionPool<Co::Socket> pool(
        [&]() -> std::unique_ptr<Co::Socket> {
          auto socket = std::make_unique<Co::Socket>();
          if (!socket->connect("127.0.0.1", static_cast<uint16_t>(port))) {
            std::fprintf(stderr, "pool: connect: %s\n",
                         std::string(socket->error_message()).c_str());
            return nullptr;
          }
          ++connections_made;
          return socket;
        },
        {.size = static_cast<size_t>(size),
         .health_check = [](Co::Socket& socket) { return socket.check_liveness(); }});

    Co::WaitGroup all;
    for (long c = 0; c < coroutines; ++c) {
      all.add();
      Co::create([&, c] {
        Co::this_coroutine::defer([&] { all.done(); });
        for (long r = 0; r < requests; ++r) {
          std::string message =
              "coroutine " + std::to_string(c) + " request " + std::to_string(r) + "\n";
          std::string reply(message.size(), '\0');
          auto connection = pool.get();  // waits while all M connections are in use
          if (!connection) {
            std::fprintf(stderr, "pool: get: %s\n", Co::last_error().message().c_str());
            ++failures;
            return;
          }
          Co::Socket& socket = **connection;
          if (socket.send_all(message.data(), message.size()) !=
                  static_cast<ssize_t>(message.size()) ||
              socket.recv_all(reply.data(), reply.size()) != static_cast<ssize_t>(reply.size()) ||
              reply != message) {
            connection->mark_broken();  // the pool destroys it instead of handing it out again
            ++failures;
            return;
          }
          ++round_trips;
        }  // the handle goes out of scope: the connection goes back to the pool
      });
    }
    all.wait();
    pool.close();
    listener.close();  // ends the accept loop; the echo coroutines end as the clients close
  });
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf(
      "%ld round trips by %ld coroutines over %ld connection(s) (pool size %ld) in %.3f s\n",
      round_trips, coroutines, connections_made, size, seconds);
  return status == 0 && failures == 0 ? 0 : 1;
}

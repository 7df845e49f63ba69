// coring's HTTP client under load (scripts/bench.sh, sections "client" and "tls"): N
// coroutines in one container, each with its own coring::http::Client (one keep-alive
// connection), doing GETs of one path in a loop for a fixed time. The same work as
// bench/peers/http_client.go (Go's net/http client, N goroutines) and wrk -c N, against the
// same nginx. --tls speaks HTTPS (ClientOptions::https), verifying the server against the CAs
// of --cacert (PEM; default: the system's store); the N clients share one TlsContext.
//
//   http_client_load --port P [--host 127.0.0.1] [--path /] [--concurrency 100]
//                    [--duration 3] [--body-size -1] [--tls 1 [--cacert FILE]]
//
// A request succeeds when get() returned true with status 200 and a body of exactly
// --body-size bytes (-1: any length); anything else is a failure, and the client is used again
// for the next request (a failed one reconnects, as Client documents). Every coroutine stops
// after the request it is in when --duration has passed. Prints one line,
//
//   requests=N failures=F seconds=S requests_per_s=R
//
// (N successes in S seconds of wall time, from the first request until every coroutine has
// finished its last one) and on stderr the first failure seen (status code and error). Exit
// status 0 when at least one request succeeded, 1 otherwise, 2 on bad arguments.
#include <chrono>
#include <coring/coring.hpp>
#include <coring/http_client.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace {

using Clock = std::chrono::steady_clock;

struct Arguments {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/";
  long concurrency = 100;
  double duration = 3;
  long long body_size = -1;
  bool tls = false;
  std::string cacert;
};

bool parse(int argc, char** argv, Arguments& arguments) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view option = argv[i];
    const char* value = argv[i + 1];
    if (option == "--host") {
      arguments.host = value;
    } else if (option == "--port") {
      arguments.port = std::atoi(value);
    } else if (option == "--path") {
      arguments.path = value;
    } else if (option == "--concurrency") {
      arguments.concurrency = std::atol(value);
    } else if (option == "--duration") {
      arguments.duration = std::atof(value);
    } else if (option == "--body-size") {
      arguments.body_size = std::atoll(value);
    } else if (option == "--tls") {
      arguments.tls = std::atoi(value) != 0;
    } else if (option == "--cacert") {
      arguments.cacert = value;
    } else {
      std::fprintf(stderr, "http_client_load: unknown option %s\n", argv[i]);
      return false;
    }
  }
  return argc % 2 == 1 && arguments.port > 0 && arguments.port < 65536 &&
         arguments.concurrency > 0 && arguments.concurrency <= 100'000 && arguments.duration > 0 &&
         !arguments.path.empty();
}

struct Counts {
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  int first_status = 0;  // of the first failure, with its error below
  std::error_code first_error;
  std::string first_message;  // the client's error_message() (OpenSSL's reason for -5)
  size_t first_body_size = 0;
};

// One coroutine's loop. Counts live in the container's first coroutine and are shared without
// synchronisation: every coroutine of a container runs on its one thread.
void fetch_until(const Arguments& arguments, const std::optional<coring::TlsContext>& tls,
                 const bool& stop, Counts& counts) {
  coring::http::ClientOptions options;
  options.https = arguments.tls;
  options.tls = tls;
  // Bounds a stalled nginx; a healthy run never comes near them.
  options.connect_timeout = std::chrono::seconds(5);
  options.timeout = std::chrono::seconds(10);
  coring::http::Client client(arguments.host, static_cast<uint16_t>(arguments.port), options);
  while (!stop) {
    bool ok = client.get(arguments.path) && client.status_code() == 200 &&
              (arguments.body_size < 0 ||
               client.body().size() == static_cast<unsigned long long>(arguments.body_size));
    if (ok) {
      ++counts.succeeded;
      continue;
    }
    if (counts.failed++ == 0) {
      counts.first_status = client.status_code();
      counts.first_error = client.error();
      counts.first_message = client.error_message();
      counts.first_body_size = client.body().size();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Arguments arguments;
  if (!parse(argc, argv, arguments)) {
    std::fprintf(stderr,
                 "usage: http_client_load --port P [--host H] [--path /] [--concurrency 100] "
                 "[--duration SECONDS] [--body-size BYTES] [--tls 1 [--cacert FILE]]\n");
    return 2;
  }
  // One context for every client: made once, shared (its session cache too).
  std::optional<coring::TlsContext> tls;
  if (arguments.tls) {
    coring::TlsOptions tls_options;
    tls_options.ca_file = arguments.cacert;
    tls = coring::TlsContext::client(tls_options);
    if (!tls) {
      std::fprintf(stderr, "http_client_load: %s\n",
                   std::string(coring::TlsContext::last_error_message()).c_str());
      return 2;
    }
  }
  Counts counts;
  double seconds = 0;
  long not_started = 0;
  int rc = coring::run([&] {
    bool stop = false;
    coring::WaitGroup running;
    Clock::time_point start = Clock::now();
    for (long i = 0; i < arguments.concurrency; ++i) {
      running.add();
      long cid = coring::create([&] {
        fetch_until(arguments, tls, stop, counts);
        running.done();
      });
      if (cid < 0) {
        running.done();
        ++not_started;
      }
    }
    coring::this_coroutine::sleep(std::chrono::duration<double>(arguments.duration));
    stop = true;
    running.wait();
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  });
  if (rc != 0) {
    std::fprintf(stderr, "http_client_load: run() failed: %s\n",
                 coring::last_error().message().c_str());
    return 1;
  }
  if (not_started > 0) {
    std::fprintf(stderr, "http_client_load: %ld coroutines could not be created\n", not_started);
  }
  if (counts.failed > 0) {
    std::fprintf(stderr,
                 "http_client_load: %llu failed requests; the first: status %d, error \"%s\" "
                 "(%s), a body of %zu bytes\n",
                 static_cast<unsigned long long>(counts.failed), counts.first_status,
                 counts.first_error.message().c_str(), counts.first_message.c_str(),
                 counts.first_body_size);
  }
  std::printf("requests=%llu failures=%llu seconds=%.3f requests_per_s=%.0f\n",
              static_cast<unsigned long long>(counts.succeeded),
              static_cast<unsigned long long>(counts.failed), seconds,
              seconds > 0 ? static_cast<double>(counts.succeeded) / seconds : 0.0);
  return counts.succeeded > 0 && not_started == 0 ? 0 : 1;
}

// Fetches URLs with coring's HTTP client and prints, for each, the status, the body's size and
// the time it took. N coroutines work through the list (each takes the next URL when it is done
// with one); requests to the same host:port reuse keep-alive connections (http::execute keeps the
// idle ones of the container per scheme, host and port). https:// URLs are verified against the
// system's CA store (OpenSSL's default, which SSL_CERT_FILE and SSL_CERT_DIR can point
// elsewhere), or against --cacert FILE; --insecure turns verification off, with a warning. With
// --cacert or --insecure each https URL gets a connection of its own (resuming the session of
// the one before: a short handshake), since the idle connections kept for reuse are those of the
// default context (see coring/http_client.hpp).
//
//   http_fetch URL... [--concurrency N] [--redirects N] [--gzip] [--method M] [--timeout S]
//              [--output FILE] [--cacert FILE | --insecure]
//
// Output, one line per URL in the order they finish: "STATUS BYTES MS ms URL", with the error
// after a failure ("-1 0 0.31 ms http://127.0.0.1:1/ (connect to 127.0.0.1:1: Connection
// refused)", "-5 0 1.20 ms https://127.0.0.1:8443/ (https://127.0.0.1:8443: TLS handshake failed:
// certificate verify failed: unable to get local issuer certificate)"). A summary goes to
// stderr. Exit status 0 when every URL got a response (any HTTP status), 1 when one failed (a
// negative status), 2 for bad arguments (or a --cacert file that cannot be used).
#include <chrono>
#include <coring/coring.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace http = coring::http;

namespace {

void usage(const char* program) {
  std::printf(
      "usage: %s URL... [--concurrency N] [--redirects N] [--gzip] [--method M] [--timeout S]\n"
      "          [--output FILE] [--cacert FILE | --insecure]\n"
      "  Fetches each URL (http:// or https://host[:port]/path?query) and prints its status,\n"
      "  body size and time. --concurrency N: N coroutines share the list (default 1).\n"
      "  --redirects N: follow up to N redirects (default 0). --gzip: ask for and decode\n"
      "  gzip/deflate bodies.\n"
      "  --method M: GET (default), HEAD, DELETE... --timeout S: seconds per request (default\n"
      "  30). --output FILE: the bodies, in list order, streamed into FILE (needs concurrency "
      "1).\n"
      "  https: verified against the system's CA store; --cacert FILE: against the CAs in FILE\n"
      "  (PEM) instead. --insecure: no verification at all (anyone on the path can read and\n"
      "  change the traffic; for tests only).\n",
      program);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> urls;
  long concurrency = 1, redirects = 0;
  double timeout_seconds = 30;
  bool gzip = false, insecure = false;
  std::string method = "GET", output_path, cacert;
  for (int i = 1; i < argc; ++i) {
    std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      usage(argv[0]);
      return 0;
    }
    if (option == "--gzip") {
      gzip = true;
      continue;
    }
    if (option == "--insecure") {
      insecure = true;
      continue;
    }
    if (option.rfind("--", 0) != 0) {
      urls.push_back(option);
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value (see --help)\n", argv[0], option.c_str());
      return 2;
    }
    std::string value = argv[++i];
    if (option == "--concurrency") {
      concurrency = std::strtol(value.c_str(), nullptr, 10);
    } else if (option == "--redirects") {
      redirects = std::strtol(value.c_str(), nullptr, 10);
    } else if (option == "--method") {
      method = value;
    } else if (option == "--timeout") {
      timeout_seconds = std::strtod(value.c_str(), nullptr);
    } else if (option == "--output") {
      output_path = value;
    } else if (option == "--cacert") {
      cacert = value;
    } else {
      std::fprintf(stderr, "%s: unknown option %s (see --help)\n", argv[0], option.c_str());
      return 2;
    }
  }
  if (urls.empty() || concurrency <= 0 || redirects < 0 || timeout_seconds <= 0 ||
      (!output_path.empty() && concurrency != 1) || (insecure && !cacert.empty())) {
    usage(argv[0]);
    return 2;
  }
  std::FILE* output = nullptr;
  if (!output_path.empty() && (output = std::fopen(output_path.c_str(), "wb")) == nullptr) {
    std::perror(output_path.c_str());
    return 2;
  }

  http::ClientOptions options;
  options.max_redirects = static_cast<int>(redirects);
  options.decompress = gzip;
  options.timeout = std::chrono::duration<double>(timeout_seconds);
  if (insecure || !cacert.empty()) {
    Co::TlsOptions tls;
    tls.ca_file = cacert;
    tls.verify_peer = !insecure;
    if (insecure) {
      std::fprintf(stderr,
                   "http_fetch: WARNING: --insecure: server certificates are not verified; "
                   "anyone on the path can read and change the traffic\n");
    }
    options.tls = Co::TlsContext::client(tls);
    if (!options.tls) {
      std::fprintf(stderr, "http_fetch: %s\n",
                   std::string(Co::TlsContext::last_error_message()).c_str());
      return 2;
    }
  }
  bool write_failed = false;
  if (output != nullptr) {
    // Streamed: a body of any size passes through a small buffer, never whole in memory.
    options.on_body = [&](std::string_view piece) {
      if (std::fwrite(piece.data(), 1, piece.size(), output) == piece.size()) return true;
      write_failed = true;
      return false;
    };
  }

  size_t next = 0;
  int failures = 0;
  uint64_t bytes = 0;
  auto started = std::chrono::steady_clock::now();
  int status = Co::run([&] {
    Co::WaitGroup workers;
    for (long w = 0; w < concurrency; ++w) {
      workers.add();
      Co::create([&] {
        Co::this_coroutine::defer([&] { workers.done(); });
        uint64_t streamed = 0;
        http::ClientOptions mine = options;
        if (mine.on_body) {  // counts what went to the file: body is empty then
          mine.on_body = [&](std::string_view piece) {
            streamed += piece.size();
            return options.on_body(piece);
          };
        }
        while (next < urls.size()) {
          const std::string& url = urls[next++];
          streamed = 0;
          auto begin = std::chrono::steady_clock::now();
          http::ClientResponse response = http::execute(method, url, {}, mine);
          double ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin)
                  .count();
          uint64_t size = mine.on_body ? streamed : response.body.size();
          bytes += size;
          if (response.status > 0) {
            std::printf("%d %llu %.2f ms %s\n", response.status,
                        static_cast<unsigned long long>(size), ms, url.c_str());
          } else {
            ++failures;
            std::printf("%d %llu %.2f ms %s (%s)\n", response.status,
                        static_cast<unsigned long long>(size), ms, url.c_str(),
                        response.error_message.c_str());
          }
        }
      });
    }
    workers.wait();
  });
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (output != nullptr && std::fclose(output) != 0) write_failed = true;
  std::fprintf(stderr, "%zu requests, %zu answered, %d failed, %llu body bytes, %.3f s\n",
               urls.size(), urls.size() - static_cast<size_t>(failures), failures,
               static_cast<unsigned long long>(bytes), seconds);
  if (write_failed) std::fprintf(stderr, "http_fetch: writing %s failed\n", output_path.c_str());
  return status == 0 && failures == 0 && !write_failed ? 0 : 1;
}

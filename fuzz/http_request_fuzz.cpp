// libFuzzer target: the request path of coring::http::Server (llhttp, limits, pipelining,
// bodies, Expect) over real loopback connections. One server runs for the whole fuzzing
// process, in a container on a thread of its own (a server per input would use up the port
// range: every connection leaves a TIME_WAIT behind); the inputs are sent from plain blocking
// sockets. Each input is sent twice, on two connections: once whole, once cut at offsets the
// input chooses (a short pause after each piece, so that most pieces are a read of their own);
// then the client half-closes and reads whatever comes back until the server closes. Checked, and a
// violation aborts (libFuzzer keeps the input):
//  - every request a handler sees is sane: a method, a target without space or CR/LF, header
//    names that are tokens, values without CR, LF or NUL, a body within package_max_length,
//    names, values and target within max_header_size;
//  - whole and cut give the same sequence of final status codes (1xx left out, the server's
//    4xx/5xx refusals taken as one) and the same requests to the handler: how bytes are split into
//    reads must not change what they mean;
//  - the server is still alive afterwards: a well-formed GET on a new connection gets 200 (the
//    same server across every input: what one input leaves behind meets the next).
//
// Input layout: [k][k split offsets, 2 bytes each, little-endian, modulo the stream's size]
// then the stream (k = first byte % 8). Built with -Dfuzz=true (clang); scripts/test.sh runs it
// for a bounded time with the seeds in fuzz/corpus/http_request/.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coring/coring.hpp>
#include <coring/http_server.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace http = coring::http;
using namespace std::chrono_literals;

constexpr size_t kMaxHeader = 1024;
constexpr size_t kMaxBody = 4096;

[[noreturn]] void violated(const std::string& what) {
  std::fprintf(stderr, "http_request_fuzz: %s\n", what.c_str());
  std::abort();
}

bool is_token_char(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

// What a handler saw, for comparing the two deliveries.
std::string summary(http::Request& request) {
  std::string s = std::string(request.method()) + " " + std::string(request.target()) + " 1." +
                  std::to_string(request.version_minor()) + " h" +
                  std::to_string(request.headers().size()) + " b" +
                  std::to_string(request.body().size()) + " k" + (request.keep_alive() ? "1" : "0");
  return s;
}

void check_request(http::Request& request) {
  if (request.method().empty()) violated("empty method");
  std::string_view target = request.target();
  if (target.empty()) violated("empty target");
  size_t head = request.method().size() + target.size();
  for (char c : target) {
    if (c == ' ' || c == '\r' || c == '\n' || c == '\0') violated("bad byte in the target");
  }
  for (const http::Header& header : request.headers()) {
    if (header.name.empty()) violated("empty header name");
    if (header.name.size() > kMaxHeader || header.value.size() > kMaxHeader) {
      violated("a header name or value longer than the head limit: " +
               std::to_string(header.name.size()) + " / " + std::to_string(header.value.size()));
    }
    for (char c : header.name) {
      if (!is_token_char(static_cast<unsigned char>(c))) {
        violated("header name not a token: [" + std::string(header.name) + "]");
      }
    }
    for (char c : header.value) {
      if (c == '\r' || c == '\n' || c == '\0') violated("CR, LF or NUL in a header value");
    }
    head += header.name.size() + header.value.size();
  }
  if (head > kMaxHeader) violated("a head over max_header_size reached the handler");
  if (request.body().size() > kMaxBody) violated("a body over package_max_length");
}

struct Talk {
  std::string received;
  bool closed = false;  // the server closed the connection (else: our deadline passed)
  std::string local;    // the client's address and port: the server's key for what it saw
  int error = 0;        // what ended the reading, if not an end of stream
};

// A connected client socket from an address of 127/8 of its own (a new one each time, round
// the 15 million there are): the port pair of a new connection then never meets a TIME_WAIT
// the server keeps for an earlier one (the kernel would answer its SYN with a reset). A bind or
// connect that fails is tried again a few times: after the test suites' connection churn the
// machine's ephemeral ports may all be taken for a moment (what failed is printed: a server
// that is gone fails every time, and that is a violation).
int connect_client(uint16_t port) {
  static uint32_t counter = 0;
  std::string last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) violated("socket failed: " + std::string(std::strerror(errno)));
    timeval limit{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    ++counter;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(127u << 24 | (1 + counter / 62500 % 250) << 16 |
                                    (1 + counter / 250 % 250) << 8 | (1 + counter % 250));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      last = "bind failed: " + std::string(std::strerror(errno));
      ::close(fd);
      continue;
    }
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      last = "connect failed: " + std::string(std::strerror(errno));
      ::close(fd);
      continue;
    }
    if (attempt > 0) std::fprintf(stderr, "http_request_fuzz: %s, then connected\n", last.c_str());
    return fd;
  }
  violated(last + " (5 attempts)");
}

// Sends stream in pieces cut at `cuts`, half-closes, reads until the server closes.
Talk talk(uint16_t port, std::string_view stream, const std::vector<size_t>& cuts) {
  Talk out;
  int fd = connect_client(port);
  sockaddr_in address{};
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  char host[INET_ADDRSTRLEN] = "";
  ::inet_ntop(AF_INET, &address.sin_addr, host, sizeof host);
  out.local = std::string(host) + ":" + std::to_string(ntohs(address.sin_port));
  size_t start = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(stream.size());
  bool sending = true;
  for (size_t end : ends) {
    while (sending && start < end) {
      ssize_t n = ::send(fd, stream.data() + start, end - start, MSG_NOSIGNAL);
      if (n <= 0) sending = false;  // the server closed already (a 4xx): read what it said
      if (n > 0) start += static_cast<size_t>(n);
    }
    if (!sending) break;
    if (end < stream.size()) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  ::shutdown(fd, SHUT_WR);
  char buffer[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      out.received.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0) out.error = errno;
    out.closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    break;
  }
  linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  ::close(fd);
  return out;
}

// The server, started on first use and never stopped; what its handler saw, by the client's
// port.
struct Shared {
  std::atomic<uint16_t> port{0};
  std::mutex mutex;
  std::map<std::string, std::vector<std::string>> seen;
};

Shared& shared_server() {
  static Shared* shared = [] {
    auto* state = new Shared;
    std::thread([state] {
      int status = Co::run([state] {
        http::ServerOptions options;
        options.max_header_size = kMaxHeader;
        options.package_max_length = kMaxBody;
        options.header_timeout = 2s;
        options.body_timeout = 2s;
        options.keepalive_timeout = 2s;
        options.linger_timeout = 500ms;
        http::Server server("127.0.0.1", 0, options);
        server.handle("/", [state](http::Request& request, http::Response& response) {
          check_request(request);
          {
            std::lock_guard<std::mutex> lock(state->mutex);
            state
                ->seen[request.connection().peer_host() + ":" +
                       std::to_string(request.connection().peer_port())]
                .push_back(summary(request));
          }
          response.end(std::to_string(request.body().size()));
        });
        Co::WaitGroup stopped;
        stopped.add();
        Co::create([&] {
          if (!server.start()) {
            violated("the server did not start: " + std::string(server.error_message()));
          }
          stopped.done();
        });
        state->port = server.port();
        stopped.wait();
      });
      violated("the server's container ended: " + std::to_string(status));
    }).detach();
    while (state->port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return state;
  }();
  return *shared;
}

std::vector<std::string> take_seen(Shared& shared, const std::string& client) {
  std::lock_guard<std::mutex> lock(shared.mutex);
  auto it = shared.seen.find(client);
  if (it == shared.seen.end()) return {};
  std::vector<std::string> out = std::move(it->second);
  shared.seen.erase(it);
  return out;
}

// The final status codes in a response stream (interim 1xx left out; the server's refusals
// as one). A response starts at the
// stream's start or after a line end; our handler's bodies are digits.
std::vector<int> statuses(const std::string& stream) {
  std::vector<int> codes;
  size_t at = 0;
  while ((at = stream.find("HTTP/1.", at)) != std::string::npos) {
    bool line_start = at == 0 || stream[at - 1] == '\n';
    if (line_start && at + 12 <= stream.size() && stream[at + 8] == ' ') {
      int code = 0;
      bool digits = true;
      for (size_t i = at + 9; i < at + 12; ++i) {
        if (stream[i] < '0' || stream[i] > '9') digits = false;
        code = code * 10 + (stream[i] - '0');
      }
      // The server's own refusals count as one: a head both malformed and too large may be
      // refused as either, depending on which the bytes read so far show first.
      if (code == 400 || code == 413 || code == 417 || code == 431 || code == 501 || code == 505) {
        code = 400;
      }
      if (digits && code >= 200) codes.push_back(code);
    }
    at += 7;
  }
  return codes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t k = data[0] % 8;
  if (size < 1 + 2 * k) return 0;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1 + 2 * k, size - 1 - 2 * k);
  if (stream.empty()) return 0;
  std::vector<size_t> cuts;
  for (size_t i = 0; i < k; ++i) {
    size_t offset = data[1 + 2 * i] | static_cast<size_t>(data[2 + 2 * i]) << 8;
    cuts.push_back(offset % stream.size());
  }
  std::sort(cuts.begin(), cuts.end());

  Shared& shared = shared_server();
  uint16_t port = shared.port;
  Talk whole = talk(port, stream, {});
  Talk cut = talk(port, stream, cuts);
  if (whole.closed && cut.closed && whole.error == 0 && cut.error == 0) {
    // The server closed both (a clean end of stream): their handlers have returned.
    if (statuses(whole.received) != statuses(cut.received)) {
      violated("whole and cut delivery got different statuses:\n--- whole\n" + whole.received +
               "\n--- cut\n" + cut.received);
    }
    if (take_seen(shared, whole.local) != take_seen(shared, cut.local)) {
      violated("whole and cut delivery reached the handler apart");
    }
  } else {
    take_seen(shared, whole.local);
    take_seen(shared, cut.local);
  }
  std::string failures;
  for (int attempt = 0; attempt < 3; ++attempt) {
    Talk alive = talk(port, "GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n", {});
    take_seen(shared, alive.local);
    if (alive.received.compare(0, 13, "HTTP/1.1 200 ") == 0) return 0;
    failures += "[" + std::string(alive.error != 0 ? std::strerror(alive.error) : "end of stream") +
                ": '" + alive.received + "'] ";
  }
  violated("the server no longer answers a plain GET: " + failures);
  return 0;
}

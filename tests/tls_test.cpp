// TLS on coroutine sockets: TlsContext, Socket::start_tls and every Socket call over TLS, coring
// against coring over real loopback connections, and coring against real OpenSSL and curl
// peers (openssl s_server, s_client, curl --cacert), started by the test and stopped after it.
//
// The certificates are made at test time with OpenSSL's API (tls_pki below): a throwaway CA, a
// server certificate for localhost/127.0.0.1/::1, an expired one, one for another name, one
// from a CA the client does not know, and a client certificate. Nothing secret is committed.
//
// Assertions inside coroutines use CHECK only; every wait the test expects to end has a finite
// timeout (kLong), so a missing behaviour fails the test instead of hanging it.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"
#include "tls_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers

namespace {

// ---- a throwaway PKI ---------------------------------------------------------------------------

// Keys, certificates and PEM text: tests/tls_util.hpp's helpers (the same PKI machinery as
// the server suite's).
using namespace coring_test::tls_detail;  // NOLINT

Key make_key() {
  return Key(EVP_EC_gen("P-256"));
}

// The suites' throwaway PKI (tests/tls_util.hpp), made once per process on first use (inside a
// test case: its helpers REQUIRE).
TestPki& pki() {
  return test_pki();
}

// ---- contexts and connected pairs --------------------------------------------------------------

Co::TlsContext server_context(const std::string& cert_pem, Co::TlsOptions options = {}) {
  options.cert_pem = cert_pem;
  options.key_pem = pki().key;
  std::optional<Co::TlsContext> context = Co::TlsContext::server(options);
  REQUIRE_MESSAGE(context.has_value(), Co::TlsContext::last_error_message());
  return *context;
}

Co::TlsContext server_context() {
  return server_context(pki().server);
}

Co::TlsContext client_context(Co::TlsOptions options = {}) {
  if (options.ca_pem.empty() && options.ca_file.empty()) options.ca_pem = pki().ca;
  std::optional<Co::TlsContext> context = Co::TlsContext::client(options);
  REQUIRE_MESSAGE(context.has_value(), Co::TlsContext::last_error_message());
  return *context;
}

struct Handshakes {
  bool client = false;
  bool server = false;
  int client_error = 0;
  int server_error = 0;
  std::string client_message;
  std::string server_message;
};

// Inside a coroutine: both handshakes on a connected pair at once (the server's in a coroutine of
// its own), each with a finite timeout.
Handshakes handshake(Pair& p, const Co::TlsContext& server, const Co::TlsContext& client,
                     std::string_view name = "localhost") {
  Handshakes h;
  Co::WaitGroup wg;
  spawn(wg, [&] {
    h.server = p.server.start_tls(server, {}, kLong);
    h.server_error = p.server.error().value();
    h.server_message = std::string(p.server.error_message());
  });
  h.client = p.client.start_tls(client, name, kLong);
  h.client_error = p.client.error().value();
  h.client_message = std::string(p.client.error_message());
  CHECK(settle(wg));
  return h;
}

// A TLS pair ready for data.
bool tls_pair(Pair& p, const Co::TlsContext& server, const Co::TlsContext& client) {
  if (!p.ok) return false;
  Handshakes h = handshake(p, server, client);
  CHECK_MESSAGE(h.client, h.client_message);
  CHECK_MESSAGE(h.server, h.server_message);
  return h.client && h.server;
}

}  // namespace

// ---- contexts ----------------------------------------------------------------------------------

TEST_CASE("TlsContext: clients and servers from files and memory; errors name their cause") {
  TestPki& p = pki();
  CHECK(Co::TlsContext::client().has_value());  // the system's CA store
  CHECK_FALSE(Co::TlsContext::client()->is_server());

  Co::TlsOptions files;
  files.cert_file = p.server_file;
  files.key_file = p.key_file;
  std::optional<Co::TlsContext> server = Co::TlsContext::server(files);
  REQUIRE(server.has_value());
  CHECK(server->is_server());
  Co::TlsContext copy = *server;  // copies share the OpenSSL context
  CHECK(copy.is_server());

  SUBCASE("a server without a certificate") {
    CHECK_FALSE(Co::TlsContext::server({}).has_value());
    CHECK(Co::last_error().value() == EINVAL);
    CHECK(contains(Co::TlsContext::last_error_message(), "certificate and its key"));
  }
  SUBCASE("a file that does not exist") {
    Co::TlsOptions options = files;
    options.cert_file = p.dir.file("missing.pem");
    CHECK_FALSE(Co::TlsContext::server(options).has_value());
    CHECK(Co::last_error().value() == ENOENT);
    CHECK(contains(Co::TlsContext::last_error_message(), "missing.pem"));
    Co::TlsOptions client;
    client.ca_file = p.dir.file("missing-ca.pem");
    CHECK_FALSE(Co::TlsContext::client(client).has_value());
    CHECK(Co::last_error().value() == ENOENT);
  }
  SUBCASE("PEM that does not parse, a key that does not match") {
    Co::TlsOptions options;
    options.cert_pem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    options.key_pem = p.key;
    CHECK_FALSE(Co::TlsContext::server(options).has_value());
    CHECK(Co::last_error().value() == EINVAL);
    CHECK(contains(Co::TlsContext::last_error_message(), "cert_pem"));
    Key other = make_key();
    options.cert_pem = p.server;
    options.key_pem = pem_of(other.get());
    CHECK_FALSE(Co::TlsContext::server(options).has_value());
    CHECK(Co::last_error().value() == EINVAL);
    CHECK(contains(Co::TlsContext::last_error_message(), "key values mismatch"));
    Co::TlsOptions ca;
    ca.ca_pem = "garbage";
    CHECK_FALSE(Co::TlsContext::client(ca).has_value());
    CHECK(Co::last_error().value() == EINVAL);
  }
  SUBCASE("a certificate without its key, bad ALPN names, bad cipher lists") {
    Co::TlsOptions options;
    options.cert_pem = p.client;
    CHECK_FALSE(Co::TlsContext::client(options).has_value());
    CHECK(Co::last_error().value() == EINVAL);
    Co::TlsOptions alpn = files;
    alpn.alpn = {"h2", ""};
    CHECK_FALSE(Co::TlsContext::server(alpn).has_value());
    CHECK(Co::last_error().value() == EINVAL);
    alpn.alpn = {std::string(256, 'x')};
    CHECK_FALSE(Co::TlsContext::client(alpn).has_value());
    Co::TlsOptions ciphers;
    ciphers.ciphers = "NO-SUCH-CIPHER";
    CHECK_FALSE(Co::TlsContext::client(ciphers).has_value());
    CHECK(contains(Co::TlsContext::last_error_message(), "ciphers"));
  }
}

TEST_CASE("TlsContext: the system CA store is parsed once, on an offload worker") {
  // Only a process that has not parsed it yet shows where it is parsed: the test runs itself in
  // a fresh one (fork and exec), and there checks what the container could do meanwhile.
  if (std::getenv("CORING_FRESH_PROCESS") == nullptr) {
    ChildResult child =
        run_fresh("TlsContext: the system CA store is parsed once*", "CORING_FRESH_PROCESS");
    CHECK_MESSAGE(child.exit_code() == 0, child.describe());
    return;
  }
  fresh_process_ran();
  bool made = false;
  bool ok = false;
  bool again = false;
  in_container([&] {
    long first = Co::create([&] {
      ok = Co::TlsContext::client().has_value();
      made = true;
    });
    CHECK_FALSE(made);  // the creator runs on while a worker parses (inline, it would be made)
    CHECK(Co::join({first}, kLong));
    CHECK(made);
    CHECK(ok);
    Co::create([&] { again = Co::TlsContext::client().has_value(); });
    CHECK(again);  // parsed once: the next context waits for nothing
  });
}

// ---- handshake and data ------------------------------------------------------------------------

TEST_CASE("TLS: handshake, echo, and what it settled: version, ALPN, SNI") {
  Co::TlsOptions server_options;
  server_options.alpn = {"h2", "http/1.1"};
  Co::TlsOptions client_options;
  client_options.alpn = {"http/1.1", "h2"};  // the server's preference wins
  Co::TlsContext server = server_context(pki().server, server_options);
  Co::TlsContext client = client_context(client_options);
  in_container([&] {
    Pair p = tcp_pair();
    CHECK_FALSE(p.client.is_tls());
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK(p.client.is_tls());
    CHECK(p.server.is_tls());
    CHECK(p.client.tls_version() == "TLSv1.3");
    CHECK(p.server.tls_version() == "TLSv1.3");
    CHECK(p.client.tls_alpn() == "h2");
    CHECK(p.server.tls_alpn() == "h2");
    CHECK(p.server.tls_server_name() == "localhost");
    CHECK(p.client.tls_server_name() == "localhost");
    CHECK_FALSE(p.client.tls_session_reused());

    Co::WaitGroup wg;
    size_t echoed = 0;
    spawn(wg, [&] {
      char buffer[4096];
      for (;;) {
        ssize_t n = p.server.recv(buffer, sizeof buffer, kLong);
        if (n <= 0) {
          CHECK(n == 0);  // the client's close_notify
          CHECK(p.server.error().value() == 0);
          break;
        }
        CHECK(p.server.send_all(buffer, static_cast<size_t>(n), kLong) == n);
        echoed += static_cast<size_t>(n);
      }
    });
    const std::string message = "hello over TLS";
    CHECK(p.client.send(message.data(), message.size(), kLong) ==
          static_cast<ssize_t>(message.size()));
    std::string back(message.size(), '\0');
    CHECK(p.client.recv_all(back.data(), back.size(), kLong) ==
          static_cast<ssize_t>(message.size()));
    CHECK(back == message);
    CHECK(p.client.close());
    CHECK_FALSE(p.client.is_tls());
    CHECK(p.client.tls_alpn().empty());
    CHECK(settle(wg));
    CHECK(echoed == message.size());
  });
}

TEST_CASE("TLS: ALPN without a shared protocol goes on without one; SNI of a name and of none") {
  Co::TlsOptions server_options;
  server_options.alpn = {"h2"};
  Co::TlsOptions client_options;
  client_options.alpn = {"http/1.1"};
  Co::TlsContext server = server_context(pki().server, server_options);
  Co::TlsContext client = client_context(client_options);
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK(p.client.tls_alpn().empty());
    CHECK(p.server.tls_alpn().empty());

    // An IP address is checked against the certificate's IP entries and sent without SNI.
    Pair q = tcp_pair();
    CO_REQUIRE(q.ok);
    Handshakes h = handshake(q, server, client, "127.0.0.1");
    CHECK_MESSAGE(h.client, h.client_message);
    CHECK(h.server);
    CHECK(q.server.tls_server_name().empty());
    // IPv6, with and without brackets.
    for (const char* name : {"::1", "[::1]"}) {
      Pair r = tcp_pair(Type::tcp6);
      CO_REQUIRE(r.ok);
      Handshakes h6 = handshake(r, server, client, name);
      CHECK_MESSAGE(h6.client, name << ": " << h6.client_message);
      CHECK(h6.server);
    }
  });
}

TEST_CASE("TLS: start_tls() without a name checks the host connect() was given") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
    Co::WaitGroup wg;
    spawn(wg, [&] {
      for (int i = 0; i < 2; ++i) {
        std::optional<Co::Socket> accepted = listener.accept(kLong);
        CHECK(accepted.has_value());
        if (!accepted) return;
        CHECK(accepted->start_tls(server, {}, kLong) == (i == 0));
      }
    });
    Co::Socket by_name;
    CO_REQUIRE(by_name.connect("localhost", listener.local_port(), kLong));
    CHECK_MESSAGE(by_name.start_tls(client, {}, kLong), by_name.error_message());
    CHECK(by_name.tls_server_name() == "localhost");
    // By address: the certificate lists 127.0.0.1; named "other.example" it does not match.
    Co::Socket wrong;
    CO_REQUIRE(wrong.connect("127.0.0.1", listener.local_port(), kLong));
    CHECK_FALSE(wrong.start_tls(client, "other.example", kLong));
    CHECK(wrong.error().value() == EPROTO);
    CHECK(contains(wrong.error_message(), "hostname mismatch"));
    CHECK(settle(wg));
  });
}

TEST_CASE("TLS: 10 MiB each way at once, one reader and one writer coroutine on each socket") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const size_t size = 10 * 1024 * 1024;
  const std::string up = pattern(size, 1);
  const std::string down = pattern(size, 2);
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    std::string got_up(size, '\0'), got_down(size, '\0');
    ssize_t sent_up = -1, sent_down = -1, read_up = -1, read_down = -1;
    Co::WaitGroup wg;
    spawn(wg, [&] { sent_up = p.client.send_all(up.data(), up.size(), kLong * 4); });
    spawn(wg, [&] { read_down = p.client.recv_all(got_down.data(), size, kLong * 4); });
    spawn(wg, [&] { sent_down = p.server.send_all(down.data(), down.size(), kLong * 4); });
    spawn(wg, [&] { read_up = p.server.recv_all(got_up.data(), size, kLong * 4); });
    CHECK(settle(wg));
    CHECK(sent_up == static_cast<ssize_t>(size));
    CHECK(sent_down == static_cast<ssize_t>(size));
    CHECK(read_up == static_cast<ssize_t>(size));
    CHECK(read_down == static_cast<ssize_t>(size));
    CHECK(got_up == up);
    CHECK(got_down == down);
  });
}

TEST_CASE("TLS: recv_packet() frames the plaintext (length and delimiter framing)") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    Co::Protocol length;
    length.length_type = 'N';
    length.body_offset = 4;
    p.server.set_protocol(length);
    std::string stream;
    std::vector<std::string> bodies;
    for (int i = 0; i < 200; ++i) {
      std::string body = pattern(static_cast<size_t>(i) * 97 % 5000, static_cast<uint32_t>(i));
      uint32_t n = htonl(static_cast<uint32_t>(body.size()));
      stream.append(reinterpret_cast<const char*>(&n), 4);
      stream += body;
      bodies.push_back(body);
    }
    stream += "line one\r\nline two\r\n";
    Co::WaitGroup wg;
    std::vector<std::string> got;
    std::vector<std::string> lines;
    spawn(wg, [&] {
      for (size_t i = 0; i < bodies.size(); ++i) {
        std::optional<std::string_view> packet = p.server.recv_packet(kLong);
        CHECK_MESSAGE(packet.has_value(), i << ": " << p.server.error_message());
        if (!packet) return;
        got.emplace_back(packet->substr(4));
      }
      Co::Protocol eof;
      eof.eof = "\r\n";
      p.server.set_protocol(eof);
      Packets rest = read_packets(p.server);
      lines = rest.packets;
      CHECK(rest.ended_cleanly);  // the client's close_notify between packets
    });
    // In uneven pieces, so that packets straddle records.
    for (size_t at = 0; at < stream.size();) {
      size_t n = std::min<size_t>(stream.size() - at, 1 + at % 7919);
      CHECK(p.client.send_all(stream.data() + at, n, kLong) == static_cast<ssize_t>(n));
      at += n;
    }
    CHECK(p.client.close());
    CHECK(settle(wg));
    CHECK(got == bodies);
    CHECK(lines == std::vector<std::string>{"line one\r\n", "line two\r\n"});
  });
}

TEST_CASE("TLS: sendfile() sends a file's range encrypted; short files, pipes, bad descriptors") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  TempDir dir;
  const std::string content = pattern(3 * 1024 * 1024 + 123, 7);
  const std::string path = dir.file("file.bin");
  std::ofstream(path, std::ios::binary) << content;
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    CO_REQUIRE(fd >= 0);
    const size_t offset = 4321, count = content.size() - 10000;
    std::string got(count, '\0');
    ssize_t read = -1;
    Co::WaitGroup wg;
    spawn(wg, [&] { read = p.client.recv_all(got.data(), count, kLong); });
    CHECK(p.server.sendfile(fd, static_cast<int64_t>(offset), count, kLong) ==
          static_cast<ssize_t>(count));
    CHECK(settle(wg));
    CHECK(read == static_cast<ssize_t>(count));
    CHECK(got == content.substr(offset, count));

    // Past the end: what there is, with error() 0.
    std::string tail(1000, '\0');
    spawn(wg, [&] { read = p.client.recv_all(tail.data(), 100, kLong); });
    CHECK(p.server.sendfile(fd, static_cast<int64_t>(content.size() - 100), 5000, kLong) == 100);
    CHECK(p.server.error().value() == 0);
    CHECK(settle(wg));
    CHECK(tail.substr(0, 100) == content.substr(content.size() - 100));
    CHECK(p.server.sendfile(fd, -1, 10, kLong) == -1);
    CHECK(p.server.error().value() == EINVAL);
    ::close(fd);
    CHECK(p.server.sendfile(fd, 0, 10, kLong) == -1);
    CHECK(p.server.error().value() == EBADF);
    int pipe_fds[2];
    CO_REQUIRE(::pipe(pipe_fds) == 0);
    CHECK(p.server.sendfile(pipe_fds[0], 0, 10, kLong) == -1);
    CHECK(p.server.error().value() == ESPIPE);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    // The stream is intact after the failures.
    CHECK(p.server.send("ok", 2, kLong) == 2);
    char ok[2];
    CHECK(p.client.recv_all(ok, 2, kLong) == 2);
    CHECK(std::string_view(ok, 2) == "ok");
  });
}

TEST_CASE("TLS: a client resumes its last session with a server; off when asked") {
  Co::TlsContext server = server_context();
  Co::TlsOptions no_resumption;
  no_resumption.session_resumption = false;
  Co::TlsContext resuming = client_context();
  Co::TlsContext fresh = client_context(no_resumption);
  in_container([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
    std::vector<bool> server_saw;
    Co::WaitGroup wg;
    spawn(wg, [&] {
      for (int i = 0; i < 4; ++i) {
        std::optional<Co::Socket> accepted = listener.accept(kLong);
        CHECK(accepted.has_value());
        if (!accepted) return;
        CHECK(accepted->start_tls(server, {}, kLong));
        server_saw.push_back(accepted->tls_session_reused());
        char byte;
        CHECK(accepted->send("x", 1, kLong) == 1);
        CHECK(accepted->recv(&byte, 1, kLong) == 0);  // the client's close_notify
      }
    });
    auto connect_once = [&](const Co::TlsContext& context) {
      Co::Socket s;
      CHECK(s.connect("127.0.0.1", listener.local_port(), kLong));
      CHECK_MESSAGE(s.start_tls(context, "localhost", kLong), s.error_message());
      bool reused = s.tls_session_reused();
      char byte;
      CHECK(s.recv(&byte, 1, kLong) == 1);  // reading also takes in the server's tickets
      CHECK(s.close());
      return reused;
    };
    CHECK_FALSE(connect_once(resuming));
    CHECK(connect_once(resuming));
    CHECK_FALSE(connect_once(fresh));
    CHECK_FALSE(connect_once(fresh));
    CHECK(settle(wg));
    CHECK(server_saw == std::vector<bool>{false, true, false, false});
  });
}

TEST_CASE("TLS: mutual TLS: a server with a CA asks for a client certificate") {
  Co::TlsOptions server_options;
  server_options.ca_pem = pki().ca;
  Co::TlsContext server = server_context(pki().server, server_options);
  Co::TlsOptions with_cert;
  with_cert.cert_pem = pki().client;
  with_cert.key_pem = pki().key;
  Co::TlsContext client = client_context(with_cert);
  Co::TlsContext anonymous = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK(p.client.send("hi", 2, kLong) == 2);
    char hi[2];
    CHECK(p.server.recv_all(hi, 2, kLong) == 2);

    Pair q = tcp_pair();
    CO_REQUIRE(q.ok);
    Handshakes h = handshake(q, server, anonymous);
    CHECK_FALSE(h.server);
    CHECK(h.server_error == EPROTO);
    CHECK_MESSAGE(contains(h.server_message, "peer did not return a certificate"),
                  h.server_message);
    // TLS 1.3: the client learns it at its first read.
    char byte;
    if (h.client) {
      CHECK(q.client.recv(&byte, 1, kLong) == -1);
      CHECK(q.client.error().value() == EPROTO);
      CHECK_MESSAGE(contains(q.client.error_message(), "certificate required"),
                    q.client.error_message());
    }
  });
}

// ---- verification failures ---------------------------------------------------------------------

TEST_CASE("TLS: unknown CA, expired certificate, wrong name: the client fails and says why") {
  struct Case {
    const char* what;
    std::string cert;
    std::string name;
    const char* reason;
  };
  TestPki& p = pki();
  const std::vector<Case> cases = {
      {"unknown CA", p.rogue, "localhost", "unable to get local issuer certificate"},
      {"expired", p.expired, "localhost", "certificate has expired"},
      {"another name", p.other, "localhost", "hostname mismatch"},
      {"another address", p.other, "127.0.0.1", "IP address mismatch"},
  };
  Co::TlsContext client = client_context();
  for (const Case& c : cases) {
    const std::string what = c.what;
    CAPTURE(what);
    Co::TlsContext bad = server_context(c.cert);
    Co::TlsContext good = server_context();
    in_container([&] {
      Co::Socket listener;
      CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
      Co::WaitGroup wg;
      bool server_went_on = false;
      std::string server_message;
      spawn(wg, [&] {
        std::optional<Co::Socket> first = listener.accept(kLong);
        CHECK(first.has_value());
        if (!first) return;
        CHECK_FALSE(first->start_tls(bad, {}, kLong));
        server_message = std::string(first->error_message());
        // The server goes on with its next connection.
        std::optional<Co::Socket> second = listener.accept(kLong);
        CHECK(second.has_value());
        if (!second) return;
        server_went_on = second->start_tls(good, {}, kLong);
      });
      Co::Socket s;
      CO_REQUIRE(s.connect("127.0.0.1", listener.local_port(), kLong));
      CHECK_FALSE(s.start_tls(client, c.name, kLong));
      CHECK(s.error().value() == EPROTO);
      CHECK_MESSAGE(contains(s.error_message(), "certificate verify failed"), s.error_message());
      CHECK_MESSAGE(contains(s.error_message(), c.reason), s.error_message());
      CHECK_FALSE(s.is_tls());
      // Every later call repeats the failure.
      char byte;
      CHECK(s.recv(&byte, 1, kLong) == -1);
      CHECK(s.error().value() == EPROTO);
      CHECK(s.send("x", 1, kLong) == -1);
      CHECK(contains(s.error_message(), c.reason));
      CHECK(s.close());
      Co::Socket again;
      CO_REQUIRE(again.connect("127.0.0.1", listener.local_port(), kLong));
      CHECK_MESSAGE(again.start_tls(client, "localhost", kLong), again.error_message());
      CHECK(settle(wg));
      CHECK(server_went_on);
      // The client's alert: "tlsv1 alert unknown ca", "sslv3 alert certificate expired"...
      CHECK_MESSAGE(contains(server_message, "TLS handshake failed: "), server_message);
      CHECK_MESSAGE(contains(server_message, " alert "), server_message);
    });
  }
}

TEST_CASE("TLS: verify_peer = false accepts any certificate; a verifying client needs a name") {
  Co::TlsOptions insecure;
  insecure.verify_peer = false;
  Co::TlsContext client = client_context(insecure);
  Co::TlsContext verifying = client_context();
  Co::TlsContext rogue = server_context(pki().rogue);
  TempDir dir;
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Handshakes h = handshake(p, rogue, client, "");
    CHECK_MESSAGE(h.client, h.client_message);
    CHECK(h.server);

    // Unix sockets have no host name to check.
    Co::Socket listener(Type::unix_stream);
    const std::string path = dir.file("tls.sock");
    CO_REQUIRE(listener.bind(path) && listener.listen());
    Co::Socket unix_client(Type::unix_stream);
    CO_REQUIRE(unix_client.connect(path, kLong));
    CHECK_FALSE(unix_client.start_tls(verifying, {}, kLong));
    CHECK(unix_client.error().value() == EINVAL);
    CHECK(contains(unix_client.error_message(), "needs the server's name"));
  });
}

// ---- peers that do not speak TLS, vanish, or stall ---------------------------------------------

TEST_CASE("TLS: a plaintext client at a TLS server: start_tls fails cleanly, the server goes on") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
    Co::WaitGroup wg;
    std::string message;
    int error = 0;
    bool second = false;
    spawn(wg, [&] {
      std::optional<Co::Socket> plain = listener.accept(kLong);
      CHECK(plain.has_value());
      if (!plain) return;
      CHECK_FALSE(plain->start_tls(server, {}, kLong));
      error = plain->error().value();
      message = std::string(plain->error_message());
      CHECK(plain->close());
      std::optional<Co::Socket> tls = listener.accept(kLong);
      CHECK(tls.has_value());
      if (tls) second = tls->start_tls(server, {}, kLong);
    });
    Co::Socket plain;
    CO_REQUIRE(plain.connect("127.0.0.1", listener.local_port(), kLong));
    const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    CHECK(plain.send_all(request.data(), request.size(), kLong) ==
          static_cast<ssize_t>(request.size()));
    char buffer[256];
    CHECK(plain.recv(buffer, sizeof buffer, kLong) >= 0);  // an alert or the close
    Co::Socket tls;
    CO_REQUIRE(tls.connect("127.0.0.1", listener.local_port(), kLong));
    CHECK(tls.start_tls(client, "localhost", kLong));
    CHECK(settle(wg));
    CHECK(error == EPROTO);
    CHECK_MESSAGE(contains(message, "http request"), message);
    CHECK(second);
  });
}

TEST_CASE("TLS: a client at a plaintext server that answers garbage, or closes, or says nothing") {
  Co::TlsContext client = client_context();
  enum class Peer { garbage, closes, silent };
  for (Peer peer : {Peer::garbage, Peer::closes, Peer::silent}) {
    const int peer_kind = static_cast<int>(peer);
    CAPTURE(peer_kind);
    in_container([&] {
      Co::Socket listener;
      CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
      Co::WaitGroup wg;
      spawn(wg, [&] {
        std::optional<Co::Socket> accepted = listener.accept(kLong);
        CHECK(accepted.has_value());
        if (!accepted) return;
        char hello[512];
        CHECK(accepted->recv(hello, sizeof hello, kLong) > 0);  // the ClientHello
        if (peer == Peer::garbage) {
          const std::string answer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
          CHECK(accepted->send_all(answer.data(), answer.size(), kLong) > 0);
        }
        if (peer == Peer::silent) {
          char more;
          CHECK(accepted->recv(&more, 1, kLong) <= 0);  // until the client gives up
        }
      });
      Co::Socket s;
      CO_REQUIRE(s.connect("127.0.0.1", listener.local_port(), kLong));
      CHECK_FALSE(s.start_tls(client, "localhost", peer == Peer::silent ? 200ms : kLong));
      switch (peer) {
        case Peer::garbage:
          CHECK(s.error().value() == EPROTO);
          CHECK_MESSAGE(contains(s.error_message(), "wrong version number"), s.error_message());
          break;
        case Peer::closes:
          CHECK(s.error().value() == ECONNRESET);
          CHECK_MESSAGE(contains(s.error_message(), "TLS handshake failed"), s.error_message());
          break;
        case Peer::silent:
          CHECK(s.error().value() == ETIMEDOUT);
          break;
      }
      CHECK(s.close());
      CHECK(settle(wg));
    });
  }
}

TEST_CASE("TLS: a server whose client vanishes mid-handshake or never says anything") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    // A real ClientHello, caught by a plain listener.
    std::string hello;
    {
      Co::Socket catcher;
      CO_REQUIRE(catcher.bind("127.0.0.1", 0) && catcher.listen());
      Co::WaitGroup wg;
      spawn(wg, [&] {
        Co::Socket s;
        CHECK(s.connect("127.0.0.1", catcher.local_port(), kLong));
        CHECK_FALSE(s.start_tls(client, "localhost", kLong));  // the catcher closes
      });
      std::optional<Co::Socket> accepted = catcher.accept(kLong);
      CO_REQUIRE(accepted.has_value());
      char buffer[2048];
      ssize_t n = accepted->recv(buffer, sizeof buffer, kLong);
      CO_REQUIRE(n > 20);
      hello.assign(buffer, static_cast<size_t>(n));
      accepted->close();
      CHECK(settle(wg));
    }
    // Half of it, then the connection ends.
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    CHECK(p.client.send_all(hello.data(), hello.size() / 2, kLong) ==
          static_cast<ssize_t>(hello.size() / 2));
    CHECK(p.client.close());
    CHECK_FALSE(p.server.start_tls(server, {}, kLong));
    CHECK(p.server.error().value() == ECONNRESET);
    CHECK_MESSAGE(contains(p.server.error_message(), "unexpected eof"), p.server.error_message());
    // Nothing at all: the handshake times out.
    Pair q = tcp_pair();
    CO_REQUIRE(q.ok);
    CHECK_FALSE(q.server.start_tls(server, {}, 200ms));
    CHECK(q.server.error().value() == ETIMEDOUT);
    CHECK(contains(q.server.error_message(), "TLS handshake failed"));
    // Zero means do not wait: a handshake always has to.
    Pair r = tcp_pair();
    CO_REQUIRE(r.ok);
    CHECK_FALSE(r.server.start_tls(server, {}, Co::Duration::zero()));
    CHECK(r.server.error().value() == ETIMEDOUT);
  });
}

// A relay between a client and a server that forwards the client's bytes until `limit`, then
// ends both connections: a peer that vanishes in the middle of what it was sending.
struct Relay {
  Co::Socket listener;
  size_t forwarded = 0;
  size_t limit = SIZE_MAX;
  Co::WaitGroup done;

  void start(uint16_t target) {
    CHECK(listener.bind("127.0.0.1", 0));
    CHECK(listener.listen());
    spawn(done, [this, target] {
      std::optional<Co::Socket> from = listener.accept(kLong);
      CHECK(from.has_value());
      if (!from) return;
      Co::Socket to;
      CHECK(to.connect("127.0.0.1", target, kLong));
      Co::WaitGroup back;
      spawn(back, [&] {  // the server's bytes go back untouched
        char buffer[16384];
        for (;;) {
          ssize_t n = to.recv(buffer, sizeof buffer, kLong);
          if (n <= 0 || from->send_all(buffer, static_cast<size_t>(n), kLong) != n) break;
        }
      });
      char buffer[16384];
      for (;;) {
        ssize_t n = from->recv(buffer, sizeof buffer, kLong);
        if (n <= 0) break;
        size_t allowed = std::min(static_cast<size_t>(n), limit - forwarded);
        if (allowed > 0)
          CHECK(to.send_all(buffer, allowed, kLong) == static_cast<ssize_t>(allowed));
        forwarded += allowed;
        if (allowed < static_cast<size_t>(n)) break;
      }
      to.shutdown(SHUT_WR);  // a plain end of stream: no close_notify
      CHECK(settle(back));
    });
  }
};

TEST_CASE("TLS: a peer that ends the TCP connection without close_notify: ECONNRESET") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  SUBCASE("in the middle of a record") {
    in_container([&] {
      Co::Socket listener;
      CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
      Relay relay;
      relay.start(listener.local_port());
      Co::Socket s;
      CO_REQUIRE(s.connect("127.0.0.1", relay.listener.local_port(), kLong));
      std::optional<Co::Socket> accepted = listener.accept(kLong);
      CO_REQUIRE(accepted.has_value());
      Co::WaitGroup wg;
      bool server_ok = false;
      spawn(wg, [&] { server_ok = accepted->start_tls(server, {}, kLong); });
      CO_REQUIRE(s.start_tls(client, "localhost", kLong));
      CHECK(settle(wg));
      CO_REQUIRE(server_ok);
      // One record of 1000 bytes: only 100 of them reach the server.
      relay.limit = relay.forwarded + 100;
      const std::string data = pattern(1000, 3);
      CHECK(s.send_all(data.data(), data.size(), kLong) == 1000);
      char buffer[2000];
      CHECK(accepted->recv(buffer, sizeof buffer, kLong) == -1);
      CHECK(accepted->error().value() == ECONNRESET);
      CHECK_MESSAGE(contains(accepted->error_message(), "without a TLS close_notify"),
                    accepted->error_message());
      CHECK(accepted->recv(buffer, sizeof buffer, kLong) == -1);  // it sticks
      CHECK(accepted->error().value() == ECONNRESET);
      CHECK(s.close());
      CHECK(accepted->close());
      CHECK(settle(relay.done));
    });
  }
  SUBCASE("between records") {
    in_container([&] {
      Pair p = tcp_pair();
      CO_REQUIRE(tls_pair(p, server, client));
      CHECK(p.client.send("whole", 5, kLong) == 5);
      CHECK(::shutdown(p.client.fd(), SHUT_WR) == 0);  // TCP's end, under TLS's feet
      char buffer[16];
      CHECK(p.server.recv_all(buffer, 5, kLong) == 5);
      CHECK(p.server.recv(buffer, sizeof buffer, kLong) == -1);
      CHECK(p.server.error().value() == ECONNRESET);
    });
  }
}

// ---- timeouts, close and cancel ----------------------------------------------------------------

TEST_CASE("TLS: a read timeout leaves the socket usable and loses nothing") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    char buffer[64];
    CHECK(p.client.recv(buffer, sizeof buffer, 50ms) == -1);
    CHECK(p.client.error().value() == ETIMEDOUT);
    CHECK(p.client.recv(buffer, sizeof buffer, Co::Duration::zero()) == -1);
    CHECK(p.client.error().value() == ETIMEDOUT);
    CHECK(p.server.send("after", 5, kLong) == 5);
    CHECK(p.client.recv_all(buffer, 5, kLong) == 5);
    CHECK(std::string_view(buffer, 5) == "after");
  });
}

TEST_CASE("TLS: writes that time out count what OpenSSL took; nothing is lost or sent twice") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const std::string data = pattern(8 * 1024 * 1024, 9);
  in_container([&] {
    Pair p = tcp_pair(Type::tcp, /*small_buffers=*/true);
    CO_REQUIRE(tls_pair(p, server, client));
    // Nobody reads yet: the first send_all stops at its timeout, the zero-timeout sends at once.
    ssize_t first = p.client.send_all(data.data(), data.size(), 100ms);
    CHECK(first > 0);
    CHECK(first < static_cast<ssize_t>(data.size()));
    CHECK(p.client.error().value() == ETIMEDOUT);
    size_t sent = static_cast<size_t>(first);
    ssize_t now = p.client.send(data.data() + sent, data.size() - sent, Co::Duration::zero());
    CHECK(now == -1);
    CHECK(p.client.error().value() == ETIMEDOUT);
    // Now the server reads everything; the client sends the rest from where it stopped.
    std::string got(data.size(), '\0');
    ssize_t read = -1;
    Co::WaitGroup wg;
    spawn(wg, [&] { read = p.server.recv_all(got.data(), got.size(), kLong * 2); });
    CHECK(p.client.send_all(data.data() + sent, data.size() - sent, kLong * 2) ==
          static_cast<ssize_t>(data.size() - sent));
    CHECK(settle(wg));
    CHECK(read == static_cast<ssize_t>(data.size()));
    CHECK(got == data);
  });
}

TEST_CASE("TLS: close() from another coroutine wakes a TLS reader with ECANCELED; close_notify") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    Co::WaitGroup wg;
    ssize_t got = -2;
    int error = 0;
    spawn(wg, [&] {
      char buffer[64];
      got = p.client.recv(buffer, sizeof buffer, kLong);
      error = p.client.error().value();
    });
    // The reader runs until it waits (create() runs a coroutine at once).
    const int fd = p.client.fd();
    CHECK(p.client.close());
    CHECK(::fcntl(fd, F_GETFD) == -1);  // closed when close() returns
    CHECK(settle(wg));
    CHECK(got == -1);
    CHECK(error == ECANCELED);
    // The peer got a close_notify: a clean end of stream.
    char buffer[16];
    CHECK(p.server.recv(buffer, sizeof buffer, kLong) == 0);
    CHECK(p.server.error().value() == 0);
    CHECK(p.client.recv(buffer, sizeof buffer, kLong) == -1);
    CHECK(p.client.error().value() == EBADF);
  });
}

TEST_CASE("TLS: close() while a writer waits on a peer that does not read: bounded, then closed") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const std::string data = pattern(16 * 1024 * 1024, 4);
  in_container([&] {
    Pair p = tcp_pair(Type::tcp, /*small_buffers=*/true);
    CO_REQUIRE(tls_pair(p, server, client));
    Co::WaitGroup wg;
    ssize_t sent = -2;
    int error = 0;
    spawn(wg, [&] {
      sent = p.client.send_all(data.data(), data.size(), kLong);
      error = p.client.error().value();
    });
    // The writer runs until it waits for the buffers to drain: close() interrupts it (were it
    // to wait for the writer instead, the writer's error would be ETIMEDOUT). The rest of the
    // records the writer counted as sent cannot leave within the bound: close() says so.
    p.client.set_timeouts(kLong, kLong, 200ms);
    const int fd = p.client.fd();
    CHECK_FALSE(p.client.close());
    CHECK(p.client.error().value() == ETIMEDOUT);
    CHECK(contains(p.client.error_message(), "lost"));
    CHECK(::fcntl(fd, F_GETFD) == -1);  // closed all the same
    CHECK(settle(wg));
    CHECK(sent > 0);
    CHECK(error == ECANCELED);
    // The server reads what arrived: whole records, then the end (close_notify or cut).
    std::string got;
    char buffer[65536];
    for (;;) {
      ssize_t n = p.server.recv(buffer, sizeof buffer, kLong);
      if (n <= 0) break;
      got.append(buffer, static_cast<size_t>(n));
    }
    CHECK(got.size() <= static_cast<size_t>(sent));
    CHECK(got == data.substr(0, got.size()));
  });
}

// Fills the client's way to a server that does not read: send() until one counts bytes as sent
// that have not all left (the next call then fails at once: their rest is still ours). Returns
// the bytes counted as sent.
size_t send_until_stuck(Pair& p, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = p.client.send(data.data() + sent, data.size() - sent, 50ms);
    if (n < 0) break;
    sent += static_cast<size_t>(n);
  }
  CHECK(p.client.error().value() == ETIMEDOUT);
  return sent;
}

// Reads until the end of the stream: what arrived, and whether the end was a close_notify.
std::string read_to_end(Co::Socket& socket, bool* clean) {
  std::string got;
  char buffer[65536];
  for (;;) {
    ssize_t n = socket.recv(buffer, sizeof buffer, kLong);
    if (n <= 0) {
      *clean = n == 0 && socket.error().value() == 0;
      if (!*clean) MESSAGE("read_to_end: " << n << " " << socket.error_message());
      return got;
    }
    got.append(buffer, static_cast<size_t>(n));
  }
}

// Closes the client while the server reads to the end: every byte counted as sent (the first
// `sent` of data) must arrive, then a close_notify.
void close_while_server_reads(Pair& p, const std::string& data, size_t sent) {
  bool clean = false;
  std::string got;
  Co::WaitGroup wg;
  spawn(wg, [&] { got = read_to_end(p.server, &clean); });
  CHECK(p.client.close());
  CHECK(settle(wg));
  CHECK(got.size() == sent);
  CHECK(got == data.substr(0, sent));
  CHECK(clean);
}

TEST_CASE("TLS: close() after a send that timed out: delivers the rest, or says it is lost") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const std::string data = pattern(8 * 1024 * 1024, 5);
  in_container([&] {
    // The server reads while close() waits: the rest and the close_notify arrive, nothing lost.
    Pair p = tcp_pair(Type::tcp, /*small_buffers=*/true);
    CO_REQUIRE(tls_pair(p, server, client));
    const size_t sent = send_until_stuck(p, data);
    CHECK(sent > 0);
    close_while_server_reads(p, data, sent);

    // Nobody reads: the rest cannot leave within the bound (the write timeout, at most 1 s).
    Pair q = tcp_pair(Type::tcp, /*small_buffers=*/true);
    CO_REQUIRE(tls_pair(q, server, client));
    CHECK(send_until_stuck(q, data) > 0);
    q.client.set_timeouts(kLong, kLong, 100ms);
    const int fd = q.client.fd();
    CHECK_FALSE(q.client.close());
    CHECK(q.client.error().value() == ETIMEDOUT);
    CHECK(contains(q.client.error_message(), "lost"));
    CHECK(::fcntl(fd, F_GETFD) == -1);
    CHECK_FALSE(q.client.close());  // already closed: EBADF
    CHECK(q.client.error().value() == EBADF);
  });
}

TEST_CASE("TLS: cancel(cid) of a coroutine in close() while it sends the rest: ECANCELED") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const std::string data = pattern(8 * 1024 * 1024, 8);
  in_container([&] {
    Pair p = tcp_pair(Type::tcp, /*small_buffers=*/true);
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK(send_until_stuck(p, data) > 0);
    p.client.set_timeouts(kLong, kLong, kLong);  // close() would wait its full bound (1 s)
    const int fd = p.client.fd();
    bool closed = true;
    int error = 0;
    Co::WaitGroup wg;
    long closer = spawn(wg, [&] {
      closed = p.client.close();
      error = p.client.error().value();
    });
    CHECK(Co::cancel(closer));  // it waits for the kernel to take the rest
    CHECK(settle(wg));
    CHECK_FALSE(closed);
    CHECK(error == ECANCELED);
    CHECK(::fcntl(fd, F_GETFD) == -1);  // closed all the same
  });
}

TEST_CASE("TLS: close() outside a coroutine with the rest of a send still unsent: EAGAIN") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const std::string data = pattern(8 * 1024 * 1024, 6);
  std::optional<Pair> kept;
  in_container([&] {
    kept.emplace(tcp_pair(Type::tcp, /*small_buffers=*/true));
    CO_REQUIRE(tls_pair(*kept, server, client));
    CHECK(send_until_stuck(*kept, data) > 0);
  });
  REQUIRE(kept.has_value());
  CHECK_FALSE(kept->client.close());  // may not wait here: what the kernel does not take is lost
  CHECK(kept->client.error().value() == EAGAIN);
  CHECK(contains(kept->client.error_message(), "lost"));
}

TEST_CASE("TLS: shutdown(SHUT_WR) that cannot get the close_notify out fails and loses nothing") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  const std::string data = pattern(8 * 1024 * 1024, 7);
  in_container([&] {
    Pair p = tcp_pair(Type::tcp, /*small_buffers=*/true);
    CO_REQUIRE(tls_pair(p, server, client));
    const size_t sent = send_until_stuck(p, data);
    p.client.set_timeouts(kLong, kLong, 100ms);
    CHECK_FALSE(p.client.shutdown(SHUT_WR));
    CHECK(p.client.error().value() == ETIMEDOUT);
    // Again: what the first one left queued still cannot leave, so this one fails too (a FIN
    // now would cut the records off).
    CHECK_FALSE(p.client.shutdown(SHUT_WR));
    CHECK(p.client.error().value() == ETIMEDOUT);
    // The TCP side is still open (a FIN now would cut the records off): once the server reads,
    // close() sends the rest and the close_notify.
    p.client.set_timeouts(kLong, kLong, kLong);
    close_while_server_reads(p, data, sent);
  });
}

TEST_CASE("TLS: cancel(cid) inside a handshake; close() of a handshaking socket") {
  Co::TlsContext server = server_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Co::WaitGroup wg;
    bool ok = true;
    int error = 0;
    long cid = spawn(wg, [&] {
      ok = p.server.start_tls(server, {}, kLong);
      error = p.server.error().value();
    });
    // The handshake holds both sides.
    char byte;
    CHECK_THROWS_AS(p.server.recv(&byte, 1, kLong), Co::BindError);
    CHECK(Co::cancel(cid));
    CHECK(settle(wg));
    CHECK_FALSE(ok);
    CHECK(error == ECANCELED);
    CHECK(p.server.recv(&byte, 1, kLong) == -1);  // a failed handshake sticks
    CHECK(p.server.error().value() == ECANCELED);

    Pair q = tcp_pair();
    CO_REQUIRE(q.ok);
    spawn(wg, [&] {
      ok = q.server.start_tls(server, {}, kLong);
      error = q.server.error().value();
    });
    CHECK(q.server.close());
    CHECK(settle(wg));
    CHECK_FALSE(ok);
    CHECK(error == ECANCELED);
  });
}

TEST_CASE("TLS: shutdown(SHUT_WR) sends close_notify and the other direction goes on") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK(p.client.send("request", 7, kLong) == 7);
    CHECK(p.client.shutdown(SHUT_WR));
    CHECK(p.client.send("more", 4, kLong) == -1);
    CHECK(p.client.error().value() == EPIPE);
    char buffer[16];
    CHECK(p.server.recv_all(buffer, sizeof buffer, kLong) == 7);
    CHECK(p.server.error().value() == 0);  // a clean end: the close_notify
    CHECK(p.server.send("response", 8, kLong) == 8);
    CHECK(p.client.recv_all(buffer, 8, kLong) == 8);
    CHECK(std::string_view(buffer, 8) == "response");
    CHECK(p.server.close());
    CHECK(p.client.recv(buffer, sizeof buffer, kLong) == 0);
  });
}

TEST_CASE("TLS: shutdown(SHUT_RD) ends a waiting reader's stream cleanly, not as a truncation") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    Co::WaitGroup wg;
    ssize_t got = -2;
    int error = -1;
    spawn(wg, [&] {
      char buffer[16];
      got = p.server.recv(buffer, sizeof buffer, kLong);
      error = p.server.error().value();
    });
    CHECK(p.server.shutdown(SHUT_RD));
    CHECK(settle(wg));
    CHECK(got == 0);
    CHECK(error == 0);
    char buffer[16];
    CHECK(p.server.recv(buffer, sizeof buffer, kLong) == 0);  // and again
    // Writing still works.
    CHECK(p.server.send("still", 5, kLong) == 5);
    CHECK(p.client.recv_all(buffer, 5, kLong) == 5);
  });
}

TEST_CASE("TLS: check_liveness() sees through tickets and sees a close_notify") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK(p.client.check_liveness());  // the server's session tickets may be there: not data
    // Data pending: alive, and the data is still there for recv().
    CHECK(p.server.send("x", 1, kLong) == 1);
    CHECK(p.client.check_liveness());
    char byte;
    CHECK(p.client.recv(&byte, 1, kLong) == 1);
    CHECK(byte == 'x');
    CHECK(p.client.check_liveness());
    // The server's close_notify: closed, once it has arrived.
    CHECK(p.server.close());
    bool alive = true;
    for (auto until = Clock::now() + kLong; alive && Clock::now() < until;) {
      alive = p.client.check_liveness();
      if (alive) Co::this_coroutine::sleep(1ms);
    }
    CHECK_FALSE(alive);
    CHECK(p.client.error().value() == 0);
    CHECK(contains(p.client.error_message(), "closed"));
  });
}

TEST_CASE("TLS: misuse: datagram sockets, a second start_tls, closed sockets, recvfrom/sendto") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Co::Socket udp(Type::udp);
    CHECK_FALSE(udp.start_tls(client, "localhost", kLong));
    CHECK(udp.error().value() == EINVAL);
    Pair p = tcp_pair();
    CO_REQUIRE(tls_pair(p, server, client));
    CHECK_FALSE(p.client.start_tls(client, "localhost", kLong));
    CHECK(p.client.error().value() == EALREADY);
    char buffer[8];
    CHECK(p.client.recvfrom(buffer, sizeof buffer, nullptr, nullptr, 10ms) == -1);
    CHECK(p.client.error().value() == EINVAL);
    CHECK(p.client.sendto("127.0.0.1", 1, "x", 1) == -1);
    CHECK(p.client.error().value() == EINVAL);
    // Sizes a negative length would give.
    CHECK(p.client.send(buffer, static_cast<size_t>(-1), kLong) == -1);
    CHECK(p.client.error().value() == EINVAL);
    CHECK(p.client.recv(buffer, static_cast<size_t>(-1), kLong) == -1);
    CHECK(p.client.error().value() == EINVAL);
    // The stream is still fine.
    CHECK(p.client.send("x", 1, kLong) == 1);
    CHECK(p.server.recv(buffer, 1, kLong) == 1);
    Co::Socket closed;
    closed.close();
    CHECK_FALSE(closed.start_tls(client, "localhost", kLong));
    CHECK(closed.error().value() == EBADF);
    Co::TlsContext moved = client;
    Co::TlsContext taken = std::move(moved);
    Pair q = tcp_pair();
    CO_REQUIRE(q.ok);
    CHECK_FALSE(q.client.start_tls(moved, "localhost", kLong));  // NOLINT: moved from on purpose
    CHECK(q.client.error().value() == EINVAL);
    CHECK_FALSE(taken.is_server());
  });
}

TEST_CASE("TLS: STARTTLS: bytes recv_packet() read ahead start the handshake") {
  Co::TlsContext server = server_context();
  Co::TlsContext client = client_context();
  in_container([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Co::Protocol lines;
    lines.eof = "\n";
    p.server.set_protocol(lines);
    Co::WaitGroup wg;
    bool server_ok = false;
    spawn(wg, [&] {
      std::optional<std::string_view> command = p.server.recv_packet(kLong);
      CHECK((command && *command == "STARTTLS\n"));
      // The client's hello may already sit in the packet buffer.
      server_ok = p.server.start_tls(server, {}, kLong);
      char buffer[16];
      CHECK(p.server.recv_all(buffer, 6, kLong) == 6);
      CHECK(std::string_view(buffer, 6) == "secret");
    });
    CHECK(p.client.send("STARTTLS\n", 9, kLong) == 9);
    CHECK(p.client.start_tls(client, "localhost", kLong));
    CHECK(p.client.send("secret", 6, kLong) == 6);
    CHECK(settle(wg));
    CHECK(server_ok);
  });
}

// ---- real peers: openssl s_server, s_client, curl ----------------------------------------------

namespace {

// A child process with its output in a file and, optionally, its standard input from a pipe.
// Killed and reaped when destroyed, if it still runs.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& output, bool input_pipe = false)
      : output_(output) {
    int in[2] = {-1, -1};
    if (input_pipe && ::pipe2(in, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int null = ::open("/dev/null", O_RDONLY);
      ::dup2(input_pipe ? in[0] : null, STDIN_FILENO);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    if (input_pipe) {
      ::close(in[0]);
      input_ = in[1];
    }
  }
  ~Child() {
    close_input();
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }
  bool write(std::string_view text) {
    return input_ >= 0 &&
           ::write(input_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  }
  void close_input() {
    if (input_ >= 0) ::close(input_);
    input_ = -1;
  }
  std::string output() const {
    std::ifstream in(output_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Waits (in a coroutine: on a worker thread) until the child exits or `limit` passes (then it
  // is killed). Its exit status, or -1.
  int wait(std::chrono::milliseconds limit) {
    if (pid_ <= 0 || reaped_) return -1;
    int status = 0;
    bool exited = Co::offload([&] {
      for (auto until = Clock::now() + limit; Clock::now() < until;) {
        if (::waitpid(pid_, &status, WNOHANG) == pid_) return true;
        ::usleep(10'000);
      }
      return false;
    });
    if (!exited) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    reaped_ = true;
    return exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // Lets the container run until the output holds text (a server that says it listens).
  bool wait_for_output(std::string_view text) {
    for (auto until = Clock::now() + kLong; Clock::now() < until;) {
      if (contains(output(), text)) return true;
      Co::this_coroutine::sleep(20ms);
    }
    return false;
  }

 private:
  std::string output_;
  pid_t pid_ = -1;
  int input_ = -1;
  bool reaped_ = false;
};

uint16_t free_port() {
  Co::Socket probe;
  if (!probe.bind("127.0.0.1", 0)) return 0;
  return probe.local_port();
}

}  // namespace

TEST_CASE("TLS peers: coring client against openssl s_server (TLS 1.3 and 1.2, resumption)") {
  TestPki& p = pki();
  Co::TlsOptions options;
  options.alpn = {"coring"};
  Co::TlsContext client = client_context(options);
  for (bool tls12 : {false, true}) {
    CAPTURE(tls12);
    const uint16_t port = free_port();
    REQUIRE(port != 0);
    std::vector<std::string> argv = {
        "openssl", "s_server",    "-accept", "127.0.0.1:" + std::to_string(port),
        "-cert",   p.server_file, "-key",    p.key_file,
        "-rev",    "-naccept",    "2",       "-alpn",
        "coring"};
    if (tls12) argv.push_back("-tls1_2");
    Child server(argv, p.dir.file(tls12 ? "s_server12.out" : "s_server13.out"));
    REQUIRE(server.started());
    in_container([&] {
      CO_REQUIRE(server.wait_for_output("ACCEPT"));
      for (int round = 0; round < 2; ++round) {
        Co::Socket s;
        CO_REQUIRE(s.connect("127.0.0.1", port, kLong));
        CO_REQUIRE(s.start_tls(client, "localhost", kLong));
        CHECK(s.tls_version() == (tls12 ? "TLSv1.2" : "TLSv1.3"));
        CHECK(s.tls_alpn() == "coring");
        CHECK(s.tls_session_reused() == (round == 1));
        const std::string line = "hello s_server\n";
        CHECK(s.send_all(line.data(), line.size(), kLong) == static_cast<ssize_t>(line.size()));
        char buffer[64];
        CHECK(s.recv_all(buffer, line.size(), kLong) == static_cast<ssize_t>(line.size()));
        CHECK(std::string_view(buffer, line.size() - 1) == "revres_s olleh");
        CHECK(s.close());
      }
      server.wait(5000ms);
    });
    INFO(server.output());
  }
}

TEST_CASE("TLS peers: coring server against openssl s_client (with a KeyUpdate) and curl") {
  TestPki& p = pki();
  Co::TlsOptions options;
  options.alpn = {"http/1.1"};
  Co::TlsContext server = server_context(p.server, options);
  in_container([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
    const std::string port = std::to_string(listener.local_port());

    // s_client: an echo; "K" asks for a KeyUpdate, which our reader must answer.
    Child s_client({"openssl", "s_client", "-connect", "127.0.0.1:" + port, "-CAfile", p.ca_file,
                    "-verify_return_error", "-servername", "localhost", "-alpn", "http/1.1"},
                   p.dir.file("s_client.out"), /*input_pipe=*/true);
    CO_REQUIRE(s_client.started());
    std::optional<Co::Socket> accepted = listener.accept(kLong);
    CO_REQUIRE(accepted.has_value());
    CO_REQUIRE(accepted->start_tls(server, {}, kLong));
    CHECK(accepted->tls_server_name() == "localhost");
    CHECK(accepted->tls_alpn() == "http/1.1");
    std::string seen;
    char buffer[256];
    CHECK(s_client.write("first line\n"));
    while (!contains(seen, "first line\n")) {
      ssize_t n = accepted->recv(buffer, sizeof buffer, kLong);
      if (n <= 0) break;
      seen.append(buffer, static_cast<size_t>(n));
      CHECK(accepted->send_all(buffer, static_cast<size_t>(n), kLong) == n);
    }
    CHECK(s_client.write("K\n"));
    CHECK(s_client.wait_for_output("KEYUPDATE"));  // sent before anything typed after it
    CHECK(s_client.write("after the key update\n"));
    while (!contains(seen, "after the key update\n")) {
      ssize_t n = accepted->recv(buffer, sizeof buffer, kLong);
      if (n <= 0) break;
      seen.append(buffer, static_cast<size_t>(n));
      CHECK(accepted->send_all(buffer, static_cast<size_t>(n), kLong) == n);
    }
    CHECK(contains(seen, "after the key update\n"));
    CHECK(s_client.wait_for_output("after the key update"));  // the echo came back
    s_client.close_input();  // s_client ends at the end of its input
    char rest;
    accepted->recv(&rest, 1, kLong);  // its close_notify (or its end)
    accepted->close();
    s_client.wait(5000ms);
    std::string out = s_client.output();
    INFO(out);
    CHECK(contains(out, "KEYUPDATE"));
    CHECK(contains(out, "after the key update"));
    CHECK(contains(out, "Verify return code: 0 (ok)"));

    // curl, verifying against our CA, twice over one connection.
    Child curl({"curl", "-sS", "--max-time", "10", "--cacert", p.ca_file,
                "https://localhost:" + port + "/a", "https://localhost:" + port + "/b"},
               p.dir.file("curl.out"));
    CO_REQUIRE(curl.started());
    std::optional<Co::Socket> web = listener.accept(kLong);
    CO_REQUIRE(web.has_value());
    CO_REQUIRE(web->start_tls(server, {}, kLong));
    Co::Protocol head;
    head.eof = "\r\n\r\n";
    web->set_protocol(head);
    for (int i = 0; i < 2; ++i) {
      std::optional<std::string_view> request = web->recv_packet(kLong);
      CHECK(request.has_value());
      if (!request) break;
      std::string body = i == 0 ? "first over TLS\n" : "second over TLS\n";
      std::string response =
          "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      CHECK(web->send_all(response.data(), response.size(), kLong) ==
            static_cast<ssize_t>(response.size()));
    }
    CHECK(curl.wait(10000ms) == 0);
    web->close();
    INFO(curl.output());
    CHECK(curl.output() == "first over TLS\nsecond over TLS\n");
  });
}

TEST_CASE("TLS peers: coring client against nginx (close_notify at the end, resumption)") {
  TestPki& p = pki();
  TempDir run;
  const uint16_t port = free_port();
  REQUIRE(port != 0);
  // One process (master_process off), so that killing it leaves nothing behind; every path it
  // writes inside the run directory.
  std::ofstream(run.file("nginx.conf"))
      << "daemon off;\nmaster_process off;\npid " << run.file("nginx.pid") << ";\n"
      << "error_log " << run.file("error.log") << " warn;\n"
      << "events { worker_connections 64; }\n"
      << "http {\n  access_log off;\n"
      << "  client_body_temp_path " << run.path() << "/body;\n"
      << "  proxy_temp_path " << run.path() << "/proxy;\n"
      << "  fastcgi_temp_path " << run.path() << "/fastcgi;\n"
      << "  uwsgi_temp_path " << run.path() << "/uwsgi;\n"
      << "  scgi_temp_path " << run.path() << "/scgi;\n"
      << "  server {\n    listen 127.0.0.1:" << port << " ssl;\n"
      << "    ssl_certificate " << p.server_file << ";\n"
      << "    ssl_certificate_key " << p.key_file << ";\n"
      << "    location / { return 200 \"hello from nginx\\n\"; }\n  }\n}\n";
  Child nginx(
      {"nginx", "-p", run.path() + "/", "-c", run.file("nginx.conf"), "-e", run.file("error.log")},
      run.file("nginx.out"));
  REQUIRE(nginx.started());
  Co::TlsOptions options;
  options.alpn = {"http/1.1"};
  Co::TlsContext client = client_context(options);
  in_container([&] {
    // nginx says nothing when it is ready: try until it accepts.
    bool up = false;
    for (auto until = Clock::now() + kLong; !up && Clock::now() < until;) {
      Co::Socket probe;
      up = probe.connect("127.0.0.1", port, kLong);
      if (!up) Co::this_coroutine::sleep(20ms);
    }
    CO_REQUIRE(up);
    for (int round = 0; round < 2; ++round) {
      Co::Socket s;
      CO_REQUIRE(s.connect("localhost", port, kLong));
      CO_REQUIRE(s.start_tls(client, {}, kLong));
      CHECK(s.tls_alpn() == "http/1.1");
      CHECK(s.tls_session_reused() == (round == 1));
      const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
      CHECK(s.send_all(request.data(), request.size(), kLong) ==
            static_cast<ssize_t>(request.size()));
      std::string response;
      char buffer[4096];
      ssize_t n;
      while ((n = s.recv(buffer, sizeof buffer, kLong)) > 0) response.append(buffer, n);
      CHECK(n == 0);  // nginx ends with a close_notify
      CHECK(s.error().value() == 0);
      CHECK(contains(response, "HTTP/1.1 200 OK"));
      CHECK(contains(response, "hello from nginx"));
    }
  });
  INFO(nginx.output());
}

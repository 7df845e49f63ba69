// TLS on coroutine sockets (OpenSSL 3): a TlsContext holds what a client or a server brings to a
// handshake (certificates, trusted CAs, ALPN, session resumption); Socket::start_tls (see
// socket.hpp) runs the handshake on a connected or accepted socket, after which every Socket
// call (recv, send, recv_all, send_all, recv_packet, sendfile, close) works as on a plain
// socket, with the same one-reader/one-writer rule, timeouts, close() and cancel(cid).
//
// A server accepts, then calls start_tls(server_context) on the accepted socket; a client
// connects, then calls start_tls(client_context, "host.name"). A context is made once and
// shared: copies share one OpenSSL context (and its session cache), from any thread.
//
// How making a context fails: client() and server() return an empty optional and record an
// errno in coring::last_error() and a readable text in TlsContext::last_error_message():
// ENOENT (or the errno OpenSSL met) for a file that cannot be read, EINVAL for a certificate,
// key or CA that does not parse, a key that does not match the certificate, a server without a
// certificate and key, or an ALPN name that is empty or longer than 255 bytes; ENOMEM when
// OpenSSL cannot allocate. Files are read on the calling thread; the system's CA store, the
// first time a process needs it, is parsed on an offload worker while the calling coroutine
// waits (other coroutines run meanwhile; it cannot be cancelled), so making a client context in
// a coroutine may switch to others.
//
// How a handshake or a later call fails (Socket::error(), Socket::error_message()):
// - EPROTO: a TLS protocol failure. error_message() has OpenSSL's reason, for example
//   "TLS handshake failed: certificate verify failed: certificate has expired",
//   "...: certificate verify failed: hostname mismatch", "...: certificate verify failed:
//   unable to get local issuer certificate" (unknown CA), "...: wrong version number (the peer
//   does not speak TLS)" (a plaintext server), "...: http request (plaintext HTTP sent to a TLS
//   port)" (a server that got plaintext), "...: tlsv1 alert unknown ca" (a server whose client
//   refused its certificate). After a protocol failure every read and write on the socket fails
//   with the same error: close it.
// - ECONNRESET: the peer ended the TCP connection without a TLS close_notify: in the middle of
//   the handshake, in the middle of a record, or between records ("truncation", OpenSSL's
//   "unexpected eof while reading"; Go reports io.ErrUnexpectedEOF). It is an error and not an
//   end of stream because an attacker who can cut the connection could otherwise pass a cut
//   message for a whole one; a protocol that frames its messages itself (HTTP with
//   Content-Length) has already read the whole message when it meets this, and may ignore it.
//   A peer's close_notify reads as end of stream: recv() returns 0.
// - ETIMEDOUT, ECANCELED, EPIPE...: as on a plain socket (the handshake's timeout covers the
//   whole handshake; close() from another coroutine or cancel(cid) interrupts it with
//   ECANCELED).
//
// Kernel TLS (kTLS). Not used. OpenSSL 3's SSL_OP_ENABLE_KTLS works only when OpenSSL itself
// does the I/O on the descriptor (its socket BIO), which would take the I/O away from the event
// engine (io_uring's receive-ahead, the timeouts, close and cancel). The other way, setting the
// kernel's keys ourselves with setsockopt(SOL_TLS, TLS_TX) after a handshake over memory
// buffers, needs the traffic keys and record sequence numbers, for which OpenSSL 3.0 has no
// public call (they would have to be derived from the key-log secrets and counted by hand, and
// kept right across TLS 1.3 KeyUpdates), and kTLS receive needs control messages for non-data
// records that the engine's receive does not carry. On the machine this was written on (Linux
// 6.18, no loadable modules) the kernel has no `tls` upper-layer protocol at all
// (setsockopt(TCP_ULP, "tls") fails with ENOENT; /proc/sys/net/ipv4/tcp_available_ulp lists
// only mptcp), so nothing could be measured. If it is ever added, kTLS transmit alone is the
// part worth measuring: it would let sendfile() skip the user-space copy and encryption.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coring/common.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {
namespace detail {
struct TlsContextState;
}  // namespace detail

class Socket;

struct TlsOptions {
  // This end's certificate chain (PEM: the certificate first, then its intermediates) and its
  // private key (PEM), from files or from memory (a file wins when both are set). A server needs
  // them; a client may present them to a server that asks (mutual TLS).
  std::string cert_file, key_file;
  std::string cert_pem, key_pem;
  // The CAs this end trusts to verify its peer, as a PEM bundle file, a directory in OpenSSL's
  // hashed layout (c_rehash), or PEM text in memory. All empty: the system's store
  // (Debian: /etc/ssl/certs, from the ca-certificates package), parsed once per process (some
  // 17 ms for Debian's bundle; see above) and shared by every context; the SSL_CERT_FILE and
  // SSL_CERT_DIR variables count when it is parsed, not later. A file named here is read on the
  // calling thread each time a context is made: make contexts once.
  std::string ca_file;
  std::string ca_path;
  std::string ca_pem;
  // A client verifies the server's certificate chain against the CAs above and its name against
  // the server_name given to start_tls (default true).
  // WARNING: false accepts any certificate, so anyone on the path can read and change the
  // traffic (a man in the middle); use it for tests only.
  // A server ignores verify_peer unless it is given a CA (ca_file, ca_path or ca_pem): then
  // verify_peer true asks every client for a certificate and refuses one without a valid one.
  bool verify_peer = true;
  // Application protocols (ALPN), most preferred first, for example {"h2", "http/1.1"}. A
  // client offers them; a server picks the first of its own that the client offered, and goes
  // on without one when they share none (Socket::tls_alpn() is then empty).
  std::vector<std::string> alpn;
  // Session resumption: a client remembers the last session per server name and port and
  // offers it on its next handshake with that server (TLS 1.3 tickets, TLS 1.2 tickets or
  // session ids); a server issues tickets. false: every handshake is a full one.
  bool session_resumption = true;
  // Cipher choice in OpenSSL's syntax; empty: OpenSSL's defaults. ciphers is for TLS 1.2
  // ("ECDHE-RSA-AES128-GCM-SHA256:..."), ciphersuites for TLS 1.3 ("TLS_AES_128_GCM_SHA256:...").
  std::string ciphers;
  std::string ciphersuites;
};

// What a client or server brings to a handshake. The minimum protocol is TLS 1.2; renegotiation
// is refused (TLS 1.3 has none; for TLS 1.2 it is the source of several attacks and nothing here
// needs it).
class TlsContext {
 public:
  // A client context. Empty on failure: coring::last_error() and last_error_message().
  static std::optional<TlsContext> client(const TlsOptions& options = {});
  // A server context: needs a certificate and key. Empty on failure, as client().
  static std::optional<TlsContext> server(const TlsOptions& options);

  // Why the last client() or server() on this thread failed ("" once one succeeded).
  static std::string_view last_error_message() noexcept;

  bool is_server() const noexcept;

  // True for copies of one context: they share its OpenSSL context, settings and session
  // cache. (The one-call http functions keep idle https connections per context by it.)
  friend bool operator==(const TlsContext& a, const TlsContext& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  explicit TlsContext(std::shared_ptr<detail::TlsContextState> state) : state_(std::move(state)) {}
  friend class Socket;
  std::shared_ptr<detail::TlsContextState> state_;
};

}  // namespace coring

#pragma GCC visibility pop

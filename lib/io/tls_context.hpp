// What a coring::TlsContext shares between its copies: the OpenSSL context, and a client's
// session cache. Private to the library (io/tls_session.cpp runs handshakes with it).
#pragma once

#include <openssl/ssl.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace coring::detail {

struct TlsContextState {
  SSL_CTX* ctx = nullptr;
  bool server = false;
  bool verify_peer = true;  // a client checks the server's chain and name
  bool resumption = true;
  // A server's ALPN list in the wire format (length-prefixed names), for the selection callback.
  std::string alpn_wire;

  TlsContextState() = default;
  TlsContextState(const TlsContextState&) = delete;
  TlsContextState& operator=(const TlsContextState&) = delete;
  ~TlsContextState();

  // A client's last session with the server known by key ("name:port"), with a reference the
  // caller owns (SSL_SESSION_free), or null. One lookup per handshake, never on a hot path: the
  // mutex is there because copies of a context may be used by containers on several threads.
  SSL_SESSION* find_session(const std::string& key);
  // Keeps session (whose reference the cache takes over) as key's last one.
  void remember_session(const std::string& key, SSL_SESSION* session);

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, SSL_SESSION*> sessions_;
};

}  // namespace coring::detail

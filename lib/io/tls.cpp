// coring::TlsContext: TlsOptions turned into an OpenSSL SSL_CTX, shared by the context's
// copies, and a client's session cache (see coring/tls.hpp; handshakes: io/tls_session.cpp).
#include "coring/tls.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "coring/detail/wait.hpp"
#include "coring/system.hpp"
#include "io/tls_context.hpp"
#include "io/tls_session.hpp"

namespace coring {
namespace detail {

TlsContextState::~TlsContextState() {
  for (auto& [key, session] : sessions_) SSL_SESSION_free(session);
  SSL_CTX_free(ctx);
}

SSL_SESSION* TlsContextState::find_session(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return nullptr;
  if (!SSL_SESSION_is_resumable(it->second)) {  // expired or spent
    SSL_SESSION_free(it->second);
    sessions_.erase(it);
    return nullptr;
  }
  SSL_SESSION_up_ref(it->second);
  return it->second;
}

void TlsContextState::remember_session(const std::string& key, SSL_SESSION* session) {
  // A bound on what a client that talks to very many servers keeps; which one goes matters
  // little (it costs one full handshake).
  constexpr size_t kMaxSessions = 1024;
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = sessions_.try_emplace(key, session);
  if (!inserted) {
    SSL_SESSION_free(it->second);
    it->second = session;
  } else if (sessions_.size() > kMaxSessions) {
    auto victim = sessions_.begin();
    if (victim == it) ++victim;
    SSL_SESSION_free(victim->second);
    sessions_.erase(victim);
  }
}

}  // namespace detail

namespace {

thread_local std::string t_last_error_message;

// Records why a context could not be made; returns false.
bool fail(int error, std::string text) {
  ERR_clear_error();
  t_last_error_message = std::move(text);
  detail::set_last_error(error);
  return false;
}

// A failed OpenSSL call while setting up: the errno of a system error it met (a file that
// cannot be opened), else EINVAL (something did not parse or does not match), with `what` and
// OpenSSL's reason.
bool fail_openssl(const std::string& what) {
  unsigned long code = ERR_get_error();  // the first error is the cause
  int error = EINVAL;
  std::string reason;
  if (code != 0 && ERR_SYSTEM_ERROR(code)) {
    error = ERR_GET_REASON(code);
    reason = std::strerror(error);
  } else if (code != 0) {
    if (ERR_GET_REASON(code) == ERR_R_MALLOC_FAILURE) error = ENOMEM;
    const char* text = ERR_reason_error_string(code);
    reason = text != nullptr ? text : "OpenSSL error " + std::to_string(code);
  } else {
    reason = "OpenSSL refused it";
  }
  return fail(error, what + ": " + reason);
}

// PEM text in memory as a BIO that reads it (without copying it).
struct PemText {
  BIO* bio;
  explicit PemText(const std::string& text)
      : bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))) {}
  ~PemText() { BIO_free(bio); }
  PemText(const PemText&) = delete;
  PemText& operator=(const PemText&) = delete;
};

// The certificate chain and key, from files or memory (none: nothing to do).
bool load_identity(SSL_CTX* ctx, const TlsOptions& options) {
  const bool cert = !options.cert_file.empty() || !options.cert_pem.empty();
  const bool key = !options.key_file.empty() || !options.key_pem.empty();
  if (cert != key) return fail(EINVAL, "a certificate needs its key, and a key its certificate");
  if (!cert) return true;
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1)
      return fail_openssl("cert_file " + options.cert_file);
  } else {
    PemText pem(options.cert_pem);
    X509* leaf = PEM_read_bio_X509(pem.bio, nullptr, nullptr, nullptr);
    if (leaf == nullptr) return fail_openssl("cert_pem");
    int used = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (used != 1) return fail_openssl("cert_pem");
    SSL_CTX_clear_chain_certs(ctx);
    while (X509* intermediate = PEM_read_bio_X509(pem.bio, nullptr, nullptr, nullptr)) {
      if (SSL_CTX_add0_chain_cert(ctx, intermediate) != 1) {  // takes it over on success only
        X509_free(intermediate);
        return fail_openssl("cert_pem");
      }
    }
    ERR_clear_error();  // the loop ends with "no start line"
  }
  if (!options.key_file.empty()) {
    if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      return fail_openssl("key_file " + options.key_file);
  } else {
    PemText pem(options.key_pem);
    EVP_PKEY* private_key = PEM_read_bio_PrivateKey(pem.bio, nullptr, nullptr, nullptr);
    if (private_key == nullptr) return fail_openssl("key_pem");
    int used = SSL_CTX_use_PrivateKey(ctx, private_key);
    EVP_PKEY_free(private_key);
    if (used != 1) return fail_openssl("key_pem");
  }
  return SSL_CTX_check_private_key(ctx) == 1 || fail_openssl("the key and the certificate");
}

bool has_ca(const TlsOptions& options) {
  return !options.ca_file.empty() || !options.ca_path.empty() || !options.ca_pem.empty();
}

// The system's CA store, parsed once per process and shared by every context that uses it
// (X509_STORE is reference-counted, and OpenSSL 3 locks it for the lookups of concurrent
// verifications). Parsing Debian's bundle (about 140 certificates) takes some 17 ms: done in a
// coroutine, it runs on an offload worker so that the container's other coroutines go on, and
// each later context (a thread's default https context, say) costs nothing for it. Null when
// OpenSSL cannot even allocate it; a missing bundle is not an error (verification then fails,
// naming the unknown issuer), as with SSL_CTX_set_default_verify_paths.
X509_STORE* system_store() {
  static std::once_flag once;
  static std::atomic<X509_STORE*> store{nullptr};
  static std::atomic<bool> loaded{false};
  if (loaded.load(std::memory_order_acquire)) return store.load(std::memory_order_relaxed);
  return offload([] {
    std::call_once(once, [] {
      X509_STORE* made = X509_STORE_new();
      if (made != nullptr && X509_STORE_set_default_paths(made) != 1) {
        X509_STORE_free(made);
        made = nullptr;
      }
      ERR_clear_error();  // this thread's queue: a worker's, or ours
      store.store(made, std::memory_order_relaxed);
      loaded.store(true, std::memory_order_release);
    });
    return store.load(std::memory_order_relaxed);
  });
}

// The CAs to verify the peer with: those named, or the system's store.
bool load_trust(SSL_CTX* ctx, const TlsOptions& options) {
  if (!has_ca(options)) {
    X509_STORE* store = system_store();
    if (store == nullptr) return fail(ENOMEM, "the system's CA store: out of memory");
    SSL_CTX_set1_cert_store(ctx, store);
    return true;
  }
  if (!options.ca_file.empty() || !options.ca_path.empty()) {
    const char* file = options.ca_file.empty() ? nullptr : options.ca_file.c_str();
    const char* path = options.ca_path.empty() ? nullptr : options.ca_path.c_str();
    if (SSL_CTX_load_verify_locations(ctx, file, path) != 1) {
      return fail_openssl(file != nullptr ? "ca_file " + options.ca_file
                                          : "ca_path " + options.ca_path);
    }
  }
  if (!options.ca_pem.empty()) {
    PemText pem(options.ca_pem);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    int count = 0;
    while (X509* ca = PEM_read_bio_X509(pem.bio, nullptr, nullptr, nullptr)) {
      int added = X509_STORE_add_cert(store, ca);
      X509_free(ca);
      if (added != 1) return fail_openssl("ca_pem");
      ++count;
    }
    if (count == 0) return fail_openssl("ca_pem");
    ERR_clear_error();  // the loop ends with "no start line"
  }
  return true;
}

// ALPN names in the wire format: each prefixed with its length.
bool alpn_wire(const std::vector<std::string>& names, std::string* wire) {
  wire->clear();
  for (const std::string& name : names) {
    if (name.empty() || name.size() > 255)
      return fail(EINVAL, "an ALPN name must be 1 to 255 bytes long");
    wire->push_back(static_cast<char>(name.size()));
    wire->append(name);
  }
  return true;
}

// What every context gets: TLS 1.2 at least, no renegotiation, the ciphers asked for.
bool configure_common(SSL_CTX* ctx, const TlsOptions& options) {
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    return fail_openssl("the minimum protocol version");
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  if (!options.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, options.ciphers.c_str()) != 1)
    return fail_openssl("ciphers \"" + options.ciphers + "\"");
  if (!options.ciphersuites.empty() &&
      SSL_CTX_set_ciphersuites(ctx, options.ciphersuites.c_str()) != 1) {
    return fail_openssl("ciphersuites \"" + options.ciphersuites + "\"");
  }
  return true;
}

// A client's new session (a TLS 1.3 ticket arrives after the handshake, during a read): kept
// as the last one for the server the session's socket talks to.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* tls = static_cast<detail::TlsSession*>(SSL_get_app_data(ssl));
  if (tls == nullptr || tls->cache_key.empty() || !SSL_SESSION_is_resumable(session)) return 0;
  tls->context->remember_session(tls->cache_key, session);
  return 1;  // the cache keeps the reference
}

// A server's ALPN choice: the first of its own names that the client offered; none shared: go
// on without ALPN (the client may still speak what it expects, or give up itself).
int select_alpn(SSL*, const unsigned char** out, unsigned char* out_length,
                const unsigned char* offered, unsigned int offered_length, void* arg) {
  const std::string& ours = static_cast<detail::TlsContextState*>(arg)->alpn_wire;
  for (size_t i = 0; i < ours.size(); i += 1 + static_cast<unsigned char>(ours[i])) {
    const auto length = static_cast<unsigned char>(ours[i]);
    for (unsigned int j = 0; j < offered_length; j += 1u + offered[j]) {
      if (j + 1u + offered[j] > offered_length) break;  // malformed: stop at what parses
      if (offered[j] == length && std::memcmp(offered + j + 1, ours.data() + i + 1, length) == 0) {
        *out = offered + j + 1;
        *out_length = length;
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::shared_ptr<detail::TlsContextState> new_state(bool server) {
  auto state = std::make_shared<detail::TlsContextState>();
  state->server = server;
  state->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (state->ctx == nullptr) return nullptr;
  SSL_CTX_set_app_data(state->ctx, state.get());
  return state;
}

}  // namespace

std::optional<TlsContext> TlsContext::client(const TlsOptions& options) {
  ERR_clear_error();
  std::shared_ptr<detail::TlsContextState> state = new_state(false);
  if (state == nullptr) {
    fail_openssl("a client context");
    return std::nullopt;
  }
  SSL_CTX* ctx = state->ctx;
  if (!configure_common(ctx, options) || !load_identity(ctx, options) ||
      !load_trust(ctx, options)) {
    return std::nullopt;
  }
  state->verify_peer = options.verify_peer;
  SSL_CTX_set_verify(ctx, options.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  std::string wire;
  if (!alpn_wire(options.alpn, &wire)) return std::nullopt;
  if (!wire.empty() &&
      SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned int>(wire.size())) != 0) {  // 0: success
    fail_openssl("alpn");
    return std::nullopt;
  }
  state->resumption = options.session_resumption;
  if (options.session_resumption) {
    // OpenSSL's own client cache is never consulted by a client; ours is keyed by server.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, &on_new_session);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  }
  t_last_error_message.clear();
  return TlsContext(std::move(state));
}

std::optional<TlsContext> TlsContext::server(const TlsOptions& options) {
  ERR_clear_error();
  if ((options.cert_file.empty() && options.cert_pem.empty()) ||
      (options.key_file.empty() && options.key_pem.empty())) {
    fail(EINVAL,
         "a server needs a certificate and its key (cert_file and key_file, or cert_pem and "
         "key_pem)");
    return std::nullopt;
  }
  std::shared_ptr<detail::TlsContextState> state = new_state(true);
  if (state == nullptr) {
    fail_openssl("a server context");
    return std::nullopt;
  }
  SSL_CTX* ctx = state->ctx;
  if (!configure_common(ctx, options) || !load_identity(ctx, options)) return std::nullopt;
  state->verify_peer = options.verify_peer && has_ca(options);
  if (has_ca(options)) {
    if (!load_trust(ctx, options)) return std::nullopt;
    if (options.verify_peer) {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  if (!alpn_wire(options.alpn, &state->alpn_wire)) return std::nullopt;
  if (!state->alpn_wire.empty()) SSL_CTX_set_alpn_select_cb(ctx, &select_alpn, state.get());
  state->resumption = options.session_resumption;
  if (options.session_resumption) {
    // Tickets (OpenSSL's default) resume TLS 1.3 and 1.2 without server state; the id context
    // lets a session resume where client certificates are verified too.
    static constexpr unsigned char kIdContext[] = "coring";
    SSL_CTX_set_session_id_context(ctx, kIdContext, sizeof kIdContext - 1);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  t_last_error_message.clear();
  return TlsContext(std::move(state));
}

std::string_view TlsContext::last_error_message() noexcept {
  return t_last_error_message;
}

bool TlsContext::is_server() const noexcept {
  return state_ != nullptr && state_->server;
}

}  // namespace coring

// coring::Socket's TLS: start_tls(), what the handshake settled, and the layer that recv, send,
// sendfile, check_liveness, shutdown and close pass through on a TLS socket. The design (who
// does the I/O, full duplex, what send returns, closing) is in io/tls_session.hpp.
#include "io/tls_session.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <string>

#include "coring/detail/wait.hpp"
#include "coring/tls.hpp"
#include "io/address.hpp"

namespace coring {
namespace detail {
namespace {

// The input buffer starts small, which is all request/response traffic needs, so that an idle
// connection holds little; the first receive that fills it (bulk traffic) makes it room for about
// two full records per receive. It never shrinks: no allocation per receive.
constexpr size_t kInputInitial = 4 * 1024;
constexpr size_t kInputCapacity = 32 * 1024;
// Plaintext per SSL_write: its four records leave in one send.
constexpr size_t kWriteChunk = 64 * 1024;
// The longest close() and shutdown() wait for the close_notify to reach the kernel.
constexpr Duration kCloseNotifyLimit = std::chrono::seconds(1);

// ---- the BIO: OpenSSL's window on the session's buffers ----------------------------------------

TlsSession* session_of(BIO* bio) {
  return static_cast<TlsSession*>(BIO_get_data(bio));
}

// Everything OpenSSL writes is taken: the socket layer sends it (flush()).
int bio_write(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  if (length <= 0) return 0;
  session_of(bio)->pending.append(data, static_cast<size_t>(length));
  return length;
}

// Serves what has been received; "retry" when that is all, so that OpenSSL returns
// SSL_ERROR_WANT_READ and the reader waits outside OpenSSL. Never moves in_end or the buffer: a
// receive may be in flight into the space after in_end.
int bio_read(BIO* bio, char* out, int length) {
  BIO_clear_retry_flags(bio);
  TlsSession* s = session_of(bio);
  size_t available = s->in_end - s->in_begin;
  if (available == 0) {
    if (s->transport_eof) return 0;  // with BIO_CTRL_EOF: OpenSSL decides what the end means
    BIO_set_retry_read(bio);
    return -1;
  }
  size_t n = std::min(available, static_cast<size_t>(std::max(length, 0)));
  std::memcpy(out, s->input.get() + s->in_begin, n);
  s->in_begin += n;
  return static_cast<int>(n);
}

long bio_control(BIO* bio, int command, long, void*) {
  TlsSession* s = session_of(bio);
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return s->transport_eof && s->in_begin == s->in_end ? 1 : 0;
    case BIO_CTRL_PENDING:
      return static_cast<long>(s->in_end - s->in_begin);
    case BIO_CTRL_WPENDING:
      return static_cast<long>(s->sending.size() - s->sent + s->pending.size());
    default:
      return 0;
  }
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// One method table for the process, made on first use (thread-safe static) and kept.
BIO_METHOD* bio_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "coring socket");
    if (m == nullptr) return m;
    BIO_meth_set_write(m, &bio_write);
    BIO_meth_set_read(m, &bio_read);
    BIO_meth_set_ctrl(m, &bio_control);
    BIO_meth_set_create(m, &bio_create);
    return m;
  }();
  return method;
}

// ---- failures -----------------------------------------------------------------------------------

// Records a failure that every later read and write repeats; returns -1.
ssize_t fail_session(SocketCore* core, int error, std::string text) {
  TlsSession& s = *core->tls;
  s.failure = error;
  s.failure_text = std::move(text);
  set_error(core, error, s.failure_text.c_str());
  return -1;
}

ssize_t repeat_failure(SocketCore* core) {
  const TlsSession& s = *core->tls;
  set_error(core, s.failure, s.failure_text.c_str());
  return -1;
}

// What a failed SSL call means, from OpenSSL's error queue (read at once: the queue is the
// thread's, and other coroutines' calls would add to it) and the verification result.
int describe(const TlsSession& s, int ssl_error, std::string* text) {
  std::string prefix = s.established ? "TLS: " : "TLS handshake failed: ";
  const unsigned long code = ERR_get_error();  // the first error is the cause
  ERR_clear_error();
  if (code == 0) {
    if (s.transport_eof) {
      *text = prefix + "the peer closed the connection without a TLS close_notify";
      return ECONNRESET;
    }
    *text = prefix + "OpenSSL error " + std::to_string(ssl_error);
    return EPROTO;
  }
  const int reason = ERR_GET_REASON(code);
  if (ERR_SYSTEM_ERROR(code)) {
    const char* description = ::strerrordesc_np(reason);  // null for an errno it does not know
    *text =
        prefix + (description != nullptr ? description : "system error " + std::to_string(reason));
    return reason;
  }
  if (ERR_GET_LIB(code) == ERR_LIB_SSL) {
    switch (reason) {
      case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        *text = prefix +
                "unexpected eof while reading (the peer closed the connection without a TLS "
                "close_notify)";
        return ECONNRESET;
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        *text = prefix + "certificate verify failed: " +
                X509_verify_cert_error_string(SSL_get_verify_result(s.ssl));
        return EPROTO;
      case SSL_R_WRONG_VERSION_NUMBER:
        *text = prefix + "wrong version number (the peer does not speak TLS)";
        return EPROTO;
      case SSL_R_HTTP_REQUEST:
        *text = prefix + "http request (plaintext HTTP sent to a TLS port)";
        return EPROTO;
      default:
        break;
    }
  }
  const char* reason_text = ERR_reason_error_string(code);
  *text = prefix + (reason_text != nullptr ? reason_text : "OpenSSL error " + std::to_string(code));
  return ERR_GET_REASON(code) == ERR_R_MALLOC_FAILURE ? ENOMEM : EPROTO;
}

// ---- moving ciphertext --------------------------------------------------------------------------

long running_id() noexcept {
  Coroutine* self = running_coroutine();
  return self != nullptr ? self->id : 0;
}

// Sends what OpenSSL wrote with non-blocking sends, as far as the kernel takes it. Only where
// nobody else is sending (see the header comment).
void send_pending_now(SocketCore* core) noexcept {
  TlsSession& s = *core->tls;
  if (s.flushing || core->fd < 0) return;
  for (;;) {
    if (s.sent == s.sending.size()) {
      if (s.pending.empty()) return;
      s.sending.clear();
      s.sent = 0;
      s.sending.swap(s.pending);
    }
    ssize_t n = ::send(core->fd, s.sending.data() + s.sent, s.sending.size() - s.sent,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    s.sent += static_cast<size_t>(n);
  }
}

// After a reader's SSL call: what it wrote (a KeyUpdate answer, an alert) goes out without
// waiting, unless a writer is inside the socket, which sends it after its own records.
void flush_now(SocketCore* core) noexcept {
  const TlsSession& s = *core->tls;
  if (!s.has_output()) return;
  if (core->writer_cid != 0 && core->writer_cid != running_id()) return;
  send_pending_now(core);
}

// Sends what OpenSSL wrote, oldest first, until nothing is left (true) or a send fails (false,
// error recorded). The caller holds the write side.
bool flush(SocketCore* core, Call& call, int64_t deadline) {
  TlsSession& s = *core->tls;
  if (!s.has_output()) return true;
  s.flushing = true;
  struct Done {
    bool& flushing;
    ~Done() { flushing = false; }
  } done{s.flushing};
  for (;;) {
    if (s.sent == s.sending.size()) {
      if (s.pending.empty()) return true;
      s.sending.clear();
      s.sent = 0;
      s.sending.swap(s.pending);  // appends during the send go to the other buffer
    }
    if (core->closed && !call.closing()) {
      failed(core, -ECANCELED);
      return false;
    }
    ssize_t n = send_bytes(core, call, s.sending.data() + s.sent, s.sending.size() - s.sent,
                           remaining(deadline));
    if (n < 0) return false;
    s.sent += static_cast<size_t>(n);
  }
}

// Receives more ciphertext after in_end. Returns the bytes, 0 at the end of the stream
// (transport_eof set), or -1 (error recorded). The caller holds the read side.
ssize_t fill_input(SocketCore* core, Call& call, int64_t deadline) {
  TlsSession& s = *core->tls;
  if (s.in_begin == s.in_end) {
    s.in_begin = s.in_end = 0;
    if (s.input_filled && s.input_capacity < kInputCapacity) {  // empty: nothing to move
      s.input = std::make_unique_for_overwrite<char[]>(kInputCapacity);
      s.input_capacity = kInputCapacity;
    }
  } else if (s.in_end == s.input_capacity) {
    std::memmove(s.input.get(), s.input.get() + s.in_begin, s.in_end - s.in_begin);
    s.in_end -= s.in_begin;
    s.in_begin = 0;
  }
  if (s.in_end == s.input_capacity) {  // OpenSSL consumes what it has before it asks for more
    set_error(core, EPROTO, "TLS: internal error: the input buffer is full");
    return -1;
  }
  ssize_t n = receive_bytes(core, call, s.input.get() + s.in_end, s.input_capacity - s.in_end,
                            remaining(deadline));
  if (n < 0) return -1;
  if (n == 0) {
    s.transport_eof = true;
    return 0;
  }
  s.input_filled = s.in_end + static_cast<size_t>(n) == s.input_capacity;
  s.in_end += static_cast<size_t>(n);
  return n;
}

// A failed SSL call (not WANT_READ): the alert OpenSSL wrote goes out if the kernel takes it at
// once, and the failure sticks.
ssize_t fail_ssl(SocketCore* core, int ssl_error) {
  std::string text;
  int error = describe(*core->tls, ssl_error, &text);
  flush_now(core);
  return fail_session(core, error, std::move(text));
}

// ---- closing ------------------------------------------------------------------------------------

bool close_notify_due(const SocketCore* core) noexcept {
  const TlsSession* s = core->tls;
  return s != nullptr && s->ssl != nullptr && s->established && s->failure == 0 &&
         !s->close_notify_queued && core->fd >= 0;
}

void queue_close_notify(TlsSession& s) noexcept {
  const size_t before = s.unsent();
  ERR_clear_error();
  SSL_shutdown(s.ssl);  // writes close_notify; we do not wait for the peer's
  ERR_clear_error();
  s.close_notify_queued = true;
  s.close_notify_size = s.unsent() - before;
}

Duration close_notify_bound(const SocketCore* core) noexcept {
  return std::min<Duration>(core->write_timeout, kCloseNotifyLimit);
}

// Before the descriptor is closed after a close_notify: what the peer sent and nobody read is
// taken out of the socket, without waiting, and dropped. Most often that is the server's TLS 1.3
// session tickets, which arrive unasked after the handshake; Linux answers a close() with unread
// data by a reset instead of a FIN, and a reset makes the peer's kernel drop what it had received
// and not yet handed to its reader: the last records a client sent just before closing would be
// lost. The peer learns of our end from the close_notify, so the reset's "data was lost" carries
// nothing more.
void drop_unread_now(SocketCore* core) noexcept {
  constexpr size_t kLimit = 256 * 1024;  // more than that: let the kernel reset
  char sink[4096];
  for (size_t dropped = 0; dropped < kLimit;) {
    int32_t n =
        receive_now(core->fd, sink, sizeof sink, 0);  // through the engine: it may hold some
    if (n <= 0) return;
    dropped += static_cast<size_t>(n);
  }
}

// ---- the handshake ------------------------------------------------------------------------------

// The session cache's key for a client: the name it checks and the peer's port.
std::string cache_key(const SocketCore* core, const std::string& name) {
  SocketAddress address;
  address.length = sizeof address.storage;
  uint16_t port = 0;
  if (::getpeername(core->fd, address.get(), &address.length) == 0) {
    format_host(address.get(), address.length, &port);
  }
  return name + ":" + std::to_string(port);
}

// A client's name: SNI and the certificate check for a host name, the address check (and no
// SNI, RFC 6066 3) for an IP address. False with the error recorded.
bool set_server_name(SocketCore* core, SSL* ssl, std::string name, bool verify) {
  // OpenSSL takes C strings: "good.example\0.evil" would be checked as "good.example".
  if (name.find('\0') != std::string::npos) {
    set_error(core, EINVAL, "start_tls: server_name holds a NUL byte");
    return false;
  }
  if (name.size() > 2 && name.front() == '[' && name.back() == ']')
    name = name.substr(1, name.size() - 2);
  unsigned char address[sizeof(in6_addr)];
  const bool ip = ::inet_pton(AF_INET, name.c_str(), address) == 1 ||
                  ::inet_pton(AF_INET6, name.c_str(), address) == 1;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  bool ok = true;
  if (ip) {
    if (verify) ok = X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1;
  } else {
    ok = SSL_set_tlsext_host_name(ssl, name.c_str()) == 1;
    if (ok && verify) {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = SSL_set1_host(ssl, name.c_str()) == 1;
    }
  }
  ERR_clear_error();
  if (!ok) set_error(core, EINVAL, "start_tls: server_name is not a valid host name or address");
  return ok;
}

// A transport failure during the handshake (timeout, cancel, reset): it sticks, with a text
// that says where it happened.
bool handshake_transport_failed(SocketCore* core) {
  const int error = core->error != 0 ? core->error : EIO;
  const char* what = core->error_text != nullptr ? core->error_text : ::strerrordesc_np(error);
  fail_session(core, error, std::string("TLS handshake failed: ") + (what ? what : "I/O error"));
  return false;
}

bool start_session(SocketCore* core, Call& reading, Call& writing,
                   const std::shared_ptr<TlsContextState>& context, std::string_view server_name,
                   Duration timeout) {
  if (is_datagram(core)) {
    set_error(core, EINVAL, "start_tls: TLS needs a stream socket (DTLS is not supported)");
    return false;
  }
  if (core->tls != nullptr) {
    set_error(core, EALREADY, "start_tls: TLS was already started on this socket");
    return false;
  }
  if (context == nullptr || context->ctx == nullptr) {
    set_error(core, EINVAL, "start_tls: the TlsContext was moved from");
    return false;
  }
  const bool server = context->server;
  std::string name(server_name.empty() ? std::string_view(core->connect_host) : server_name);
  if (!server && context->verify_peer && name.empty()) {
    set_error(core, EINVAL,
              "start_tls: a client that verifies its peer needs the server's name (pass "
              "server_name, or connect() by name)");
    return false;
  }
  const int64_t deadline =
      deadline_for(pick(timeout, server ? core->read_timeout : core->connect_timeout));

  auto session = std::make_unique<TlsSession>();
  session->context = context;
  session->server = server;
  // Bytes recv_packet() read ahead are the start of the peer's handshake (STARTTLS).
  const size_t buffered = core->end - core->begin;
  session->input_capacity = std::max(kInputInitial, buffered);
  session->input = std::make_unique_for_overwrite<char[]>(session->input_capacity);
  session->in_end = take_buffered(core, session->input.get(), session->input_capacity);
  ERR_clear_error();
  SSL* ssl = SSL_new(context->ctx);
  BIO* bio = ssl != nullptr && bio_method() != nullptr ? BIO_new(bio_method()) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl);
    ERR_clear_error();
    set_error(core, ENOMEM, "start_tls: OpenSSL could not allocate a session");
    return false;
  }
  BIO_set_data(bio, session.get());
  SSL_set_bio(ssl, bio, bio);  // the SSL object owns the BIO from here
  SSL_set_app_data(ssl, session.get());
  session->ssl = ssl;
  if (server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    if (!name.empty()) {
      if (!set_server_name(core, ssl, name, context->verify_peer)) {
        SSL_free(ssl);
        return false;
      }
      if (context->resumption) {
        session->cache_key = cache_key(core, name);
        if (SSL_SESSION* cached = context->find_session(session->cache_key)) {
          SSL_set_session(ssl, cached);
          SSL_SESSION_free(cached);
        }
      }
    }
  }
  core->tls = session.release();
  TlsSession& s = *core->tls;

  for (;;) {
    ERR_clear_error();
    const int result = SSL_do_handshake(s.ssl);
    const int reason = result == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, result);
    if (reason != SSL_ERROR_NONE && reason != SSL_ERROR_WANT_READ) {
      std::string text;
      const int error = describe(s, reason, &text);
      send_pending_now(core);  // the alert that tells the peer why, if the kernel takes it
      fail_session(core, error, std::move(text));
      return false;
    }
    if (!flush(core, writing, deadline)) return handshake_transport_failed(core);
    if (reason == SSL_ERROR_NONE) break;
    if (fill_input(core, reading, deadline) < 0) return handshake_transport_failed(core);
  }
  s.established = true;
  return true;
}

// The SSL object of a socket whose handshake completed and that is still open, or null.
SSL* established_ssl(const SocketCore* core) noexcept {
  if (core == nullptr || core->closed || core->tls == nullptr) return nullptr;
  const TlsSession* s = core->tls;
  return s->established ? s->ssl : nullptr;
}

}  // namespace

// ---- recv, send, sendfile -----------------------------------------------------------------------

ssize_t tls_receive(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout) {
  TlsSession& s = *core->tls;
  if (s.failure != 0) return repeat_failure(core);
  if (s.ssl == nullptr) return failed(core, -ECANCELED);
  if (core->closed || call.cancel_requested()) return failed(core, -ECANCELED);
  const int length = static_cast<int>(std::min<size_t>(size, INT_MAX));
  if (length == 0) return 0;
  // Taken when the first wait comes: a read that finds its record already here reads no clock.
  int64_t deadline = 0;
  bool have_deadline = false;
  for (;;) {
    // This end shut reading down: the stream's end is not a truncation.
    if (s.read_shut && s.transport_eof && s.in_begin == s.in_end && SSL_pending(s.ssl) == 0)
      return 0;
    ERR_clear_error();
    const int n = SSL_read(s.ssl, buffer, length);
    const int reason = n > 0 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, n);
    if (reason == SSL_ERROR_NONE) {
      flush_now(core);
      return n;
    }
    if (reason == SSL_ERROR_ZERO_RETURN) {  // the peer's close_notify: end of stream
      flush_now(core);
      return 0;
    }
    if (reason != SSL_ERROR_WANT_READ) return fail_ssl(core, reason);
    flush_now(core);
    if (!have_deadline) {
      deadline = deadline_for(timeout);
      have_deadline = true;
    }
    if (fill_input(core, call, deadline) < 0) return -1;
  }
}

ssize_t tls_transmit(SocketCore* core, Call& call, const void* data, size_t size,
                     Duration timeout) {
  TlsSession& s = *core->tls;
  if (s.failure != 0) return repeat_failure(core);
  if (s.ssl == nullptr) return failed(core, -ECANCELED);
  const int64_t deadline = deadline_for(timeout);
  // What an earlier call left unsent goes first; no new bytes are taken until it is out.
  if (!flush(core, call, deadline)) return -1;
  if (size == 0) return 0;
  if (s.close_notify_queued) {
    set_error(core, EPIPE, "TLS: this end already sent its close_notify (shutdown)");
    return -1;
  }
  ERR_clear_error();
  const int n = SSL_write(s.ssl, data, static_cast<int>(std::min(size, kWriteChunk)));
  if (n <= 0) return fail_ssl(core, SSL_get_error(s.ssl, n));
  if (!flush(core, call, deadline)) {
    // OpenSSL has the bytes and they cannot be taken back: they count as sent, and the rest of
    // their records leaves first on the next write call or close() (see the header comment).
    // A connection that failed outright (a reset) loses them either way.
    if (core->error == ETIMEDOUT || core->error == ECANCELED) return n;
    return -1;
  }
  return n;
}

ssize_t tls_sendfile(SocketCore* core, Call& call, int file_fd, int64_t offset, size_t count,
                     Duration timeout) {
  TlsSession& s = *core->tls;
  if (s.failure != 0) return repeat_failure(core);
  if (s.file_buffer == nullptr) s.file_buffer = std::make_unique_for_overwrite<char[]>(kWriteChunk);
  const int64_t deadline = deadline_for(timeout);
  char* const buffer = s.file_buffer.get();
  size_t sent = 0;
  core->error = 0;
  core->error_text = nullptr;
  while (sent < count) {
    // Blocks the thread when the file is not in the page cache, as sendfile(2) does.
    ssize_t got = ::pread(file_fd, buffer, std::min(count - sent, kWriteChunk),
                          static_cast<off_t>(offset) + static_cast<off_t>(sent));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      failed(core, -errno);
      return sent > 0 ? static_cast<ssize_t>(sent) : -1;
    }
    if (got == 0) break;  // the file is shorter than count
    for (size_t done = 0; done < static_cast<size_t>(got);) {
      ssize_t n =
          transmit(core, call, buffer + done, static_cast<size_t>(got) - done, remaining(deadline));
      if (n < 0) {
        sent += done;
        return sent > 0 ? static_cast<ssize_t>(sent) : -1;
      }
      done += static_cast<size_t>(n);
    }
    sent += static_cast<size_t>(got);
  }
  return static_cast<ssize_t>(sent);
}

// ---- liveness, shutdown, close ------------------------------------------------------------------

bool tls_check_liveness(SocketCore* core) {
  TlsSession& s = *core->tls;
  if (s.failure != 0) {
    repeat_failure(core);
    return false;
  }
  // A handshake or a reader is inside: the input is theirs, and nothing is known to be wrong.
  if (!s.established || s.ssl == nullptr || core->reader_cid != 0) return true;
  if (SSL_pending(s.ssl) > 0) return true;
  if (!s.transport_eof) {
    if (s.in_begin == s.in_end) {
      s.in_begin = s.in_end = 0;
    } else if (s.in_end == s.input_capacity) {
      std::memmove(s.input.get(), s.input.get() + s.in_begin, s.in_end - s.in_begin);
      s.in_end -= s.in_begin;
      s.in_begin = 0;
    }
    // Through the engine, as every read: it may hold bytes it already received.
    int32_t n = receive_now(core->fd, s.input.get() + s.in_end,
                            static_cast<uint32_t>(s.input_capacity - s.in_end), 0);
    if (n > 0) {
      s.in_end += static_cast<size_t>(n);
    } else if (n == 0) {
      s.transport_eof = true;
    } else if (n != -EAGAIN && n != -EWOULDBLOCK) {
      failed(core, n);
      return false;
    }
  }
  char byte;
  ERR_clear_error();
  const int n = SSL_peek(s.ssl, &byte, 1);
  const int reason = n > 0 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, n);
  flush_now(core);
  if (reason == SSL_ERROR_NONE || reason == SSL_ERROR_WANT_READ) return true;
  if (reason == SSL_ERROR_ZERO_RETURN) {
    set_error(core, 0, "the peer closed the connection");
    return false;
  }
  fail_ssl(core, reason);
  return false;
}

bool tls_shutdown(SocketCore* core, int how) {
  TlsSession& s = *core->tls;
  if (how == SHUT_RD || how == SHUT_RDWR) s.read_shut = true;
  if (how != SHUT_WR && how != SHUT_RDWR) return true;
  // A writer inside: only the TCP side ends (it sees EPIPE, as on a plain socket).
  if (s.flushing || core->writer_cid != 0) return true;
  // An earlier shutdown() that could not get its close_notify out left it (and what was
  // before it) queued: it goes first now too, or the TCP side stays open.
  const bool left_queued = s.close_notify_queued && s.has_output() && s.failure == 0;
  if (!close_notify_due(core) && !left_queued) return true;
  if (!in_coroutine() || running_is_unwinding()) {
    if (close_notify_due(core)) queue_close_notify(s);
    send_pending_now(core);
    if (!s.has_output()) return true;
    set_error(core, EAGAIN,
              "TLS: shutdown() without waiting (outside a coroutine or while unwound) could not "
              "hand the close_notify, and what send() left unsent, to the kernel at once");
    return false;
  }
  Call writing(core, false);
  if (!writing.ok()) return true;  // closed meanwhile: the TCP call reports it
  if (close_notify_due(core)) queue_close_notify(s);
  if (flush(core, writing, deadline_for(close_notify_bound(core)))) return true;
  if (core->error == ETIMEDOUT) {
    set_error(core, ETIMEDOUT,
              "TLS: shutdown() could not hand the close_notify, and what send() left unsent, to "
              "the kernel in time (the peer is not reading); close() tries again");
  }
  return false;
}

bool finish_tls(SocketCore* core) {
  TlsSession& s = *core->tls;
  auto owes_output = [&] { return s.ssl != nullptr && s.failure == 0 && s.has_output(); };
  if (!close_notify_due(core) && !owes_output()) return true;
  if (!in_coroutine() || running_is_unwinding()) return close_notify_now(core);
  Call closing(core, Call::Closing{});  // keeps the descriptor open until we are done
  struct Finishing {
    SocketCore* core;
    ~Finishing() { core->finishing_tls = false; }
  } finishing{core};
  core->finishing_tls = true;
  // The cancelled reader and writer leave first: then the write side is ours, and the rest of
  // a record the writer was sending goes out before the close_notify.
  while (core->active > 1) {
    Waiter waiter;
    if (park(core->close_waiters, waiter, kForever, Cancellable::no) != kWaitOk) return true;
  }
  const int64_t deadline = deadline_for(close_notify_bound(core));
  // What send() counted as sent (or shutdown() could not get out) goes first; if it cannot, the
  // peer never gets it, and close() says so (a close_notify alone loses no data).
  if (owes_output() && !flush(core, closing, deadline)) {
    if (!s.data_unsent()) return true;
    if (core->error == ETIMEDOUT) {
      set_error(core, ETIMEDOUT,
                "TLS: close() could not hand the rest of what send() accepted to the kernel in "
                "time (the peer is not reading); it is lost");
    }
    return false;
  }
  if (close_notify_due(core)) {
    queue_close_notify(s);
    // A close_notify that cannot leave loses no data: the peer sees a truncation (ECONNRESET).
    if (!flush(core, closing, deadline)) return true;
  }
  if (s.close_notify_queued) drop_unread_now(core);  // ours is out (here or by shutdown())
  return true;
}

bool close_notify_now(SocketCore* core) noexcept {
  TlsSession& s = *core->tls;
  if (s.ssl == nullptr || s.failure != 0) return true;
  if (core->active == 0 && core->fd >= 0) {  // nobody inside: the write side is ours
    if (close_notify_due(core)) queue_close_notify(s);
    send_pending_now(core);
    // Ours is out (now or by an earlier shutdown()): what the peer sent is dropped, for a FIN.
    if (s.close_notify_queued && !s.has_output()) drop_unread_now(core);
  }
  // Whatever is left when the descriptor closes is lost; the close_notify alone loses no data.
  if (!s.data_unsent()) return true;
  set_error(core, EAGAIN,
            "TLS: close() without waiting (outside a coroutine or while unwound) could not hand "
            "the rest of what send() accepted to the kernel at once; it is lost");
  return false;
}

ssize_t refuse_on_tls(SocketCore* core) noexcept {
  set_error(core, EINVAL, "recvfrom()/sendto() on a TLS socket: use recv()/send()");
  return -1;
}

void release_tls(SocketCore* core) noexcept {
  TlsSession& s = *core->tls;
  SSL_free(s.ssl);  // and its BIO
  s.ssl = nullptr;
  s.input.reset();
  s.input_capacity = s.in_begin = s.in_end = 0;
  std::string().swap(s.pending);
  std::string().swap(s.sending);
  s.sent = 0;
  s.file_buffer.reset();
}

void destroy_tls(SocketCore* core) noexcept {
  if (core->tls == nullptr) return;
  if (core->tls->ssl != nullptr) release_tls(core);
  delete core->tls;
  core->tls = nullptr;
}

}  // namespace detail

using detail::Call;
using detail::SocketCore;

bool Socket::start_tls(const TlsContext& ctx, std::string_view server_name, Duration timeout) {
  SocketCore* const core = core_;
  Call reading(core, true);
  if (!reading.ok()) return false;
  Call writing(core, false);
  if (!writing.ok()) return false;
  return detail::start_session(core, reading, writing, ctx.state_, server_name, timeout);
}

bool Socket::is_tls() const noexcept {
  return detail::established_ssl(core_) != nullptr;
}

std::string Socket::tls_alpn() const {
  SSL* ssl = detail::established_ssl(core_);
  if (ssl == nullptr) return {};
  const unsigned char* name = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(ssl, &name, &length);
  return name != nullptr ? std::string(reinterpret_cast<const char*>(name), length) : std::string();
}

std::string Socket::tls_server_name() const {
  SSL* ssl = detail::established_ssl(core_);
  const char* name = ssl != nullptr ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : nullptr;
  return name != nullptr ? name : "";
}

std::string Socket::tls_version() const {
  SSL* ssl = detail::established_ssl(core_);
  return ssl != nullptr ? SSL_get_version(ssl) : "";
}

bool Socket::tls_session_reused() const noexcept {
  SSL* ssl = detail::established_ssl(core_);
  return ssl != nullptr && SSL_session_reused(ssl) == 1;
}

}  // namespace coring

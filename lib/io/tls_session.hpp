// The TLS state of one socket, and the layer that recv and send pass through once start_tls()
// has run (io/socket_transport.cpp hands receive() and transmit() over to it). Private to the
// library.
//
// Who does the I/O. OpenSSL never touches the descriptor: its BIO (a small custom one, below)
// reads ciphertext from the session's input buffer and appends what it writes to the session's
// output buffer. The socket layer moves those bytes with the event engine's ordinary receive
// and send (receive_bytes(), send_bytes()), so TLS behaves identically under io_uring and epoll
// (the io_uring engine's receive-ahead included) and keeps every timeout, close() and
// cancel(cid) rule of a plain socket.
//
// Never wait inside OpenSSL. Every SSL_* call runs to its end without a coroutine switch: when
// OpenSSL needs ciphertext that has not arrived, the BIO says "retry", SSL_read returns
// SSL_ERROR_WANT_READ, and only then, outside OpenSSL, does the reader wait for the engine. (A
// BIO that waited inside SSL_read would let the writer's coroutine enter SSL_write on the same
// SSL object in the middle of SSL_read, which OpenSSL does not allow.) The BIO accepts every
// write, so SSL_write always completes whole and leaves no half-done write behind; the writer
// then waits, outside OpenSSL, until its records are sent.
//
// Full duplex. One reader and one writer coroutine may use the socket at once:
// - Input belongs to the reader. It alone receives into the input buffer, always after
//   in_end, and only it compacts the buffer, before it starts a receive. The BIO consumes from
//   [in_begin, in_end) and never moves the indices' base, so a receive in flight (the engine
//   writes into the buffer while the reader waits) never conflicts with an SSL call another
//   coroutine makes meanwhile.
// - Output has two buffers. Whatever OpenSSL writes (records of SSL_write, a KeyUpdate or an
//   alert written during SSL_read, close_notify) is appended to `pending`; the coroutine that
//   flushes swaps it into `sending` and sends from there, so a send in flight reads a buffer
//   nobody appends to. Records leave in the order OpenSSL wrote them, which TLS requires.
// - One flush at a time (`flushing`). The writer flushes and waits (send, send_all, sendfile,
//   start_tls, close). The reader never waits on output: TLS 1.3 produces output during a read
//   only for a KeyUpdate answer or an alert, which need not precede anything but our next
//   record. So after an SSL call the reader sends what is pending with one non-blocking send,
//   and only when no writer is inside the socket (a writer inside will send it, after its own
//   records, before it returns); what the kernel does not take at once waits for the next
//   write call or close().
// TLS 1.2 renegotiation, the one exchange that would make a write wait for a read, is refused
// (SSL_OP_NO_RENEGOTIATION), and TLS 1.3 post-handshake client authentication is not enabled.
//
// What send() returns. SSL_write takes up to kWriteChunk bytes at a time; its records go out in
// one send. The call returns once the kernel has taken them. If its timeout passes (or cancel(cid)
// or close() interrupts it) after OpenSSL took the bytes but before all records were sent, the
// bytes count as sent, as bytes in the kernel's send buffer do: the rest of their records goes
// out first on the next write call or on close(), and they are never sent twice. The next call
// fails (ETIMEDOUT, ECANCELED) only if it cannot get that rest out in its own time.
//
// Memory and the hot path. Per socket: OpenSSL's own record buffers (about 2 x 17 KiB, kept:
// SSL_MODE_RELEASE_BUFFERS would free and allocate them around every read, which nginx accepts
// to save memory on idle connections), the input buffer (4 KiB, grown once to 32 KiB by bulk
// traffic), and the two output buffers, which grow to the largest batch
// written (at most kWriteChunk plus record overhead) and keep their capacity, so recv and send
// allocate nothing here in steady state; sendfile() adds a kWriteChunk buffer the first time.
// (OpenSSL 3.0 itself allocates a few 40-byte WPACKET records for every record SSL_write
// encrypts, and nothing in SSL_read: counted with CRYPTO_set_mem_functions over 10,000 small
// round trips. nginx pays the same.)
//
// Closing. close() cancels the waiting reader and writer as on a plain socket, waits for them to
// leave, then sends what the writer left unsent and a close_notify, waiting at most the write
// timeout and never more than kCloseNotifyLimit (1 s); it does not wait for the peer's
// close_notify (as Go and nginx do). Once the close_notify is out, what the peer sent and
// nobody read (most often the server's TLS 1.3 session tickets) is dropped without waiting, so
// that the kernel ends the connection with a FIN and not a reset, which would make the peer lose
// the last records it had received but not yet read. The destructor, and close() outside a
// coroutine or while its coroutine is unwound, only try a non-blocking send. What send() counted
// as sent and could not be handed over is lost with the descriptor: close() returns false then
// (the close_notify alone does not count: the peer sees a truncation, no data is lost).
// shutdown(SHUT_WR) sends close_notify the same way as close() when no writer is inside (with a
// writer inside it only shuts the TCP side, which the writer sees as EPIPE, as on a plain
// socket); if that fails it leaves the TCP side open (the bytes would be lost behind a FIN) and
// close() sends them.
#pragma once

#include <openssl/ssl.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "coring/common.hpp"
#include "coring/socket.hpp"
#include "io/socket_core.hpp"
#include "io/tls_context.hpp"

namespace coring::detail {

struct TlsSession {
  std::shared_ptr<TlsContextState> context;
  SSL* ssl = nullptr;  // freed when the descriptor is closed (release_tls)
  bool server = false;
  bool established = false;  // the handshake completed

  // Ciphertext received and not yet consumed by OpenSSL: [in_begin, in_end) of input.
  std::unique_ptr<char[]> input;
  size_t input_capacity = 0;
  size_t in_begin = 0;
  size_t in_end = 0;
  bool input_filled = false;   // the last receive filled the buffer: grow it (fill_input)
  bool transport_eof = false;  // the TCP stream ended (what OpenSSL then says decides)
  bool read_shut = false;      // shutdown(SHUT_RD) here: the stream's end is ours, not a cut

  // Ciphertext OpenSSL wrote, in order: `sending` from `sent` on, then `pending`.
  std::string pending;
  std::string sending;
  size_t sent = 0;
  bool flushing = false;
  bool close_notify_queued = false;
  size_t close_notify_size = 0;  // its bytes, the last of the output once queued

  // A protocol failure (or a failed handshake): every later call repeats it.
  int failure = 0;
  std::string failure_text;  // SocketCore::error_text points here while it is the error

  std::string cache_key;  // a client's session-cache key ("name:port"), empty: not cached
  std::unique_ptr<char[]> file_buffer;  // sendfile()'s, made on first use

  bool has_output() const noexcept { return sent < sending.size() || !pending.empty(); }
  size_t unsent() const noexcept { return sending.size() - sent + pending.size(); }
  // Whether bytes send() counted as sent are still ours: output other than the close_notify,
  // after the handshake (its own flights, a KeyUpdate answer or an alert are not send()'s).
  bool data_unsent() const noexcept {
    return established && unsent() > (close_notify_queued ? close_notify_size : 0);
  }
};

// ---- for the rest of Socket (socket.cpp, socket_transport.cpp) -------------------------------

// recv()/send() on a TLS socket: plaintext in and out (see the header comment).
ssize_t tls_receive(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout);
ssize_t tls_transmit(SocketCore* core, Call& call, const void* data, size_t size, Duration timeout);

// sendfile() on a TLS socket: reads the file and sends it encrypted, kWriteChunk at a time.
ssize_t tls_sendfile(SocketCore* core, Call& call, int file_fd, int64_t offset, size_t count,
                     Duration timeout);

// check_liveness() on a TLS socket: takes in what the engine holds without waiting and lets
// OpenSSL look at it, so that a peer's close_notify reads as closed and a session ticket does
// not read as data.
bool tls_check_liveness(SocketCore* core);

// close(), after begin_close(): waits for the cancelled calls to leave, then sends what is
// pending and a close_notify within the bound (see the header comment). False (error recorded)
// when what send() counted as sent could not be handed to the kernel: it is lost.
bool finish_tls(SocketCore* core);

// The destructor's close_notify: only what the kernel takes at once, only when no call is
// inside the socket. False (error recorded) when what send() counted as sent is left: it is lost.
bool close_notify_now(SocketCore* core) noexcept;

// shutdown(how) before the system call: close_notify when writing ends; remembers that reading
// ends here. False (error recorded) when the close_notify, and what send() left unsent before
// it, could not be handed to the kernel within the bound: the TCP side must not end then.
bool tls_shutdown(SocketCore* core, int how);

// recvfrom()/sendto() on a TLS socket: refused with EINVAL.
ssize_t refuse_on_tls(SocketCore* core) noexcept;

// When the descriptor is closed: frees the SSL object and the buffers.
void release_tls(SocketCore* core) noexcept;

// When the core is freed: the rest.
void destroy_tls(SocketCore* core) noexcept;

}  // namespace coring::detail

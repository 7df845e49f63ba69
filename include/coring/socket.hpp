// Coroutine sockets: TCP (IPv4, IPv6), UDP, and Unix stream and datagram sockets whose waits
// go through the scheduler's io_uring, so one thread serves thousands of connections.
//
// One reader and one writer. Read operations are accept() and the recv*() family; write
// operations are connect() and the send*() family. One coroutine may read while another writes
// (full duplex), but a second coroutine that starts a read while another one is reading (or a
// write while another one is writing) throws coring::BindError with Swoole's exact text.
//
// How things fail. Calls return -1 / false / an empty optional and record why in error() (an
// errno value) and error_message():
// - ETIMEDOUT: the timeout passed. Defaults: connect 10 s, read and write 60 s, settable per
//   socket and process-wide (set_default_timeouts); pass kForever for no limit, zero or less
//   for "do not wait". After a read timeout the socket stays usable and loses no data.
// - ECANCELED: cancel(cid) interrupted the waiting coroutine, or close() was called by another
//   coroutine while this one waited. close() makes every waiter return at once and releases the
//   descriptor only after they have all woken, so a recycled fd number can never receive data
//   meant for this socket. Every call after close() fails with EBADF.
// - ECONNREFUSED, ECONNRESET, EPIPE, EHOSTUNREACH...: what the kernel said. SIGPIPE never kills
//   the process: every send uses MSG_NOSIGNAL, and every container sets SIGPIPE to SIG_IGN
//   when it starts if it is at its default (a handler the application installed is kept).
// - recv() returns 0 when the peer closed its side.
// - EMSGSIZE: recv_packet() met a packet larger than Protocol::package_max_length; EBADMSG: a
//   length field that gives a packet shorter than the header that holds it (a length of 0 in
//   a "length includes the header" layout). After either, every read fails with the same error
//   (the stream cannot be re-synchronised); writing still works.
// - EMSGSIZE also: a datagram larger than the buffer given to recv() or recvfrom(). The call
//   returns -1; the buffer holds the datagram's first bytes (exactly the buffer's size) and
//   the rest is lost, as the kernel drops it; recvfrom() still fills in host and port.
// - EINVAL: a size larger than SSIZE_MAX (a negative length cast to size_t). Buffers of 4 GiB
//   and more are fine: stream calls move them in pieces the kernel takes.
// - Names are resolved with coring::resolve() (see system.hpp): numeric addresses without a
//   syscall, names on a worker thread; a name that cannot be resolved fails connect() with the
//   resolver's error (ENXIO: no such name, EINVAL: malformed).
// TLS: start_tls() runs a TLS handshake on a connected (client) or accepted (server) stream
// socket; afterwards every call above works on the plaintext, with the same rules (see tls.hpp
// for the context, the errors, and why kernel TLS is not used). What differs:
// - recv() returns 0 at the peer's close_notify; a peer that ends the TCP connection without one
//   (in the middle of a record or between records) fails the read with ECONNRESET.
// - send() returns once the kernel has taken the records of the bytes it accepted (at most
//   64 KiB per call). If its timeout passes, or cancel(cid) or close() interrupts it, after
//   OpenSSL encrypted them, the bytes count as sent (as bytes in the kernel's send buffer do):
//   the rest of their records leaves first on the next write call or on close(); nothing is
//   sent twice or lost. A call that cannot get that rest out in its own time fails.
// - close() sends a close_notify after what an interrupted writer left unsent, waiting at most
//   the write timeout and never more than 1 s for the kernel to take them (not for the peer's
//   answer); outside a coroutine, while unwound, and in the destructor only without waiting.
//   The socket is closed either way, but if the rest of what send() counted as sent could not
//   be handed over (a peer that does not read), it is lost and close() returns false: ETIMEDOUT
//   (or the reset that stopped it, ECONNRESET, EPIPE), EAGAIN where it may not wait (the
//   destructor cannot say: call close() first when it matters).
//   A close_notify that cannot leave loses no data; the peer sees ECONNRESET instead of the end.
//   shutdown(SHUT_WR) sends the close_notify the same way unless a writer is inside the socket;
//   if it cannot hand it over in that bound, it fails (ETIMEDOUT; EAGAIN where it may not wait;
//   a reset, ECONNRESET or EPIPE) and leaves the TCP side open, so that nothing is lost behind
//   a FIN; a later shutdown() or close() tries again. close() interrupted by cancel(cid) of its
//   own coroutine while it sends fails with ECANCELED (the socket is closed all the same).
// - A protocol failure (EPROTO: a bad record, a fatal alert) or a failed handshake makes every
//   later read and write fail with the same error.
// - recvfrom() and sendto() fail with EINVAL.
// A Socket belongs to the thread (container) that uses it. Its state lives on the heap, shared
// with the operations waiting on it, so moving a Socket is always safe, and destroying one
// while another coroutine waits on it acts as close(): the waiter wakes with ECANCELED.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "coring/common.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {
namespace detail {
struct SocketCore;
struct AdoptedTag {};
}  // namespace detail

class TlsContext;

// Framing for recv_packet(), as Swoole's open_eof_check / open_length_check.
struct Protocol {
  // Non-empty: a packet ends with this delimiter (1 to 8 bytes), which stays in the packet.
  std::string eof;
  // 0: no length framing; otherwise the type of the length field, as pack() letters:
  // 'C' uint8, 'n' uint16 big-endian, 'N' uint32 big-endian, 'v' uint16 little-endian,
  // 'V' uint32 little-endian. The length field sits at length_offset; its value counts the bytes
  // after body_offset, so a packet is body_offset + length bytes long. (Swoole's "length
  // includes the header" layout is body_offset 0; a packet shorter than length_offset plus the
  // field's size is then a framing error, EBADMSG.)
  char length_type = 0;
  size_t length_offset = 0;
  size_t body_offset = 0;
  size_t package_max_length = 2 * 1024 * 1024;  // larger: EMSGSIZE
};

class Socket {
 public:
  enum class Type { tcp, tcp6, udp, udp6, unix_stream, unix_dgram };

  // "Use this socket's configured timeout for this kind of operation" (the default argument).
  static constexpr Duration kDefaultTimeout = Duration::min();

  // Creates the descriptor (non-blocking, close-on-exec; TCP gets TCP_NODELAY). If the kernel
  // refuses (EMFILE...), fd() is -1 and every call fails with that error.
  explicit Socket(Type type = Type::tcp);
  // Adopts a connected or listening descriptor (used by accept() and servers).
  Socket(int fd, Type type);
  Socket(Socket&& other) noexcept;
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();

  // Resolves host (for tcp/udp: IPv4 names, for tcp6/udp6: IPv6) and connects.
  bool connect(std::string_view host, uint16_t port, Duration timeout = kDefaultTimeout);
  // Unix sockets: connects to a filesystem path (or an abstract name starting with '@').
  bool connect(std::string_view unix_path, Duration timeout = kDefaultTimeout);
  // Binds to host:port ("0.0.0.0", "::", a name, or for Unix sockets a path and port 0).
  // TCP sockets get SO_REUSEADDR first. Port 0 picks a free port: see local_port().
  bool bind(std::string_view host, uint16_t port = 0);
  bool listen(int backlog = 511);
  // Waits for a connection. The accepted socket inherits this socket's timeouts.
  std::optional<Socket> accept(Duration timeout = kForever);

  ssize_t recv(void* buffer, size_t size, Duration timeout = kDefaultTimeout);  // 0: peer closed
  ssize_t send(const void* data, size_t size, Duration timeout = kDefaultTimeout);
  // Until size bytes, end of stream or an error; the timeout covers the whole call. Returns the
  // bytes moved if any (then error() tells why it stopped short: 0 for end of stream), else -1
  // (or 0 for recv_all at end of stream).
  ssize_t recv_all(void* buffer, size_t size, Duration timeout = kDefaultTimeout);
  ssize_t send_all(const void* data, size_t size, Duration timeout = kDefaultTimeout);
  // Sends count bytes of an open file from offset, the kernel copying them (sendfile(2)); a
  // stream socket only. Returns as send_all(); fewer bytes with error() 0 when the file ends
  // first. A negative offset or a count too large to count: -1 with EINVAL; a file_fd that
  // sendfile(2) cannot read: -1 with the kernel's errno (EBADF, ESPIPE for a pipe, EINVAL).
  // (Reading a file that is not in the page cache blocks the thread, as in nginx. sendfile(2)
  // has no MSG_NOSIGNAL: a peer that reset the connection raises SIGPIPE, which coring ignores
  // unless the application installed a handler of its own, see the header comment.)
  // On a TLS socket the file is read with pread(2) in 64 KiB pieces and sent encrypted as
  // send_all() would (a file_fd that cannot be read: pread's errno, ESPIPE for a pipe).
  ssize_t sendfile(int file_fd, int64_t offset, size_t count, Duration timeout = kDefaultTimeout);
  // One packet framed by set_protocol(). The view points into the socket's own buffer and stays
  // valid until the next read call on this socket. An empty view means the peer closed between
  // packets; a close in the middle of a packet fails with ECONNRESET. Without framing, returns
  // whatever one recv() brings.
  std::optional<std::string_view> recv_packet(Duration timeout = kDefaultTimeout);

  // Datagrams (UDP, Unix datagram). For Unix datagram sockets host is a path and port is ignored.
  ssize_t sendto(std::string_view host, uint16_t port, const void* data, size_t size);
  ssize_t recvfrom(void* buffer, size_t size, std::string* host, uint16_t* port,
                   Duration timeout = kDefaultTimeout);

  bool shutdown(int how = SHUT_RDWR);  // a reader waiting in recv() then sees end of stream
  bool close();  // see the header comment; true if it was open (TLS: and nothing was lost)

  // Whether the connection still works as far as this end can tell without sending anything
  // (Swoole's checkLiveness): what a connection pool asks of a socket that sat idle, so that it
  // never hands out one whose peer closed it meanwhile (a server's keep-alive timeout, a
  // restart). It looks, without waiting and without taking anything, at what the socket holds:
  // - true: open and nothing is known to be wrong: no data pending, or data pending (bytes
  //   recv_packet() buffered count too). A peer that sent something and then closed therefore
  //   looks alive until that data is read; a pool that expects silence on an idle connection
  //   (HTTP) may treat unexpected bytes as a failure itself.
  // - false, error() 0 and error_message() "the peer closed the connection": end of stream (the
  //   peer closed or shut down its side, or this side shut down reading).
  // - false with error(): ECONNRESET (a reset: the kernel reports it once, after which the
  //   socket reads as end of stream), ETIMEDOUT (keep-alive probes went unanswered), EPIPE...,
  //   what the kernel reports; ENOTCONN for a socket that is not connected (a
  //   listener); EBADF after close() or for a moved-from Socket (the constructor's errno if the
  //   descriptor could never be made); EMSGSIZE/EBADMSG after a framing error (see
  //   recv_packet(): the stream cannot be used any more).
  // - Datagram sockets have no connection to lose: true while open, unless the kernel holds an
  //   error for the socket (ECONNREFUSED from an ICMP message), which it then reports once.
  // It is a non-blocking peek of one byte through the event engine, which may hold bytes it
  // already received for the socket: nothing is consumed, so what is pending is still there
  // for the next recv(). A peer's close is seen once the engine knows of it: at once where the
  // engine asks the kernel, and with the io_uring engine's receive-ahead once the container's
  // loop has collected the completion that reports it (a socket that sat idle while the loop
  // ran has had that happen long since).
  // It never waits, so it needs no coroutine, a timeout or a cancellation never applies, it
  // may run while another coroutine waits in recv() on the socket (no BindError), and it
  // behaves the same while its coroutine is being unwound. It sends nothing: a peer that
  // vanished without a FIN or a reset (a cable pulled, a host gone) is only found by writing
  // or by TCP keep-alive (set_keepalive).
  // On a TLS socket it lets OpenSSL look at what has arrived (still without waiting, and
  // keeping it for recv()): records of application data count as pending data, the peer's
  // close_notify as closed (error() 0), a TLS 1.3 session ticket or KeyUpdate as nothing; while
  // another coroutine reads the socket it does not look and returns true.
  bool check_liveness();

  void set_timeout(Duration timeout);  // read and write
  void set_timeouts(Duration connect, Duration read, Duration write);
  Duration connect_timeout() const noexcept;
  Duration read_timeout() const noexcept;
  Duration write_timeout() const noexcept;
  // Process-wide defaults for sockets created afterwards (initially 10 s, 60 s, 60 s).
  static void set_default_timeouts(Duration connect, Duration read, Duration write);

  void set_protocol(const Protocol& protocol);
  bool set_nodelay(bool on);
  bool set_keepalive(bool on, int idle_seconds = 60, int interval_seconds = 5, int count = 3);
  bool set_linger(bool on, int seconds);

  // ---- TLS (see tls.hpp) ----
  // The TLS handshake, with ctx's role: a client context on a connected socket, a server
  // context on an accepted one. A client sends server_name as SNI and verifies the server's
  // certificate against it (an IP address is checked against the certificate's IP entries and
  // sent without SNI); empty: the host name connect() was given, which must then not be empty
  // when the context verifies (EINVAL otherwise). A server ignores server_name; it reads the
  // client's with tls_server_name() afterwards. A client offers its context's remembered
  // session for this server name and port (tls_session_reused() tells whether it was taken).
  // The timeout covers the whole handshake; by default it is the connect timeout for a client
  // (the handshake finishes connecting) and the read timeout for a server (it is the
  // connection's first read). Bytes recv_packet() had buffered before the call are taken as the
  // start of the peer's handshake (a protocol that upgrades to TLS in the middle, as STARTTLS).
  // Needs both the read and the write side: BindError while another coroutine reads or writes.
  // Returns true once the handshake has completed; false with error():
  // - EPROTO with OpenSSL's reason in error_message(): verification ("TLS handshake failed:
  //   certificate verify failed: certificate has expired", "...: hostname mismatch"), a peer
  //   that does not speak TLS ("...: wrong version number"), a peer's alert, see tls.hpp.
  // - ECONNRESET: the peer closed the connection in the middle of the handshake.
  // - ETIMEDOUT (zero or negative timeout: only if the handshake cannot complete without
  //   waiting, which it never can), ECANCELED (cancel(cid), or close() from another coroutine,
  //   which sends no close_notify for a handshake that did not finish), EPIPE...
  // - EINVAL: a datagram socket (DTLS is not supported), a TlsContext that was moved from, or
  //   a verifying client without a name; EALREADY: start_tls() was already called; EBADF
  //   after close(). While the coroutine is unwound it fails with ECANCELED as every wait does.
  // After a failure every read and write fails with the handshake's error: close the socket
  // (a server goes on with its other connections).
  bool start_tls(const TlsContext& ctx, std::string_view server_name = {},
                 Duration timeout = kDefaultTimeout);
  // What the handshake settled ("" / false before a successful start_tls() and after close()).
  bool is_tls() const noexcept;              // start_tls() succeeded and the socket is open
  std::string tls_alpn() const;              // the negotiated application protocol
  std::string tls_server_name() const;       // server: the client's SNI; client: the name sent
  std::string tls_version() const;           // "TLSv1.3", "TLSv1.2"
  bool tls_session_reused() const noexcept;  // the handshake resumed an earlier session

  int fd() const noexcept;
  Type type() const noexcept;
  bool is_open() const noexcept { return fd() >= 0; }
  uint16_t local_port() const;       // 0 when unknown
  std::string peer_address() const;  // "ip:port" ("[ip6]:port"), the path for Unix, "" unknown
  std::error_code error() const noexcept;
  std::string_view error_message() const noexcept;

  // Internal: adopts a descriptor known to be non-blocking (accept(), servers), no syscall.
  Socket(detail::AdoptedTag, int fd, Type type);

 private:
  detail::SocketCore* core_ = nullptr;
};

}  // namespace coring

#pragma GCC visibility pop

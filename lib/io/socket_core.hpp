// The state behind a Socket and the rules every call on it follows, shared by the files that
// make up coring::Socket. Private to the library.
//
// socket.cpp: the socket's lifetime (construction, close, destruction, move), the one-reader/
//   one-writer rule (Call), bind/listen, options and queries.
// socket_transport.cpp: moving bytes and connections through the event engine: connect,
//   accept, recv/send and their _all forms, datagrams.
// socket_framing.cpp: recv_packet() and the Protocol it frames by.
// tls_session.cpp: start_tls() and the TLS layer that receive() and transmit() pass through once
//   a socket speaks TLS (see io/tls_session.hpp).
//
// Lifetime. The state lives in a heap SocketCore shared by the Socket object and by every
// coroutine inside a call on it (`active`). close() (or the destructor) marks it closed and asks
// the engine to cancel the pending read and write; the descriptor is closed when the last of
// those calls has returned, and the core is freed when, in addition, no Socket object and no
// close() refers to it. So a recycled fd number can never receive data meant for a socket that
// is being closed, and a coroutine may destroy or replace its Socket while another one's close()
// of it still waits.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/io_op.hpp"
#include "core/scheduler.hpp"
#include "coring/detail/wait.hpp"
#include "coring/socket.hpp"
#include "io/address.hpp"

namespace coring::detail {

struct TlsSession;

struct SocketCore {
  int fd = -1;
  Socket::Type type = Socket::Type::tcp;
  int error = 0;
  const char* error_text = nullptr;
  bool closed = false;  // close() was called: new calls fail with EBADF
  int open_error = 0;   // why the descriptor could not be made (calls fail with it)
  bool owned = true;    // a Socket object still refers to this core
  // A framing error (EMSGSIZE, EBADMSG): the stream cannot be re-synchronised, so every later
  // read fails with it.
  int framing_error = 0;
  const char* framing_error_text = nullptr;
  bool more_to_read = false;  // the last recv left data in the socket (the engine's `more`)
  int active = 0;             // coroutines inside a call on this socket
  int closers = 0;            // coroutines inside close(), waiting for those calls to leave
  long reader_cid = 0;
  long writer_cid = 0;
  IoOp* read_op = nullptr;
  IoOp* write_op = nullptr;
  WaitList close_waiters;
  Duration connect_timeout;
  Duration read_timeout;
  Duration write_timeout;

  // recv_packet(): bytes [begin, end) of buffer are unread; the first packet_size of them were
  // handed out by the last recv_packet() and are dropped by the next read call.
  Protocol protocol;
  int framing = 0;  // 0 none, 1 eof, 2 length, -1 invalid protocol
  std::string buffer;
  size_t begin = 0;
  size_t end = 0;
  size_t packet_size = 0;
  size_t eof_scan_from = 0;

  // TLS (io/tls_session.hpp): set by start_tls(), freed with the core.
  TlsSession* tls = nullptr;
  // The host name connect() was given: the name a TLS client checks when start_tls() gets none.
  std::string connect_host;
  // A close() is sending the TLS close_notify: it waits inside the socket (counted in active)
  // for the calls it cancelled to leave; the last of them wakes it (settle()).
  bool finishing_tls = false;
};

int family_of(Socket::Type type);

int socktype_of(Socket::Type type);

bool is_tcp(Socket::Type type);

bool is_unix(Socket::Type type);

bool is_datagram(const SocketCore* core) noexcept;

void set_error(SocketCore* core, int error_number, const char* text = nullptr) noexcept;

// The error of a call on a socket that is not open: the constructor's (EMFILE...) if the
// descriptor could never be made, else EBADF.
void set_not_open_error(SocketCore* core) noexcept;

// Result of a read or write that returned -errno: records it and returns -1.
ssize_t failed(SocketCore* core, int32_t result);

Duration remaining(int64_t deadline) noexcept;

// The timeout a call uses: its argument, or the socket's configured one by default.
Duration pick(Duration timeout, Duration configured) noexcept;

// A size the ssize_t result cannot count (a negative length cast to size_t, usually) is refused.
bool size_fits(SocketCore* core, size_t size) noexcept;

// Closes the descriptor once the socket is closed and no call is inside it any more, and frees
// the core once, in addition, no Socket object and no close() refers to it. (The Socket a
// close() was called on may be destroyed while that close() waits: its owner's coroutine, woken
// with ECANCELED, returns.)
void settle(SocketCore* core) noexcept;

// For the calls that do not wait (bind, listen, options): false once closed.
bool open_for_call(SocketCore* core) noexcept;

// The result of a plain syscall on the socket: true, or false with errno recorded.
bool syscall_succeeded(SocketCore* core, int result) noexcept;

bool begin_close(SocketCore* core) noexcept;

void configure_new_socket(SocketCore* core);

// One read or write call: binds the calling coroutine as the socket's reader or writer for the
// duration of the call (BindError when another one holds it) and keeps the core alive.
class Call {
 public:
  Call(SocketCore* core, bool reading) : core_(core), reading_(reading) {
    if (core == nullptr) return;  // moved-from Socket: ok() reports EBADF
    if (core->closed || core->fd < 0) {
      set_not_open_error(core);
      return;
    }
    Coroutine* self = running_coroutine();
    if (self == nullptr) {
      set_error(core, EPERM, "socket calls that wait must run inside a coroutine");
      return;
    }
    long& holder = reading ? core->reader_cid : core->writer_cid;
    if (holder != 0 && holder != self->id) {
      throw BindError(core->fd, holder, self->id,
                      reading ? BindError::Side::reading : BindError::Side::writing);
    }
    holder = self->id;
    ++core->active;
    bound_ = true;
  }
  // The write call of a close() that sends a TLS close_notify: the socket is already closed to
  // everyone else; this call keeps the descriptor open until it is done (see finish_tls()).
  struct Closing {};
  Call(SocketCore* core, Closing) : core_(core), reading_(false), closing_(true) {
    ++core->active;
    bound_ = true;
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
  ~Call() {
    if (!bound_) return;
    (reading_ ? core_->reader_cid : core_->writer_cid) = 0;
    --core_->active;
    settle(core_);
  }
  bool ok() const noexcept { return bound_; }
  bool closing() const noexcept { return closing_; }

  // Carries out op (kind and arguments filled in) as this call's pending read or write and
  // waits for it. Returns the result (-errno on failure, -ETIMEDOUT past the deadline).
  int32_t io(int64_t deadline, IoOp& op) {
    WaitPermit permit = begin_wait();
    if (!permit) return -permit.error;
    IoOp*& pending = reading_ ? core_->read_op : core_->write_op;
    pending = &op;
    struct Clear {
      IoOp*& pending;
      ~Clear() { pending = nullptr; }
    } clear{pending};
    int32_t result = run_io(permit, op, deadline);
    // cancel(cid) that lost the race with the operation's own completion: the data stays
    // delivered, but a looping call (send_all, recv_all, recv_packet) must not start another.
    if (op.cancel_reason == ECANCELED) cancel_requested_ = true;
    return result;
  }
  bool cancel_requested() const noexcept { return cancel_requested_; }

 private:
  SocketCore* core_;
  bool reading_;
  bool closing_ = false;
  bool bound_ = false;
  bool cancel_requested_ = false;
};

// ---- transport (socket_transport.cpp) ---------------------------------------------------------

// recv() without the packet buffer. Returns bytes, 0 at end of stream, or -1 (error set). On a
// TLS socket the bytes are the plaintext (tls_receive()).
ssize_t receive(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout);

// send(): bytes accepted, or -1 (error set). On a TLS socket: tls_transmit().
ssize_t transmit(SocketCore* core, Call& call, const void* data, size_t size, Duration timeout);

// The bytes on the wire, whatever the socket speaks: what receive() and transmit() do on a
// plain socket, and what the TLS layer moves its records with. send_bytes() does not check
// whether the socket was closed (the TLS close_notify is sent after close() began).
ssize_t receive_bytes(SocketCore* core, Call& call, void* buffer, size_t size, Duration timeout);
ssize_t send_bytes(SocketCore* core, Call& call, const void* data, size_t size, Duration timeout);

// The address of host:port for a call on this socket: a Unix path, a numeric address, or a name
// resolved within timeout (which waits: the caller holds a Call then, so that close() from
// another coroutine interrupts the resolution and the core outlives it). False with the error
// recorded; ECANCELED when the socket was closed while the name was resolved.
bool address_for(SocketCore* core, std::string_view host, uint16_t port, Duration timeout,
                 SocketAddress* address);

// Whether finding host's address may wait (a name to resolve), so needs a Call around it.
bool resolving_waits(SocketCore* core, std::string_view host);

// ---- framing (socket_framing.cpp) -------------------------------------------------------------

// Reads are refused after a framing error: the stream cannot be re-synchronised.
bool readable(SocketCore* core) noexcept;

// recv()/recv_all() after recv_packet(): the bytes it buffered come first. Returns how many
// were copied (0 when nothing was buffered).
size_t take_buffered(SocketCore* core, void* out, size_t size);

}  // namespace coring::detail

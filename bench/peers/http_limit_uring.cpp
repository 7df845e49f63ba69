// The HTTP benchmark's ceiling with io_uring: http_limit.cpp's canned responses (see
// canned_http.hpp) served the way io_uring does least per request. One thread, multishot
// accept, one multishot recv per connection into a provided-buffer ring (no SQE and no poll
// armed per request), the responses owed for what one completion brought sent by one SEND SQE,
// everything submitted and reaped in batches with DEFER_TASKRUN. Beside http_limit (epoll), it
// shows the least server CPU per request any io_uring server can reach on this machine and load
// generator: the floor below which no HTTP server, coring's included, can go.
//
// One send in flight per connection keeps the responses in order: requests counted while one
// is in flight are owed and go out in the next send.
//
//   http_limit_uring --port P
//
// Prints "listening on 127.0.0.1:P" once ready; runs until killed.
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "canned_http.hpp"

namespace {

using namespace canned_http;

constexpr unsigned kBuffers = 1024;  // a power of two
constexpr unsigned kBufferSize = 4096;
constexpr uint16_t kGroup = 1;

// user_data: the operation in the low byte, the descriptor above it.
enum : uint64_t { kAccept = 1, kRecv = 2, kSend = 3 };
uint64_t tag(uint64_t op, int fd) {
  return op | static_cast<uint64_t>(fd) << 8;
}

struct Connection {
  const Canned* canned = nullptr;  // chosen by the first read
  int matched = 0;                 // how much of "\r\n\r\n" the bytes read so far end with
  size_t owed = 0;                 // responses counted, not yet in a send
  size_t partial = 0;              // bytes of the first owed response already sent
  size_t sending = 0;              // bytes of the send in flight (0: none)
  bool closing = false;            // end of stream or an error: close once no send is in flight
};

io_uring ring;
io_uring_buf_ring* buffers;
std::vector<char> memory(static_cast<size_t>(kBuffers) * kBufferSize);
std::vector<Connection> connections;

io_uring_sqe* sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring);
  if (s == nullptr) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

void arm_recv(int fd) {
  io_uring_sqe* s = sqe();
  io_uring_prep_recv(s, fd, nullptr, 0, 0);
  s->ioprio |= IORING_RECV_MULTISHOT;
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = kGroup;
  io_uring_sqe_set_data64(s, tag(kRecv, fd));
}

void give_back(unsigned id) {
  io_uring_buf_ring_add(buffers, memory.data() + static_cast<size_t>(id) * kBufferSize, kBufferSize,
                        static_cast<unsigned short>(id), io_uring_buf_ring_mask(kBuffers), 0);
  io_uring_buf_ring_advance(buffers, 1);
}

// Sends what c owes (at most kBatch responses) if no send is in flight.
void pay(int fd, Connection& c) {
  if (c.sending != 0 || c.owed == 0) return;
  size_t count = c.owed < kBatch ? c.owed : kBatch;
  c.sending = count * c.canned->length - c.partial;
  io_uring_sqe* s = sqe();
  io_uring_prep_send(s, fd, c.canned->bytes.data() + c.partial, c.sending, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, tag(kSend, fd));
}

void drop(int fd) {
  connections[static_cast<size_t>(fd)] = Connection{};
  close(fd);  // ends its multishot recv
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--port") != 0) {
    std::fprintf(stderr, "usage: http_limit_uring --port P\n");
    return 2;
  }
  int port = std::atoi(argv[2]);
  render_date(std::time(nullptr));

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  setsockopt(listener, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // inherited when accepted
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 4096) != 0) {
    std::fprintf(stderr, "http_limit_uring: cannot listen on port %d: %s\n", port,
                 std::strerror(errno));
    return 1;
  }
  io_uring_params params{};
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
  params.cq_entries = 16384;
  if (int error = io_uring_queue_init_params(4096, &ring, &params); error < 0) {
    std::fprintf(stderr, "http_limit_uring: io_uring: %s\n", std::strerror(-error));
    return 1;
  }
  // The provided-buffer ring (liburing 2.3 has no io_uring_setup_buf_ring yet).
  void* ring_memory = nullptr;
  if (posix_memalign(&ring_memory, 4096, kBuffers * sizeof(io_uring_buf)) != 0) return 1;
  buffers = static_cast<io_uring_buf_ring*>(ring_memory);
  io_uring_buf_ring_init(buffers);
  io_uring_buf_reg registration{};
  registration.ring_addr = reinterpret_cast<uint64_t>(ring_memory);
  registration.ring_entries = kBuffers;
  registration.bgid = kGroup;
  if (int error = io_uring_register_buf_ring(&ring, &registration, 0); error < 0) {
    std::fprintf(stderr, "http_limit_uring: buffer ring: %s\n", std::strerror(-error));
    return 1;
  }
  for (unsigned id = 0; id < kBuffers; ++id) give_back(id);
  io_uring_sqe* s = sqe();
  io_uring_prep_multishot_accept(s, listener, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, tag(kAccept, listener));
  std::printf("listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);

  for (;;) {
    io_uring_submit_and_wait(&ring, 1);
    time_t now = std::time(nullptr);
    if (now != canned_second) render_date(now);
    unsigned head, count = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++count;
      uint64_t data = cqe->user_data;
      int fd = static_cast<int>(data >> 8);
      switch (data & 0xff) {
        case kAccept:
          if (cqe->res >= 0) {
            if (static_cast<size_t>(cqe->res) >= connections.size()) {
              connections.resize(static_cast<size_t>(cqe->res) * 2 + 1);
            }
            connections[static_cast<size_t>(cqe->res)] = Connection{};
            arm_recv(cqe->res);
          }
          if (!(cqe->flags & IORING_CQE_F_MORE)) {
            io_uring_sqe* again = sqe();
            io_uring_prep_multishot_accept(again, listener, nullptr, nullptr, SOCK_CLOEXEC);
            io_uring_sqe_set_data64(again, tag(kAccept, listener));
          }
          break;
        case kRecv: {
          Connection& c = connections[static_cast<size_t>(fd)];
          if (cqe->res <= 0) {
            if (cqe->res == -ENOBUFS) {
              arm_recv(fd);  // out of buffers for a moment: arm again
            } else if (c.sending == 0) {
              drop(fd);
            } else {
              c.closing = true;
            }
            break;
          }
          unsigned id = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          const char* bytes = memory.data() + static_cast<size_t>(id) * kBufferSize;
          auto n = static_cast<size_t>(cqe->res);
          if (c.canned == nullptr) c.canned = choose(bytes, n);
          c.owed += count_heads(c.matched, bytes, n);
          give_back(id);
          pay(fd, c);
          if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd);
          break;
        }
        case kSend: {
          Connection& c = connections[static_cast<size_t>(fd)];
          if (cqe->res < 0 || c.closing) {
            drop(fd);
            break;
          }
          size_t done = c.partial + static_cast<size_t>(cqe->res);
          c.owed -= done / c.canned->length;
          c.partial = done % c.canned->length;
          c.sending = 0;
          pay(fd, c);
          break;
        }
      }
    }
    io_uring_cq_advance(&ring, count);
  }
}

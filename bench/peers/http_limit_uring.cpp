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
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "canned_http.hpp"
#include "uring_peer.hpp"

namespace {

using namespace canned_http;
using namespace uring_peer;

struct Connection {
  const Canned* canned = nullptr;  // chosen by the first read
  int matched = 0;                 // how much of "\r\n\r\n" the bytes read so far end with
  size_t owed = 0;                 // responses counted, not yet in a send
  size_t partial = 0;              // bytes of the first owed response already sent
  size_t sending = 0;              // bytes of the send in flight (0: none)
  bool closing = false;            // end of stream or an error: close once no send is in flight
};

Peer peer;
std::vector<Connection> connections;

// Sends what c owes (at most kBatch responses) if no send is in flight.
void pay(int fd, Connection& c) {
  if (c.sending != 0 || c.owed == 0) return;
  size_t count = c.owed < kBatch ? c.owed : kBatch;
  c.sending = count * c.canned->length - c.partial;
  io_uring_sqe* s = peer.sqe();
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
  render_date(std::time(nullptr));
  if (!peer.start("http_limit_uring", std::atoi(argv[2]), 1024)) return 1;

  for (;;) {
    io_uring_submit_and_wait(&peer.ring, 1);
    time_t now = std::time(nullptr);
    if (now != canned_second) render_date(now);
    unsigned head, count = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&peer.ring, head, cqe) {
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
            peer.arm_recv(cqe->res);
          }
          if (!(cqe->flags & IORING_CQE_F_MORE)) peer.arm_accept();
          break;
        case kRecv: {
          Connection& c = connections[static_cast<size_t>(fd)];
          if (cqe->res <= 0) {
            if (cqe->res == -ENOBUFS) {
              peer.arm_recv(fd);  // out of buffers for a moment: arm again
            } else if (c.sending == 0) {
              drop(fd);
            } else {
              c.closing = true;
            }
            break;
          }
          unsigned id = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          const char* bytes = peer.buffer(id);
          auto n = static_cast<size_t>(cqe->res);
          if (c.canned == nullptr) c.canned = choose(bytes, n);
          c.owed += count_heads(c.matched, bytes, n);
          peer.give_back(id);
          pay(fd, c);
          if (!(cqe->flags & IORING_CQE_F_MORE)) peer.arm_recv(fd);
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
    io_uring_cq_advance(&peer.ring, count);
  }
}

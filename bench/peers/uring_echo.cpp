// What io_uring can do for the echo benchmark with no runtime at all: one thread, multishot
// accept, multishot recv into a provided-buffer ring (no SQE per receive, no poll armed per
// receive), one send SQE per message, everything submitted and reaped in batches with
// DEFER_TASKRUN. Beside epoll_echo (the same with epoll), it shows how much server CPU per
// round trip the best io_uring usage saves over epoll on this machine, whatever the runtime.
//
//   uring_echo --port P
//
// Prints "listening on 127.0.0.1:P" once ready; runs until killed.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "uring_peer.hpp"

using namespace uring_peer;

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--port") != 0) {
    std::fprintf(stderr, "usage: uring_echo --port P\n");
    return 2;
  }
  Peer peer;
  if (!peer.start("uring_echo", std::atoi(argv[2]), 4096)) return 1;

  for (;;) {
    io_uring_submit_and_wait(&peer.ring, 1);
    unsigned head, count = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&peer.ring, head, cqe) {
      ++count;
      uint64_t data = cqe->user_data;
      int fd = static_cast<int>(data >> 8);
      switch (data & 0xff) {
        case kAccept:
          if (cqe->res >= 0) peer.arm_recv(cqe->res);
          if (!(cqe->flags & IORING_CQE_F_MORE)) peer.arm_accept();
          break;
        case kRecv: {
          if (cqe->res <= 0) {
            if (cqe->res == -ENOBUFS) {
              peer.arm_recv(fd);  // out of buffers for a moment: arm again
            } else {
              close(fd);
            }
            break;
          }
          unsigned id = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          // One message per connection in flight: the send completes before the buffer is
          // needed again... but to be safe it is given back only when the send completes.
          io_uring_sqe* send = peer.sqe();
          io_uring_prep_send(send, fd, peer.buffer(id), static_cast<size_t>(cqe->res),
                             MSG_NOSIGNAL);
          io_uring_sqe_set_data64(send, tag(kSend, static_cast<int>(id)));
          if (!(cqe->flags & IORING_CQE_F_MORE)) peer.arm_recv(fd);
          break;
        }
        case kSend:
          peer.give_back(static_cast<unsigned>(fd));  // `fd` carries the buffer id here
          break;
      }
    }
    io_uring_cq_advance(&peer.ring, count);
  }
}

// What the io_uring peers in C (uring_echo.cpp, http_limit_uring.cpp) share: a listener on
// 127.0.0.1 with a multishot accept, and multishot receives into a provided-buffer ring, all on
// one ring set up with SINGLE_ISSUER | DEFER_TASKRUN. user_data carries the operation in its
// low byte and the descriptor (or a buffer id) above it.
#pragma once

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace uring_peer {

enum : uint64_t { kAccept = 1, kRecv = 2, kSend = 3 };

inline uint64_t tag(uint64_t op, int fd) {
  return op | static_cast<uint64_t>(fd) << 8;
}

class Peer {
 public:
  static constexpr unsigned kBufferSize = 4096;
  static constexpr uint16_t kGroup = 1;

  // buffers: a power of two. False (with a message naming `name`) when something failed.
  bool start(const char* name, int port, unsigned buffers) {
    buffer_count_ = buffers;
    memory_.resize(static_cast<size_t>(buffers) * kBufferSize);
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    setsockopt(listener_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // inherited when accepted
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        listen(listener_, 4096) != 0) {
      std::fprintf(stderr, "%s: cannot listen on port %d: %s\n", name, port, std::strerror(errno));
      return false;
    }
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    params.cq_entries = 16384;
    if (int error = io_uring_queue_init_params(4096, &ring, &params); error < 0) {
      std::fprintf(stderr, "%s: io_uring: %s\n", name, std::strerror(-error));
      return false;
    }
    // The provided-buffer ring (liburing 2.3 has no io_uring_setup_buf_ring yet).
    void* ring_memory = nullptr;
    if (posix_memalign(&ring_memory, 4096, buffers * sizeof(io_uring_buf)) != 0) return false;
    buffers_ = static_cast<io_uring_buf_ring*>(ring_memory);
    io_uring_buf_ring_init(buffers_);
    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<uint64_t>(ring_memory);
    registration.ring_entries = buffers;
    registration.bgid = kGroup;
    if (int error = io_uring_register_buf_ring(&ring, &registration, 0); error < 0) {
      std::fprintf(stderr, "%s: buffer ring: %s\n", name, std::strerror(-error));
      return false;
    }
    for (unsigned id = 0; id < buffers; ++id) give_back(id);
    arm_accept();
    std::printf("listening on 127.0.0.1:%d\n", port);
    std::fflush(stdout);
    return true;
  }

  io_uring_sqe* sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (s == nullptr) {
      io_uring_submit(&ring);
      s = io_uring_get_sqe(&ring);
    }
    return s;
  }

  void arm_accept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, listener_, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, tag(kAccept, listener_));
  }

  void arm_recv(int fd) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, fd, nullptr, 0, 0);
    s->ioprio |= IORING_RECV_MULTISHOT;
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kGroup;
    io_uring_sqe_set_data64(s, tag(kRecv, fd));
  }

  char* buffer(unsigned id) { return memory_.data() + static_cast<size_t>(id) * kBufferSize; }

  void give_back(unsigned id) {
    io_uring_buf_ring_add(buffers_, buffer(id), kBufferSize, static_cast<unsigned short>(id),
                          io_uring_buf_ring_mask(buffer_count_), 0);
    io_uring_buf_ring_advance(buffers_, 1);
  }

  io_uring ring{};

 private:
  int listener_ = -1;
  unsigned buffer_count_ = 0;
  io_uring_buf_ring* buffers_ = nullptr;
  std::vector<char> memory_;
};

}  // namespace uring_peer

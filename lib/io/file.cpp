// read_file()/write_file() through the scheduler's ring: open, read or write, close, each an
// io_uring operation the coroutine waits for while the others run.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "core/io_op.hpp"
#include "core/scheduler.hpp"
#include "coring/system.hpp"

namespace coring {
namespace detail {
namespace {

// One ring operation, waited for without a deadline; -errno on failure.
template <class Prepare>
int32_t ring_call(const WaitPermit& permit, Prepare&& prepare) {
  IoOp op;
  int error = 0;
  io_uring_sqe* sqe = prepare_io(permit, op, &error);
  if (sqe == nullptr) return -error;
  prepare(sqe);
  return wait_io(permit, op, INT64_MAX);
}

// Through the ring when the caller may wait; otherwise (outside a coroutine, in a destructor
// while its coroutine is unwound, in a forked child) with plain blocking syscalls: a file
// operation always ends by itself, so blocking the thread for it loses nothing.
class FileApi {
 public:
  FileApi() : permit_(begin_wait()), ring_(static_cast<bool>(permit_)) {}

  int open(const char* path, int flags, mode_t mode) {
    if (!ring_) {
      int fd = ::open(path, flags, mode);
      return fd < 0 ? -errno : fd;
    }
    return ring_call(permit_, [&](io_uring_sqe* sqe) {
      io_uring_prep_openat(sqe, AT_FDCWD, path, flags, mode);
    });
  }
  ssize_t read(int fd, char* buffer, size_t size, off_t offset) {
    if (!ring_) {
      ssize_t n = ::pread(fd, buffer, size, offset);
      return n < 0 ? -errno : n;
    }
    return ring_call(permit_, [&](io_uring_sqe* sqe) {
      io_uring_prep_read(sqe, fd, buffer, static_cast<unsigned>(size),
                         static_cast<uint64_t>(offset));
    });
  }
  ssize_t write(int fd, const char* data, size_t size, off_t offset) {
    if (!ring_) {
      ssize_t n = offset < 0 ? ::write(fd, data, size) : ::pwrite(fd, data, size, offset);
      return n < 0 ? -errno : n;
    }
    return ring_call(permit_, [&](io_uring_sqe* sqe) {
      // offset -1: the file position (O_APPEND files append there).
      io_uring_prep_write(sqe, fd, data, static_cast<unsigned>(size),
                          static_cast<uint64_t>(offset));
    });
  }
  // A plain close(2) even in a coroutine: through the ring it could be cancelled (cancel(cid))
  // while queued, and the descriptor would leak. Closing a local file does not wait on the
  // device (on NFS it flushes, which blocks this thread for that long).
  int close(int fd) { return ::close(fd) < 0 ? -errno : 0; }

 private:
  WaitPermit permit_;
  bool ring_;
};

constexpr size_t kChunk = 1 << 20;  // one read or write never asks for more than this

}  // namespace
}  // namespace detail

std::optional<std::string> read_file(const std::string& path) {
  using namespace detail;
  FileApi files;
  int fd = files.open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    set_last_error(-fd);
    return std::nullopt;
  }
  std::string content;
  size_t size = 0;
  size_t capacity = 64 * 1024;
  for (;;) {
    if (content.size() < size + capacity) content.resize(size + capacity);
    ssize_t n =
        files.read(fd, content.data() + size, std::min(capacity, kChunk), static_cast<off_t>(size));
    if (n < 0) {
      files.close(fd);
      set_last_error(static_cast<int>(-n));
      return std::nullopt;
    }
    if (n == 0) break;
    size += static_cast<size_t>(n);
    if (capacity < kChunk) capacity *= 2;
  }
  content.resize(size);
  files.close(fd);
  return content;
}

bool write_file(const std::string& path, std::string_view data, bool append) {
  using namespace detail;
  FileApi files;
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  int fd = files.open(path.c_str(), flags, 0644);
  if (fd < 0) {
    set_last_error(-fd);
    return false;
  }
  size_t written = 0;
  while (written < data.size()) {
    size_t chunk = std::min(data.size() - written, kChunk);
    ssize_t n = files.write(fd, data.data() + written, chunk,
                            append ? off_t{-1} : static_cast<off_t>(written));
    if (n <= 0) {
      files.close(fd);
      set_last_error(n == 0 ? EIO : static_cast<int>(-n));
      return false;
    }
    written += static_cast<size_t>(n);
  }
  int closed = files.close(fd);
  if (closed < 0) {
    set_last_error(-closed);
    return false;
  }
  return true;
}

}  // namespace coring

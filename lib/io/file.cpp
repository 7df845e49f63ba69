// read_file()/write_file(): open, read or write, close. In a coroutine they never block the
// scheduler: with an engine that does files itself (io_uring) each step is an operation the
// coroutine waits for while the others run; with one that cannot wait for a regular file (epoll)
// the whole job runs on the offload pool. Outside a coroutine, or where a coroutine may not
// wait, they are plain blocking system calls.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <optional>
#include <string>

#include "core/io_op.hpp"
#include "core/scheduler.hpp"
#include "coring/system.hpp"

namespace coring {
namespace detail {
namespace {

constexpr size_t kChunk = 1 << 20;  // one read or write never asks for more than this

// The steps of a file job, as engine operations the coroutine waits for (`permit` set) or as
// blocking system calls (not set). Results are -errno on failure.
class FileSteps {
 public:
  explicit FileSteps(const WaitPermit* permit) : permit_(permit) {}

  int open(const char* path, int flags, mode_t mode) {
    if (permit_ == nullptr) {
      int fd = ::open(path, flags, mode);
      return fd < 0 ? -errno : fd;
    }
    IoOp op;
    op.kind = OpKind::file_open;
    op.path = path;
    op.flags = flags;
    op.mode = mode;
    return run_io(*permit_, op, INT64_MAX);
  }
  ssize_t read(int fd, char* buffer, size_t size, off_t offset) {
    if (permit_ == nullptr) {
      ssize_t n = ::pread(fd, buffer, size, offset);
      return n < 0 ? -errno : n;
    }
    return transfer(OpKind::file_read, fd, buffer, size, offset);
  }
  ssize_t write(int fd, const char* data, size_t size, off_t offset) {
    if (permit_ == nullptr) {
      ssize_t n = offset < 0 ? ::write(fd, data, size) : ::pwrite(fd, data, size, offset);
      return n < 0 ? -errno : n;
    }
    return transfer(OpKind::file_write, fd, const_cast<char*>(data), size, offset);
  }
  // A plain close(2) even in a coroutine: as an operation it could be cancelled (cancel(cid))
  // while queued, and the descriptor would leak. Closing a local file does not wait on the
  // device (on NFS it flushes, which blocks this thread for that long).
  int close(int fd) { return ::close(fd) < 0 ? -errno : 0; }

 private:
  ssize_t transfer(OpKind kind, int fd, char* buffer, size_t size, off_t offset) {
    IoOp op;
    op.kind = kind;
    op.fd = fd;
    op.buffer = buffer;
    op.length = static_cast<uint32_t>(std::min(size, kChunk));
    op.offset = offset;  // -1: the file position (an O_APPEND file appends there)
    return run_io(*permit_, op, INT64_MAX);
  }

  const WaitPermit* permit_;
};

struct ReadResult {
  std::optional<std::string> content;
  int error = 0;
};

ReadResult read_whole(FileSteps& files, const std::string& path) {
  int fd = files.open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return {std::nullopt, -fd};
  std::string content;
  size_t size = 0;
  size_t capacity = 64 * 1024;
  for (;;) {
    if (content.size() < size + capacity) content.resize(size + capacity);
    ssize_t n =
        files.read(fd, content.data() + size, std::min(capacity, kChunk), static_cast<off_t>(size));
    if (n < 0) {
      files.close(fd);
      return {std::nullopt, static_cast<int>(-n)};
    }
    if (n == 0) break;
    size += static_cast<size_t>(n);
    if (capacity < kChunk) capacity *= 2;
  }
  content.resize(size);
  files.close(fd);
  return {std::move(content), 0};
}

// 0 or an errno.
int write_whole(FileSteps& files, const std::string& path, std::string_view data, bool append) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  int fd = files.open(path.c_str(), flags, 0644);
  if (fd < 0) return -fd;
  size_t written = 0;
  while (written < data.size()) {
    size_t chunk = std::min(data.size() - written, kChunk);
    ssize_t n = files.write(fd, data.data() + written, chunk,
                            append ? off_t{-1} : static_cast<off_t>(written));
    if (n <= 0) {
      files.close(fd);
      return n == 0 ? EIO : static_cast<int>(-n);
    }
    written += static_cast<size_t>(n);
  }
  int closed = files.close(fd);
  return closed < 0 ? -closed : 0;
}

// Runs job(steps) the way the calling code may: engine operations in a coroutine of an engine
// with native files, the offload pool in a coroutine of one without, blocking calls otherwise
// (outside a coroutine, in a destructor of an unwound coroutine, in a forked child: a file
// operation always ends by itself, so blocking the thread for it loses nothing).
template <class Job>
auto run_file_job(Job&& job) {
  WaitPermit permit = running_coroutine() != nullptr ? begin_wait() : WaitPermit{};
  if (permit && tls_scheduler->engine().native_files()) {
    FileSteps steps(&permit);
    return job(steps);
  }
  FileSteps blocking(nullptr);
  if (permit) return offload([&] { return job(blocking); });
  return job(blocking);
}

}  // namespace
}  // namespace detail

std::optional<std::string> read_file(const std::string& path) {
  detail::ReadResult result = detail::run_file_job(
      [&](detail::FileSteps& files) { return detail::read_whole(files, path); });
  if (result.error != 0) detail::set_last_error(result.error);
  return std::move(result.content);
}

bool write_file(const std::string& path, std::string_view data, bool append) {
  int error = detail::run_file_job(
      [&](detail::FileSteps& files) { return detail::write_whole(files, path, data, append); });
  if (error != 0) detail::set_last_error(error);
  return error == 0;
}

}  // namespace coring

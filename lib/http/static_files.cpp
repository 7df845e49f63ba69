#include "http/static_files.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "core/logging.hpp"
#include "http/exchange.hpp"

namespace coring::http::detail {
namespace {

// Set once openat2 was refused (by the kernel or a seccomp filter): process-wide, like the
// refusal.
std::atomic<bool> openat2_refused{false};

class Root {
 public:
  explicit Root(std::string directory) : directory_(std::move(directory)) {
    fd_ = ::open(directory_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd_ < 0) {
      error_ = errno;
      return;
    }
    char resolved[PATH_MAX];
    if (::realpath(directory_.c_str(), resolved) != nullptr) real_ = resolved;
  }
  ~Root() {
    if (fd_ >= 0) ::close(fd_);
  }
  Root(const Root&) = delete;
  Root& operator=(const Root&) = delete;

  // The file at relative (no leading '/'), opened for reading, or -1 (errno).
  int open_beneath(int directory_fd, const std::string& relative) const {
    if (!openat2_refused.load(std::memory_order_relaxed)) {
      open_how how{};
      how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
      how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
      long fd = ::syscall(SYS_openat2, directory_fd, relative.c_str(), &how, sizeof how);
      // ENOSYS: a kernel before 5.6, or a seccomp profile that refuses what it does not know
      // (Docker's); EPERM: an older profile's way of refusing. The fallback is as strict, so
      // the refusal is remembered instead of paid for on every request.
      if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return static_cast<int>(fd);
      openat2_refused.store(true, std::memory_order_relaxed);
    }
    // Without openat2: open, then check where the file really is.
    int opened = ::openat(directory_fd, relative.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (opened < 0) return -1;
    char link[64];
    char target[PATH_MAX];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", opened);
    ssize_t length = ::readlink(link, target, sizeof target - 1);
    if (length <= 0 || real_.empty() ||
        std::string_view(target, static_cast<size_t>(length)).substr(0, real_.size()) != real_ ||
        (static_cast<size_t>(length) > real_.size() && target[real_.size()] != '/')) {
      ::close(opened);
      errno = EXDEV;
      return -1;
    }
    return opened;
  }

  int fd() const noexcept { return fd_; }
  int error() const noexcept { return error_; }
  const std::string& directory() const noexcept { return directory_; }
  bool reported = false;

 private:
  std::string directory_;
  std::string real_;
  int fd_ = -1;
  int error_ = 0;
};

void not_found(Response& response) {
  response.status(404);
  response.header("Content-Type", "text/plain; charset=utf-8");
  response.end("Not Found\n");
}

// The percent-decoded path below the prefix as a relative path ("a/b.txt"; "." for the
// directory itself), or false when it must not be served. Only one spelling of a path is
// served: routes are matched on the raw path, so "/static/./private" or "/static/%70rivate"
// must not reach a file that a route for "/static/private" guards. Refused: "." and ".."
// segments, empty segments (but a trailing '/'), and escapes of what needs none (letters,
// digits, "-._~" and '/'), besides NUL bytes and malformed escapes.
bool relative_path(std::string_view rest, std::string& relative) {
  std::string decoded;
  if (!percent_decode(rest, decoded, false)) return false;
  if (decoded.find('\0') != std::string::npos) return false;
  for (size_t i = 0; i + 2 < rest.size(); ++i) {
    if (rest[i] != '%') continue;
    auto c = static_cast<unsigned char>(hex_value(rest[i + 1]) * 16 + hex_value(rest[i + 2]));
    if (std::isalnum(c) || std::strchr("-._~/", c) != nullptr) return false;
  }
  std::string_view path = decoded;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  relative.clear();
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view segment = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (segment.empty()) {
      if (path.empty() && slash != std::string_view::npos) break;  // a trailing '/'
      return false;  // "//": an absolute path after the prefix, or an empty segment
    }
    if (segment == "." || segment == "..") return false;
    if (!relative.empty()) relative += '/';
    relative.append(segment);
  }
  if (relative.empty()) relative = ".";
  return true;
}

void serve(const Root& root, const std::string& prefix, Request& request, Response& response) {
  std::string_view method = request.method();
  if (method != "GET" && method != "HEAD") {
    response.status(405);
    response.header("Allow", "GET, HEAD");
    response.header("Content-Type", "text/plain; charset=utf-8");
    response.end("Method Not Allowed\n");
    return;
  }
  if (root.fd() < 0) {
    if (!const_cast<Root&>(root).reported) {
      const_cast<Root&>(root).reported = true;
      coring::detail::log_format(LogLevel::error, "serve_directory: cannot open %s: %s",
                                 root.directory().c_str(), std::strerror(root.error()));
    }
    not_found(response);
    return;
  }
  std::string_view path = request.path();
  std::string_view rest = prefix == "/" ? path : path.substr(prefix.size());
  std::string relative;
  if (!relative_path(rest, relative)) {
    not_found(response);
    return;
  }
  int fd = root.open_beneath(root.fd(), relative);
  if (fd < 0) {
    not_found(response);
    return;
  }
  struct stat status {};
  if (::fstat(fd, &status) == 0 && S_ISDIR(status.st_mode)) {
    int index = root.open_beneath(fd, "index.html");
    ::close(fd);
    fd = index;
    relative += "/index.html";
    if (fd < 0 || ::fstat(fd, &status) != 0) {
      if (fd >= 0) ::close(fd);
      not_found(response);
      return;
    }
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    not_found(response);
    return;
  }
  char modified[29];
  format_http_date(status.st_mtim.tv_sec, modified);
  response.header("Last-Modified", std::string_view(modified, sizeof modified));
  if (auto since = request.header("if-modified-since")) {
    int64_t when = parse_http_date(*since);
    if (when >= 0 && status.st_mtim.tv_sec <= when) {
      ::close(fd);
      response.status(304);
      response.end();
      return;
    }
  }
  response.header("Content-Type", content_type_for(relative));
  response.sendfile(fd, 0, static_cast<uint64_t>(status.st_size));
  ::close(fd);
}

}  // namespace

Handler directory_handler(std::string prefix, std::string directory) {
  auto root = std::make_shared<Root>(std::move(directory));
  return [prefix = std::move(prefix), root](Request& request, Response& response) {
    serve(*root, prefix, request, response);
  };
}

}  // namespace coring::http::detail

// Static files for http::Server::serve_directory: the handler that maps a path under a prefix
// to a file under a directory, and never to anything outside it.
//
// The kernel enforces the boundary: files are opened relative to the directory's descriptor
// with openat2(RESOLVE_BENEATH), which fails for "..", absolute paths and symlinks that would
// leave it (kernels before 5.6: the opened file's real path is checked instead). The path is
// also refused before that when, percent-decoded, it holds a NUL byte, a ".." segment or starts
// with a second '/'. Only regular files are served (O_NONBLOCK: a FIFO cannot block the open).
#pragma once

#include <string>

#include "coring/http_server.hpp"

namespace coring::http::detail {

Handler directory_handler(std::string prefix, std::string directory);

}  // namespace coring::http::detail

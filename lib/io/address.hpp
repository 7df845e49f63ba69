// Socket addresses: parsing numeric hosts without a syscall, Unix paths, formatting.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "coring/common.hpp"

namespace coring::detail {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  sockaddr* get() noexcept { return reinterpret_cast<sockaddr*>(&storage); }
  const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
};

// "127.0.0.1", "::1", "[::1]", and IPv6 with a scope: "fe80::1%eth0", "[fe80::1%2]" (family
// AF_INET, AF_INET6 or AF_UNSPEC). False when host is not a numeric address of an acceptable
// family (a NUL byte anywhere in it, an unknown interface name, included).
bool parse_numeric_address(std::string_view host, uint16_t port, int family, SocketAddress* out);

// A filesystem path, or an abstract name when it starts with '@'. Returns 0, EINVAL (empty, or
// a NUL byte in a filesystem path, where the kernel would silently stop at it) or ENAMETOOLONG
// (does not fit in sun_path).
int make_unix_address(std::string_view path, SocketAddress* out);

// host (numeric or a name, resolved through coring::resolve) and port. Returns 0 or an errno.
int resolve_address(std::string_view host, uint16_t port, int family, Duration timeout,
                    SocketAddress* out);

// "1.2.3.4" / "::1" / "fe80::1%eth0" / the Unix path (abstract names get their '@' back), and
// the port.
std::string format_host(const sockaddr* address, socklen_t length, uint16_t* port);

}  // namespace coring::detail

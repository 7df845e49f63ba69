#include "io/address.hpp"

#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

#include "coring/coroutine.hpp"
#include "coring/system.hpp"

namespace coring::detail {

namespace {

// The interface index of an IPv6 scope: a number, or an interface name. 0 if unknown.
uint32_t scope_index(std::string_view scope) {
  if (scope.empty() || scope.size() >= IF_NAMESIZE) return 0;
  if (std::all_of(scope.begin(), scope.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    unsigned long index = 0;
    for (char c : scope) {
      index = index * 10 + static_cast<unsigned long>(c - '0');
      if (index > UINT32_MAX) return 0;
    }
    return static_cast<uint32_t>(index);
  }
  char name[IF_NAMESIZE];
  std::memcpy(name, scope.data(), scope.size());
  name[scope.size()] = '\0';
  return ::if_nametoindex(name);
}

}  // namespace

bool parse_numeric_address(std::string_view host, uint16_t port, int family, SocketAddress* out) {
  if (host.find('\0') != std::string_view::npos) return false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string_view scope;
  if (size_t percent = host.find('%'); percent != std::string_view::npos) {
    scope = host.substr(percent + 1);
    host = host.substr(0, percent);
    if (scope.empty()) return false;
  }
  char text[INET6_ADDRSTRLEN + 1];
  if (host.empty() || host.size() >= sizeof text) return false;
  std::memcpy(text, host.data(), host.size());
  text[host.size()] = '\0';
  if (family != AF_INET6 && scope.empty()) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out->storage);
    if (::inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(port);
      out->length = sizeof(sockaddr_in);
      return true;
    }
  }
  if (family != AF_INET) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->storage);
    if (::inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
      uint32_t index = 0;
      if (!scope.empty() && (index = scope_index(scope)) == 0) return false;
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(port);
      v6->sin6_scope_id = index;
      out->length = sizeof(sockaddr_in6);
      return true;
    }
  }
  return false;
}

int make_unix_address(std::string_view path, SocketAddress* out) {
  auto* unix_address = reinterpret_cast<sockaddr_un*>(&out->storage);
  if (path.empty()) return EINVAL;
  // An abstract name is bytes, NUL included; a filesystem path ends at the first NUL.
  if (path.front() != '@' && path.find('\0') != std::string_view::npos) return EINVAL;
  // A path needs its terminating NUL inside sun_path; an abstract name ('@' stands for its
  // leading NUL) may fill sun_path exactly.
  size_t limit =
      path.front() == '@' ? sizeof unix_address->sun_path : sizeof unix_address->sun_path - 1;
  if (path.size() > limit) return ENAMETOOLONG;
  unix_address->sun_family = AF_UNIX;
  std::memcpy(unix_address->sun_path, path.data(), path.size());
  if (path.front() == '@') {
    unix_address->sun_path[0] = '\0';  // abstract namespace: no trailing NUL, exact length
    out->length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    unix_address->sun_path[path.size()] = '\0';
    out->length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }
  return 0;
}

int resolve_address(std::string_view host, uint16_t port, int family, Duration timeout,
                    SocketAddress* out) {
  if (parse_numeric_address(host, port, family, out)) return 0;
  std::vector<std::string> addresses = resolve(host, family, timeout);
  if (addresses.empty()) {
    int error = last_error().value();
    return error != 0 ? error : ENXIO;
  }
  return parse_numeric_address(addresses.front(), port, family, out) ? 0 : ENXIO;
}

std::string format_host(const sockaddr* address, socklen_t length, uint16_t* port) {
  char text[INET6_ADDRSTRLEN];
  if (port != nullptr) *port = 0;
  switch (address->sa_family) {
    case AF_INET: {
      auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
      if (port != nullptr) *port = ntohs(v4->sin_port);
      return ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text) ? text : "";
    }
    case AF_INET6: {
      auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
      if (port != nullptr) *port = ntohs(v6->sin6_port);
      if (::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text) == nullptr) return "";
      std::string host(text);
      if (v6->sin6_scope_id != 0) {  // link-local: the scope is part of the address
        char name[IF_NAMESIZE];
        host += '%';
        host += ::if_indextoname(v6->sin6_scope_id, name) != nullptr
                    ? std::string(name)
                    : std::to_string(v6->sin6_scope_id);
      }
      return host;
    }
    case AF_UNIX: {
      auto* unix_address = reinterpret_cast<const sockaddr_un*>(address);
      size_t offset = offsetof(sockaddr_un, sun_path);
      if (length <= offset) return "";
      size_t size = length - offset;
      if (unix_address->sun_path[0] == '\0') {  // abstract
        std::string name(1, '@');
        name.append(unix_address->sun_path + 1, size - 1);
        return name;
      }
      return std::string(unix_address->sun_path, strnlen(unix_address->sun_path, size));
    }
    default:
      return "";
  }
}

}  // namespace coring::detail

// The URLs the HTTP client takes: `http://host[:port]/path?query` and `https://...` for the
// one-call functions, and a redirect's Location resolved against the request that got it (RFC
// 3986 5.2: absolute, scheme-relative "//host/path" (the request's scheme), absolute-path,
// query-only and relative references, with dot segments removed). A fragment is never part of
// what is sent (RFC 9110 7.1). The default port is 80 for http, 443 for https.
//
// What is refused (EINVAL, with a reason): a scheme other than http and https, no "//" after it,
// credentials (user@host), an empty host, a bracketed host that is not an IPv6 literal, a port
// that is not a number from 1 to 65535, a space or control byte anywhere.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace coring::http::detail {

// An http or https URL taken apart. host is without brackets ("::1"); target is origin form
// ("/a?b"), a view into the URL, or into owned_target when the URL has no path ("http://h?x" asks
// "/?x").
struct UrlParts {
  std::string_view host;
  uint16_t port = 80;
  std::string_view target;
  std::string owned_target;
  bool https = false;
};

// 0, or EINVAL with *why saying what is wrong. The views point into url: they live as long as it
// does.
int parse_url(std::string_view url, UrlParts* out, const char** why);

// Where a redirect goes: owned copies (the Location it came from is overwritten by the next
// response).
struct Destination {
  std::string host;
  uint16_t port = 80;
  std::string target;
  bool https = false;
};

// Resolves location against a request sent to host:port (over TLS when https) with that
// target. 0, or EINVAL with *why.
int resolve_location(std::string_view host, uint16_t port, bool https, std::string_view target,
                     std::string_view location, Destination* out, const char** why);

// A request target the client may send: origin form ("/..."), or "*"; no space or control byte.
bool is_sendable_target(std::string_view target) noexcept;

// host[:port] as the Host header says it: an IPv6 literal in brackets, the port unless it is
// the scheme's default (80 for http, 443 for https).
void append_host_value(std::string& out, std::string_view host, uint16_t port, bool https = false);

}  // namespace coring::http::detail

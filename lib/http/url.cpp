// Taking http URLs apart and resolving redirect locations (see url.hpp).
#include "http/url.hpp"

#include <cerrno>
#include <charconv>

#include "http/http_text.hpp"

namespace coring::http::detail {
namespace {

bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

// A space, a control byte or DEL: never in a URL (RFC 3986 2), never sent.
bool is_forbidden(char c) noexcept {
  auto byte = static_cast<unsigned char>(c);
  return byte <= 0x20 || byte == 0x7f;
}

bool has_forbidden(std::string_view text) noexcept {
  for (char c : text) {
    if (is_forbidden(c)) return true;
  }
  return false;
}

// The scheme of a reference ("http" of "http://..."), or empty for a relative one.
std::string_view scheme_of(std::string_view reference) noexcept {
  if (reference.empty() || !is_alpha(reference[0])) return {};
  for (size_t i = 1; i < reference.size(); ++i) {
    char c = reference[i];
    if (c == ':') return reference.substr(0, i);
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') return {};
  }
  return {};
}

std::string_view without_fragment(std::string_view reference) noexcept {
  size_t hash = reference.find('#');
  return hash == std::string_view::npos ? reference : reference.substr(0, hash);
}

// RFC 3986 5.2.4: "/a/b/../c/./d" is "/a/c/d".
std::string remove_dot_segments(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  while (!path.empty()) {
    if (path.substr(0, 3) == "../") {
      path.remove_prefix(3);
    } else if (path.substr(0, 2) == "./") {
      path.remove_prefix(2);
    } else if (path.substr(0, 3) == "/./") {
      path.remove_prefix(2);
    } else if (path == "/.") {
      path = "/";
    } else if (path.substr(0, 4) == "/../" || path == "/..") {
      path = path.size() == 3 ? std::string_view("/") : path.substr(3);
      size_t slash = out.rfind('/');
      out.erase(slash == std::string::npos ? 0 : slash);
    } else if (path == "." || path == "..") {
      path = {};
    } else {
      size_t next = path.find('/', 1);
      if (next == std::string_view::npos) next = path.size();
      out.append(path.substr(0, next));
      path.remove_prefix(next);
    }
  }
  return out;
}

}  // namespace

int parse_url(std::string_view url, UrlParts* out, const char** why) {
  *out = UrlParts{};
  if (has_forbidden(url)) {
    *why = "a URL with a space or a control character";
    return EINVAL;
  }
  std::string_view scheme = scheme_of(url);
  if (same_name(scheme, "https")) {
    out->https = true;
    out->port = 443;
  } else if (!same_name(scheme, "http")) {
    *why = scheme.empty() ? "not an absolute URL (http://host/path)"
                          : "only http:// and https:// URLs are supported";
    return EINVAL;
  }
  std::string_view rest = url.substr(scheme.size() + 1);
  if (rest.substr(0, 2) != "//") {
    *why = "no // after the URL's scheme";
    return EINVAL;
  }
  rest.remove_prefix(2);
  rest = without_fragment(rest);
  size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  std::string_view target =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    *why = "credentials in a URL (user@host) are not supported";
    return EINVAL;
  }
  std::string_view port_text;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      *why = "an IPv6 address without its closing ]";
      return EINVAL;
    }
    out->host = authority.substr(1, close - 1);
    if (out->host.empty() || out->host.find(':') == std::string_view::npos ||
        out->host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) {
      *why = "a bracketed host that is not an IPv6 address";
      return EINVAL;
    }
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') {
        *why = "bytes after an IPv6 address that are not a port";
        return EINVAL;
      }
      port_text = after.substr(1);
    }
  } else {
    size_t colon = authority.find(':');
    out->host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
    if (out->host.find_first_of("[]") != std::string_view::npos) {
      *why = "a malformed host";
      return EINVAL;
    }
  }
  if (out->host.empty()) {
    *why = "a URL without a host";
    return EINVAL;
  }
  if (!port_text.empty()) {  // "host:" is the default port (RFC 3986 3.2.3)
    unsigned port = 0;
    auto [end, error] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (error != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535 || !is_digit(port_text[0])) {
      *why = "a port that is not a number from 1 to 65535";
      return EINVAL;
    }
    out->port = static_cast<uint16_t>(port);
  }
  if (target.empty() || target[0] == '?') {
    out->owned_target.reserve(target.size() + 1);
    out->owned_target = "/";
    out->owned_target.append(target);
    out->target = out->owned_target;
  } else {
    out->target = target;
  }
  return 0;
}

int resolve_location(std::string_view host, uint16_t port, bool https, std::string_view target,
                     std::string_view location, Destination* out, const char** why) {
  location = without_fragment(location);
  if (has_forbidden(location)) {
    *why = "a Location with a space or a control character";
    return EINVAL;
  }
  if (!scheme_of(location).empty() || location.substr(0, 2) == "//") {
    UrlParts parts;
    std::string absolute;
    if (location.substr(0, 2) == "//") {  // scheme-relative: the request's
      absolute.reserve(location.size() + 6);
      absolute = https ? "https:" : "http:";
      absolute.append(location);
      location = absolute;
    }
    int error = parse_url(location, &parts, why);
    if (error != 0) return error;
    out->host.assign(parts.host);
    out->port = parts.port;
    out->https = parts.https;
    size_t query = parts.target.find('?');
    out->target = remove_dot_segments(parts.target.substr(0, query));
    if (query != std::string_view::npos) out->target.append(parts.target.substr(query));
    return 0;
  }
  out->host.assign(host);
  out->port = port;
  out->https = https;
  size_t base_query = target.find('?');
  std::string_view base_path = target.substr(0, base_query);
  if (location.empty()) {
    out->target.assign(target);
    return 0;
  }
  size_t query = location.find('?');
  std::string_view path = location.substr(0, query);
  std::string_view query_text =
      query == std::string_view::npos ? std::string_view() : location.substr(query);
  if (path.empty()) {  // "?x": the same path, another query
    out->target.assign(base_path);
  } else if (path[0] == '/') {
    out->target = remove_dot_segments(path);
  } else {  // relative: beside the last segment of the request's path (RFC 3986 5.2.3)
    size_t slash = base_path.rfind('/');
    std::string merged(base_path.substr(0, slash == std::string_view::npos ? 0 : slash + 1));
    if (merged.empty()) merged = "/";
    merged.append(path);
    out->target = remove_dot_segments(merged);
  }
  if (out->target.empty()) out->target = "/";
  out->target.append(query_text);
  return 0;
}

bool is_sendable_target(std::string_view target) noexcept {
  if (target == "*") return true;
  return !target.empty() && target[0] == '/' && !has_forbidden(target);
}

void append_host_value(std::string& out, std::string_view host, uint16_t port, bool https) {
  const bool ipv6 = host.find(':') != std::string_view::npos;
  if (ipv6) out += '[';
  out.append(host);
  if (ipv6) out += ']';
  if (port != (https ? 443 : 80)) {
    char digits[8];
    auto [end, error] = std::to_chars(digits, digits + sizeof digits, unsigned{port});
    (void)error;
    out += ':';
    out.append(digits, end);
  }
}

}  // namespace coring::http::detail

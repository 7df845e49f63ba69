// coring::http::Request: views of the request an Exchange parsed.
#include "http/exchange.hpp"

namespace coring::http {
namespace {

std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

std::string_view Request::method() const noexcept {
  return exchange_->parser.method();
}

std::string_view Request::target() const noexcept {
  return exchange_->parser.url.in(exchange_->base());
}

std::string_view Request::path() const noexcept {
  std::string_view url = target();
  // The absolute form a request to a proxy uses ("http://host:port/a?b"), which a server must
  // accept too (RFC 9112 3.2.2): the path is what follows the authority.
  if (url.size() > 7 && url.front() != '/') {
    size_t scheme = url.find("://");
    if (scheme != std::string_view::npos && (detail::same_name(url.substr(0, scheme), "http") ||
                                             detail::same_name(url.substr(0, scheme), "https"))) {
      size_t start = url.find_first_of("/?", scheme + 3);
      if (start == std::string_view::npos || url[start] == '?') return "/";
      url = url.substr(start);
    }
  }
  size_t mark = url.find('?');
  return mark == std::string_view::npos ? url : url.substr(0, mark);
}

std::string_view Request::query() const noexcept {
  std::string_view url = target();
  size_t mark = url.find('?');
  return mark == std::string_view::npos ? std::string_view() : url.substr(mark + 1);
}

int Request::version_minor() const noexcept {
  return exchange_->parser.version_minor();
}

bool Request::keep_alive() const noexcept {
  return !exchange_->close_after;
}

std::optional<std::string_view> Request::header(std::string_view name) const noexcept {
  const char* base = exchange_->base();
  for (const detail::HeaderSpan& header : exchange_->parser.headers) {
    if (detail::same_name(header.name.in(base), name)) return header.value.in(base);
  }
  return std::nullopt;
}

std::span<const Header> Request::headers() const noexcept {
  detail::Exchange* exchange = exchange_;
  if (!exchange->header_views_ready) {
    const char* base = exchange->base();
    exchange->header_views.clear();
    for (const detail::HeaderSpan& header : exchange->parser.headers) {
      exchange->header_views.push_back({header.name.in(base), header.value.in(base)});
    }
    exchange->header_views_ready = true;
  }
  return exchange->header_views;
}

std::optional<std::string_view> Request::cookie(std::string_view name) const noexcept {
  const char* base = exchange_->base();
  for (const detail::HeaderSpan& header : exchange_->parser.headers) {
    if (!detail::same_name(header.name.in(base), "cookie")) continue;
    // "a=1; b=2" (RFC 6265): pairs separated by ';'; the first of a name wins.
    std::string_view rest = header.value.in(base);
    while (!rest.empty()) {
      size_t end = rest.find(';');
      std::string_view pair = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
      size_t equals = pair.find('=');
      if (equals == std::string_view::npos) continue;
      if (trim(pair.substr(0, equals)) != name) continue;
      std::string_view value = trim(pair.substr(equals + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      return value;
    }
  }
  return std::nullopt;
}

std::optional<std::string> Request::query_param(std::string_view name) const {
  std::string_view rest = query();
  std::string key;
  std::string value;
  while (!rest.empty()) {
    size_t end = rest.find('&');
    std::string_view pair = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    size_t equals = pair.find('=');
    std::string_view raw_key = pair.substr(0, equals);
    if (!detail::percent_decode(raw_key, key, true) || key != name) continue;
    std::string_view raw_value =
        equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1);
    if (!detail::percent_decode(raw_value, value, true)) return std::nullopt;
    return value;
  }
  return std::nullopt;
}

std::string_view Request::body() const noexcept {
  return exchange_->parser.body;
}

Connection& Request::connection() const noexcept {
  return exchange_->connection;
}

}  // namespace coring::http

// The text of HTTP that does not depend on a connection: names, tokens, line ends, dates,
// media types, percent-encoding (lib/http/http_text.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace coring::http::detail {

// Field names compared as HTTP does: ASCII letters without regard to case.
bool same_name(std::string_view a, std::string_view b) noexcept;
// An RFC 9110 token (a field name, a method): not empty, tchar only.
bool is_token(std::string_view text) noexcept;
// A field llhttp handed over that may still not be acceptable: a name that is not a token,
// or a value with a line break inside (obs-fold, which llhttp lets through).
bool field_is_acceptable(std::string_view name, std::string_view value) noexcept;
// A LF not preceded by CR in [from, to) (llhttp 8 takes some even in strict mode).
bool has_bare_lf(const char* from, const char* to) noexcept;
// 0-15 for a hex digit, -1 otherwise.
int hex_value(char c) noexcept;
// "Sun, 06 Nov 1994 08:49:37 GMT" for the current second (rendered once a second per thread).
std::string_view http_date_now() noexcept;
// The same format for any time; 29 characters into out.
void format_http_date(int64_t seconds, char out[29]) noexcept;
// An IMF-fixdate (or the obsolete RFC 850 / asctime forms) to seconds; -1 when malformed.
int64_t parse_http_date(std::string_view text) noexcept;
// Percent-decoding (plus_is_space: '+' in a query); false for a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_is_space);
// Content-Type for a file name's extension; "application/octet-stream" when unknown.
std::string_view content_type_for(std::string_view path) noexcept;

}  // namespace coring::http::detail

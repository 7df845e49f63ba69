// The text of HTTP that does not depend on a connection: reason phrases, dates, media types,
// percent-decoding.
#include "http/http_text.hpp"

#include <strings.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <iterator>

#include "coring/http_server.hpp"

namespace coring::http {

namespace {

// RFC 9110 section 15 (418, 421-451 from their RFCs), sorted by code.
struct Reason {
  int code;
  std::string_view text;
};
constexpr Reason kReasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

}  // namespace

std::string_view reason_phrase(int code) noexcept {
  const Reason* end = std::end(kReasons);
  const Reason* found = std::lower_bound(std::begin(kReasons), end, code,
                                         [](const Reason& r, int c) { return r.code < c; });
  return found != end && found->code == code ? found->text : std::string_view();
}

namespace detail {
namespace {

constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void two_digits(char* out, int value) noexcept {
  out[0] = static_cast<char>('0' + value / 10);
  out[1] = static_cast<char>('0' + value % 10);
}

int month_index(std::string_view name) noexcept {
  for (int i = 0; i < 12; ++i) {
    if (name == kMonths[i]) return i;
  }
  return -1;
}

bool parse_number(std::string_view text, int* out) noexcept {
  if (text.empty() || text.size() > 4) return false;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *out = value;
  return true;
}

// "08:49:37"
bool parse_clock(std::string_view text, int* hour, int* minute, int* second) noexcept {
  return text.size() == 8 && text[2] == ':' && text[5] == ':' &&
         parse_number(text.substr(0, 2), hour) && parse_number(text.substr(3, 2), minute) &&
         parse_number(text.substr(6, 2), second) && *hour < 24 && *minute < 60 && *second < 61;
}

}  // namespace

bool same_name(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool is_token(std::string_view text) noexcept {
  static const auto table = [] {
    std::array<bool, 256> allowed{};
    for (int c = '0'; c <= '9'; ++c) allowed[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) allowed[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) allowed[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) {
      allowed[static_cast<unsigned char>(c)] = true;
    }
    return allowed;
  }();
  if (text.empty()) return false;
  for (char c : text) {
    if (!table[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}

bool field_is_acceptable(std::string_view name, std::string_view value) noexcept {
  return is_token(name) && std::memchr(value.data(), '\n', value.size()) == nullptr;
}

bool has_bare_lf(const char* from, const char* to) noexcept {
  for (const char* line_feed = from;
       (line_feed = static_cast<const char*>(std::memchr(line_feed, '\n', to - line_feed)));
       ++line_feed) {
    if (line_feed == from || line_feed[-1] != '\r') return true;
  }
  return false;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void format_http_date(int64_t seconds, char out[29]) noexcept {
  time_t when = static_cast<time_t>(seconds);
  tm parts{};
  ::gmtime_r(&when, &parts);
  // Fixed English names: strftime would follow the program's locale.
  std::memcpy(out, kDays[parts.tm_wday], 3);
  out[3] = ',';
  out[4] = ' ';
  two_digits(out + 5, parts.tm_mday);
  out[7] = ' ';
  std::memcpy(out + 8, kMonths[parts.tm_mon], 3);
  out[11] = ' ';
  int year = parts.tm_year + 1900;
  two_digits(out + 12, (year / 100) % 100);
  two_digits(out + 14, year % 100);
  out[16] = ' ';
  two_digits(out + 17, parts.tm_hour);
  out[19] = ':';
  two_digits(out + 20, parts.tm_min);
  out[22] = ':';
  two_digits(out + 23, parts.tm_sec);
  std::memcpy(out + 25, " GMT", 4);
}

std::string_view http_date_now() noexcept {
  // Once a second per thread: the coarse clock is read from the vDSO without a system call.
  thread_local int64_t rendered_second = -1;
  thread_local char text[29];
  timespec now;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
  if (now.tv_sec != rendered_second) {
    rendered_second = now.tv_sec;
    format_http_date(now.tv_sec, text);
  }
  return {text, sizeof text};
}

int64_t parse_http_date(std::string_view text) noexcept {
  int day = 0, month = -1, year = 0, hour = 0, minute = 0, second = 0;
  size_t comma = text.find(',');
  if (comma != std::string_view::npos) {
    std::string_view rest = text.substr(comma + 1);
    if (rest.size() == 25 && rest[0] == ' ' && rest[3] == ' ' && rest[7] == ' ' &&
        rest[12] == ' ' && rest.substr(21) == " GMT") {
      // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
      month = month_index(rest.substr(4, 3));
      if (!parse_number(rest.substr(1, 2), &day) || !parse_number(rest.substr(8, 4), &year) ||
          !parse_clock(rest.substr(13, 8), &hour, &minute, &second)) {
        return -1;
      }
    } else if (rest.size() == 23 && rest[0] == ' ' && rest[3] == '-' && rest[7] == '-' &&
               rest[10] == ' ' && rest.substr(19) == " GMT") {
      // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
      month = month_index(rest.substr(4, 3));
      if (!parse_number(rest.substr(1, 2), &day) || !parse_number(rest.substr(8, 2), &year) ||
          !parse_clock(rest.substr(11, 8), &hour, &minute, &second)) {
        return -1;
      }
      year += year < 70 ? 2000 : 1900;
    } else {
      return -1;
    }
  } else if (text.size() == 24 && text[3] == ' ' && text[7] == ' ' && text[10] == ' ' &&
             text[19] == ' ') {
    // asctime: "Sun Nov  6 08:49:37 1994"
    month = month_index(text.substr(4, 3));
    std::string_view day_text = text.substr(8, 2);
    if (day_text[0] == ' ') day_text.remove_prefix(1);
    if (!parse_number(day_text, &day) || !parse_number(text.substr(20, 4), &year) ||
        !parse_clock(text.substr(11, 8), &hour, &minute, &second)) {
      return -1;
    }
  } else {
    return -1;
  }
  if (month < 0 || day < 1 || day > 31 || year < 1970) return -1;
  tm parts{};
  parts.tm_year = year - 1900;
  parts.tm_mon = month;
  parts.tm_mday = day;
  parts.tm_hour = hour;
  parts.tm_min = minute;
  parts.tm_sec = second;
  return static_cast<int64_t>(::timegm(&parts));
}

bool percent_decode(std::string_view in, std::string& out, bool plus_is_space) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int high = hex_value(in[i + 1]);
      int low = hex_value(in[i + 2]);
      if (high < 0 || low < 0) return false;
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

std::string_view content_type_for(std::string_view path) noexcept {
  struct Type {
    std::string_view extension;
    std::string_view type;
  };
  static constexpr Type kTypes[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"json", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
      {"xml", "application/xml"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"avif", "image/avif"},
      {"woff", "font/woff"},
      {"woff2", "font/woff2"},
      {"ttf", "font/ttf"},
      {"otf", "font/otf"},
      {"wasm", "application/wasm"},
      {"pdf", "application/pdf"},
      {"zip", "application/zip"},
      {"gz", "application/gzip"},
      {"tar", "application/x-tar"},
      {"mp4", "video/mp4"},
      {"webm", "video/webm"},
      {"mp3", "audio/mpeg"},
      {"ogg", "audio/ogg"},
      {"wav", "audio/wav"},
      {"csv", "text/csv; charset=utf-8"},
      {"md", "text/markdown; charset=utf-8"},
  };
  size_t slash = path.rfind('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  size_t dot = name.rfind('.');
  if (dot != std::string_view::npos) {
    std::string_view extension = name.substr(dot + 1);
    for (const Type& type : kTypes) {
      if (extension.size() != type.extension.size()) continue;
      bool same = true;
      for (size_t i = 0; i < extension.size() && same; ++i) {
        char c = extension[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        same = c == type.extension[i];
      }
      if (same) return type.type;
    }
  }
  return "application/octet-stream";
}

}  // namespace detail
}  // namespace coring::http

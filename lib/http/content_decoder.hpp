// Decodes a response body sent with Content-Encoding gzip (x-gzip) or deflate, through zlib, as
// its pieces arrive: the decoded bytes go to an output callback in pieces of at most kPieceSize,
// so a body of any size needs no more memory than that and zlib's window.
//
// deflate is the zlib format (RFC 9110 8.4.1.2), but servers have long sent raw deflate under that
// name; which of the two a body is, its first two bytes tell (a zlib header is a multiple of 31
// with compression method 8), as curl and browsers decide. gzip may hold several members one
// after the other (RFC 1952 2.2): each is decoded in turn. A stream that is corrupt, bytes after
// the end of a deflate stream, or a body that ends before its stream does (finish()) are errors.
// One zlib state per decoder, reset between bodies: no allocation per response after the first.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <memory>
#include <string_view>

namespace coring::http::detail {

class ContentDecoder {
 public:
  enum class Coding { none, gzip, deflate };
  // Takes one decoded piece; false stops the decoding (feed() then returns false, with no
  // error_text: the output's owner knows why).
  using Output = bool (*)(void* context, const char* data, size_t size);
  static constexpr size_t kPieceSize = 16 * 1024;

  // The coding of a Content-Encoding value that names exactly one we decode; none otherwise
  // (identity, br, "gzip, gzip"...).
  static Coding coding_of(std::string_view content_encoding) noexcept;

  ContentDecoder() = default;
  ~ContentDecoder();
  ContentDecoder(const ContentDecoder&) = delete;
  ContentDecoder& operator=(const ContentDecoder&) = delete;

  // A new body in this coding (not none).
  void start(Coding coding) noexcept;
  // The next bytes of the body. false: malformed (error_text() says how), out of memory, or the
  // output refused a piece (error_text() is null).
  bool feed(const char* data, size_t size, Output output, void* context);
  // The body ended: true when its stream ended too (or when the body was empty).
  bool finish() noexcept;
  const char* error_text() const noexcept { return error_text_; }

 private:
  bool begin_stream(int window_bits) noexcept;
  bool inflate_some(const unsigned char* data, size_t size, Output output, void* context);

  z_stream stream_{};
  bool initialized_ = false;
  int window_bits_ = 0;  // of the stream zlib has now
  Coding coding_ = Coding::none;
  bool decided_ = false;  // deflate: zlib or raw is known (after two bytes)
  bool ended_ = false;    // the last stream ended; more bytes must start a gzip member
  bool any_input_ = false;
  unsigned char first_bytes_[2] = {};
  size_t first_count_ = 0;
  const char* error_text_ = nullptr;
  std::unique_ptr<unsigned char[]> piece_;
};

}  // namespace coring::http::detail

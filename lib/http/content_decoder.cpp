// Decoding gzip and deflate response bodies with zlib (see content_decoder.hpp).
#include "http/content_decoder.hpp"

#include "http/http_text.hpp"

namespace coring::http::detail {
namespace {

// zlib's window bits: 15 is the largest window; +16 reads a gzip wrapper, negative a raw stream.
constexpr int kGzipBits = 15 + 16;
constexpr int kZlibBits = 15;
constexpr int kRawBits = -15;

std::string_view trimmed(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

ContentDecoder::Coding ContentDecoder::coding_of(std::string_view content_encoding) noexcept {
  std::string_view coding = trimmed(content_encoding);
  if (same_name(coding, "gzip") || same_name(coding, "x-gzip")) return Coding::gzip;
  if (same_name(coding, "deflate")) return Coding::deflate;
  return Coding::none;
}

ContentDecoder::~ContentDecoder() {
  if (initialized_) inflateEnd(&stream_);
}

bool ContentDecoder::begin_stream(int window_bits) noexcept {
  int result;
  if (!initialized_) {
    result = inflateInit2(&stream_, window_bits);
    initialized_ = result == Z_OK;
  } else if (window_bits == window_bits_) {
    result = inflateReset(&stream_);
  } else {
    result = inflateReset2(&stream_, window_bits);
  }
  if (result != Z_OK) {
    error_text_ = "zlib could not start decoding (out of memory)";
    return false;
  }
  window_bits_ = window_bits;
  ended_ = false;
  return true;
}

void ContentDecoder::start(Coding coding) noexcept {
  coding_ = coding;
  error_text_ = nullptr;
  ended_ = false;
  any_input_ = false;
  first_count_ = 0;
  // gzip is known at once; deflate waits for its first two bytes.
  decided_ = coding == Coding::gzip;
  if (decided_) begin_stream(kGzipBits);
}

bool ContentDecoder::feed(const char* data, size_t size, Output output, void* context) {
  if (error_text_ != nullptr) return false;
  if (size == 0) return true;
  any_input_ = true;
  auto* bytes = reinterpret_cast<const unsigned char*>(data);
  if (!decided_) {
    while (first_count_ < 2 && size > 0) {
      first_bytes_[first_count_++] = *bytes++;
      --size;
    }
    if (first_count_ < 2) return true;
    // RFC 1950 2.2: CM (the low nibble of CMF) is 8, and CMF * 256 + FLG is a multiple of 31.
    const unsigned header = (unsigned{first_bytes_[0]} << 8) | first_bytes_[1];
    const bool zlib = (first_bytes_[0] & 0x0f) == 8 && header % 31 == 0;
    if (!begin_stream(zlib ? kZlibBits : kRawBits)) return false;
    decided_ = true;
    if (!inflate_some(first_bytes_, 2, output, context)) return false;
    if (size == 0) return true;
  }
  return inflate_some(bytes, size, output, context);
}

bool ContentDecoder::inflate_some(const unsigned char* data, size_t size, Output output,
                                  void* context) {
  if (error_text_ != nullptr) return false;
  if (!piece_) piece_ = std::make_unique<unsigned char[]>(kPieceSize);
  // zlib 1.2 takes a non-const next_in (it never writes through it).
  stream_.next_in = const_cast<unsigned char*>(data);
  stream_.avail_in = static_cast<uInt>(size);  // pieces come from one read: far below 4 GiB
  bool output_full = false;  // the last call filled the piece: zlib may hold more output
  while (stream_.avail_in > 0 || output_full) {
    if (ended_) {
      if (stream_.avail_in == 0) break;
      if (coding_ != Coding::gzip) {
        error_text_ = "bytes after the end of the deflate stream";
        return false;
      }
      // The next gzip member.
      const Bytef* rest = stream_.next_in;
      uInt rest_size = stream_.avail_in;
      if (!begin_stream(kGzipBits)) return false;
      stream_.next_in = const_cast<Bytef*>(rest);
      stream_.avail_in = rest_size;
    }
    stream_.next_out = piece_.get();
    stream_.avail_out = static_cast<uInt>(kPieceSize);
    int result = inflate(&stream_, Z_NO_FLUSH);
    size_t produced = kPieceSize - stream_.avail_out;
    output_full = stream_.avail_out == 0;
    if (produced > 0 && !output(context, reinterpret_cast<const char*>(piece_.get()), produced)) {
      return false;
    }
    if (result == Z_STREAM_END) {
      ended_ = true;
      output_full = false;
    } else if (result == Z_BUF_ERROR && stream_.avail_in == 0) {
      break;  // everything given was taken: the rest of the stream is in later pieces
    } else if (result != Z_OK) {
      error_text_ =
          coding_ == Coding::gzip ? "the gzip body is corrupt" : "the deflate body is corrupt";
      return false;
    }
  }
  return true;
}

bool ContentDecoder::finish() noexcept {
  if (error_text_ != nullptr) return false;
  if (!any_input_) return true;  // an empty body: nothing was encoded
  if (!decided_ || !ended_) {
    error_text_ = "the compressed body ended before its stream did";
    return false;
  }
  return true;
}

}  // namespace coring::http::detail

// libFuzzer target: Socket::recv_packet() framing (EOF-delimited and length-prefixed) over a
// real Unix socket pair, with the bytes delivered in chunks the input chooses. The framing code
// reads untrusted bytes, so every packet it returns is checked against an independent reading
// of the stream:
//  - EOF framing: the packet ends with the delimiter and holds no earlier occurrence of it;
//  - length framing: its size is body_offset + the length field's value, decoded here anew;
//  - no packet exceeds package_max_length, and the packets, joined, are exactly the start of
//    what was sent (nothing lost, reordered or invented);
//  - once a read failed with EMSGSIZE, the next one fails with EMSGSIZE too;
//  - a protocol whose header or body offset lies past package_max_length fails with EINVAL.
// A violation aborts, which libFuzzer records as a crash with its input.
//
// Input layout: [mode][max_length lo][max_length hi][chunk seed][4 bytes of framing config]
// then the stream. Built with -Dfuzz=true (clang); scripts/test.sh runs it for a bounded time.
#include <sys/socket.h>

#include <coring/coring.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "framing_fuzz: %s\n", what);
  std::abort();
}

uint64_t decode(const unsigned char* p, char type) {
  switch (type) {
    case 'C':
      return p[0];
    case 'n':
      return uint64_t{p[0]} << 8 | p[1];
    case 'v':
      return uint64_t{p[1]} << 8 | p[0];
    case 'N':
      return uint64_t{p[0]} << 24 | uint64_t{p[1]} << 16 | uint64_t{p[2]} << 8 | p[3];
    default:
      return uint64_t{p[3]} << 24 | uint64_t{p[2]} << 16 | uint64_t{p[1]} << 8 | p[0];
  }
}

size_t field_size(char type) {
  return type == 'C' ? 1 : (type == 'n' || type == 'v') ? 2 : 4;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  const bool eof_mode = (data[0] & 1) == 0;
  Co::Protocol protocol;
  protocol.package_max_length = 1 + (data[1] | (data[2] & 0x0f) << 8);  // 1..4096
  const uint8_t chunk_seed = data[3];
  if (eof_mode) {
    size_t length = 1 + data[4] % 4;  // delimiters of 1 to 4 bytes (a small alphabet: overlaps)
    for (size_t i = 0; i < length; ++i)
      protocol.eof += static_cast<char>('a' + data[5 + i % 3] % 3);
  } else {
    static const char kTypes[] = {'C', 'n', 'N', 'v', 'V'};
    protocol.length_type = kTypes[data[4] % 5];
    protocol.length_offset = data[5] % 8;
    protocol.body_offset = protocol.length_offset + field_size(protocol.length_type) + data[6] % 4;
  }
  std::string_view stream(reinterpret_cast<const char*>(data) + 8, size - 8);
  // No packet could fit: set_protocol() refuses it and every read fails with EINVAL.
  const bool impossible = !eof_mode && (protocol.length_offset + field_size(protocol.length_type) >
                                            protocol.package_max_length ||
                                        protocol.body_offset > protocol.package_max_length);

  Co::RunOptions options;
  options.ring_entries = 64;
  options.stack_size = 64 * 1024;
  int status = Co::run(
      [&] {
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) return;
        Co::Socket reader(fds[0], Co::Socket::Type::unix_stream);
        Co::Socket writer(fds[1], Co::Socket::Type::unix_stream);
        reader.set_protocol(protocol);
        Co::WaitGroup writer_done;
        writer_done.add();
        Co::create([&] {
          Co::this_coroutine::defer([&] { writer_done.done(); });
          size_t sent = 0;
          unsigned chunk = chunk_seed;
          while (sent < stream.size()) {
            chunk = chunk * 33 + 7;
            size_t n = std::min<size_t>(stream.size() - sent, 1 + chunk % 64);
            if (writer.send_all(stream.data() + sent, n) != static_cast<ssize_t>(n)) return;
            sent += n;
            Co::this_coroutine::sleep(std::chrono::nanoseconds(0));  // let the reader run
          }
          writer.close();
        });
        std::string joined;
        for (;;) {
          std::optional<std::string_view> packet = reader.recv_packet(std::chrono::seconds(5));
          if (impossible) {
            if (packet || reader.error().value() != EINVAL) violated("impossible protocol read");
            break;
          }
          if (!packet) {
            if (reader.error().value() == EMSGSIZE) {
              if (reader.recv_packet(std::chrono::seconds(0))) violated("read after EMSGSIZE");
              if (reader.error().value() != EMSGSIZE) violated("EMSGSIZE did not stick");
            } else if (reader.error().value() != ECONNRESET) {
              violated("a read failed with neither EMSGSIZE nor ECONNRESET");
            }
            break;
          }
          if (packet->empty()) break;  // the writer closed between packets
          if (packet->size() > protocol.package_max_length) violated("packet over the maximum");
          if (eof_mode) {
            const std::string& eof = protocol.eof;
            if (packet->size() < eof.size() || packet->substr(packet->size() - eof.size()) != eof) {
              violated("packet does not end with the delimiter");
            }
            if (packet->find(eof) != packet->size() - eof.size()) {
              violated("packet holds an earlier delimiter");
            }
          } else {
            size_t header = protocol.length_offset + field_size(protocol.length_type);
            if (packet->size() < header) violated("packet shorter than its header");
            uint64_t body = decode(
                reinterpret_cast<const unsigned char*>(packet->data() + protocol.length_offset),
                protocol.length_type);
            if (packet->size() != protocol.body_offset + body) violated("packet of the wrong size");
          }
          joined.append(packet->data(), packet->size());
          if (stream.substr(0, joined.size()) != joined) violated("packets differ from the stream");
        }
        reader.close();      // a writer still sending gets EPIPE instead of waiting
        writer_done.wait();  // the sockets outlive the writer coroutine
      },
      options);
  if (status != 0) violated("run() failed");
  return 0;
}

// recv_packet() framing over real loopback connections: EOF and length framing (Swoole's
// open_eof_check / open_length_check), packets coalesced in one read or split byte by byte,
// oversize and impossible lengths, and a peer that closes between or inside packets.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <coring/coring.hpp>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers
using Clock = std::chrono::steady_clock;

// ---- framing -----------------------------------------------------------------------------------

TEST_CASE("recv_packet: EOF framing, packets coalesced in one send and split byte by byte") {
  for (std::string eof : {std::string("\n"), std::string("\r\n"), std::string("<<END>>")}) {
    CAPTURE(eof);
    const std::vector<std::string> packets = {
        "hello" + eof, eof, "a longer packet, with spaces" + eof, std::string(3000, 'z') + eof};
    std::string stream;
    for (const auto& packet : packets) stream += packet;
    Co::Protocol protocol;
    protocol.eof = eof;
    Packets coalesced = read_framed(protocol, send_coalesced(stream));
    // A 3000-byte packet one byte at a time is slow; split the small ones bytewise and the
    // large one in uneven chunks.
    Packets split = read_framed(protocol, [&](Co::Socket& client, int server_fd) {
      std::string_view rest = stream;
      std::string_view small = rest.substr(0, rest.size() - packets.back().size());
      CHECK(send_bytewise(client, server_fd, small));
      rest.remove_prefix(small.size());
      for (size_t chunk = 1; !rest.empty(); chunk = chunk * 3 + 1) {
        size_t n = std::min(chunk, rest.size());
        CHECK(client.send_all(rest.data(), n, kLong) == static_cast<ssize_t>(n));
        CHECK(until_drained(server_fd));
        rest.remove_prefix(n);
      }
    });
    CHECK(coalesced.packets == packets);
    CHECK(coalesced.ended_cleanly);
    CHECK(split.packets == packets);
    CHECK(split.ended_cleanly);
  }
}

TEST_CASE("recv_packet: a multi-byte delimiter split across reads, and near misses") {
  // Each piece arrives as a read of its own. "\r\n\r\n" is split 1+3, 2+2 and 3+1 across reads,
  // and "\r\n\r" followed by something else is not a delimiter.
  const std::vector<std::string> pieces = {
      "first\r", "\n\r\n", "second\r\n", "\r\n", "third\r\n\r", "\nfourth\r\n\rx\r\n\r", "\n"};
  const std::vector<std::string> expected = {"first\r\n\r\n", "second\r\n\r\n", "third\r\n\r\n",
                                             "fourth\r\n\rx\r\n\r\n"};
  Packets got;
  int rc = Co::run([&] {
    Pair p = tcp_pair(Type::tcp6);
    if (!p.ok) return;
    Co::Protocol protocol;
    protocol.eof = "\r\n\r\n";
    p.server.set_protocol(protocol);
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      got = read_packets(p.server);
      wg.done();
    });
    for (const std::string& piece : pieces) {
      CHECK(p.client.send_all(piece.data(), piece.size(), kLong) ==
            static_cast<ssize_t>(piece.size()));
      CHECK(until_drained(p.server.fd()));
    }
    CHECK(p.client.shutdown(SHUT_WR));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(got.packets == expected);
  CHECK(got.ended_cleanly);
}

namespace {

void put_length(std::string& out, size_t at, char type, uint32_t value) {
  auto byte = [&](size_t i, uint32_t v) { out[at + i] = static_cast<char>(v & 0xff); };
  switch (type) {
    case 'C':
      byte(0, value);
      break;
    case 'n':
      byte(0, value >> 8);
      byte(1, value);
      break;
    case 'v':
      byte(0, value);
      byte(1, value >> 8);
      break;
    case 'N':
      byte(0, value >> 24);
      byte(1, value >> 16);
      byte(2, value >> 8);
      byte(3, value);
      break;
    case 'V':
      byte(0, value);
      byte(1, value >> 8);
      byte(2, value >> 16);
      byte(3, value >> 24);
      break;
  }
}

// A packet: length_offset bytes of header, the length field, padding up to body_offset, then
// the body; the field counts the body's bytes.
std::string length_packet(const Co::Protocol& protocol, std::string_view body, char fill) {
  std::string packet(protocol.body_offset, fill);
  put_length(packet, protocol.length_offset, protocol.length_type,
             static_cast<uint32_t>(body.size()));
  packet += body;
  return packet;
}

}  // namespace

TEST_CASE("recv_packet: length framing for C, n, N, v, V with offsets, coalesced and split") {
  struct Layout {
    char type;
    size_t length_offset, body_offset;
  };
  // Bodies of 261 bytes (0x0105): read with the wrong byte order that is 0x0501 = 1281, or more
  // than 80 MB for the 4-byte types, so a byte-order mistake cannot go unnoticed.
  const Layout layouts[] = {{'C', 0, 1}, {'C', 3, 5}, {'n', 0, 2}, {'n', 2, 6}, {'N', 0, 4},
                            {'N', 1, 8}, {'v', 0, 2}, {'v', 4, 7}, {'V', 0, 4}, {'V', 2, 10}};
  for (const Layout& layout : layouts) {
    CAPTURE(layout.type);
    CAPTURE(layout.length_offset);
    CAPTURE(layout.body_offset);
    Co::Protocol protocol;
    protocol.length_type = layout.type;
    protocol.length_offset = layout.length_offset;
    protocol.body_offset = layout.body_offset;
    const size_t big = layout.type == 'C' ? 200 : 261;
    const std::vector<std::string> packets = {
        length_packet(protocol, pattern(big, layout.type), 'h'), length_packet(protocol, "", 'e'),
        length_packet(protocol, "x", 'a'), length_packet(protocol, pattern(17, 1), 'd')};
    std::string stream;
    for (const auto& packet : packets) stream += packet;
    Packets coalesced = read_framed(protocol, send_coalesced(stream));
    Packets split = read_framed(protocol, [&](Co::Socket& client, int server_fd) {
      CHECK(send_bytewise(client, server_fd, stream));
    });
    CHECK(coalesced.error == 0);
    CHECK(coalesced.packets == packets);
    CHECK(coalesced.ended_cleanly);
    CHECK(split.error == 0);
    CHECK(split.packets == packets);
    CHECK(split.ended_cleanly);
  }
}

TEST_CASE("recv_packet: a large length-framed packet spanning many reads") {
  Co::Protocol protocol;
  protocol.length_type = 'N';
  protocol.body_offset = 4;
  const std::string body = pattern(1'500'000, 99);
  const std::string packet = length_packet(protocol, body, 0);
  std::vector<std::string> got;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    p.server.set_protocol(protocol);
    Co::WaitGroup wg;
    spawn(wg, [&] {
      for (int i = 0; i < 2; ++i) {
        CHECK(p.client.send_all(packet.data(), packet.size(), kLong) ==
              static_cast<ssize_t>(packet.size()));
      }
    });
    for (int i = 0; i < 2; ++i) {
      auto view = p.server.recv_packet(kLong);
      CHECK(view.has_value());
      if (view) got.emplace_back(*view);
    }
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  REQUIRE(got.size() == 2);
  CHECK(got[0] == packet);
  CHECK(got[1] == packet);
}

TEST_CASE("recv_packet: EMSGSIZE past package_max_length, then the socket cannot be read") {
  struct Case {
    const char* name;
    Co::Protocol protocol;
    std::string accepted;  // exactly package_max_length bytes: still fine
    std::string refused;   // one byte more
  };
  std::vector<Case> cases;
  {
    Co::Protocol eof;
    eof.eof = "\r\n";
    eof.package_max_length = 1024;
    cases.push_back({"eof", eof, std::string(1022, 'a') + "\r\n", std::string(1023, 'b') + "\r\n"});
    Co::Protocol length;
    length.length_type = 'n';
    length.body_offset = 2;
    length.package_max_length = 1024;
    cases.push_back({"length", length, length_packet(length, std::string(1022, 'c'), 0),
                     length_packet(length, std::string(1023, 'd'), 0)});
    Co::Protocol no_eof_in_sight = eof;  // a stream that never contains the delimiter
    cases.push_back(
        {"eof-never", no_eof_in_sight, std::string(1022, 'e') + "\r\n", std::string(5000, 'f')});
  }
  for (const Case& c : cases) {
    CAPTURE(c.name);
    int rc = Co::run([&] {
      Pair p = tcp_pair();
      if (!p.ok) return;
      p.server.set_protocol(c.protocol);
      std::string stream = c.accepted + c.refused;
      Co::WaitGroup wg;
      spawn(wg, [&] {
        CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
              static_cast<ssize_t>(stream.size()));
      });
      CHECK(settle(wg));  // it all fits in the kernel buffers
      auto first = p.server.recv_packet(kLong);
      CHECK(first.has_value());
      if (first) CHECK(*first == c.accepted);
      auto second = p.server.recv_packet(kLong);
      CHECK_FALSE(second.has_value());
      CHECK(p.server.error().value() == EMSGSIZE);
      CHECK_FALSE(p.server.error_message().empty());
      // The stream cannot be re-synchronised: every later read fails the same way.
      CHECK_FALSE(p.server.recv_packet(kLong).has_value());
      CHECK(p.server.error().value() == EMSGSIZE);
      char buffer[16];
      CHECK(p.server.recv(buffer, sizeof buffer, kLong) == -1);
      CHECK(p.server.error().value() == EMSGSIZE);
      CHECK(p.server.recv_all(buffer, sizeof buffer, kLong) == -1);
      CHECK(p.server.error().value() == EMSGSIZE);
      // Writing still works.
      CHECK(p.server.send_all("ok", 2, kLong) == 2);
    });
    CHECK(rc == 0);
  }
}

TEST_CASE("recv_packet: peer close between packets gives an empty view, mid-packet ECONNRESET") {
  int rc = Co::run([&] {
    Co::Protocol eof;
    eof.eof = "\n";
    Co::Protocol length;
    length.length_type = 'V';
    length.body_offset = 4;
    for (const Co::Protocol& protocol : {eof, length}) {
      const bool is_eof = !protocol.eof.empty();
      CAPTURE(is_eof);
      const std::string whole = is_eof ? std::string("one\n") : length_packet(protocol, "one", 0);
      {
        Pair p = tcp_pair();
        if (!p.ok) return;
        p.server.set_protocol(protocol);
        CHECK(p.client.send_all(whole.data(), whole.size(), kLong) ==
              static_cast<ssize_t>(whole.size()));
        CHECK(p.client.close());
        auto first = p.server.recv_packet(kLong);
        CHECK((first && *first == whole));
        auto end = p.server.recv_packet(kLong);
        CHECK(end.has_value());
        if (end) CHECK(end->empty());
        CHECK(p.server.error().value() == 0);
      }
      for (size_t cut : {size_t{1}, whole.size() - 1}) {
        CAPTURE(cut);
        Pair p = tcp_pair();
        if (!p.ok) return;
        p.server.set_protocol(protocol);
        std::string stream = whole + whole.substr(0, cut);
        CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
              static_cast<ssize_t>(stream.size()));
        CHECK(p.client.close());
        auto first = p.server.recv_packet(kLong);
        CHECK((first && *first == whole));
        CHECK_FALSE(p.server.recv_packet(kLong).has_value());
        CHECK(p.server.error().value() == ECONNRESET);
      }
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("recv_packet: recv() and recv_all() afterwards return the buffered bytes first") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::Protocol protocol;
    protocol.eof = "\r\n";
    p.server.set_protocol(protocol);
    const std::string stream = "one\r\ntwo-rest-of-it";
    CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
          static_cast<ssize_t>(stream.size()));
    // Let it all land so that recv_packet's read takes more than the first packet.
    auto until = Clock::now() + kLong;
    while (queued(p.server.fd()) < static_cast<int>(stream.size()) && Clock::now() < until) {
      Co::this_coroutine::sleep(1ms);
    }
    auto packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "one\r\n"));
    CHECK(queued(p.server.fd()) == 0);  // the rest sits in the socket's own buffer
    char buffer[64];
    CHECK(p.server.recv(buffer, 4, kLong) == 4);
    CHECK(std::string_view(buffer, 4) == "two-");
    CHECK(p.client.send_all("+more", 5, kLong) == 5);
    // recv_all takes the rest of the buffer, then reads the socket.
    CHECK(p.server.recv_all(buffer, 15, kLong) == 15);
    CHECK(std::string_view(buffer, 15) == "rest-of-it+more");

    // And recv_packet goes on after plain reads.
    CHECK(p.client.send_all("x\r\ny\r\n", 6, kLong) == 6);
    packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "x\r\n"));
    packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "y\r\n"));
  });
  CHECK(rc == 0);
}

TEST_CASE("recv_packet: without framing returns what one read brings; invalid protocols fail") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    CHECK(p.client.send_all("raw", 3, kLong) == 3);
    auto packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "raw"));

    int warnings = 0;
    Co::set_log_sink([&](Co::LogLevel level, long, std::string_view message) {
      if (level == Co::LogLevel::warning && message.find("invalid Protocol") != message.npos) {
        ++warnings;
      }
    });
    Co::Protocol bad;
    bad.length_type = 'x';
    p.server.set_protocol(bad);
    Co::set_log_sink({});
    CHECK(warnings == 1);
    CHECK_FALSE(p.server.recv_packet(kLong).has_value());
    CHECK(p.server.error().value() == EINVAL);
  });
  CHECK(rc == 0);
}

TEST_CASE("recv_packet: a length shorter than its own header is EBADMSG, then unreadable") {
  // Swoole's "length includes the header" layout: 'N' at offset 0, body_offset 0. A field of 0
  // (or anything below the 4 header bytes) cannot be a packet: taken at its word it gives empty
  // views ("closed") that consume nothing, or packets that end inside their own header.
  for (uint32_t bad_length : {0u, 3u}) {
    CAPTURE(bad_length);
    Co::Protocol protocol;
    protocol.length_type = 'N';
    protocol.length_offset = 0;
    protocol.body_offset = 0;
    std::string good(4, '\0');
    put_length(good, 0, 'N', 6);
    good += "ab";
    std::string bad(4, '\0');
    put_length(bad, 0, 'N', bad_length);
    std::string stream = good + bad + good;
    int rc = Co::run([&] {
      Pair p = tcp_pair();
      CO_REQUIRE(p.ok);
      p.server.set_protocol(protocol);
      CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
            static_cast<ssize_t>(stream.size()));
      auto first = p.server.recv_packet(kLong);
      CHECK(first.has_value());
      if (first) CHECK(*first == good);
      auto second = p.server.recv_packet(kLong);
      CHECK_FALSE(second.has_value());
      CHECK(p.server.error().value() == EBADMSG);
      CHECK_FALSE(p.server.error_message().empty());
      CHECK_FALSE(p.server.recv_packet(kLong).has_value());  // out of step for good
      CHECK(p.server.error().value() == EBADMSG);
      char buffer[8];
      CHECK(p.server.recv(buffer, sizeof buffer, kLong) == -1);
      CHECK(p.server.error().value() == EBADMSG);
      CHECK(p.server.send_all("ok", 2, kLong) == 2);  // writing still works
    });
    CHECK(rc == 0);
  }
}

TEST_CASE("recv_packet: an unlimited package_max_length, and protocols no packet could fit") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Co::Protocol unlimited;
    unlimited.length_type = 'N';
    unlimited.length_offset = 0;
    unlimited.body_offset = 4;
    unlimited.package_max_length = SIZE_MAX;  // "no limit": must not wrap around
    p.server.set_protocol(unlimited);
    std::string packet(4, '\0');
    put_length(packet, 0, 'N', 10000);
    packet += pattern(10000, 9);
    CHECK(p.client.send_all(packet.data(), packet.size(), kLong) ==
          static_cast<ssize_t>(packet.size()));
    auto got = p.server.recv_packet(kLong);
    CHECK(got.has_value());
    if (got) CHECK(*got == packet);

    // A header (or body) that starts past package_max_length: no packet could ever fit.
    Co::Protocol impossible;
    impossible.length_type = 'n';
    impossible.length_offset = 5000;
    impossible.body_offset = 5002;
    impossible.package_max_length = 100;
    coring_test::LogCapture logs;
    p.server.set_protocol(impossible);
    CHECK_FALSE(p.server.recv_packet(kLong).has_value());
    CHECK(p.server.error().value() == EINVAL);
  });
  CHECK(rc == 0);
}

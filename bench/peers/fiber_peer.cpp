// Boost.Fiber peer (the round_robin scheduler of one thread; the main fiber drives).
//
//   fiber_peer [scale]      scale multiplies the iteration counts (default 1)
// prints
//   yield_rt, yield_switch  two fibers calling this_fiber::yield() in turn: ns per round trip
//                           (two switches) and per switch, from the same run
//   create_join             create + join one empty fiber at a time, stacks from a
//                           pooled_fixedsize_stack (recycled, as coring's are): ns per fiber
//   create_join_default     the same with the default stack allocator (malloc'd stacks)
//   chan_rt                 unbuffered_channel<long> ping-pong (main pushes ping, pops pong; an
//                           echo fiber pops ping, pushes pong): ns per round trip
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <boost/fiber/all.hpp>

#include "peer.hpp"

namespace {

namespace fibers = boost::fibers;
constexpr const char* kPeer = "fiber";

// Returns ns per round trip: n round trips are 2n yields, each one switch.
double yield_round_trip(long n) {
  auto yielder = [n] {
    for (long i = 0; i < n; ++i) boost::this_fiber::yield();
  };
  auto t0 = peer::Clock::now();
  fibers::fiber first(yielder);
  fibers::fiber second(yielder);
  first.join();
  second.join();
  return peer::ns_per(t0, n);
}

template <class StackAllocator>
double create_join(long n, StackAllocator stacks) {
  auto t0 = peer::Clock::now();
  for (long i = 0; i < n; ++i) {
    fibers::fiber f(std::allocator_arg, stacks, [] {});
    f.join();
  }
  return peer::ns_per(t0, n);
}

double channel_round_trip(long n) {
  fibers::unbuffered_channel<long> ping;
  fibers::unbuffered_channel<long> pong;
  fibers::fiber echo([&] {
    long v;
    while (ping.pop(v) == fibers::channel_op_status::success) pong.push(v);
  });
  long sum = 0;
  auto t0 = peer::Clock::now();
  for (long i = 0; i < n; ++i) {
    long v = -1;
    ping.push(i);
    pong.pop(v);
    sum += v;
  }
  double ns = peer::ns_per(t0, n);
  ping.close();
  echo.join();
  if (sum != n * (n - 1) / 2) {
    std::fprintf(stderr, "fiber_peer: values lost in the channel ping-pong\n");
    std::exit(1);
  }
  return ns;
}

}  // namespace

int main(int argc, char** argv) {
  double scale = argc > 1 ? std::atof(argv[1]) : 1.0;
  if (!(scale > 0)) scale = 1.0;
  long yields = static_cast<long>(2'000'000 * scale);
  long creates = static_cast<long>(500'000 * scale);
  long messages = static_cast<long>(1'000'000 * scale);
  boost::context::pooled_fixedsize_stack pool;

  // Warm-up pass, results discarded.
  yield_round_trip(yields / 10);
  create_join(creates / 10, pool);
  create_join(creates / 10, fibers::default_stack());
  channel_round_trip(messages / 10);

  double rt = yield_round_trip(yields);
  peer::result(kPeer, "yield_rt", rt, "ns/round trip");
  peer::result(kPeer, "yield_switch", rt / 2, "ns/switch");
  peer::result(kPeer, "create_join", create_join(creates, pool), "ns/fiber");
  peer::result(kPeer, "create_join_default", create_join(creates, fibers::default_stack()),
               "ns/fiber");
  peer::result(kPeer, "chan_rt", channel_round_trip(messages), "ns/round trip");
  return 0;
}

// The physical limit of a stackful switch: Boost.Context's raw jump_fcontext (the primitive
// coring itself switches with), with no scheduler around it.
//
//   context_peer [round_trips]
// prints jump_rt: ns per round trip, i.e. two jump_fcontext calls (main -> other -> main).
#include <boost/context/detail/fcontext.hpp>
#include <memory>

#include "peer.hpp"

namespace {

namespace bctx = boost::context::detail;

// The other context: every jump into it goes straight back to where it came from.
[[noreturn]] void bounce(bctx::transfer_t from) {
  for (;;) from = bctx::jump_fcontext(from.fctx, from.data);
}

double jump_round_trip(long n) {
  constexpr size_t kStackBytes = 64 * 1024;
  auto stack = std::make_unique<char[]>(kStackBytes);  // outlives every jump below
  bctx::fcontext_t other = bctx::make_fcontext(stack.get() + kStackBytes, kStackBytes, &bounce);
  bctx::transfer_t back = bctx::jump_fcontext(other, nullptr);  // enter it once; it comes back
  for (long i = 0; i < n / 10; ++i) back = bctx::jump_fcontext(back.fctx, nullptr);  // warm-up
  auto t0 = peer::Clock::now();
  for (long i = 0; i < n; ++i) back = bctx::jump_fcontext(back.fctx, nullptr);
  return peer::ns_per(t0, n);
  // The other context never returns and owns nothing: dropping its stack is enough.
}

}  // namespace

int main(int argc, char** argv) {
  long n = peer::count_arg(argc, argv, 1, 20'000'000);
  peer::result("fcontext", "jump_rt", jump_round_trip(n), "ns/round trip");
  return 0;
}

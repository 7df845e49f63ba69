// The library's context switch. On x86-64 it is the library's own (lib/core/context_switch.cpp)
// entered without a `call`, through the same inline jump the public headers use (see the
// comment at the top of coring/detail/switch.hpp for why) but straight to its hidden name, so
// no PLT is in the way; elsewhere Boost.Context's jump_fcontext, called.
#pragma once

#include <boost/context/detail/fcontext.hpp>
#include <cstddef>

#include "coring/detail/switch.hpp"

namespace coring::detail {

using boost::context::detail::fcontext_t;
using boost::context::detail::transfer_t;

#if defined(__x86_64__) && !defined(CORING_PLAIN_JUMP)

extern "C" void coring_switch_context();  // hidden alias of coring_jump_context

CORING_DETAIL_DEFINE_JUMP(jump_in_library, "coring_switch_context")

inline __attribute__((always_inline)) transfer_t jump_context(fcontext_t to, void* data) {
  Transfer from = jump_in_library(to, data);
  return transfer_t{from.context, from.data};
}

#else

inline transfer_t jump_context(fcontext_t to, void* data) {
  return boost::context::detail::jump_fcontext(to, data);
}

#endif

// A context that, jumped to, calls entry(transfer_t{the context it came from, data}) on the
// stack [top - size, top). entry must never return.
fcontext_t make_context(char* top, size_t size, void (*entry)(transfer_t));

}  // namespace coring::detail

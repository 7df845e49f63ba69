// The library's context switch: Boost.Context's jump_fcontext. On x86-64 it is entered without
// a `call`, through the same inline jump the public headers use (see the comment at the top of
// coring/detail/switch.hpp for why); elsewhere it is a plain call.
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include "coring/detail/switch.hpp"

namespace coring::detail {

using boost::context::detail::fcontext_t;
using boost::context::detail::transfer_t;

inline __attribute__((always_inline)) transfer_t jump_context(fcontext_t to, void* data) {
#if defined(__x86_64__) && !defined(CORING_PLAIN_JUMP)
  Transfer from = jump(to, data);
  return transfer_t{from.context, from.data};
#else
  return boost::context::detail::jump_fcontext(to, data);
#endif
}

}  // namespace coring::detail

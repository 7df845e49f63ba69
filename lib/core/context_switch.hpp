// The one context switch: Boost.Context's jump_fcontext, entered without a `call` on x86-64.
//
// Why: jump_fcontext resumes the other context with `jmp *%r8`, never with `ret`, so the return
// address that a `call` pushes onto the CPU's return stack buffer is never popped. Every `ret`
// after the switch is then predicted against a stale entry and mispredicted (measured here:
// +7 ns per stack frame returned through, per switch). Pushing the return address ourselves and
// jumping keeps the return stack buffer in step with the real stacks. Everything jump_fcontext
// clobbers is declared; the 128-byte red zone of the surrounding function is stepped over
// before we push.
#pragma once

#include <boost/context/detail/fcontext.hpp>

namespace coring::detail {

using boost::context::detail::fcontext_t;
using boost::context::detail::transfer_t;

#if defined(__x86_64__) && !defined(CORING_PLAIN_JUMP)

inline __attribute__((always_inline)) transfer_t jump_context(fcontext_t to, void* data) {
  register void* rdi asm("rdi") = to;
  register void* rsi asm("rsi") = data;
  register void* rax asm("rax");
  register void* rdx asm("rdx");
  asm volatile(
      "lea -128(%%rsp), %%rsp\n\t"
      "lea 1f(%%rip), %%rcx\n\t"
      "push %%rcx\n\t"
      "jmp jump_fcontext@PLT\n"
      "1:\n\t"
      "lea 128(%%rsp), %%rsp\n\t"
      : "=r"(rax), "=r"(rdx), "+r"(rdi), "+r"(rsi)
      :
      : "rcx", "r8", "r9", "r10", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
        "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
        "xmm15", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)"
#if defined(__AVX512F__)
        ,
        "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",
        "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6",
        "k7"
#endif
  );
  return transfer_t{rax, rdx};
}

#else

inline transfer_t jump_context(fcontext_t to, void* data) {
  return boost::context::detail::jump_fcontext(to, data);
}

#endif

}  // namespace coring::detail

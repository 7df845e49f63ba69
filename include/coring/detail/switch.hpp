// The inline half of this_coroutine::yield(), resume(), create() and park(). Not part of the
// public contract.
//
// Why inline: after a context switch, every `ret` the CPU executes on the new stack is
// predicted from return addresses pushed on the old one, and mispredicts (measured here: about
// 7 ns per frame returned through, per switch, on top of a 10 ns jump_fcontext round trip). So
// the library does all the bookkeeping in an ordinary call (prepare_*: its call and return
// happen on one stack), and the jump itself happens in the caller's own frame, with no return
// to mispredict afterwards (so they are always_inline: a compiler, with LTO say, that kept one
// out of line would bring the mispredicted return back). The jump enters the library's context switch, coring_jump_context
// (lib/core/context_switch.cpp, the same work as Boost.Context's jump_fcontext), without a
// `call`: the switch resumes the other side with `jmp`, never `ret`, so a `call` would leave a
// stale return-stack entry behind.
//
// Only on x86-64 and without AddressSanitizer in the calling translation unit (ASan must be
// told about every stack switch; the library does that on its own path). Elsewhere the
// out-of-line versions run.
#pragma once

#include <cstdint>

#include "coring/detail/callable.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

#if defined(__SANITIZE_ADDRESS__)
#define CORING_DETAIL_ASAN_TU 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORING_DETAIL_ASAN_TU 1
#endif
#endif

#if defined(__x86_64__) && !defined(CORING_DETAIL_ASAN_TU) && !defined(CORING_NO_INLINE_SWITCH)
#define CORING_DETAIL_INLINE_SWITCH 1
#else
#define CORING_DETAIL_INLINE_SWITCH 0
#endif

// The inline functions whose bodies depend on CORING_DETAIL_INLINE_SWITCH (create(), go(),
// resume(), this_coroutine::yield()) live in an inline namespace named after the variant, so
// that a program whose translation units differ (one built with ASan or CORING_NO_INLINE_SWITCH,
// another without) has two differently named functions instead of one name with two bodies,
// of which the linker would keep either for both (an ODR violation).
#if CORING_DETAIL_INLINE_SWITCH
#define CORING_DETAIL_SWITCH_VARIANT inline_switch
#else
#define CORING_DETAIL_SWITCH_VARIANT out_of_line_switch
#endif

extern "C" void coring_jump_context();  // not callable from C++: see jump() below (the library's
                                        // context switch, lib/core/context_switch.cpp)

namespace coring::detail {

enum class State : uint8_t {
  ready,      // in the ready queue
  running,    // the one running now
  suspended,  // in create() or resume(), until the coroutine it started waits or ends
  yielded,    // in this_coroutine::yield(): only resume() ends it
  waiting,    // in a wait (sleep, park, join, I/O): the library knows how to end it early
  dead,       // ended; its stack is recycled by whoever lands after its last switch
};

// The first fields of every coroutine's control block (the library's Coroutine derives from
// it), the only ones the inline half touches.
struct CoroutineHead {
  void* context = nullptr;  // where it stopped (a Boost.Context fcontext), while not running
  State state = State::suspended;
  bool unwinding = false;  // being unwound after a deadlock: its next wait throws
};

// Two words, so that it comes back in registers.
struct SwitchPlan {
  void* to_context;     // the context to jump to, or nullptr: nothing (more) to do
  CoroutineHead* self;  // the caller, passed to the other side as the transfer data; nullptr
                        // when the call failed (resume() of a coroutine that cannot be resumed)
};

struct SpawnPlan {
  SwitchPlan jump;  // into the new coroutine, which runs at once
  long id;          // its id, or -1 (last_error() says why)
};

// Library side, everything up to the jump. With an ASan-built library they switch themselves
// and return no context.
SwitchPlan prepare_yield();
SwitchPlan prepare_resume(long cid);
SpawnPlan prepare_spawn(const CallableOps& ops, void* fn);
// Out-of-line versions, for translation units that cannot use the inline jump.
void yield_out_of_line();
bool resume_out_of_line(long cid);
// Landing after a switch from a coroutine that has just ended: recycles its stack.
void land_after_death(CoroutineHead* previous) noexcept;
// After the switch back to a coroutine marked for unwinding: throws unless that is unsafe.
void unwind_after_switch();

struct Transfer {
  void* context;
  void* data;
};

#if defined(__x86_64__)
#if defined(__AVX512F__)
#define CORING_DETAIL_AVX512_CLOBBERS                                                           \
  , "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",   \
      "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", \
      "k7"
#else
#define CORING_DETAIL_AVX512_CLOBBERS
#endif

// Defines `name`, an inline jump to the context switch at `target` (an assembler symbol). It
// steps over the red zone, pushes its own return address and jumps: the switch saves the
// callee-saved registers, the x87 control word and MXCSR; everything else is clobbered. A
// macro, so that the library's own switch (lib/core/context_switch.hpp) is the same code with
// a target it reaches without the PLT.
#define CORING_DETAIL_DEFINE_JUMP(name, target)                                                    \
  inline __attribute__((always_inline)) Transfer name(void* to, void* data) {                      \
    register void* rdi asm("rdi") = to;                                                            \
    register void* rsi asm("rsi") = data;                                                          \
    register void* rax asm("rax");                                                                 \
    register void* rdx asm("rdx");                                                                 \
    asm volatile(                                                                                  \
        "lea -128(%%rsp), %%rsp\n\t"                                                               \
        "lea 1f(%%rip), %%rcx\n\t"                                                                 \
        "push %%rcx\n\t"                                                                           \
        "jmp " target                                                                              \
        "\n"                                                                                       \
        "1:\n\t"                                                                                   \
        "lea 128(%%rsp), %%rsp\n\t"                                                                \
        : "=r"(rax), "=r"(rdx), "+r"(rdi), "+r"(rsi)                                               \
        :                                                                                          \
        : "rcx", "r8", "r9", "r10", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", \
          "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",     \
          "xmm15", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)",                     \
          "st(7)" CORING_DETAIL_AVX512_CLOBBERS);                                                  \
    return Transfer{rax, rdx};                                                                     \
  }

// The switch the inline halves of yield(), resume(), create() and park() make.
CORING_DETAIL_DEFINE_JUMP(jump, "coring_jump_context@PLT")
#endif

#if CORING_DETAIL_INLINE_SWITCH

// Jumps and, once something switches back here, records where it stopped (or recycles it if it
// ended).
inline __attribute__((always_inline)) void complete_switch(const SwitchPlan& plan) {
  Transfer from = jump(plan.to_context, plan.self);
  auto* previous = static_cast<CoroutineHead*>(from.data);
  if (previous->state == State::dead) [[unlikely]] {
    land_after_death(previous);
  } else {
    previous->context = from.context;
  }
}

#endif

}  // namespace coring::detail

#pragma GCC visibility pop

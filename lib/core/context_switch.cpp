// The context switch on x86-64: what Boost.Context's jump_fcontext and make_fcontext do, kept
// in the library so that a switch from a program linked to the shared library is one jump into
// it (through its PLT) instead of two (through ours, then Boost's). Other targets use Boost.
//
// A suspended context is the stack pointer it stopped at; from there up:
//   +0 MXCSR (4 bytes)  +4 x87 control word (2)  +8 r12  +16 r13  +24 r14  +32 r15  +40 rbx
//   +48 rbp  +56 where to resume
// coring_jump_context(to: rdi, data: rsi) is entered with `jmp` and the resume address already
// pushed (see CORING_DETAIL_DEFINE_JUMP in coring/detail/switch.hpp). It saves the callee-saved
// registers and the floating-point control words on the current stack, switches to `to`,
// restores them from there and resumes it with rax = the context it left, rdx = data (what
// jump() returns) and the same two in rdi/rsi (the arguments of a fresh context's entry
// function). The resume address is popped and jumped to, not returned to: a `ret` right after
// a stack switch would mispredict.
//
// MXCSR and the x87 control word are callee-saved, so each context keeps its own, as with
// Boost. But loading them (ldmxcsr, fldcw) is slow, and they almost never differ between two
// contexts: they are loaded only when they do. Measured here, round trip of two switches
// between two bare contexts (no scheduler), same process: Boost's jump_fcontext 7.1-7.8 ns,
// this switch loading them every time 7.1-8.1 ns, loading them only when they differ 4.6-5.0
// ns (and 2.6-3.0 ns if it did not keep them at all). The saved values are read back with loads
// of their own sizes, so that the reads are forwarded from the stores just made (one 8-byte
// read of both stalled on store forwarding and cost more than the loads it saved).
#include "core/context_switch.hpp"

#if defined(__x86_64__) && !defined(CORING_PLAIN_JUMP)

asm(R"(
  .text
  .p2align 4
  .globl coring_jump_context
  .type coring_jump_context, @function
  .globl coring_switch_context
  .hidden coring_switch_context
  .type coring_switch_context, @function
coring_jump_context:
coring_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r15
  pushq %r14
  pushq %r13
  pushq %r12
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, %rax
  movl (%rsp), %ecx
  movzwl 4(%rsp), %r9d
  movq %rdi, %rsp
  cmpl (%rsp), %ecx
  jne 2f
1:
  cmpw 4(%rsp), %r9w
  jne 4f
3:
  addq $8, %rsp
  popq %r12
  popq %r13
  popq %r14
  popq %r15
  popq %rbx
  popq %rbp
  popq %r8
  movq %rsi, %rdx
  movq %rax, %rdi
  jmp *%r8
2:
  ldmxcsr (%rsp)
  jmp 1b
4:
  fldcw 4(%rsp)
  jmp 3b
  .size coring_jump_context, .-coring_jump_context
  .size coring_switch_context, .-coring_switch_context

  .p2align 4
  .globl coring_make_context
  .hidden coring_make_context
  .type coring_make_context, @function
coring_make_context:
  movq %rdi, %rax
  andq $-16, %rax
  leaq -64(%rax), %rax
  stmxcsr (%rax)
  fnstcw 4(%rax)
  movq $0, 8(%rax)
  movq $0, 16(%rax)
  movq $0, 24(%rax)
  movq $0, 32(%rax)
  movq %rsi, 40(%rax)
  movq $0, 48(%rax)
  leaq coring_context_start(%rip), %rcx
  movq %rcx, 56(%rax)
  ret
  .size coring_make_context, .-coring_make_context

  .p2align 4
  .type coring_context_start, @function
coring_context_start:
  .cfi_startproc
  .cfi_undefined rip
  pushq %rbp
  jmpq *%rbx
  .cfi_endproc
  .size coring_context_start, .-coring_context_start
)");

namespace coring::detail {

extern "C" fcontext_t coring_make_context(void* top, void (*entry)(transfer_t));

// Out of line, and in this file: a static, LTO-built library pulls this file in for it (and so
// the switch above, which the linker's LTO symbol table cannot see in a file of its own).
fcontext_t make_context(char* top, size_t, void (*entry)(transfer_t)) {
  return coring_make_context(top, entry);
}

}  // namespace coring::detail

#else

namespace coring::detail {

fcontext_t make_context(char* top, size_t size, void (*entry)(transfer_t)) {
  return boost::context::detail::make_fcontext(top, size, entry);
}

}  // namespace coring::detail

#endif

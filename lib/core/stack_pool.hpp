// Coroutine stacks: mapped in slabs, committed lazily by the kernel as they are touched, and
// recycled through a free list so that creating and ending a coroutine does no syscall in the
// steady state.
//
// Layout of one slot (addresses grow to the right; a stack grows to the left):
//   [ guard (PROT_NONE, optional) | usable stack ............ callable | Coroutine ]
// With guards every slot costs two kernel mappings (vm.max_map_count, 65530 by default, caps
// guarded stacks near 32,000); without guards a whole slab is one mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace coring::detail {

class StackPool {
 public:
  StackPool(size_t stack_size, bool guard);
  ~StackPool();
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  // The lowest usable byte of a free stack of stack_size() bytes, or nullptr with errno set
  // (ENOMEM when the kernel refuses a mapping or a guard page).
  char* acquire();
  void release(char* base) { free_.push_back(base); }

  // Gives the memory of pooled stacks beyond the `keep` most recently used back to the kernel
  // (MADV_DONTNEED), one call per run of adjacent stacks. Called when the scheduler is idle.
  // So that a burst of coroutines does not pin its peak RSS, yet a burst that comes back soon
  // finds its stacks ready, it starts once the pool has held more than `keep` for a second,
  // and gives back at most kTrimBatch stacks per call, so that no single idle pass stalls.
  void trim(size_t keep, int64_t now_ns);
  static constexpr size_t kTrimBatch = 8192;

  // The slabs are never unmapped (nor trimmed) from now on: the kernel may still write into
  // stacks whose coroutines were abandoned with an operation in flight.
  void keep_mapped() noexcept { keep_mapped_ = true; }

  size_t stack_size() const noexcept { return stack_size_; }
  size_t guard_size() const noexcept { return guard_size_; }
  size_t free_count() const noexcept { return free_.size(); }
  size_t mapped_count() const noexcept { return mapped_count_; }

 private:
  bool map_slab();

  size_t stack_size_;
  size_t guard_size_;
  size_t slot_size_;
  size_t slots_per_slab_;
  std::vector<std::pair<char*, size_t>> slabs_;
  char* carve_next_ = nullptr;
  char* carve_end_ = nullptr;
  size_t mapped_count_ = 0;
  // LIFO: the back holds the most recently used (hottest) stacks; free_[0, trimmed_) have
  // already been given back to the kernel.
  std::vector<char*> free_;
  size_t trimmed_ = 0;
  int64_t excess_since_ns_ = -1;  // when the pool last went beyond `keep`; -1: it is not
  bool keep_mapped_ = false;
};

}  // namespace coring::detail

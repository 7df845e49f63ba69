#include "core/stack_pool.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace coring::detail {
namespace {

size_t page_size() {
  static const size_t size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// A guard larger than one page also catches a frame that jumps over a single page (a big local
// array in a function without stack-clash probes). It costs address space only.
constexpr size_t kGuardBytes = 64 * 1024;
constexpr size_t kSlabBytes = 16 * 1024 * 1024;

}  // namespace

StackPool::StackPool(size_t stack_size, bool guard)
    : stack_size_(round_up(std::max<size_t>(stack_size, 8 * 1024), page_size())),
      guard_size_(guard ? kGuardBytes : 0),
      slot_size_(stack_size_ + guard_size_),
      slots_per_slab_(std::max<size_t>(1, kSlabBytes / slot_size_)) {}

StackPool::~StackPool() {
  if (keep_mapped_) return;  // deliberately leaked: see keep_mapped()
  for (auto& [address, bytes] : slabs_) ::munmap(address, bytes);
}

bool StackPool::map_slab() {
  size_t bytes = slots_per_slab_ * slot_size_;
  void* address = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (address == MAP_FAILED) return false;
  slabs_.emplace_back(static_cast<char*>(address), bytes);
  carve_next_ = static_cast<char*>(address);
  carve_end_ = carve_next_ + bytes;
  return true;
}

char* StackPool::acquire() {
  if (!free_.empty()) {
    char* base = free_.back();
    free_.pop_back();
    trimmed_ = std::min(trimmed_, free_.size());
    return base;
  }
  if (carve_next_ == carve_end_ && !map_slab()) {
    errno = ENOMEM;
    return nullptr;
  }
  char* slot = carve_next_;
  if (guard_size_ > 0 && ::mprotect(slot, guard_size_, PROT_NONE) != 0) {
    // Out of mappings (vm.max_map_count): the slot stays uncarved so a later try can reuse it.
    errno = ENOMEM;
    return nullptr;
  }
  carve_next_ += slot_size_;
  ++mapped_count_;
  return slot + guard_size_;
}

void StackPool::trim(size_t keep, int64_t now_ns) {
  if (free_.size() <= keep) {
    excess_since_ns_ = -1;
    return;
  }
  if (excess_since_ns_ < 0) excess_since_ns_ = now_ns;
  if (now_ns - excess_since_ns_ < 1'000'000'000 || free_.size() - keep <= trimmed_) return;
  size_t end = std::min(free_.size() - keep, trimmed_ + kTrimBatch);
  // Stacks freed by one burst mostly sit side by side in their slabs: sorted, they form long
  // runs, each given back with one madvise. Adjacent slots leave no unmapped gap between them
  // (a guard region is mapped, PROT_NONE), so a run is one valid range.
  std::sort(free_.begin() + static_cast<ptrdiff_t>(trimmed_),
            free_.begin() + static_cast<ptrdiff_t>(end));
  size_t i = trimmed_;
  while (i < end) {
    char* first = free_[i];
    char* last = first;
    while (i + 1 < end && free_[i + 1] == last + slot_size_) last = free_[++i];
    ::madvise(first, static_cast<size_t>(last - first) + stack_size_, MADV_DONTNEED);
    ++i;
  }
  trimmed_ = end;
}

}  // namespace coring::detail

// The scheduler's deadlines: sleeps, wait timeouts and user timers share one 4-ary min-heap.
// Keys are kept inline in the heap array (no pointer chasing while sifting); each node knows
// its index so that a wait that ends early removes its deadline in O(log n). Equal deadlines
// fire in the order they were armed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace coring::detail {

struct TimerNode {
  static constexpr uint32_t kNotArmed = UINT32_MAX;
  int64_t deadline = 0;  // steady clock, ns
  uint32_t heap_index = kNotArmed;
  void (*fire)(TimerNode* self) = nullptr;  // called by the scheduler once the deadline passed
  bool armed() const noexcept { return heap_index != kNotArmed; }
};

class TimerHeap {
 public:
  bool empty() const noexcept { return heap_.empty(); }
  size_t size() const noexcept { return heap_.size(); }
  int64_t next_deadline() const noexcept { return heap_.front().deadline; }

  void push(TimerNode* node);
  void remove(TimerNode* node);
  // Removes and returns the earliest node if its deadline is <= now, else nullptr.
  TimerNode* pop_due(int64_t now);

 private:
  struct Entry {
    int64_t deadline;
    uint64_t sequence;
    TimerNode* node;
    bool before(const Entry& other) const noexcept {
      return deadline != other.deadline ? deadline < other.deadline : sequence < other.sequence;
    }
  };
  void place(size_t index, const Entry& entry) noexcept {
    heap_[index] = entry;
    entry.node->heap_index = static_cast<uint32_t>(index);
  }
  void sift_up(size_t index, Entry entry) noexcept;
  void sift_down(size_t index, Entry entry) noexcept;

  std::vector<Entry> heap_;
  uint64_t sequence_ = 0;
};

}  // namespace coring::detail

#include "core/timer_heap.hpp"

namespace coring::detail {

void TimerHeap::push(TimerNode* node) {
  heap_.push_back({});
  sift_up(heap_.size() - 1, Entry{node->deadline, sequence_++, node});
}

void TimerHeap::remove(TimerNode* node) {
  size_t index = node->heap_index;
  node->heap_index = TimerNode::kNotArmed;
  Entry last = heap_.back();
  heap_.pop_back();
  if (index == heap_.size()) return;  // it was the last entry
  if (index > 0 && last.before(heap_[(index - 1) / 4])) {
    sift_up(index, last);
  } else {
    sift_down(index, last);
  }
}

TimerNode* TimerHeap::pop_due(int64_t now) {
  if (heap_.empty() || heap_.front().deadline > now) return nullptr;
  TimerNode* node = heap_.front().node;
  remove(node);
  return node;
}

void TimerHeap::sift_up(size_t index, Entry entry) noexcept {
  while (index > 0) {
    size_t parent = (index - 1) / 4;
    if (!entry.before(heap_[parent])) break;
    place(index, heap_[parent]);
    index = parent;
  }
  place(index, entry);
}

void TimerHeap::sift_down(size_t index, Entry entry) noexcept {
  size_t size = heap_.size();
  for (;;) {
    size_t first = index * 4 + 1;
    if (first >= size) break;
    size_t last = first + 4 < size ? first + 4 : size;
    size_t best = first;
    for (size_t child = first + 1; child < last; ++child) {
      if (heap_[child].before(heap_[best])) best = child;
    }
    if (!heap_[best].before(entry)) break;
    place(index, heap_[best]);
    index = best;
  }
  place(index, entry);
}

}  // namespace coring::detail

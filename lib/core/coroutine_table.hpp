// id -> Coroutine* for the coroutines of one scheduler: O(1) insert, erase and lookup with no
// hashing, because ids are handed to each thread in aligned blocks of kPageSize and grow
// monotonically. A page covers one block; it is freed once every coroutine in it has ended, so
// a long-lived coroutine pins one page (32 KiB), not the whole history of ids.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <vector>

namespace coring::detail {

struct Coroutine;

class CoroutineTable {
 public:
  static constexpr int kPageBits = 12;
  static constexpr long kPageSize = long{1} << kPageBits;

  CoroutineTable() = default;
  CoroutineTable(const CoroutineTable&) = delete;
  CoroutineTable& operator=(const CoroutineTable&) = delete;
  ~CoroutineTable() {
    for (Page* page : pages_) std::free(page);
    std::free(spare_);
  }

  Coroutine* find(long id) const noexcept {
    auto index = static_cast<size_t>((id >> kPageBits) - first_page_);
    if (id <= 0 || index >= pages_.size() - head_) return nullptr;
    const Page* page = pages_[head_ + index];
    return page == nullptr ? nullptr : page->slots[id & (kPageSize - 1)];
  }

  // Returns false only when memory for a new page cannot be had.
  bool insert(long id, Coroutine* c) {
    long page_number = id >> kPageBits;
    if (pages_.size() == head_) {
      pages_.clear();
      head_ = 0;
      first_page_ = page_number;
    }
    while (page_number - first_page_ >= static_cast<long>(pages_.size() - head_)) {
      pages_.push_back(nullptr);
    }
    Page*& page = pages_[head_ + static_cast<size_t>(page_number - first_page_)];
    if (page == nullptr) {
      if (spare_ != nullptr) {
        page = spare_;  // every slot of a freed page is already null
        spare_ = nullptr;
      } else {
        page = static_cast<Page*>(std::calloc(1, sizeof(Page)));
        if (page == nullptr) return false;
      }
    }
    page->slots[id & (kPageSize - 1)] = c;
    ++page->live;
    return true;
  }

  void erase(long id) noexcept {
    auto index = static_cast<size_t>((id >> kPageBits) - first_page_);
    Page*& page = pages_[head_ + index];
    page->slots[id & (kPageSize - 1)] = nullptr;
    if (--page->live > 0) return;
    if (spare_ == nullptr) {
      spare_ = page;
    } else {
      std::free(page);
    }
    page = nullptr;
    // Drop the empty pages at the front (the oldest ids); compact once they are half of it.
    while (head_ < pages_.size() && pages_[head_] == nullptr) {
      ++head_;
      ++first_page_;
    }
    if (head_ > 64 && head_ * 2 > pages_.size()) {
      pages_.erase(pages_.begin(), pages_.begin() + static_cast<ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  template <class F>
  void for_each(F&& fn) const {
    for (size_t i = head_; i < pages_.size(); ++i) {
      const Page* page = pages_[i];
      if (page == nullptr) continue;
      for (Coroutine* c : page->slots) {
        if (c != nullptr) fn(c);
      }
    }
  }

 private:
  struct Page {
    Coroutine* slots[kPageSize];
    size_t live;
  };
  std::vector<Page*> pages_;  // pages_[head_] covers first_page_
  size_t head_ = 0;
  long first_page_ = 0;
  Page* spare_ = nullptr;
};

}  // namespace coring::detail

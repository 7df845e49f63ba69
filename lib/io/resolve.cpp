// resolve(): numeric addresses and "localhost" at once, names through getaddrinfo on a worker
// thread, with a small process-wide cache.
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#include "core/scheduler.hpp"
#include "coring/system.hpp"
#include "io/address.hpp"
#include "io/offload_pool.hpp"

namespace coring {
namespace detail {
namespace {

constexpr int64_t kPositiveTtlNs = 60'000'000'000;
constexpr int64_t kNegativeTtlNs = 5'000'000'000;
constexpr size_t kCacheLimit = 1024;

struct Answer {
  std::vector<std::string> addresses;
  int error = 0;
};

class ResolveCache {
 public:
  static ResolveCache& instance() {
    static ResolveCache* cache = [] {
      auto* created = new ResolveCache;  // used by worker threads until exit: never freed
      // A child forked while a worker thread held the lock must not inherit it locked.
      ::pthread_atfork([] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); },
                       [] { new (&instance().mutex_) std::mutex; });
      return created;
    }();
    return *cache;
  }

  bool find(const std::string& key, Answer* answer) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    if (it->second.expires_ns <= monotonic_ns()) {
      entries_.erase(it);
      return false;
    }
    *answer = it->second.answer;
    return true;
  }

  void store(const std::string& key, const Answer& answer) {
    if (answer.error != 0 && answer.error != ENXIO) return;  // transient failures: ask again
    std::lock_guard lock(mutex_);
    int64_t now = monotonic_ns();
    if (entries_.size() >= kCacheLimit) {
      std::erase_if(entries_, [now](const auto& entry) { return entry.second.expires_ns <= now; });
      if (entries_.size() >= kCacheLimit) entries_.clear();
    }
    entries_[key] = Entry{answer, now + (answer.error == 0 ? kPositiveTtlNs : kNegativeTtlNs)};
  }

 private:
  struct Entry {
    Answer answer;
    int64_t expires_ns;
  };
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

std::string cache_key(std::string_view host, int family) {
  std::string key(host);
  std::transform(key.begin(), key.end(), key.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  key += '/';
  key += std::to_string(family);
  return key;
}

// RFC 1123 host name syntax, so that garbage never reaches a DNS server.
bool valid_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  if (host.back() == '.') host.remove_suffix(1);  // a fully qualified name
  size_t label = 0;
  for (size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      if (label == 0 || label > 63) return false;
      if (host[i - 1] == '-' || host[i - label] == '-') return false;
      label = 0;
      continue;
    }
    auto c = static_cast<unsigned char>(host[i]);
    if (!std::isalnum(c) && c != '-' && c != '_') return false;
    ++label;
  }
  return true;
}

bool ends_with_label(std::string_view host, std::string_view suffix) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.size() < suffix.size()) return false;
  std::string tail(host.substr(host.size() - suffix.size()));
  std::transform(tail.begin(), tail.end(), tail.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return tail == suffix &&
         (host.size() == suffix.size() || host[host.size() - suffix.size() - 1] == '.');
}

int map_gai_error(int code) {
  switch (code) {
    case 0:
      return 0;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
      return ENXIO;
    case EAI_AGAIN:
      return EAGAIN;
    case EAI_MEMORY:
      return ENOMEM;
    case EAI_SYSTEM:
      return errno != 0 ? errno : EIO;
    case EAI_FAMILY:
      return EAFNOSUPPORT;
    default:
      return EIO;
  }
}

// Blocking: runs on a worker thread (or on the caller outside a container).
Answer lookup(const std::string& host, int family) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address instead of one per socket type
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  errno = 0;
  Answer answer;
  answer.error = map_gai_error(::getaddrinfo(host.c_str(), nullptr, &hints, &list));
  if (answer.error != 0) return answer;
  std::vector<std::string> v4, v6;
  for (addrinfo* entry = list; entry != nullptr; entry = entry->ai_next) {
    std::string text = format_host(entry->ai_addr, entry->ai_addrlen, nullptr);
    if (text.empty()) continue;
    auto& bucket = entry->ai_family == AF_INET ? v4 : v6;
    if (std::find(bucket.begin(), bucket.end(), text) == bucket.end()) bucket.push_back(text);
  }
  ::freeaddrinfo(list);
  answer.addresses = std::move(v4);
  answer.addresses.insert(answer.addresses.end(), v6.begin(), v6.end());
  if (answer.addresses.empty()) answer.error = ENXIO;
  return answer;
}

// Where a waiting resolve() receives its answer; on the waiting coroutine's stack.
struct ResolveWait : WaitContext {
  Coroutine* self = nullptr;
  class ResolveJob* job = nullptr;  // null once answered or abandoned
  Answer answer;
  bool answered = false;
  bool timed_out = false;
};

class ResolveJob final : public RemoteJob {
 public:
  explicit ResolveJob(ResolveWait* wait) : wait_(wait) {}
  void abandon() noexcept { wait_ = nullptr; }
  Answer answer;

  void finish() override {
    if (wait_ == nullptr) return;  // the waiter timed out; the cache has the answer anyway
    wait_->answer = std::move(answer);
    wait_->answered = true;
    wait_->job = nullptr;
    tls_scheduler->make_ready(wait_->self);
  }

 private:
  ResolveWait* wait_;
};

void give_up(ResolveWait* wait, bool timed_out) {
  if (wait->answered || wait->job == nullptr) return;
  wait->job->abandon();
  wait->job = nullptr;
  wait->timed_out = timed_out;
  tls_scheduler->make_ready(wait->self);
}

void resolve_deadline(TimerNode* node) {
  give_up(static_cast<ResolveWait*>(node), true);
}
void resolve_abort(WaitContext* context) {
  auto* wait = static_cast<ResolveWait*>(context);
  tls_scheduler->disarm(*wait);
  give_up(wait, false);
}

std::vector<std::string> fail(int error) {
  set_last_error(error);
  return {};
}

}  // namespace
}  // namespace detail

std::vector<std::string> resolve(std::string_view host, int family, Duration timeout) {
  using namespace detail;
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) return fail(EAFNOSUPPORT);
  // A NUL byte would end the name early for getaddrinfo and inet_pton: "127.0.0.1\0evil".
  if (host.empty() || host.find('\0') != std::string_view::npos) return fail(EINVAL);
  SocketAddress numeric;
  if (parse_numeric_address(host, 0, family, &numeric)) {
    return {format_host(numeric.get(), numeric.length, nullptr)};
  }
  if (parse_numeric_address(host, 0, AF_UNSPEC, &numeric)) return fail(ENXIO);  // wrong family
  if (!valid_host_name(host)) return fail(EINVAL);
  // RFC 6761: "localhost" is always the loopback and ".invalid" never exists; no query needed.
  if (ends_with_label(host, "localhost")) {
    if (family == AF_INET) return {"127.0.0.1"};
    if (family == AF_INET6) return {"::1"};
    return {"127.0.0.1", "::1"};
  }
  if (ends_with_label(host, "invalid")) return fail(ENXIO);

  std::string key = cache_key(host, family);
  Answer answer;
  if (ResolveCache::instance().find(key, &answer)) {
    if (answer.error != 0) return fail(answer.error);
    return answer.addresses;
  }

  if (running_coroutine() == nullptr) {  // no scheduler to wait in: look it up right here
    answer = lookup(key.substr(0, host.size()), family);
    ResolveCache::instance().store(key, answer);
    if (answer.error != 0) return fail(answer.error);
    return answer.addresses;
  }
  if (timeout <= Duration::zero()) return fail(ETIMEDOUT);
  WaitPermit permit = begin_wait();
  if (!permit) return fail(permit.error);
  Scheduler* s = tls_scheduler;
  ExpectDelivery expect(*s->inbox());
  if (!expect.ok()) return fail(expect.error());

  ResolveWait wait;
  wait.self = permit.self;
  auto job = std::make_unique<ResolveJob>(&wait);
  wait.job = job.get();
  std::shared_ptr<RemoteInbox> inbox = s->inbox();
  std::string name(host);
  submit_to_workers(make_task([job = std::move(job), inbox, name, key, family]() mutable {
    job->answer = lookup(name, family);
    ResolveCache::instance().store(key, job->answer);
    inbox->deliver(std::move(job));
  }));
  wait.abort = &resolve_abort;
  wait.fire = &resolve_deadline;
  s->wait_until(permit, wait, deadline_for(timeout),
                [&] { return wait.answered || wait.job == nullptr; });
  if (!wait.answered) return fail(wait.timed_out ? ETIMEDOUT : ECANCELED);
  if (wait.answer.error != 0) return fail(wait.answer.error);
  return std::move(wait.answer.addresses);
}

}  // namespace coring

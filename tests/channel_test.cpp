// Channels: unbuffered rendezvous, buffered capacity, FIFO, timeouts (zero means "do not
// wait"), close semantics, values left untouched by failed pushes, and a 100,000-coroutine
// stress run.
//
// Assertions inside coroutines use CHECK only (a REQUIRE would throw out of the coroutine).
#include <doctest/doctest.h>

#include <coring/coring.hpp>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::Clock;
using coring_test::elapsed_ms;

namespace {
constexpr auto kLong = 5s;  // a wait the test must end early; if not, it times out and fails
}

TEST_CASE("unbuffered: push waits until a pop takes the value") {
  std::vector<std::string> events;
  int rc = Co::run([&] {
    Co::Channel<int> ch(0);
    CHECK(ch.capacity() == 0);
    long producer = Co::create([&] {
      events.push_back("push:start");
      bool ok = ch.push(1);
      events.push_back(ok ? "push:done" : "push:failed");
    });
    events.push_back("main:before-pop");
    CHECK(ch.producer_num() == 1);
    CHECK(ch.size() == 0);  // the value stays with its producer
    CHECK(ch.full());       // nothing fits in an unbuffered channel
    auto v = ch.pop();
    events.push_back("main:popped " + std::to_string(v.value_or(-1)));
    CHECK(Co::join({producer}));
    CHECK(ch.producer_num() == 0);
  });
  CHECK(rc == 0);
  CHECK(events ==
        std::vector<std::string>{"push:start", "main:before-pop", "main:popped 1", "push:done"});
}

TEST_CASE("unbuffered: pop waits until a push brings a value") {
  std::vector<std::string> events;
  int rc = Co::run([&] {
    Co::Channel<std::string> ch(0);
    long consumer = Co::create([&] {
      events.push_back("pop:start");
      auto v = ch.pop();
      events.push_back("pop:got " + v.value_or("nothing"));
    });
    events.push_back("main:before-push");
    CHECK(ch.consumer_num() == 1);
    const std::string hello = "hello";
    CHECK(ch.push(hello));  // const T&: copied
    CHECK(hello == "hello");
    CHECK(ch.consumer_num() == 0);
    events.push_back("main:pushed");
    CHECK(Co::join({consumer}));
  });
  CHECK(rc == 0);
  CHECK(events ==
        std::vector<std::string>{"pop:start", "main:before-push", "main:pushed", "pop:got hello"});
}

TEST_CASE("a waiting push of a const value hands over a copy and keeps the original") {
  std::string kept_unbuffered, kept_buffered;
  std::vector<std::string> popped;
  int rc = Co::run([&] {
    Co::Channel<std::string> unbuffered(0);
    Co::Channel<std::string> full(1);
    CHECK(full.push(std::string("first")));
    long a = Co::create([&] {
      const std::string value(40, 'u');  // long enough to live on the heap
      CHECK(unbuffered.push(value));     // waits: no consumer yet
      kept_unbuffered = value;
    });
    long b = Co::create([&] {
      const std::string value(40, 'b');
      CHECK(full.push(value));  // waits: no room yet
      kept_buffered = value;
    });
    CHECK(unbuffered.producer_num() == 1);
    CHECK(full.producer_num() == 1);
    popped.push_back(unbuffered.pop().value_or("none"));
    popped.push_back(full.pop().value_or("none"));  // "first"; b's copy joins the queue
    popped.push_back(full.pop().value_or("none"));
    CHECK(Co::join({a, b}));
  });
  CHECK(rc == 0);
  CHECK(popped == std::vector<std::string>{std::string(40, 'u'), "first", std::string(40, 'b')});
  CHECK(kept_unbuffered == std::string(40, 'u'));
  CHECK(kept_buffered == std::string(40, 'b'));
}

TEST_CASE("buffered: capacity, size, full, empty, FIFO order") {
  int rc = Co::run([&] {
    Co::Channel<int> ch(3);
    CHECK(ch.capacity() == 3);
    CHECK(ch.empty());
    CHECK_FALSE(ch.full());
    CHECK(ch.push(1, 0ms));  // room: no waiting needed
    CHECK(ch.push(2, 0ms));
    CHECK(ch.size() == 2);
    CHECK_FALSE(ch.empty());
    CHECK_FALSE(ch.full());
    CHECK(ch.push(3, 0ms));
    CHECK(ch.size() == 3);
    CHECK(ch.full());
    CHECK_FALSE(ch.push(4, 0ms));  // full: would wait
    CHECK(ch.error() == Co::ChannelError::timeout);
    CHECK(ch.size() == 3);

    // A producer that waits for room; its value joins the queue behind the others.
    std::vector<std::string> events;
    long producer = Co::create([&] {
      events.push_back("push4:start");
      CHECK(ch.push(4));
      events.push_back("push4:done");
    });
    events.push_back("main");
    CHECK(ch.producer_num() == 1);
    CHECK(ch.pop() == 1);
    CHECK(ch.size() == 3);  // 2, 3 and the waiting producer's 4
    CHECK(ch.producer_num() == 0);
    CHECK(ch.pop() == 2);
    CHECK(ch.pop() == 3);
    CHECK(ch.pop() == 4);
    CHECK(ch.empty());
    CHECK(Co::join({producer}));
    CHECK(events == std::vector<std::string>{"push4:start", "main", "push4:done"});
  });
  CHECK(rc == 0);
}

TEST_CASE("a channel can be filled and drained outside a coroutine when nothing waits") {
  Co::Channel<int> ch(2);
  CHECK(ch.push(1));
  CHECK(ch.push(2));
  CHECK_FALSE(ch.push(3));  // would wait: outside a coroutine that fails at once
  CHECK(Co::last_error() == std::errc::operation_not_permitted);
  CHECK(ch.pop() == 1);
  CHECK(ch.pop() == 2);
  CHECK_FALSE(ch.pop().has_value());
  CHECK(ch.consumer_num() == 0);
  CHECK(ch.producer_num() == 0);
}

TEST_CASE("timeout zero: succeed at once or fail at once, never wait") {
  int rc = Co::run([&] {
    Co::Channel<int> ch(0);
    bool other_ran = false;
    Co::create([&] {
      Co::this_coroutine::sleep(0ms);  // ready: it runs as soon as main waits
      other_ran = true;
    });
    CHECK_FALSE(ch.pop(0ms).has_value());
    CHECK(ch.error() == Co::ChannelError::timeout);
    CHECK(Co::last_error() == std::errc::timed_out);
    CHECK_FALSE(ch.push(1, 0ms));  // no consumer waits
    CHECK(ch.error() == Co::ChannelError::timeout);
    CHECK_FALSE(other_ran);  // main never gave up the CPU
    CHECK(ch.consumer_num() == 0);
    CHECK(ch.producer_num() == 0);

    // With a partner already waiting, timeout zero succeeds.
    long consumer = Co::create([&] { CHECK(ch.pop() == 5); });
    CHECK(ch.push(5, 0ms));
    long producer = Co::create([&] { CHECK(ch.push(6)); });
    CHECK(ch.pop(0ms) == 6);
    CHECK(Co::join({consumer, producer}));
  });
  CHECK(rc == 0);
}

TEST_CASE("timeouts: a timed-out wait fails after its timeout and leaves no waiter behind") {
  int rc = Co::run([&] {
    Co::Channel<int> ch(0);
    auto start = Clock::now();
    CHECK_FALSE(ch.pop(50ms).has_value());
    auto waited = elapsed_ms(start);
    CHECK(waited >= 50ms);
    CHECK(waited < 5s);
    CHECK(ch.error() == Co::ChannelError::timeout);
    CHECK(Co::last_error() == std::errc::timed_out);
    CHECK(ch.consumer_num() == 0);
    CHECK_FALSE(ch.push(1, 0ms));  // the timed-out consumer is really gone

    auto value = std::make_unique<int>(9);
    start = Clock::now();
    CHECK_FALSE(Co::Channel<std::unique_ptr<int>>(0).push(std::move(value), 30ms));
    waited = elapsed_ms(start);
    CHECK(waited >= 30ms);
    CHECK(waited < 5s);
    CHECK(value != nullptr);  // a failed push does not move from its argument

    Co::Channel<std::unique_ptr<int>> full(1);
    CHECK(full.push(std::make_unique<int>(1)));
    CHECK_FALSE(full.push(std::move(value), 20ms));
    CHECK(full.error() == Co::ChannelError::timeout);
    CHECK(full.producer_num() == 0);
    CHECK(full.size() == 1);
    CHECK((value != nullptr && *value == 9));
    auto first = full.pop(0ms);
    CHECK((first.has_value() && **first == 1));
    CHECK(full.empty());  // the timed-out value did not sneak in

    // Many timed-out waiters in a row, interleaved with a live one.
    Co::Channel<int> busy(0);
    int got = 0;
    long live = Co::create([&] { got = busy.pop().value_or(-1); });
    std::vector<long> timers;
    for (int i = 0; i < 10; ++i) {
      timers.push_back(Co::create([&] { CHECK_FALSE(busy.pop(1ms).has_value()); }));
    }
    CHECK(busy.consumer_num() == 11);
    CHECK(Co::join(timers));
    CHECK(busy.consumer_num() == 1);
    CHECK(busy.push(77));
    CHECK(Co::join({live}));
    CHECK(got == 77);
  });
  CHECK(rc == 0);
}

TEST_CASE("a successful move push moves; a failed one never does") {
  int rc = Co::run([&] {
    Co::Channel<std::unique_ptr<int>> ch(1);
    auto a = std::make_unique<int>(1);
    CHECK(ch.push(std::move(a)));
    CHECK(a == nullptr);
    auto b = std::make_unique<int>(2);
    CHECK_FALSE(ch.push(std::move(b), 0ms));  // full
    CHECK((b != nullptr && *b == 2));
    ch.close();
    CHECK_FALSE(ch.push(std::move(b)));  // closed
    CHECK(ch.error() == Co::ChannelError::closed);
    CHECK((b != nullptr && *b == 2));
    auto out = ch.pop();
    CHECK((out.has_value() && *out != nullptr && **out == 1));
  });
  CHECK(rc == 0);
}

TEST_CASE("close: wakes every waiter with failure; queued items still pop") {
  struct Seen {
    bool ok = true;
    Co::ChannelError error = Co::ChannelError::ok;
  };
  std::vector<Seen> consumers(3), producers(3);
  std::vector<int> drained;
  std::vector<std::unique_ptr<int>> kept(3);
  int rc = Co::run([&] {
    Co::Channel<int> unbuffered(0);
    Co::Channel<std::unique_ptr<int>> buffered(2);
    std::vector<long> ids;
    for (int i = 0; i < 3; ++i) {
      ids.push_back(Co::create([&, i] {
        consumers[i].ok = unbuffered.pop(kLong).has_value();
        consumers[i].error = unbuffered.error();
      }));
    }
    CHECK(buffered.push(std::make_unique<int>(10)));
    CHECK(buffered.push(std::make_unique<int>(11)));
    for (int i = 0; i < 3; ++i) {
      ids.push_back(Co::create([&, i] {
        kept[i] = std::make_unique<int>(100 + i);
        producers[i].ok = buffered.push(std::move(kept[i]), kLong);
        producers[i].error = buffered.error();
      }));
    }
    CHECK(unbuffered.consumer_num() == 3);
    CHECK(buffered.producer_num() == 3);

    auto start = Clock::now();
    unbuffered.close();
    buffered.close();
    buffered.close();  // idempotent
    CHECK(unbuffered.closed());
    CHECK(buffered.closed());
    CHECK(unbuffered.consumer_num() == 0);
    CHECK(buffered.producer_num() == 0);
    CHECK(Co::join(ids, 2 * kLong));
    CHECK(elapsed_ms(start) < kLong / 2);  // woken by close, not by their timeouts

    // Items queued before close() still come out, then pop fails with closed.
    while (auto v = buffered.pop()) drained.push_back(**v);
    CHECK(buffered.error() == Co::ChannelError::closed);
    CHECK_FALSE(buffered.pop(kLong).has_value());  // fails at once, never waits
    CHECK_FALSE(unbuffered.pop().has_value());
    CHECK(unbuffered.error() == Co::ChannelError::closed);
    CHECK_FALSE(unbuffered.push(1));
    CHECK(unbuffered.error() == Co::ChannelError::closed);
    CHECK(elapsed_ms(start) < kLong / 2);
  });
  CHECK(rc == 0);
  for (const Seen& s : consumers) {
    CHECK_FALSE(s.ok);
    CHECK(s.error == Co::ChannelError::closed);
  }
  for (const Seen& s : producers) {
    CHECK_FALSE(s.ok);
    CHECK(s.error == Co::ChannelError::closed);
  }
  for (int i = 0; i < 3; ++i) {
    CHECK((kept[i] != nullptr && *kept[i] == 100 + i));  // not moved from
  }
  CHECK(drained == std::vector<int>{10, 11});
}

TEST_CASE("destroying a channel wakes its waiters with failure and a warning") {
  coring_test::LogCapture logs;
  bool consumer_ok = true, producer_ok = true;
  int rc = Co::run([&] {
    auto unbuffered = std::make_unique<Co::Channel<int>>(0);
    auto full = std::make_unique<Co::Channel<std::string>>(1);
    CHECK(full->push("queued"));
    long consumer = Co::create([&, ch = unbuffered.get()] {
      consumer_ok = ch->pop(kLong).has_value();  // must not touch *ch after this
    });
    long producer =
        Co::create([&, ch = full.get()] { producer_ok = ch->push(std::string("waiting"), kLong); });
    auto start = Clock::now();
    unbuffered.reset();
    full.reset();
    CHECK(Co::join({consumer, producer}, 2 * kLong));
    CHECK(elapsed_ms(start) < kLong / 2);
  });
  CHECK(rc == 0);
  CHECK_FALSE(consumer_ok);
  CHECK_FALSE(producer_ok);
  CHECK(logs.count(Co::LogLevel::warning, "Channel destroyed") == 2);
}

TEST_CASE("waiting consumers and producers are served first come, first served") {
  std::vector<int> consumer_order;
  std::vector<int> popped;
  int rc = Co::run([&] {
    Co::Channel<int> ch(0);
    std::vector<long> ids;
    for (int i = 0; i < 4; ++i) {
      ids.push_back(Co::create([&, i] {
        auto v = ch.pop();
        consumer_order.push_back(i * 10 + v.value_or(-1));
      }));
    }
    for (int v = 0; v < 4; ++v) CHECK(ch.push(v, 0ms));  // all consumers already wait
    CHECK(Co::join(ids));

    Co::Channel<int> buffered(1);
    CHECK(buffered.push(100));
    ids.clear();
    for (int i = 0; i < 4; ++i) ids.push_back(Co::create([&, i] { CHECK(buffered.push(i)); }));
    for (int i = 0; i < 5; ++i) popped.push_back(buffered.pop().value_or(-1));
    CHECK(Co::join(ids));
  });
  CHECK(rc == 0);
  CHECK(consumer_order == std::vector<int>{0, 11, 22, 33});  // consumer i got value i
  CHECK(popped == std::vector<int>{100, 0, 1, 2, 3});
}

TEST_CASE("FIFO across several producers: 100,000 items, exact sum, per-producer order") {
  constexpr int kProducers = 4;
  constexpr long kPerProducer = 25'000;
  for (size_t capacity : {size_t{0}, size_t{1}, size_t{64}}) {
    CAPTURE(capacity);
    long sum = 0, count = 0;
    bool in_order = true;
    int rc = Co::run([&] {
      Co::Channel<long> ch(capacity);
      Co::WaitGroup wg;
      for (int p = 0; p < kProducers; ++p) {
        wg.add();
        Co::create([&, p] {
          for (long i = 0; i < kPerProducer; ++i) ch.push(p * 1'000'000L + i);
          wg.done();
        });
      }
      Co::create([&] {
        wg.wait();
        ch.close();
      });
      std::vector<long> last(kProducers, -1);
      while (auto v = ch.pop()) {
        long producer = *v / 1'000'000L, i = *v % 1'000'000L;
        if (producer < 0 || producer >= kProducers || i != last[producer] + 1) in_order = false;
        if (producer >= 0 && producer < kProducers) last[producer] = i;
        sum += *v;
        ++count;
      }
      CHECK(ch.error() == Co::ChannelError::closed);
    });
    CHECK(rc == 0);
    CHECK(count == kProducers * kPerProducer);
    CHECK(in_order);
    long expected = 0;
    for (int p = 0; p < kProducers; ++p) {
      expected += p * 1'000'000L * kPerProducer + kPerProducer * (kPerProducer - 1) / 2;
    }
    CHECK(sum == expected);
  }
}

TEST_CASE("stress: 100,000 coroutines pass tokens along a chain of channels") {
  constexpr long kStages = 100'000;
  constexpr long kTokens = 5;
  Co::RunOptions options;
  options.stack_size = 16 * 1024;
  options.stack_guard = false;
  options.max_coroutines = kStages + 16;
  std::vector<long> results;
  size_t peak = 0;
  long created = 0;
  auto start = Clock::now();
  int rc = Co::run(
      [&] {
        // channel s feeds stage s; stage s adds s + 1 and passes the token to channel s + 1
        std::vector<std::unique_ptr<Co::Channel<long>>> channels;
        channels.reserve(kStages + 1);
        for (long s = 0; s <= kStages; ++s) {
          channels.push_back(std::make_unique<Co::Channel<long>>(s % 2 == 0 ? 0 : 1));
        }
        for (long s = 0; s < kStages; ++s) {
          long id = Co::create([&, s] {
            Co::Channel<long>& in = *channels[s];
            Co::Channel<long>& out = *channels[s + 1];
            while (auto token = in.pop()) out.push(*token + s + 1);
            out.close();
          });
          if (id > 0) ++created;
        }
        peak = Co::stats().coroutine_peak_num;
        Co::create([&] {
          for (long t = 0; t < kTokens; ++t) channels[0]->push(t * 1'000'000'000'000L);
          channels[0]->close();
        });
        while (auto v = channels[kStages]->pop()) results.push_back(*v);
      },
      options);
  MESSAGE("stress: " << elapsed_ms(start).count() << " ms");
  CHECK(rc == 0);
  CHECK(created == kStages);
  CHECK(peak == static_cast<size_t>(kStages + 1));
  REQUIRE(results.size() == static_cast<size_t>(kTokens));
  const long added = kStages * (kStages + 1) / 2;
  for (long t = 0; t < kTokens; ++t) CHECK(results[t] == t * 1'000'000'000'000L + added);
  long checksum = std::accumulate(results.begin(), results.end(), 0L);
  CHECK(checksum == kTokens * added + 1'000'000'000'000L * kTokens * (kTokens - 1) / 2);
}

TEST_CASE("close() then destroying the channel at once: the calls it woke do not touch it") {
  // The usual shape: close, then let the channel go out of scope while the consumers and
  // producers it woke have not run yet. (Under ASan a touch of the freed channel is reported.)
  int failed_pops = 0, failed_pushes = 0;
  std::vector<Co::ChannelError> errors_seen;
  int rc = Co::run([&] {
    Co::WaitGroup done;
    auto channel = std::make_unique<Co::Channel<int>>(0);
    Co::Channel<int>* raw = channel.get();
    for (int i = 0; i < 3; ++i) {
      done.add();
      Co::create([&done, &failed_pops, raw] {
        if (!raw->pop()) ++failed_pops;
        done.done();
      });
    }
    auto other = std::make_unique<Co::Channel<int>>(0);
    Co::Channel<int>* raw_other = other.get();
    done.add();
    Co::create([&done, &failed_pushes, raw_other] {
      if (!raw_other->push(1)) ++failed_pushes;
      done.done();
    });
    channel->close();
    errors_seen.push_back(channel->error());
    channel.reset();
    other->close();
    errors_seen.push_back(other->error());
    other.reset();
    done.wait();
  });
  CHECK(rc == 0);
  CHECK(failed_pops == 3);
  CHECK(failed_pushes == 1);
  // close() recorded why the woken calls fail.
  CHECK(errors_seen ==
        std::vector<Co::ChannelError>{Co::ChannelError::closed, Co::ChannelError::closed});
}

namespace {
// A value whose copy throws when asked to; moves never throw.
struct Fragile {
  int value;
  bool copy_throws;
  Fragile(int v, bool throws) : value(v), copy_throws(throws) {}
  Fragile(const Fragile& other) : value(other.value), copy_throws(other.copy_throws) {
    if (other.copy_throws) throw std::runtime_error("copy refused");
  }
  Fragile(Fragile&& other) noexcept : value(other.value), copy_throws(other.copy_throws) {}
};
}  // namespace

TEST_CASE("a copy that throws lands in the producer's push(), and no queued value is lost") {
  int popped = 0, producer_threw = 0;
  size_t left = 99;
  int rc = Co::run([&] {
    Co::Channel<Fragile> ch(1);
    CHECK(ch.push(Fragile(1, false)));  // full now
    Co::create([&] {
      const Fragile bad(2, true);
      try {
        ch.push(bad);  // waits: the buffer is full
      } catch (const std::runtime_error&) {
        ++producer_threw;
      }
    });
    // Takes the queued 1; the producer's copy fails in its push, not here.
    CHECK_NOTHROW(popped = ch.pop().value_or(Fragile(-1, false)).value);
    left = ch.size();
  });
  CHECK(rc == 0);
  CHECK(popped == 1);
  CHECK(producer_threw == 1);
  CHECK(left == 0);
}

TEST_CASE("unbuffered: a producer whose copy throws fails alone; the consumer takes the next") {
  int popped = 0, producer_threw = 0;
  int rc = Co::run([&] {
    Co::Channel<Fragile> ch(0);
    Co::create([&] {
      const Fragile bad(2, true);
      try {
        ch.push(bad);
      } catch (const std::runtime_error&) {
        ++producer_threw;
      }
    });
    Co::create([&] {
      Co::this_coroutine::sleep(Co::Duration::zero());  // after the consumer has looked
      ch.push(Fragile(3, false));
    });
    CHECK_NOTHROW(popped = ch.pop(5s).value_or(Fragile(-1, false)).value);
  });
  CHECK(rc == 0);
  CHECK(popped == 3);
  CHECK(producer_threw == 1);
}

TEST_CASE("a pop or push cancelled or timed out, then the channel destroyed: nothing touches it") {
  // The ended call resumes after its channel is gone: it must not write into it (ASan sees a
  // heap-use-after-free otherwise). error() is recorded while the channel still exists.
  Co::ChannelError seen_cancel = Co::ChannelError::ok, seen_timeout = Co::ChannelError::ok;
  int rc = Co::run([&] {
    for (int round = 0; round < 2; ++round) {
      auto ch = std::make_unique<Co::Channel<int>>(0);
      bool failed = false;
      long waiter =
          Co::create([&, round] { failed = round == 0 ? !ch->pop() : !ch->push(1, 5ms); });
      if (round == 0) {
        CHECK(Co::cancel(waiter));
        seen_cancel = ch->error();
      } else {
        // The timeout ends the push while this coroutine sleeps; the channel still exists then.
        Co::this_coroutine::sleep(20ms);
        seen_timeout = ch->error();
      }
      ch.reset();  // before the ended call has run again (round 0) or right after (round 1)
      CHECK(Co::join({waiter}, 5s));
      CHECK(failed);
    }
  });
  CHECK(rc == 0);
  CHECK(seen_cancel == Co::ChannelError::canceled);
  CHECK(seen_timeout == Co::ChannelError::timeout);
}

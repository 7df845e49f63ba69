#include <doctest/doctest.h>

#include <coring/coring.hpp>

TEST_CASE("smoke") {
  int steps = 0;
  int rc = Co::run([&] {
    ++steps;
    long child = Co::create([&] {
      ++steps;
      Co::this_coroutine::sleep(std::chrono::milliseconds(10));
      ++steps;
    });
    CHECK(child > 0);
    Co::Channel<int> ch(0);
    Co::create([&] { ch.push(42); });
    auto v = ch.pop();
    CHECK(v == 42);
    ++steps;
  });
  CHECK(rc == 0);
  CHECK(steps == 4);
}

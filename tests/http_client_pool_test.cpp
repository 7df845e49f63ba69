// http::ClientPool against coring's own HTTP server on 127.0.0.1: many coroutines share a few
// keep-alive connections, waits for a free Client are bounded, close() fails the waiters, and
// a pooled connection the server closed while it sat idle costs no request.
#include <doctest/doctest.h>

#include <chrono>
#include <coring/coring.hpp>
#include <stdexcept>
#include <string>

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using namespace coring_test;  // NOLINT: the suites' shared helpers
namespace http = coring::http;

namespace {

// A server whose /echo answers with the request's query, so that every response says which
// request it answers.
template <class Body>
void with_echo_server(const http::ServerOptions& options, Body&& body) {
  int rc = Co::run([&] {
    http::Server server("127.0.0.1", 0, options);
    server.handle("/echo", [](http::Request& request, http::Response& response) {
      response.end(request.query());
    });
    Running<http::Server> running(server);
    CO_REQUIRE(running.port() != 0);
    body(server, running.port());
    CHECK(running.stop());
  });
  CHECK(rc == 0);
}

}  // namespace

TEST_CASE("http::ClientPool: 200 coroutines share 4 connections, every answer is their own") {
  int right = 0, wrong = 0;
  uint64_t accepted = 0;
  with_echo_server({}, [&](http::Server& server, uint16_t port) {
    http::ClientPoolOptions options;
    options.size = 4;
    http::ClientPool pool("127.0.0.1", port, options);
    Co::WaitGroup wg;
    for (int c = 0; c < 200; ++c) {
      spawn(wg, [&, c] {
        for (int i = 0; i < 5; ++i) {
          std::string id = std::to_string(c) + "-" + std::to_string(i);
          http::ClientResponse response = pool.get("/echo?" + id);
          if (response.status == 200 && response.body == id) {
            ++right;
          } else {
            ++wrong;
          }
        }
      });
    }
    CHECK(settle(wg));
    CHECK(pool.connections() <= 4);
    CHECK(pool.idle() == pool.connections());
    accepted = server.stats().accepted;
  });
  CHECK(right == 1000);
  CHECK(wrong == 0);
  CHECK(accepted <= 4);
  CHECK(accepted >= 1);
}

TEST_CASE("http::ClientPool: no free Client within wait_timeout fails with -1 and ETIMEDOUT") {
  int status = 0, error = 0;
  std::string message;
  with_echo_server({}, [&](http::Server&, uint16_t port) {
    http::ClientPoolOptions options;
    options.size = 1;
    options.wait_timeout = 50ms;
    http::ClientPool pool("127.0.0.1", port, options);
    auto held = pool.borrow(kLong);  // the only one
    CO_REQUIRE(held.has_value());
    CHECK((*held)->get("/echo?held"));
    http::ClientResponse response = pool.get("/echo?late");
    status = response.status;
    error = response.error.value();
    message = response.error_message;
    held.reset();  // given back: the next request gets it
    CHECK(pool.get("/echo?after").body == "after");
  });
  CHECK(status == -1);
  CHECK(error == ETIMEDOUT);
  CHECK(message == "no pooled connection was free in time");
}

TEST_CASE("http::ClientPool: close() fails the waiting requests with EBADF and later ones too") {
  int waiter_status = 0, waiter_error = 0, later_error = 0;
  with_echo_server({}, [&](http::Server&, uint16_t port) {
    http::ClientPoolOptions options;
    options.size = 1;
    http::ClientPool pool("127.0.0.1", port, options);
    auto held = pool.borrow(kLong);
    CO_REQUIRE(held.has_value());
    Co::WaitGroup wg;
    spawn(wg, [&] {
      http::ClientResponse response = pool.get("/echo?waiting");
      waiter_status = response.status;
      waiter_error = response.error.value();
    });
    // create() ran the waiter until it waited: it is in the pool now.
    pool.close();
    CHECK(settle(wg));
    later_error = pool.get("/echo?late").error.value();
  });
  CHECK(waiter_status == -1);
  CHECK(waiter_error == EBADF);
  CHECK(later_error == EBADF);
}

TEST_CASE("http::ClientPool: a pooled connection the server closed while idle costs no request") {
  int ok = 0;
  uint64_t accepted = 0;
  http::ServerOptions server_options;
  server_options.keepalive_timeout = 100ms;
  with_echo_server(server_options, [&](http::Server& server, uint16_t port) {
    http::ClientPoolOptions options;
    options.size = 2;
    http::ClientPool pool("127.0.0.1", port, options);
    ok += pool.get("/echo?1").body == "1";
    // The test's input: idle past the server's keepalive_timeout, so that it closes the
    // connection. Then a POST, which is never sent twice: only the check before reuse saves it.
    Co::this_coroutine::sleep(300ms);
    ok += pool.post("/echo?2", "body").body == "2";
    ok += pool.get("/echo?3").body == "3";
    accepted = server.stats().accepted;
  });
  CHECK(ok == 3);
  CHECK(accepted == 2);  // the first connection, then its replacement
}

TEST_CASE("http::ClientPool: a size of 0 is a programming error") {
  int rc = Co::run([] {
    http::ClientPoolOptions options;
    options.size = 0;
    CHECK_THROWS_AS(http::ClientPool("127.0.0.1", 1, options), std::invalid_argument);
  });
  CHECK(rc == 0);
}

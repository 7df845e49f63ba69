// coring::http::ClientPool: many coroutines sharing a few keep-alive connections to one host,
// as Go's Transport does with MaxConnsPerHost and MaxIdleConnsPerHost.
//
// A Client is one connection and serves one coroutine at a time (a second one throws
// BindError); a ClientPool holds up to `size` Clients to one host:port (a ConnectionPool of
// them, see coring/pool.hpp) and lends one per request. get(), post() and execute() borrow a
// Client, make the request, copy the response out and give the Client back at once, so that a
// thousand coroutines can share eight connections; borrow() lends a Client for longer (several
// requests, streaming with on_body) and gives it back when its Handle goes. A Client keeps its
// connection between loans; it reconnects by itself when the server closed it while it sat idle
// (see http_client.hpp), so a pooled connection the server dropped costs no request. HTTPS:
// set client.https (and client.tls for a context of your own); the pool's Clients share that
// context (or the thread's default one), so each new connection resumes an earlier session.
//
// How things fail. A request fails as on a Client (ClientResponse::status -1..-5 and error,
// see http_client.hpp). Waiting for a Client is bounded by wait_timeout: when none came back in
// time the response has status -1 and ETIMEDOUT ("no pooled connection was free"), as Go's
// transport fails a request that waited past its deadline for a connection; after close(), -1
// and EBADF; cancel(cid) while waiting, -1 and ECANCELED. A Client whose request failed goes
// back to the pool all the same (its connection is closed and remade on its next request).
// A Client lent by borrow() comes back as the borrower left it: set_headers() or set_options()
// on it stay for its later borrowers (headers for every request belong in
// ClientPoolOptions::headers; one of those that cannot be sent fails every request with -4,
// EINVAL). A coroutine unwound while it waits for a Client (see coroutine.hpp) leaves the wait
// at once; one unwound during its request leaves the Client's connection closed, and the
// Client goes back to the pool. Like every pool, a ClientPool belongs to the container (thread)
// that made it, and must not be shared across processes: with WorkerPool, make it in
// on_worker_start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coring/common.hpp"
#include "coring/http_client.hpp"
#include "coring/pool.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring::http {

struct ClientPoolOptions {
  size_t size = 64;                  // Clients (connections) at most; 0: std::invalid_argument
  ClientOptions client;              // for every Client of the pool
  Duration wait_timeout = kForever;  // for a free Client; zero or less: do not wait
  // Headers every request of the pool sends (Client::set_headers).
  std::vector<std::pair<std::string, std::string>> headers;
};

class ClientPool {
 public:
  using Handle = ConnectionPool<Client>::Handle;

  ClientPool(std::string host, uint16_t port, ClientPoolOptions options = {});
  ClientPool(const ClientPool&) = delete;  // its Clients' factory refers to it
  ClientPool& operator=(const ClientPool&) = delete;

  ClientResponse get(std::string_view path);
  ClientResponse post(std::string_view path, std::string_view body);
  ClientResponse execute(std::string_view method, std::string_view path,
                         std::string_view body = {});
  // A Client for as long as the Handle lives; empty when none came in time (last_error()).
  std::optional<Handle> borrow(Duration timeout = kForever);

  void close();  // waiters fail (EBADF), idle connections close
  size_t size() const noexcept { return pool_.size(); }
  size_t idle() const noexcept { return pool_.idle(); }
  size_t connections() const noexcept { return pool_.connections(); }

 private:
  ClientPoolOptions options_;
  ConnectionPool<Client> pool_;
};

}  // namespace coring::http

#pragma GCC visibility pop

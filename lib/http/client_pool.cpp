// coring::http::ClientPool: a ConnectionPool of Clients to one host, lending one per request.
#include <cerrno>
#include <memory>
#include <stdexcept>
#include <utility>

#include "core/scheduler.hpp"
#include "coring/http_client_pool.hpp"
#include "http/client_core.hpp"

namespace coring::http {
namespace {

ClientResponse no_client() {
  ClientResponse response;
  response.status = -1;
  std::error_code error = coring::last_error();
  if (!error) error = std::error_code(ETIMEDOUT, std::generic_category());
  response.error = error;
  switch (error.value()) {
    case ETIMEDOUT:
      response.error_message = "no pooled connection was free in time";
      break;
    case EBADF:
      response.error_message = "the client pool is closed";
      break;
    default:
      response.error_message = error.message();
      break;
  }
  return response;
}

}  // namespace

ClientPool::ClientPool(std::string host, uint16_t port, ClientPoolOptions options)
    : options_(std::move(options)),
      pool_(
          [this, host = std::move(host), port] {
            auto client = std::make_unique<Client>(host, port, options_.client);
            if (!options_.headers.empty()) client->set_headers(options_.headers);
            return client;
          },
          options_.size) {}

std::optional<ClientPool::Handle> ClientPool::borrow(Duration timeout) {
  return pool_.get(timeout);
}

ClientResponse ClientPool::execute(std::string_view method, std::string_view path,
                                   std::string_view body) {
  std::optional<Handle> client = pool_.get(options_.wait_timeout);
  if (!client) return no_client();
  bool ok = (*client)->execute(method, path, body);
  return detail::take_response(**client, ok);
}

ClientResponse ClientPool::get(std::string_view path) {
  return execute("GET", path);
}

ClientResponse ClientPool::post(std::string_view path, std::string_view body) {
  return execute("POST", path, body);
}

void ClientPool::close() {
  pool_.close();
}

}  // namespace coring::http

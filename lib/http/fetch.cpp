// coring::http::get / post / execute (see coring/http_client.hpp): a URL taken apart, a Client
// taken from the idle ones this container keeps for that scheme, host and port, the response
// copied out, and the Client put back when its connection may be reused.
//
// The idle clients live in a thread_local table, because a container is a thread's; a container
// that ends closes them (Scheduler::at_end), so none is handed to the next one run on the thread.
// The table also remembers which container filled it (a weak reference to the scheduler's inbox:
// while it exists, no later scheduler's inbox can share its control block) and empties itself
// when another one asks.
#include <absl/container/flat_hash_map.h>

#include <cerrno>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/scheduler.hpp"
#include "coring/detail/wait.hpp"
#include "http/client_core.hpp"
#include "http/http_text.hpp"
#include "http/url.hpp"

namespace coring::http {
namespace {

constexpr size_t kIdlePerHost = 8;
constexpr size_t kIdleInAll = 64;

struct IdleClients {
  std::weak_ptr<coring::detail::RemoteInbox> container;
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<Client>>> by_host;
  size_t count = 0;

  // The table of the running container (emptied if it was another's). The container closes
  // its idle connections when it ends (Scheduler::at_end): none outlives it.
  static IdleClients& current() {
    thread_local IdleClients table;
    if (coring::detail::Scheduler* scheduler = coring::detail::tls_scheduler) {
      const std::shared_ptr<coring::detail::RemoteInbox>& inbox = scheduler->inbox();
      if (table.container.owner_before(inbox) || inbox.owner_before(table.container)) {
        table.clear();
        table.container = inbox;
        scheduler->at_end(&IdleClients::end_of_container, &table);
      }
    }
    return table;
  }

  void clear() noexcept {
    by_host.clear();
    count = 0;
  }

  static void end_of_container(void* table) {
    auto* idle = static_cast<IdleClients*>(table);
    // Moved out first: closing a client must not meet a table being cleared under it.
    auto closing = std::move(idle->by_host);
    idle->clear();
    idle->container.reset();
  }
};

// An http and an https connection to one host:port are not interchangeable.
std::string key_of(bool https, std::string_view host, uint16_t port) {
  std::string key(https ? "https://" : "http://");
  key.append(host);
  key += ':';
  key += std::to_string(port);
  return key;
}

ClientResponse failed_response(int error, std::string_view text) {
  ClientResponse response;
  response.status = -1;
  response.error = std::error_code(error, std::generic_category());
  response.error_message.assign(text);
  coring::detail::set_last_error(error);
  return response;
}

}  // namespace

namespace detail {

ClientResponse take_response(Client& client, bool ok) {
  ClientCore& core = ClientCore::of(client);
  ClientResponse response;
  response.status = core.status;
  response.error = client.error();
  response.error_message.assign(client.error_message());
  if (ok) {
    response.headers.reserve(client.headers().size());
    for (const Header& field : client.headers()) {
      response.headers.emplace_back(std::string(field.name), std::string(field.value));
    }
    response.body = std::move(core.body);
    core.body.clear();
  } else {
    coring::detail::set_last_error(core.error);
  }
  return response;
}

}  // namespace detail

std::optional<std::string_view> ClientResponse::header(std::string_view name) const noexcept {
  for (const auto& [field, value] : headers) {
    if (detail::same_name(field, name)) return std::string_view(value);
  }
  return std::nullopt;
}

ClientResponse execute(std::string_view method, std::string_view url, std::string_view body,
                       ClientOptions options) {
  detail::UrlParts parts;
  const char* why = nullptr;
  if (int error = detail::parse_url(url, &parts, &why)) return failed_response(error, why);
  std::string key = key_of(parts.https, parts.host, parts.port);
  options.https = parts.https;  // the URL's scheme decides
  // An https connection was verified with one context: it serves only a request that asks for
  // that context (a copy of it), or, with none, for the thread's default.
  std::unique_ptr<Client> client;
  IdleClients& idle = IdleClients::current();
  if (auto found = idle.by_host.find(key); found != idle.by_host.end()) {
    std::vector<std::unique_ptr<Client>>& clients = found->second;
    for (size_t i = clients.size(); i-- > 0;) {  // the most recently used first
      if (parts.https && detail::ClientCore::of(*clients[i]).options.tls != options.tls) continue;
      client = std::move(clients[i]);
      clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i));
      --idle.count;
      break;
    }
  }
  if (client) {
    client->set_options(std::move(options));
  } else {
    client = std::make_unique<Client>(std::string(parts.host), parts.port, std::move(options));
  }
  bool ok = client->execute(method, parts.target, body);
  ClientResponse response = detail::take_response(*client, ok);
  detail::ClientCore& core = detail::ClientCore::of(*client);
  // Put back only a connection to its own host (a redirect may have taken it elsewhere) that
  // may take another request; the host's entry is looked up again: others may have changed the
  // table while this request waited.
  if (ok && core.reusable && core.connected_https == core.options.https &&
      core.connected_port == core.port && core.connected_host == core.host) {
    std::vector<std::unique_ptr<Client>>& clients = idle.by_host[key];
    if (clients.size() < kIdlePerHost && idle.count < kIdleInAll) {
      clients.push_back(std::move(client));
      ++idle.count;
    }
  }
  return response;
}

ClientResponse get(std::string_view url, ClientOptions options) {
  return execute("GET", url, {}, std::move(options));
}

ClientResponse post(std::string_view url, std::string_view body, ClientOptions options) {
  return execute("POST", url, body, std::move(options));
}

}  // namespace coring::http

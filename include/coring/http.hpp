// HTTP on coroutines (namespace coring::http): the HTTP/1.1 server (http_server.hpp) and client
// (http_client.hpp), and a pool of clients to one host (http_client_pool.hpp).
#pragma once

#include "coring/http_client.hpp"
#include "coring/http_client_pool.hpp"
#include "coring/http_server.hpp"

// HTTP on coroutines (namespace coring::http): the HTTP/1.1 server (http_server.hpp).
#pragma once

#include "coring/http_server.hpp"

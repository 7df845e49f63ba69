// The umbrella header: everything coring offers. `Co::` is an alias of `coring::` so that
// Swoole-style code reads Co::run(...), Co::create(...).
#pragma once

#include "coring/channel.hpp"
#include "coring/common.hpp"
#include "coring/coroutine.hpp"
#include "coring/http.hpp"
#include "coring/log.hpp"
#include "coring/pool.hpp"
#include "coring/process.hpp"
#include "coring/server.hpp"
#include "coring/socket.hpp"
#include "coring/sync.hpp"
#include "coring/system.hpp"
#include "coring/timer.hpp"
#include "coring/tls.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace Co = coring;

#pragma GCC visibility pop

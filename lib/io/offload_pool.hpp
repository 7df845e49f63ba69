// The process-wide pool of worker threads behind offload() and resolve(). Threads start on
// demand up to a fixed bound (CORING_OFFLOAD_THREADS, default 4) and live until the process
// ends; a forked child starts with an empty pool of its own.
#pragma once

#include <memory>

#include "coring/detail/callable.hpp"

namespace coring::detail {

// Runs work->call() on a worker thread, some time later.
void submit_to_workers(std::unique_ptr<Task> work);

}  // namespace coring::detail

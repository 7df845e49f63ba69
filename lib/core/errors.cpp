#include <string>

#include "coring/common.hpp"

namespace coring {
namespace {

std::string bind_error_text(int fd, long bound_cid, long current_cid, BindError::Side side) {
  const char* operation = side == BindError::Side::reading ? "reading" : "writing";
  return "Socket#" + std::to_string(fd) + " has already been bound to another coroutine#" +
         std::to_string(bound_cid) + ", " + operation + " of the same socket in coroutine#" +
         std::to_string(current_cid) + " at the same time is not allowed";
}

}  // namespace

BindError::BindError(int fd, long bound_cid, long current_cid, Side side)
    : std::logic_error(bind_error_text(fd, bound_cid, current_cid, side)),
      fd_(fd),
      bound_cid_(bound_cid),
      current_cid_(current_cid),
      side_(side) {}

}  // namespace coring

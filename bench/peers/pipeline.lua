-- wrk script for the HTTP benchmark's pipelined runs (scripts/bench.sh, section "http"):
-- every write of a connection carries DEPTH requests for GET / (default 16), and the next write
-- goes out once all DEPTH responses have come back. wrk counts each response as a request;
-- its latency figures are per batch, not per request.
--
--   wrk -t1 -c100 -d5s -s bench/peers/pipeline.lua http://127.0.0.1:PORT/ -- 16
local batch

function init(args)
  local depth = tonumber(args[1]) or 16
  local one = wrk.format("GET", "/")
  batch = string.rep(one, depth)
end

function request()
  return batch
end

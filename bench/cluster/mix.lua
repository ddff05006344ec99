-- wrk: GET the ten functions of scripts/bench-cluster.sh in turn.
local paths = {}
for i = 1, 5 do
  paths[#paths + 1] = "/fn/compute" .. i .. "/"
  paths[#paths + 1] = "/fn/callout" .. i .. "/"
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

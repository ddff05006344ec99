-- wrk: GET /fn/f<i>/ with i drawn from a Zipf distribution (exponent
-- ZIPF_S, default 1.1) over FUNCTIONS functions (default 1000): a few hot
-- functions and a long tail, as a platform's traffic is.
local n = tonumber(os.getenv("FUNCTIONS") or "1000")
local s = tonumber(os.getenv("ZIPF_S") or "1.1")
local cdf = {}
local total = 0
for i = 1, n do
  total = total + 1 / i ^ s
  cdf[i] = total
end
for i = 1, n do
  cdf[i] = cdf[i] / total
end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", os.time() * 100 + counter)
end

function init(args)
  math.randomseed(seed)
end

function request()
  local r = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "/fn/f" .. lo .. "/")
end

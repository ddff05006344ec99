-- wrk -s post-json.lua: POST $BENCH_BODY (default {"name":"bench","n":1}) as
-- JSON, with `authorization: Bearer $BENCH_TOKEN` when that is set (isola).
local body, token = os.getenv("BENCH_BODY"), os.getenv("BENCH_TOKEN")
wrk.method = "POST"
wrk.body = (body and body ~= "") and body or '{"name":"bench","n":1}'
wrk.headers["content-type"] = "application/json"
if token and token ~= "" then
  wrk.headers["authorization"] = "Bearer " .. token
end

-- get_mig: bench/run's per-request workload for gcpr. One GET of a MIG first (it pays for the
-- token fetch and the TLS handshakes), then n more on the warm connection, then `decodes`
-- decodes of the MIG's body with gcp.json.decode, the C decoder every response goes through
-- (the part of gcpr's per-request cost raw libcurl does not pay). Returns
-- "FIRST_US LOOP_US DECODE_US", timed inside the run with gcp.now() as bench/raw_get.c times
-- libcurl, so start-up, the token and the handshakes stay out of the per-request number.
local gcp = require "gcp"

local MIG = "https://compute.googleapis.com/compute/v1/projects/demo-project/zones/" ..
            "us-central1-a/instanceGroupManagers/td-central-ig"

return gcp.recipe{
  description = "GETs one MIG 1 + n times, decodes its body `decodes` times, reports timings.",
  params = {{name = "n", type = "integer"}, {name = "decodes", type = "integer", default = 0}},
  run = function(p)
    local t0 = gcp.now()
    local body = gcp.http{url = MIG}.body
    local t1 = gcp.now()
    for _ = 1, p.n do gcp.http{url = MIG} end
    local t2 = gcp.now()
    for _ = 1, p.decodes do gcp.json.decode(body) end
    local t3 = gcp.now()
    return string.format("%.0f %.0f %.0f", (t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6)
  end,
}

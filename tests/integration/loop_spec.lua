-- One loop, many coroutines: concurrent requests really overlap in one gcpr process, and
-- gcp.map honours its limit.
local t = require "support"

describe("the event loop", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("overlaps 500 requests through gcp.map with limit 100, and never exceeds the limit", function()
    local mig = "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers/td-central-ig"
    fake:fault({path = mig, method = "GET", delay_ms = 100, times = -1})
    local dir = t.tmpdir()
    local path = t.recipe(dir, "fanout", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "500 GETs", run = function()
        local items = {}
        for i = 1, 500 do items[i] = i end
        local sizes = gcp.map(items, function()
          return gcp.http{url = "https://compute.googleapis.com]] .. mig .. [["}.json.targetSize
        end, {limit = 100})
        return #sizes
      end}
    ]])
    local r = t.run(fake, {"run", path})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("500\n", r.stdout)
    assert.are.equal(500, fake:count("GET", t.literal(mig) .. "$"))
    local stats = fake:stats()
    -- One token request for all 500 calls, and up to the limit in flight at once.
    assert.are.equal(1, fake:count("POST", "^/token$"))
    assert.is_true(stats.max_inflight >= 50, "max in flight was " .. stats.max_inflight)
    assert.is_true(stats.max_inflight <= 100, "max in flight was " .. stats.max_inflight)
  end)

  it("runs gcp.parallel branches at the same time and collects every failure", function()
    local dir = t.tmpdir()
    local path = t.recipe(dir, "par", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "par", run = function()
        local t0 = gcp.now()
        local a, b = gcp.parallel(function() gcp.sleep(0.5) return "a" end,
                                  function() gcp.sleep(0.5) return "b" end)
        return {a = a, b = b, overlapped = gcp.now() - t0 < 0.9}
      end}
    ]])
    local r = t.run(nil, {"run", path})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({a = "a", b = "b", overlapped = true}, t.json.decode(r.stdout))
  end)
end)

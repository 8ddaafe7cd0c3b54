-- The vertical slice end to end: gcpr run resize_mig against gcpr-fake, and how it fails.
local t = require "support"

local MIG_PATH = "/compute/v1/projects/demo%-project/zones/us%-central1%-a/instanceGroupManagers/td%-central%-ig"
local ARGS = {"run", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=td-central-ig"}

local function args(...)
  local a = {table.unpack(ARGS)}
  for _, x in ipairs({...}) do a[#a + 1] = x end
  return a
end

describe("gcpr run resize_mig", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("resizes the group, waits for the operation and prints the new target size", function()
    local r = t.run(fake, args("size=4"))
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.are.equal(4, out.targetSize)
    assert.are.equal("td-central-ig", out.mig)
    -- What the fake saw: a JWT grant, the resize with a valid token, waits until DONE, a read.
    local reqs = fake:requests()
    assert.are.equal("/token", reqs[1].path)
    local resize
    for _, q in ipairs(reqs) do if q.path:find(MIG_PATH .. "/resize$") then resize = q end end
    assert.matches("^requestId=[%x%-]+&size=4$", resize.query)
    assert.are.equal("valid", resize.auth)
    assert.are.equal("gcpr-runner@demo-project.iam.gserviceaccount.com", resize.principal)
    assert.is_true(fake:count("POST", "/operations/.*/wait$") >= 1)
    -- And the group really is at 4 now, as a second, read-only look confirms.
    local again = t.run(fake, args("size=4", "--dry-run"))
    assert.are.equal(4, t.json.decode(again.stdout:match("%b{}%s*$")).targetSize)
  end)

  it("sends no mutating request with --dry-run and prints the POST with the token redacted", function()
    local r = t.run(fake, args("size=7", "--dry-run"))
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("%[dry%-run%] POST https://compute%.googleapis%.com" .. MIG_PATH .. "/resize%?requestId=[%x%-]+&size=7", r.stdout)
    assert.matches("Authorization: Bearer REDACTED", r.stdout, 1, true)
    assert.are.equal(0, fake:count("POST", "^/compute/"))
    assert.are.equal(1, t.json.decode(r.stdout:match("%b{}%s*$")).targetSize)
  end)

  it("names a missing parameter, exits 2 and sends nothing", function()
    local r = t.run(fake, ARGS)
    assert.are.equal(2, r.code)
    assert.matches("missing required parameter 'size' %(integer: new target size%)", r.stderr)
    assert.are.equal(0, #fake:requests())
  end)

  it("names a wrongly typed parameter, exits 2 and sends nothing", function()
    local r = t.run(fake, args("size=four"))
    assert.are.equal(2, r.code)
    assert.matches("parameter 'size' expects an integer, got 'four'", r.stderr, 1, true)
    r = t.run(fake, args("size=-2"))
    assert.are.equal(2, r.code)
    assert.matches("parameter 'size' must be at least 0", r.stderr, 1, true)
    assert.are.equal(0, #fake:requests())
  end)

  it("reports Google's 404 for an unknown group and exits 1", function()
    local r = t.run(fake, {"run", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=nope", "size=2"})
    assert.are.equal(1, r.code)
    assert.matches("HTTP 404", r.stderr, 1, true)
    assert.matches("The resource 'projects/demo-project/zones/us-central1-a/instanceGroupManagers/nope' was not found",
                   r.stderr, 1, true)
    assert.matches("resize_mig%.lua:%d+: POST https://compute", r.stderr)
    assert.are.equal(1, select(2, r.stderr:gsub("\n", "")))
  end)

  it("fails with the operation's errors when the resize ends in error", function()
    fake:fault({path = "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers/td-central-ig/resize",
                op_error = {code = "ZONE_RESOURCE_POOL_EXHAUSTED", message = "The zone does not have enough resources."}})
    local r = t.run(fake, args("size=9"))
    assert.are.equal(1, r.code)
    assert.matches("ZONE_RESOURCE_POOL_EXHAUSTED: The zone does not have enough resources.", r.stderr, 1, true)
  end)

  it("stops at --timeout, says what it was waiting on, and exits 3", function()
    fake:config({op_delay_ms = 60000, wait_max_ms = 300})
    local r = t.run(fake, args("size=3", "--timeout", "1.5"))
    assert.are.equal(3, r.code)
    assert.matches("run exceeded its deadline of 1.5s %(%-%-timeout%)", r.stderr)
    assert.matches("waiting on: .*operation", r.stderr)
  end)

  it("keeps waiting through operations that are not done when wait returns", function()
    fake:config({op_delay_ms = 1200, wait_max_ms = 200})
    local r = t.run(fake, args("size=5"))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(5, t.json.decode(r.stdout).targetSize)
    -- The first wait came back before DONE, so it had to ask again.
    assert.is_true(fake:count("POST", "/wait$") >= 2)
  end)
end)

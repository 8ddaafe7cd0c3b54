-- Calling Google APIs correctly: retries (what is and is not retried), one requestId across
-- retries, Retry-After, paging, read-modify-write, and every operation shape in gcp.wait.
local t = require "support"

local MIG_PATH = "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers/td-central-ig"
local MIG = "https://compute.googleapis.com" .. MIG_PATH

local dir = t.tmpdir()

local function run(fake, body, args)
  local path = t.recipe(dir, "api", ([[
    local gcp = require "gcp"
    return gcp.recipe{description = "api", run = function()
      %s
    end}
  ]]):format(body))
  local a = {"run", path}
  for _, x in ipairs(args or {}) do a[#a + 1] = x end
  return t.run(fake, a)
end

describe("retries", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("retries a GET through 503s and a dropped connection", function()
    fake:fault({path = MIG_PATH, method = "GET", status = 503, times = 1})
    fake:fault({path = MIG_PATH, method = "GET", drop = true, times = 1})
    local r = run(fake, ("return gcp.http{url = %q}.json.name"):format(MIG))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("td-central-ig\n", r.stdout)
    assert.are.equal(3, fake:count("GET", t.literal(MIG_PATH) .. "$"))
    assert.matches("retry 1/5", r.stderr, 1, true)
  end)

  it("sends one requestId on every attempt of a Compute mutating call", function()
    fake:fault({path = MIG_PATH .. "/resize", status = 503, times = 2})
    local r = t.run(fake, {"run", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=td-central-ig", "size=2"})
    assert.are.equal(0, r.code, r.stderr)
    local ids = {}
    for _, q in ipairs(fake:requests()) do
      if q.path:find("/resize$") then ids[#ids + 1] = q.query:match("requestId=([%x%-]+)") end
    end
    assert.are.equal(3, #ids)
    assert.are.equal(ids[1], ids[2])
    assert.are.equal(ids[1], ids[3])
  end)

  it("does not retry a plain mutating call that may have run, but does retry a 429", function()
    local call = [[return gcp.http{method = "POST", url = "https://cloudbuild.googleapis.com/v1/projects/demo-project/triggers/deploy-to-dev:run", json = {branchName = "master"}}.status]]
    fake:fault({path = "/v1/projects/demo-project/triggers/deploy-to-dev:run", status = 503, times = 1})
    local r = run(fake, call)
    assert.are.equal(1, r.code)
    assert.are.equal(1, fake:count("POST", ":run$"))
    fake:fault({path = "/v1/projects/demo-project/triggers/deploy-to-dev:run", status = 429, times = 1, retry_after = "1"})
    r = run(fake, call)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(3, fake:count("POST", ":run$"))
    assert.matches("in 1.0s", r.stderr, 1, true)
  end)

  it("gives up after its deadline with the attempts counted, and honours retry = false", function()
    fake:fault({path = MIG_PATH, method = "GET", status = 500, times = -1})
    local r = run(fake, ("return gcp.http{url = %q, retry = {attempts = 3, initial = 0.05}}.status"):format(MIG))
    assert.are.equal(1, r.code)
    assert.matches("HTTP 500.*%(after 3 attempts%)", r.stderr)
    r = run(fake, ("return gcp.http{url = %q, retry = false}.status"):format(MIG))
    assert.are.equal(1, r.code)
    assert.are.equal(4, fake:count("GET", t.literal(MIG_PATH) .. "$"))
  end)
end)

describe("paging and read-modify-write", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("follows nextPageToken and Compute's aggregatedList", function()
    local r = run(fake, [[
      local names = {}
      for mig in gcp.items{url = "https://compute.googleapis.com/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers", query = {maxResults = 1}} do
        names[#names + 1] = mig.name
      end
      local all = {}
      for scope, mig in gcp.aggregated({url = "https://compute.googleapis.com/compute/v1/projects/demo-project/aggregated/instanceGroupManagers", query = {maxResults = 1}}, "instanceGroupManagers") do
        all[#all + 1] = scope .. "/" .. mig.name
      end
      return {zonal = names, aggregated = all}
    ]])
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.is_true(#out.zonal >= 2)
    assert.is_true(fake:count("GET", "/instanceGroupManagers$") >= #out.zonal)
    local joined = table.concat(out.aggregated, " ")
    assert.matches("zones/us%-central1%-a/td%-central%-ig", joined)
    assert.matches("regions/us%-central1/td%-regional%-ig", joined)
  end)

  it("reads again and rewrites when the fingerprint went stale", function()
    fake:fault({path = "/compute/v1/projects/demo-project/global/securityPolicies/stopcorp", method = "PATCH", status = 412, times = 1})
    local r = run(fake, [[
      local op = gcp.compute.update_policy("demo-project", "stopcorp", function(p) return {description = "updated by gcpr"} end)
      gcp.wait(op)
      return gcp.compute.get_policy("demo-project", "stopcorp").description
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("updated by gcpr\n", r.stdout)
    assert.are.equal(2, fake:count("PATCH", "/securityPolicies/stopcorp$"))
    assert.matches("changed while it was being updated", r.stderr, 1, true)
  end)
end)

describe("gcp.wait", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("waits on a Cloud SQL operation and surfaces its errors", function()
    local call = [[
      local res = gcp.http{method = "POST", url = "https://sqladmin.googleapis.com/v1/projects/demo-project/instances/demo-sql/restart", json = {}}
      return gcp.wait(res.json).status
    ]]
    local r = run(fake, call)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("DONE\n", r.stdout)
    fake:fault({path = "/v1/projects/demo-project/instances/demo-sql/restart", op_error = {code = "INTERNAL_ERROR", message = "restart failed"}})
    r = run(fake, call)
    assert.are.equal(1, r.code)
    assert.matches("INTERNAL_ERROR: restart failed", r.stderr, 1, true)
  end)

  it("waits on a google.longrunning.Operation at its service (a Cloud Run job)", function()
    local r = run(fake, [[return gcp.run.run_job("demo-project", "us-central1", "nightly-job").name]])
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("executions/", r.stdout, 1, true)
    assert.is_true(fake:count("GET", "/v2/projects/demo%-project/locations/us%-central1/operations/") >= 1)
  end)

  it("keeps waiting through failed polls, and says what was pending at its deadline", function()
    fake:config({op_delay_ms = 2500, wait_max_ms = 200})
    fake:fault({path = "/compute/v1/projects/demo-project/zones/us-central1-a/operations/", status = 503, times = 2})
    local r = t.run(fake, {"run", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=td-central-ig", "size=6"})
    assert.are.equal(0, r.code, r.stderr)
    fake:config({op_delay_ms = 60000})
    r = run(fake, ([[
      local op = gcp.http{method = "POST", url = %q .. "/resize", query = {size = 2}}
      return gcp.wait(op, {timeout = 1})
    ]]):format(MIG))
    assert.are.equal(3, r.code)
    assert.matches("operation operation%-[%w%-]+ still %u+.* after 1s %(gcp.wait timeout%)", r.stderr)
  end)
end)

describe("a gcp.http response", function()
  local fake
  setup(function() fake = t.start_fake() end)
  teardown(function() fake:stop() end)

  it("makes headers and json on first read, and shows them to pairs and to JSON output", function()
    local r = run(fake, ([[
      local res = gcp.http{url = %q}
      local seen = {}
      for k in pairs(res) do seen[#seen + 1] = k end
      table.sort(seen)
      local again = gcp.http{url = %q}
      return {ctype = res.headers["content-type"], name = res.json.name, keys = seen,
              whole = again}
    ]]):format(MIG, MIG))
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.matches("^application/json", out.ctype)
    assert.are.equal("td-central-ig", out.name)
    assert.are.same({"body", "headers", "json", "status", "url"}, out.keys)
    -- A response returned whole is printed with its headers and decoded body.
    assert.are.equal(200, out.whole.status)
    assert.are.equal("td-central-ig", out.whole.json.name)
    assert.matches("^application/json", out.whole.headers["content-type"])
    assert.are.equal(MIG, out.whole.url)
  end)

  it("leaves json nil for a body that is not JSON", function()
    local r = run(fake, [[
      local res = gcp.http{url = "https://hello-abc123-uc.a.run.app/", auth = "none", accept = "any"}
      return {status = res.status, json = res.json == nil, err = res.json_error == nil,
              html = res.headers["content-type"]:find("text/html", 1, true) ~= nil}
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({status = 401, json = true, err = true, html = true}, t.json.decode(r.stdout))
  end)

  it("joins a repeated header and says why a JSON body did not decode", function()
    fake:fault({path = MIG_PATH, method = "GET", body = '{"name": "td-central-ig",',
                headers = {{"X-Goog-Trace", "a"}, {"x-goog-trace", "b"}, {"Warning", "199 - w"}}})
    local r = run(fake, ([[
      local res = gcp.http{url = %q}
      return {status = res.status, trace = res.headers["x-goog-trace"],
              warning = res.headers.warning, json = res.json == nil, err = res.json_error}
    ]]):format(MIG))
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.are.equal(200, out.status)
    assert.are.equal("a, b", out.trace)
    assert.are.equal("199 - w", out.warning)
    assert.is_true(out.json)
    assert.is_string(out.err)
    assert.is_true(#out.err > 0)
  end)

  it("is decoded from gzip, which gcpr asks for", function()
    fake:fault({path = MIG_PATH, method = "GET", gzip = true})
    local r = run(fake, ([[
      local res = gcp.http{url = %q}
      return {name = res.json.name, encoding = res.headers["content-encoding"],
              plain = res.body:sub(1, 1)}
    ]]):format(MIG))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({name = "td-central-ig", encoding = "gzip", plain = "{"}, t.json.decode(r.stdout))
  end)

  it("gives a 401's header and decoded error body", function()
    local r = run(fake, ([[
      local res = gcp.http{url = %q, auth = "none", accept = {401}}
      return {status = res.status, www = res.headers["www-authenticate"],
              msg = res.json.error.status}
    ]]):format(MIG))
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.are.equal(401, out.status)
    assert.matches("^Bearer", out.www)
    assert.are.equal("UNAUTHENTICATED", out.msg)
  end)
end)

describe("request headers", function()
  local fake
  setup(function() fake = t.start_fake() end)
  teardown(function() fake:stop() end)

  it("sends gcpr's User-Agent and Accept-Encoding once each, or the caller's instead", function()
    local r = run(fake, [[
      local url = "https://hello-abc123-uc.a.run.app/echo"
      local mine = gcp.http{url = url, auth = "id_token", headers = {["User-Agent"] = "ops-bot/2",
                            ["accept-encoding"] = "identity"}}.json.headers
      return {ours = gcp.http{url = url, auth = "id_token"}.json.headers, mine = mine,
              version = gcp.version}
    ]])
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.are.same({"gzip"}, out.ours["Accept-Encoding"])
    assert.are.equal(1, #out.ours["User-Agent"])
    assert.matches("^gcpr/%d+%.%d+", out.ours["User-Agent"][1])
    assert.are.same({"ops-bot/2"}, out.mine["User-Agent"])
    assert.are.same({"identity"}, out.mine["Accept-Encoding"])
  end)
end)

describe("a bad gcp.http call", function()
  local fake
  setup(function() fake = t.start_fake() end)
  teardown(function() fake:stop() end)

  it("names a URL that is not http(s) at the recipe's line, sent or dry-run", function()
    for _, case in ipairs({{call = [[gcp.http{url = "ftp://example.com/x"}]]},
                           {call = [[gcp.http{url = 42}]]},
                           {call = [[gcp.http{method = "POST", url = "file:///etc/passwd", json = {}}]],
                            args = {"--dry-run"}}}) do
      local before = #fake:requests()
      local r = run(fake, case.call, case.args)
      assert.are.equal(1, r.code, r.stderr) -- a recipe's own mistake: the recipe failed
      assert.matches("api.lua:3: gcp.http: url must be an http(s) URL string, got", r.stderr, 1, true)
      assert.are.equal(before, #fake:requests())
    end
  end)
end)

describe("pooled requests", function()
  local fake
  setup(function() fake = t.start_fake() end)
  teardown(function() fake:stop() end)

  it("carry nothing of one request into the next: method, body, headers", function()
    local r = run(fake, [[
      local url = "https://hello-abc123-uc.a.run.app/echo"
      local function call(spec)
        spec.url, spec.auth = url, "id_token"
        local res = gcp.http(spec)
        local j = res.json or {}
        return {res.status, j.method or "-", j.body == nil and "-" or gcp.json.encode(j.body),
                j.headers and j.headers["User-Agent"][1] or "-"}
      end
      return {call{method = "POST", json = {n = 1}}, call{}, call{method = "HEAD"}, call{},
              call{method = "PUT", json = {n = 2}, headers = {["User-Agent"] = "ops-bot/2"}},
              call{}, call{method = "DELETE"}, call{}}
    ]])
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    local ua = out[2][4]
    assert.matches("^gcpr/", ua)
    assert.are.same({
      {200, "POST", '{"n":1}', ua}, {200, "GET", "null", ua}, {200, "-", "-", "-"},
      {200, "GET", "null", ua}, {200, "PUT", '{"n":2}', "ops-bot/2"}, {200, "GET", "null", ua},
      {200, "DELETE", "null", ua}, {200, "GET", "null", ua},
    }, out)
  end)

  it("route every host GCPR_CONNECT_TO covers, however many", function()
    local r = run(fake, [[
      local ok = 0
      for i = 1, 40 do
        local res = gcp.http{url = ("https://svc%d-abc123-uc.a.run.app/x"):format(i),
                             auth = "id_token", retry = false}
        if res.status == 200 then ok = ok + 1 end
      end
      return ok
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("40\n", r.stdout)
  end)
end)

describe("gcp.http's checks", function()
  local fake
  setup(function() fake = t.start_fake() end)
  teardown(function() fake:stop() end)

  local function refused(call, message)
    local before = #fake:requests()
    local r = run(fake, call)
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("api.lua:3: gcp.http: " .. message, r.stderr, 1, true)
    assert.are.equal(before, #fake:requests())
  end

  it("refuses a header that would smuggle in another, a bad name, method or timeout", function()
    refused(([[gcp.http{url = %q, headers = {["X-A"] = "a\r\nAuthorization: Bearer x"}}]]):format(MIG),
            "the value of header 'X-A' contains a line break or a NUL byte")
    refused(([[gcp.http{url = %q, headers = {["X-A"] = "a\0Injected: yes"}}]]):format(MIG),
            "the value of header 'X-A' contains a line break or a NUL byte")
    refused(([[gcp.http{url = %q, headers = {["X A:"] = "a"}}]]):format(MIG),
            "header name 'X A:' is not a valid HTTP header name")
    refused(([[gcp.http{url = %q, method = "GET /other HTTP/1.1\r\n"}]]):format(MIG),
            "method 'GET /other HTTP/1.1\\x0D\\x0A' is not an HTTP method")
    refused(([[gcp.http{url = %q, timeout = "abc"}]]):format(MIG),
            "timeout must be a positive number of seconds, got abc")
    -- A dry run checks what it prints as a real run checks what it sends.
    local r = run(fake, ([[gcp.http{method = "POST", url = %q, json = {}, timeout = -1}]]):format(MIG),
                  {"--dry-run"})
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("timeout must be a positive number of seconds, got -1", r.stderr, 1, true)
  end)

  it("sends what the run's defaults say even when a recipe changes them", function()
    local r = run(fake, ([[
      require("gcp.auth").defaults.quota_project = "billing-project"
      return gcp.http{url = %q}.status
    ]]):format(MIG))
    assert.are.equal(0, r.code, r.stderr)
    local reqs = fake:requests()
    assert.are.equal("billing-project", reqs[#reqs].quota_project)
  end)
end)

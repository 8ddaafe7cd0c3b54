-- The recipe library end to end against gcpr-fake: each recipe's success and failure, and
-- gcpr list / describe.
local t = require "support"

local P = "project=demo-project"

describe("recipes", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  describe("resize_mig", function()
    it("resizes a regional group, waits for the region operation and for stability", function()
      local r = t.run(fake, {"run", "resize_mig", P, "region=us-central1", "mig=td-regional-ig", "size=3"})
      assert.are.equal(0, r.code, r.stderr)
      local out = t.json.decode(r.stdout)
      assert.are.equal(3, out.targetSize)
      assert.is_true(out.stable)
      assert.is_true(fake:count("POST", "/regions/us%-central1/operations/.*/wait$") >= 1)
      assert.is_true(fake:count("GET", "/regionInstanceGroupManagers/td%-regional%-ig$") >= 1)
    end)

    it("wants exactly one of zone and region", function()
      local r = t.run(fake, {"run", "resize_mig", P, "mig=td-central-ig", "size=3"})
      assert.are.equal(2, r.code)
      assert.matches("give exactly one of zone= or region=", r.stderr, 1, true)
      assert.are.equal(0, #fake:requests())
    end)
  end)

  describe("patch_armor_rule", function()
    local base = {"run", "patch_armor_rule", P, "policy=stopcorp", "priority=1"}
    local function args(...) local a = {table.unpack(base)} for _, x in ipairs({...}) do a[#a + 1] = x end return a end

    it("sets the rule's source ranges with SRC_IPS_V1 through patchRule", function()
      local r = t.run(fake, args("src_ip_ranges=203.0.113.0/24,198.51.100.7/32"))
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({"203.0.113.0/24", "198.51.100.7/32"}, t.json.decode(r.stdout).srcIpRanges)
      local patch
      for _, q in ipairs(fake:requests()) do if q.path:find("/patchRule$") then patch = q end end
      assert.matches("priority=1", patch.query)
      assert.are.equal("SRC_IPS_V1", patch.body.match.versionedExpr)
      assert.is_true(fake:count("POST", "/global/operations/.*/wait$") >= 1)
    end)

    it("adds to the existing ranges with mode=add", function()
      local before = t.run(fake, args("src_ip_ranges=192.0.2.1/32", "--dry-run"))
      assert.are.equal(0, before.code, before.stderr)
      local r = t.run(fake, args("src_ip_ranges=192.0.2.1/32", "mode=add"))
      assert.are.equal(0, r.code, r.stderr)
      local ranges = t.json.decode(r.stdout).srcIpRanges
      assert.is_true(#ranges >= 2)
      assert.are.equal("192.0.2.1/32", ranges[#ranges])
    end)

    it("reports a rule that does not exist", function()
      local r = t.run(fake, {"run", "patch_armor_rule", P, "policy=stopcorp", "priority=777", "src_ip_ranges=192.0.2.1/32"})
      assert.are.equal(1, r.code)
      assert.matches("HTTP 400", r.stderr, 1, true)
    end)
  end)

  describe("run_build_trigger", function()
    it("runs the trigger on a branch, follows the operation to the build, and succeeds", function()
      local r = t.run(fake, {"run", "run_build_trigger", P, "trigger=deploy-to-dev", "branch=master",
                             'substitutions:={"_ENV":"dev"}'})
      assert.are.equal(0, r.code, r.stderr)
      local out = t.json.decode(r.stdout)
      assert.are.equal("SUCCESS", out.status)
      assert.matches("^https://console%.cloud%.google%.com/cloud%-build/builds", out.logUrl)
      local run
      for _, q in ipairs(fake:requests()) do if q.path:find(":run$") then run = q end end
      assert.are.equal("master", run.body.branchName)
      assert.are.same({_ENV = "dev"}, run.body.substitutions)
    end)

    it("exits 1 with the build's log URL when the build fails", function()
      fake:fault({path = "/v1/projects/demo-project/triggers/deploy-to-dev:run", build_status = "FAILURE"})
      local r = t.run(fake, {"run", "run_build_trigger", P, "trigger=deploy-to-dev", "tag=v1.2.3"})
      assert.are.equal(1, r.code)
      assert.matches("finished FAILURE", r.stderr, 1, true)
      assert.matches("log: https://console%.cloud%.google%.com/cloud%-build/builds/", r.stderr)
    end)

    it("refuses two of branch, tag and commit before sending anything", function()
      local r = t.run(fake, {"run", "run_build_trigger", P, "trigger=deploy-to-dev", "branch=a", "tag=b"})
      assert.are.equal(2, r.code)
      assert.are.equal(0, #fake:requests())
    end)
  end)

  describe("launch_dataflow_template", function()
    it("launches with a unique job name and waits until the job runs", function()
      local args = {"run", "launch_dataflow_template", P, "region=us-central1", "template=gs://dataflow-templates/latest/Word_Count",
                    "job_prefix=wordcount", 'parameters:={"inputFile":"gs://b/in.txt","output":"gs://b/out"}'}
      local a = t.run(fake, args)
      local b = t.run(fake, args)
      assert.are.equal(0, a.code, a.stderr)
      assert.are.equal(0, b.code, b.stderr)
      local ja, jb = t.json.decode(a.stdout), t.json.decode(b.stdout)
      assert.are.equal("JOB_STATE_RUNNING", ja.state)
      assert.matches("^wordcount%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x$", ja.jobName)
      assert.are_not.equal(ja.jobName, jb.jobName)
      local launch
      for _, q in ipairs(fake:requests()) do if q.path:find("templates:launch$") then launch = q end end
      assert.matches("gcsPath=gs%%3A%%2F%%2Fdataflow%-templates", launch.query)
      assert.are.equal("gs://b/in.txt", launch.body.parameters.inputFile)
    end)

    it("launches a Flex template and waits until done", function()
      local r = t.run(fake, {"run", "launch_dataflow_template", P, "region=us-central1", "template=gs://b/spec.json",
                             "job_prefix=flexy", "flex=true", "wait_for=done"})
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("JOB_STATE_DONE", t.json.decode(r.stdout).state)
      assert.are.equal(1, fake:count("POST", "flexTemplates:launch$"))
    end)

    it("fails when the job fails", function()
      fake:fault({path = "/v1b3/projects/demo-project/locations/us-central1/templates:launch", job_state = "JOB_STATE_FAILED"})
      local r = t.run(fake, {"run", "launch_dataflow_template", P, "region=us-central1", "template=gs://b/t",
                             "job_prefix=bad", "wait_for=done"})
      assert.are.equal(1, r.code)
      assert.matches("ended JOB_STATE_FAILED", r.stderr, 1, true)
    end)
  end)

  describe("call_service and call_iap", function()
    it("calls a Cloud Run service with an ID token for its URL", function()
      local r = t.run(fake, {"run", "call_service", "url=https://hello-abc123-uc.a.run.app/hello", "method=POST", 'body:={"x":1}'})
      assert.are.equal(0, r.code, r.stderr)
      local out = t.json.decode(r.stdout)
      assert.are.equal("https://hello-abc123-uc.a.run.app/hello", out.aud)
      assert.are.same({x = 1}, out.body)
    end)

    it("calls an IAP-protected app with an ID token for the IAP client ID", function()
      local r = t.run(fake, {"run", "call_iap", "url=https://demo-project.appspot.com/admin",
                             "client_id=123456789-iap.apps.googleusercontent.com"})
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("123456789-iap.apps.googleusercontent.com", t.json.decode(r.stdout).aud)
      r = t.run(fake, {"run", "call_iap", "url=https://demo-project.appspot.com/admin", "client_id=wrong.apps.googleusercontent.com"})
      assert.are.equal(1, r.code)
      assert.matches("HTTP 401", r.stderr, 1, true)
    end)
  end)
end)

describe("gcpr list and describe", function()
  it("lists every recipe with its description", function()
    local r = t.run(nil, {"list"})
    assert.are.equal(0, r.code, r.stderr)
    for _, name in ipairs({"resize_mig", "patch_armor_rule", "run_build_trigger", "launch_dataflow_template",
                           "call_service", "call_iap"}) do
      assert.matches("\n?" .. name .. "%s+%u", r.stdout)
    end
  end)

  it("describes a recipe's params: type, default and help", function()
    local r = t.run(nil, {"describe", "patch_armor_rule"})
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("src_ip_ranges%s+list of string%s+IP ranges", r.stdout)
    assert.matches("mode%s+string %(set|add%)%s+.*%[default set%]", r.stdout)
    assert.matches("priority%s+integer%s+.*%[required, min 0", r.stdout)
  end)
end)

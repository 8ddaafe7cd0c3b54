-- Credentials from every source Google's libraries accept, ID tokens from each, the token
-- cache, and confinement, all against gcpr-fake. Principals are checked from the fake's
-- request log: what Google would have seen.
local t = require "support"

local MIG = "https://compute.googleapis.com/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers/td-central-ig"
local TARGET = "https://hello-abc123-uc.a.run.app"
local RUNNER = "gcpr-runner@demo-project.iam.gserviceaccount.com"
local DEPLOYER = "deployer@demo-project.iam.gserviceaccount.com"
local COMPUTE_SA = "1234567890-compute@developer.gserviceaccount.com"
local USER = "operator@example.com"
local USER_CLIENT = "764086051850-fake.apps.googleusercontent.com"
local FEDERATED = "principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/gcpr-pool/subject/"

local dir = t.tmpdir()

-- A recipe that GETs the MIG with the given gcp.http options and calls the ID-token
-- target, returning what the target saw.
local function probe(http_opts, id_opts)
  return t.recipe(dir, "probe", ([[
    local gcp = require "gcp"
    return gcp.recipe{description = "probe", run = function()
      local opts = %s
      opts.url = %q
      local mig = gcp.http(opts).json
      local out = {mig = mig.name}
      local id = %s
      if id then
        id.url, id.auth = %q, "id_token"
        out.target = gcp.http(id).json
      end
      return out
    end}
  ]]):format(http_opts or "{}", MIG, id_opts or "nil", TARGET .. "/hello"))
end

local function last_principal(fake, pattern)
  local p
  for _, r in ipairs(fake:requests()) do if r.path:find(pattern) then p = r.principal end end
  return p
end

local function env_without_gac(fake, extra)
  local env = {GOOGLE_APPLICATION_CREDENTIALS = false}
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

describe("Application Default Credentials", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("uses GOOGLE_APPLICATION_CREDENTIALS first", function()
    local r = t.run(fake, {"run", probe(nil, "{}")})
    assert.are.equal(0, r.code, r.stderr)
    local out = t.json.decode(r.stdout)
    assert.are.equal(RUNNER, last_principal(fake, "instanceGroupManagers"))
    assert.are.equal(TARGET .. "/hello", out.target.aud)
    assert.are.equal(RUNNER, out.target.email)
  end)

  it("then gcloud's application_default_credentials.json (CLOUDSDK_CONFIG)", function()
    local cfg = t.tmpdir()
    os.execute(("cp %s %s/application_default_credentials.json"):format(t.quote(fake.home .. "/authorized-user.json"), cfg))
    local r = t.run(fake, {"run", probe()}, env_without_gac(fake, {CLOUDSDK_CONFIG = cfg}))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(USER, last_principal(fake, "instanceGroupManagers"))
    local info = t.run(fake, {"auth", "info", "--format", "json"}, env_without_gac(fake, {CLOUDSDK_CONFIG = cfg}))
    local i = t.json.decode(info.stdout)
    assert.are.equal("authorized_user", i.source)
    assert.matches("application_default_credentials.json exists", i.why)
    assert.are.equal(USER, i.principal)
    assert.are.equal("demo-project", i.quota_project)
  end)

  it("then ~/.config/gcloud when CLOUDSDK_CONFIG is unset", function()
    local home = t.tmpdir()
    os.execute(("mkdir -p %s/.config/gcloud && cp %s %s/.config/gcloud/application_default_credentials.json")
      :format(home, t.quote(fake.home .. "/authorized-user.json"), home))
    local r = t.run(fake, {"auth", "info", "--format", "json"}, env_without_gac(fake, {HOME = home}))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("authorized_user", t.json.decode(r.stdout).source)
  end)

  it("then the metadata server (GCE_METADATA_HOST), for access and ID tokens", function()
    local r = t.run(fake, {"run", probe(nil, "{}")}, env_without_gac(fake))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(COMPUTE_SA, last_principal(fake, "instanceGroupManagers"))
    assert.are.equal(COMPUTE_SA, t.json.decode(r.stdout).target.email)
    local md = 0
    for _, q in ipairs(fake:requests()) do if q.path:find("^/computeMetadata/") then md = md + 1 end end
    assert.is_true(md >= 2)
    local info = t.json.decode(t.run(fake, {"auth", "info", "--format", "json"}, env_without_gac(fake)).stdout)
    assert.are.equal("metadata", info.source)
    assert.are.equal(COMPUTE_SA, info.principal)
  end)

  it("says clearly when no source is left: metadata server down, or skipped", function()
    local r = t.run(fake, {"token"}, env_without_gac(fake, {GCE_METADATA_HOST = "127.0.0.1:1"}))
    assert.are.equal(2, r.code)
    assert.matches("no credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, there is no .*application_default_credentials.json", r.stderr)
    assert.matches("the metadata server at 127.0.0.1:1 did not answer %(.*; 3 attempts%)", r.stderr)
    r = t.run(fake, {"token"}, env_without_gac(fake, {GCPR_NO_METADATA = "1"}))
    assert.are.equal(2, r.code)
    assert.matches("the metadata server is skipped %(GCPR_NO_METADATA is set%)", r.stderr)
    r = t.run(fake, {"token"}, env_without_gac(fake, {NO_GCE_CHECK = "true"}))
    assert.matches("NO_GCE_CHECK is set", r.stderr)
  end)

  it("requires Metadata-Flavor: Google on the metadata server's answers", function()
    local port = 20000 + math.random(0, 20000)
    os.execute(("(printf 'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 2\\r\\n\\r\\n{}' | timeout 10 nc -l 127.0.0.1 %d -q 1 > /dev/null 2>&1 &) ; sleep 0.3"):format(port))
    local r = t.run(fake, {"token"}, env_without_gac(fake, {GCE_METADATA_HOST = "127.0.0.1:" .. port}))
    assert.are.equal(2, r.code)
    assert.matches("answered without 'Metadata%-Flavor: Google': it is not a metadata server", r.stderr)
  end)
end)

describe("credential file types", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  local function with_file(name) return {GOOGLE_APPLICATION_CREDENTIALS = fake.home .. "/" .. name} end

  it("authorized_user: the refresh-token grant, and its quota project", function()
    local r = t.run(fake, {"run", probe(nil, ("{audience = %q}"):format(USER_CLIENT))}, with_file("authorized-user.json"))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(USER, last_principal(fake, "instanceGroupManagers"))
  end)

  it("authorized_user: refuses an ID token audience it cannot honour, and says what to do", function()
    local r = t.run(fake, {"run", probe(nil, "{}")}, with_file("authorized-user.json"))
    assert.are.equal(2, r.code)
    assert.matches("user credentials %(authorized_user%) can only get ID tokens whose audience is their own OAuth client " ..
                   t.literal(USER_CLIENT), r.stderr)
    assert.matches("impersonate a service account", r.stderr, 1, true)
  end)

  it("impersonated_service_account: source credentials, then generateAccessToken", function()
    local r = t.run(fake, {"run", probe(nil, "{}")}, with_file("impersonated.json"))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(DEPLOYER, last_principal(fake, "instanceGroupManagers"))
    assert.are.equal(DEPLOYER, t.json.decode(r.stdout).target.email)
    assert.are.equal(1, fake:count("POST", ":generateAccessToken$"))
    assert.are.equal(1, fake:count("POST", ":generateIdToken$"))
  end)

  it("external_account from a file: STS exchange, then impersonation", function()
    local r = t.run(fake, {"run", probe(nil, "{}")}, with_file("external-file.json"))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(DEPLOYER, last_principal(fake, "instanceGroupManagers"))
    assert.matches("^" .. t.literal(FEDERATED), last_principal(fake, ":generateAccessToken$"))
    assert.are.equal(1, fake:count("POST", "^/v1/token$"))
  end)

  it("external_account from a URL: the federated token used directly", function()
    local r = t.run(fake, {"run", probe()}, with_file("external-url.json"))
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^" .. t.literal(FEDERATED), last_principal(fake, "instanceGroupManagers"))
    assert.are.equal(1, fake:count("GET", "^/subject%-token$"))
    r = t.run(fake, {"run", probe(nil, "{}")}, with_file("external-url.json"))
    assert.are.equal(2, r.code)
    assert.matches("get ID tokens only through a service account", r.stderr, 1, true)
  end)
end)

describe("options", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("impersonates on top of any source, with a delegate chain, from a recipe or the CLI", function()
    local opts = ("{impersonate = %q, delegates = {%q}}"):format(DEPLOYER, "builder@demo-project.iam.gserviceaccount.com")
    local r = t.run(fake, {"run", probe(opts, opts)})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(DEPLOYER, last_principal(fake, "instanceGroupManagers"))
    local gen
    for _, q in ipairs(fake:requests()) do if q.path:find(":generateAccessToken$") then gen = q end end
    assert.are.same({"projects/-/serviceAccounts/builder@demo-project.iam.gserviceaccount.com"}, gen.body.delegates)
    assert.are.equal(RUNNER, gen.principal)
    r = t.run(fake, {"run", "--impersonate", DEPLOYER, probe()})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(DEPLOYER, last_principal(fake, "instanceGroupManagers"))
  end)

  it("reports an impersonation IAM refuses", function()
    local r = t.run(fake, {"token", "--impersonate", "denied@demo-project.iam.gserviceaccount.com"})
    assert.are.equal(1, r.code)
    assert.matches("getting an access token for denied@demo%-project%.iam%.gserviceaccount%.com from https://iamcredentials", r.stderr)
    assert.matches("HTTP 403 PERMISSION_DENIED", r.stderr, 1, true)
  end)

  it("acts as a user through domain-wide delegation (subject)", function()
    local r = t.run(fake, {"run", probe('{subject = "alice@example.com"}')})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("alice@example.com", last_principal(fake, "instanceGroupManagers"))
    r = t.run(fake, {"run", probe('{subject = "alice@example.com"}')}, {GOOGLE_APPLICATION_CREDENTIALS = fake.home .. "/authorized-user.json"})
    assert.are.equal(2, r.code)
    assert.matches("a subject %(domain%-wide delegation%) needs service%-account key credentials", r.stderr)
  end)

  it("sends the quota project as x-goog-user-project", function()
    local r = t.run(fake, {"run", "--quota-project", "billing-project", probe()})
    assert.are.equal(0, r.code, r.stderr)
    local seen
    for _, q in ipairs(fake:requests()) do if q.path:find("instanceGroupManagers") then seen = q.quota_project end end
    assert.are.equal("billing-project", seen)
  end)
end)

describe("the token cache", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  local function fanout(opts)
    return t.recipe(dir, "fanout", ([[
      local gcp = require "gcp"
      return gcp.recipe{description = "100 at once", run = function()
        local items = {}
        for i = 1, 100 do items[i] = i end
        gcp.map(items, function() return gcp.http(%s) end, {limit = 100})
        return "ok"
      end}
    ]]):format(opts))
  end

  it("makes exactly one token request for 100 concurrent calls", function()
    local r = t.run(fake, {"run", fanout(("{url = %q}"):format(MIG))})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(1, fake:count("POST", "^/token$"))
    assert.are.equal(100, fake:count("GET", "instanceGroupManagers/td%-central%-ig$"))
  end)

  it("does so for impersonated tokens and ID tokens too", function()
    local r = t.run(fake, {"run", fanout(("{url = %q, impersonate = %q}"):format(MIG, DEPLOYER))})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(1, fake:count("POST", "^/token$"))
    assert.are.equal(1, fake:count("POST", ":generateAccessToken$"))
    r = t.run(fake, {"run", fanout(("{url = %q, auth = 'id_token'}"):format(TARGET .. "/x"))})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(2, fake:count("POST", "^/token$"))
  end)

  it("answers an API's 401 with one new token and one retry, never a loop", function()
    local path = "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers/td-central-ig"
    fake:fault({path = path, status = 401, times = 1})
    local r = t.run(fake, {"run", probe()})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(2, fake:count("POST", "^/token$"))
    assert.are.equal(2, fake:count("GET", t.literal(path) .. "$"))
    fake:fault({path = path, status = 401, times = -1})
    r = t.run(fake, {"run", probe()})
    assert.are.equal(1, r.code)
    assert.matches("HTTP 401", r.stderr, 1, true)
    assert.are.equal(4, fake:count("GET", t.literal(path) .. "$"))
  end)

  it("reports an assertion the token endpoint finds expired", function()
    fake:config({clock_skew_s = 7200})
    local r = t.run(fake, {"token"})
    assert.are.equal(1, r.code)
    assert.matches("invalid_grant: Invalid JWT: Token must be a short%-lived token", r.stderr)
  end)
end)

describe("confinement", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  local function call(opts)
    return t.run(fake, {"run", t.recipe(dir, "call", ([[
      local gcp = require "gcp"
      return gcp.recipe{description = "call", run = function()
        local res = gcp.http(%s)
        return {status = res.status}
      end}
    ]]):format(opts))})
  end

  it("sends no access token to a host outside googleapis.com", function()
    local r = call(("{url = %q, accept = 'any'}"):format(TARGET .. "/x"))
    assert.are.equal(0, r.code, r.stderr)
    local reqs = fake:requests()
    assert.are.equal("none", reqs[#reqs].auth)
    assert.are.equal(0, fake:count("POST", "^/token$"))
    r = call(("{url = %q, auth = 'access_token'}"):format(TARGET .. "/x"))
    assert.are.equal(1, r.code)
    assert.matches("refusing to send an access token to " .. t.literal(TARGET), r.stderr)
  end)

  it("sends no token over plain http", function()
    local md = "http://" .. fake.env.GCE_METADATA_HOST .. "/computeMetadata/v1/project/project-id"
    local r = call(("{url = %q, headers = {['Metadata-Flavor'] = 'Google'}}"):format(md))
    assert.are.equal(0, r.code, r.stderr)
    local reqs = fake:requests()
    assert.are.equal("none", reqs[#reqs].auth)
    r = call(("{url = %q, auth = 'id_token'}"):format(md))
    assert.matches("refusing to send an ID token to http://", r.stderr)
  end)

  it("drops Authorization when a redirect goes to another host", function()
    local r = call(("{url = %q, accept = 'any'}"):format(
      "https://compute.googleapis.com/fake-redirect?to=" .. TARGET .. "/landed"))
    assert.are.equal(0, r.code, r.stderr)
    local first, landed
    for _, q in ipairs(fake:requests()) do
      if q.path == "/fake-redirect" then first = q end
      if q.path == "/landed" then landed = q end
    end
    assert.are.equal("valid", first.auth)
    assert.are.equal("none", landed.auth)
  end)

  it("refuses a key file others can read, unless told it is shared on purpose", function()
    local key = dir .. "/shared-key.json"
    os.execute(("cp %s %s && chmod 644 %s"):format(t.quote(fake.env.GOOGLE_APPLICATION_CREDENTIALS), key, key))
    local r = t.run(fake, {"token"}, {GOOGLE_APPLICATION_CREDENTIALS = key})
    assert.are.equal(2, r.code)
    assert.matches("can be read by group or others %(mode 0644%): run 'chmod 600", r.stderr)
    r = t.run(fake, {"token"}, {GOOGLE_APPLICATION_CREDENTIALS = key, GCPR_ALLOW_SHARED_CREDENTIALS = "1"})
    assert.are.equal(0, r.code, r.stderr)
  end)

  it("leaves no core dump holding key material when it crashes", function()
    fake:config({op_delay_ms = 60000})
    local cwd = t.tmpdir()
    os.execute(("cd %s && ulimit -c unlimited && (env -u GCPR_LUA_DIR %s %s run resize_mig project=demo-project zone=us-central1-a mig=td-central-ig size=2 > out 2> err & echo $! > pid; sleep 1; kill -SEGV $(cat pid); sleep 0.5) ")
      :format(cwd, (function() local e = {} for k, v in pairs(fake.env) do e[#e + 1] = k .. "=" .. t.quote(v) end return table.concat(e, " ") end)(),
              t.quote(t.gcpr)))
    local p = io.popen("ls " .. cwd)
    local files = p:read("a")
    p:close()
    assert.is_nil(files:find("core"), "a core file was written: " .. files)
    local err = t.read_file(cwd .. "/err") or ""
    assert.is_nil(err:find("PRIVATE KEY", 1, true))
    assert.is_nil(err:find("ya29.", 1, true))
  end)
end)

describe("gcpr token and gcpr auth info", function()
  local fake
  before_each(function() fake = t.start_fake() end)
  after_each(function() fake:stop() end)

  it("prints a token bare, as a header, or as JSON", function()
    local bare = t.run(fake, {"token"})
    assert.are.equal(0, bare.code, bare.stderr)
    assert.matches("^ya29%.[%w%-_%.]+\n$", bare.stdout)
    local header = t.run(fake, {"token", "--format", "header"})
    assert.matches("^Authorization: Bearer ya29%.", header.stdout)
    local j = t.json.decode(t.run(fake, {"token", "--format", "json", "--audience", TARGET}).stdout)
    assert.are.equal("id_token", j.type)
    assert.are.equal(TARGET, j.audience)
    assert.is_true(j.expires_in > 3000)
    local bad = t.run(fake, {"token", "--format", "yaml"})
    assert.are.equal(2, bad.code)
  end)

  it("says which source won, why, the principal, scopes and expiry, and no secret", function()
    local r = t.run(fake, {"auth", "info"}, {GOOGLE_APPLICATION_CREDENTIALS = fake.home .. "/impersonated.json"})
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("source:%s+impersonated_service_account", r.stdout)
    assert.matches("why:%s+GOOGLE_APPLICATION_CREDENTIALS is set to", r.stdout)
    assert.matches("principal:%s+" .. t.literal(DEPLOYER), r.stdout)
    assert.matches("through:%s+" .. t.literal(USER), r.stdout)
    assert.matches("token expires:%s+in %d+m", r.stdout)
    assert.matches("detection:%s+[%d%.]+ ms", r.stdout)
  end)
end)

describe("secrets", function()
  it("never appear in anything gcpr printed or the fake logged", function()
    local fake = t.start_fake()
    local user = t.json.decode(t.read_file(fake.home .. "/authorized-user.json"))
    local subject = t.read_file(fake.home .. "/subject-token.jwt"):match("^%s*(.-)%s*$")
    for _, file in ipairs({"authorized-user.json", "impersonated.json", "external-file.json", "external-url.json"}) do
      t.run(fake, {"run", "-v", probe(nil, "{}")}, {GOOGLE_APPLICATION_CREDENTIALS = fake.home .. "/" .. file})
      t.run(fake, {"auth", "info", "-v"}, {GOOGLE_APPLICATION_CREDENTIALS = fake.home .. "/" .. file})
    end
    local log = fake:log_text()
    fake:stop()
    local all = table.concat(t.transcript, "\n") .. log
    for _, secret in ipairs({user.refresh_token, user.client_secret, subject, "ya29.", "BEGIN PRIVATE KEY"}) do
      assert.is_nil(all:find(secret, 1, true), "found a secret: " .. secret:sub(1, 8) .. "...")
    end
  end)
end)

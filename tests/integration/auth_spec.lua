-- Credentials: a service-account key signs a JWT grant at its own token_uri; bad key files
-- and rejected grants give one clear error without key material; no token ever shows up
-- in what gcpr prints.
local t = require "support"

local RUN = {"run", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=td-central-ig", "size=2"}

local function key_lines(path)
  local text = t.read_file(path)
  local doc = t.json.decode(text)
  local lines = {}
  for line in doc.private_key:gmatch("[^\n]+") do
    if not line:find("^%-%-%-%-%-") then lines[#lines + 1] = line end
  end
  return lines, doc
end

local function assert_no_key_material(text, key_path)
  assert.is_nil(text:find("PRIVATE KEY", 1, true), "output mentions a private key")
  for _, line in ipairs((key_lines(key_path))) do
    assert.is_nil(text:find(line, 1, true), "output contains a line of the private key")
  end
end

describe("service-account credentials", function()
  local fake, dir
  before_each(function()
    fake = t.start_fake()
    dir = t.tmpdir()
  end)
  after_each(function() fake:stop() end)

  it("honours the key's own token_uri", function()
    local _, doc = key_lines(fake.env.GOOGLE_APPLICATION_CREDENTIALS)
    doc.token_uri = "https://localhost:" .. fake.port .. "/token"
    local path = dir .. "/key.json"
    t.write_file(path, t.json.encode(doc), "600")
    local r = t.run(fake, RUN, {GOOGLE_APPLICATION_CREDENTIALS = path})
    assert.are.equal(0, r.code, r.stderr)
    local first = fake:requests()[1]
    assert.are.equal("/token", first.path)
    assert.matches("^localhost:", first.host)
  end)

  it("explains a missing, unreadable, non-JSON or damaged key file and exits 2", function()
    local _, doc = key_lines(fake.env.GOOGLE_APPLICATION_CREDENTIALS)
    local damaged = {}
    for k, v in pairs(doc) do damaged[k] = v end
    damaged.private_key = doc.private_key:sub(1, 200) .. "\n-----END PRIVATE KEY-----\n"
    t.write_file(dir .. "/damaged.json", t.json.encode(damaged), "600")
    t.write_file(dir .. "/notjson.json", "type=service_account\n" .. doc.private_key, "600")
    local nokey = {}
    for k, v in pairs(doc) do nokey[k] = v end
    nokey.private_key = nil
    t.write_file(dir .. "/nokey.json", t.json.encode(nokey), "600")
    local other = {}
    for k, v in pairs(doc) do other[k] = v end
    other.type = "magic_account"
    t.write_file(dir .. "/other.json", t.json.encode(other), "600")
    os.execute("mkdir " .. dir .. "/adir")
    local cases = {
      {dir .. "/missing.json", "cannot read credentials file .*missing%.json %(from GOOGLE_APPLICATION_CREDENTIALS%): No such file"},
      {dir .. "/adir", "cannot read credentials file .*adir"},
      {dir .. "/notjson.json", "notjson%.json is not a JSON key file"},
      {dir .. "/nokey.json", "nokey%.json has no 'private_key'"},
      {dir .. "/damaged.json", "damaged%.json: 'private_key' is not a PEM RSA private key"},
      {dir .. "/other.json", "has type 'magic_account', which gcpr does not support"},
    }
    for _, c in ipairs(cases) do
      local r = t.run(fake, RUN, {GOOGLE_APPLICATION_CREDENTIALS = c[1]})
      assert.are.equal(2, r.code, c[1] .. ": " .. r.stderr)
      assert.matches(c[2], r.stderr)
      assert_no_key_material(r.stdout .. r.stderr, fake.env.GOOGLE_APPLICATION_CREDENTIALS)
    end
    assert.are.equal(0, fake:count(nil, "^/compute/"))
  end)

  it("reports a grant the token endpoint rejects (wrong key) clearly", function()
    local _, doc = key_lines(fake.env.GOOGLE_APPLICATION_CREDENTIALS)
    local p = io.popen("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null")
    doc.private_key = p:read("a")
    p:close()
    local path = dir .. "/wrong.json"
    t.write_file(path, t.json.encode(doc), "600")
    local r = t.run(fake, RUN, {GOOGLE_APPLICATION_CREDENTIALS = path})
    assert.are.equal(1, r.code)
    assert.matches("getting an access token for gcpr%-runner@demo%-project%.iam%.gserviceaccount%.com from " ..
                   "https://oauth2%.googleapis%.com/token failed: HTTP 400: invalid_grant: Invalid JWT Signature%.", r.stderr)
    assert_no_key_material(r.stdout .. r.stderr, path)
    assert.are.equal(0, fake:count(nil, "^/compute/"))
  end)

  it("never prints a token or an assertion, in -v output or in errors", function()
    local runs = {
      t.run(fake, {"run", "-v", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=td-central-ig", "size=3"}),
      t.run(fake, {"run", "-v", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=nope", "size=3"}),
      t.run(fake, {"run", "-v", "--dry-run", "resize_mig", "project=demo-project", "zone=us-central1-a", "mig=td-central-ig", "size=3"}),
    }
    assert.are.equal(0, runs[1].code)
    assert.are.equal(1, runs[2].code)
    assert.matches("Authorization: Bearer REDACTED", runs[1].stderr, 1, true)
    for _, r in ipairs(runs) do
      local text = r.stdout .. r.stderr
      assert.is_nil(text:find("ya29.", 1, true), "a token was printed")
      assert.is_nil(text:find("eyJ", 1, true), "a JWT was printed")
      assert.is_nil(text:find("assertion=", 1, true), "an assertion was printed")
    end
    -- The fake's own log never holds them either.
    local log = fake:log_text()
    assert.is_nil(log:find("ya29.", 1, true))
    assert.is_nil(log:find("eyJ", 1, true))
  end)

  it("gives a recipe an access token from gcp.token, cached for the run", function()
    local path = t.recipe(dir, "tok", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "token", run = function()
        local a = gcp.token{scopes = {"https://www.googleapis.com/auth/cloud-platform"}}
        local b = gcp.token{}
        return {same = a == b, looks_right = a:find("^ya29%.") ~= nil}
      end}
    ]])
    local r = t.run(fake, {"run", path})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({same = true, looks_right = true}, t.json.decode(r.stdout))
    assert.are.equal(1, fake:count("POST", "^/token$"))
  end)
end)

describe("the token cache", function()
  it("refreshes a token ahead of its expiry, once", function()
    local fake = t.start_fake("--token-lifetime 4")
    local dir = t.tmpdir()
    local path = t.recipe(dir, "refresh", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "refresh", run = function()
        local a = gcp.token{}
        gcp.sleep(1.5)
        local b = gcp.token{}   -- still fresh: 4 s lifetime, refreshed 1 s before expiry
        gcp.sleep(2)
        local c = gcp.token{}   -- within the refresh margin: a new one
        return {first_reused = a == b, refreshed = b ~= c}
      end}
    ]])
    local r = t.run(fake, {"run", path})
    fake:stop()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({first_reused = true, refreshed = true}, t.json.decode(r.stdout))
    assert.are.equal(2, fake:count("POST", "^/token$"))
  end)
end)

describe("the transcript of every integration run", function()
  it("holds no token, JWT or private key", function()
    local text = table.concat(t.transcript, "\n")
    assert.is_true(#t.transcript > 0)
    assert.is_nil(text:find("ya29.", 1, true))
    assert.is_nil(text:find("BEGIN PRIVATE KEY", 1, true))
  end)
end)

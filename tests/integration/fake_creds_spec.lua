-- gcpr-fake's credential endpoints, checked directly with curl: the metadata server, the
-- OAuth token endpoint's refresh, ID-token and delegation grants, IAM Credentials, STS, the
-- "Google" signing keys, the ID-token-protected *.run.app target, the redirect endpoint, the
-- sample credential files and the clock skew. Tokens and secrets stay inside this process:
-- curl reads them from 0600 files (never its command line) and nothing here prints them.
local t = require "support"
local json = t.json

local CLOUD = "https://www.googleapis.com/auth/cloud-platform"
local PROJECT_NUMBER = "123456789"
local POOL = "iam.googleapis.com/projects/" .. PROJECT_NUMBER ..
  "/locations/global/workloadIdentityPools/gcpr-pool"
local PROVIDER = "//" .. POOL .. "/providers/gcpr-provider"
local COMPUTE_SA = "1234567890-compute@developer.gserviceaccount.com"
local RUNNER_SA = "gcpr-runner@demo-project.iam.gserviceaccount.com"
local DEPLOYER_SA = "deployer@demo-project.iam.gserviceaccount.com"
local IAM = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
local RUN_HOST = "hello-abc123-uc.a.run.app"
local MIGS = "https://compute.googleapis.com/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers"
local TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
local ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
local JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"

-- Every token, secret or assertion this spec has seen, for the final log scan.
local secrets = {}
local function keep(s) if s and #s > 0 then secrets[#secrets + 1] = s end return s end

local function b64url_decode(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local bits, out = 0, {}
  local acc = 0
  for c in s:gmatch(".") do
    local v = alphabet:find(c, 1, true)
    assert(v, "not base64url")
    acc = (acc << 6) | (v - 1)
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((acc >> bits) & 0xff)
    end
  end
  return table.concat(out)
end

local function b64url_encode(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chars = #s - i + 1 >= 3 and 4 or (#s - i + 1) + 1
    for k = 1, chars do
      local v = (n >> (18 - 6 * (k - 1))) & 63
      out[#out + 1] = alphabet:sub(v + 1, v + 1)
    end
  end
  return table.concat(out)
end

-- A JWT's header and claims (the signature is the fake's business, checked elsewhere).
local function jwt_parts(jwt)
  local h, c = jwt:match("^([%w_-]+)%.([%w_-]+)%.[%w_-]+$")
  assert.is_true(h ~= nil, "not a compact JWT")
  return json.decode(b64url_decode(h)), json.decode(b64url_decode(c))
end

local function write_secret(path, text)
  t.write_file(path, text, "600")
end

-- One HTTP exchange with curl. opts: url, method, headers {name = value}, body (string),
-- form {name = value} (url-encoded by curl), https (default true: through the fake's port
-- with its CA). Returns {status, headers (lower-case names), body, json}.
local function http(fake, opts)
  local dir = t.tmpdir()
  local parts = {"curl -sS -o", t.quote(dir .. "/out"), "-D", t.quote(dir .. "/hdr"), "-w '%{http_code}'"}
  if opts.https ~= false then
    parts[#parts + 1] = "--cacert " .. t.quote(fake.home .. "/ca.pem")
    parts[#parts + 1] = "--connect-to ::127.0.0.1:" .. fake.port
  end
  if opts.method then parts[#parts + 1] = "-X " .. opts.method end
  local header_lines = {}
  for k, v in pairs(opts.headers or {}) do header_lines[#header_lines + 1] = k .. ": " .. v end
  if #header_lines > 0 then
    write_secret(dir .. "/headers", table.concat(header_lines, "\n") .. "\n")
    parts[#parts + 1] = "-H @" .. t.quote(dir .. "/headers")
  end
  if opts.body then
    write_secret(dir .. "/body", opts.body)
    parts[#parts + 1] = "--data-binary @" .. t.quote(dir .. "/body")
  end
  local n = 0
  for k, v in pairs(opts.form or {}) do
    n = n + 1
    write_secret(dir .. "/form" .. n, v)
    parts[#parts + 1] = "--data-urlencode " .. t.quote(k .. "@" .. dir .. "/form" .. n)
  end
  parts[#parts + 1] = t.quote(opts.url)
  local p = io.popen(table.concat(parts, " ") .. " 2>/dev/null")
  local status = tonumber(p:read("a"))
  p:close()
  local res = {status = status, headers = {}, body = t.read_file(dir .. "/out") or ""}
  for line in (t.read_file(dir .. "/hdr") or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then res.headers[k:lower()] = v end
  end
  os.execute("rm -rf " .. t.quote(dir))
  local ok, decoded = pcall(json.decode, res.body)
  if ok then res.json = decoded end
  return res
end

local function metadata(fake, path, headers)
  return http(fake, {url = "http://" .. fake.env.GCE_METADATA_HOST .. path, https = false,
    headers = headers or {["Metadata-Flavor"] = "Google"}})
end

local function key_doc(fake) return json.decode(t.read_file(fake.home .. "/sa-key.json")) end

-- A JWT-bearer assertion signed with sa-key.json's key (by openssl, from a 0600 file).
local function assertion(fake, claims, skew)
  local doc = key_doc(fake)
  local now = os.time() + (skew or 0)
  claims.iss = claims.iss or doc.client_email
  claims.aud = claims.aud or "https://oauth2.googleapis.com/token"
  claims.iat = claims.iat or now
  claims.exp = claims.exp or now + 3600
  local input = b64url_encode(json.encode({alg = "RS256", typ = "JWT", kid = doc.private_key_id})) ..
    "." .. b64url_encode(json.encode(claims))
  local dir = t.tmpdir()
  write_secret(dir .. "/key.pem", doc.private_key)
  write_secret(dir .. "/input", input)
  os.execute(("openssl dgst -sha256 -sign %s -out %s %s"):format(t.quote(dir .. "/key.pem"),
    t.quote(dir .. "/sig"), t.quote(dir .. "/input")))
  local sig = t.read_file(dir .. "/sig")
  os.execute("rm -rf " .. t.quote(dir))
  return keep(input .. "." .. b64url_encode(sig))
end

local function jwt_grant(fake, claims, skew)
  return http(fake, {url = "https://oauth2.googleapis.com/token", form = {
    grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion = assertion(fake, claims, skew)}})
end

local function access_token(fake, scope)
  local r = jwt_grant(fake, {scope = scope or CLOUD})
  assert.are.equal(200, r.status)
  return keep(r.json.access_token)
end

local function bearer(token) return {Authorization = "Bearer " .. token} end

local function last_request(fake, path)
  local found
  for _, q in ipairs(fake:requests()) do if q.path == path then found = q end end
  return found
end

local function mode_of(path)
  local p = io.popen("stat -c %a " .. t.quote(path))
  local m = p:read("l")
  p:close()
  return m
end

describe("gcpr-fake credentials", function()
  local fake
  setup(function() fake = t.start_fake() end)
  teardown(function()
    -- Nothing this spec saw may be in the request log.
    local log = fake:log_text()
    for _, s in ipairs(secrets) do assert.is_nil(log:find(s, 1, true), "a secret reached requests.jsonl") end
    fake:stop()
  end)
  after_each(function() fake:config({clock_skew_s = 0}) end)

  describe("start-up", function()
    it("announces the metadata listener and points env.sh at it and at the ID-token targets", function()
      local out = t.read_file(fake.home .. "/../fake.out")
      local port, dir, mport = out:match("^gcpr%-fake ready https://127%.0%.0%.1:(%d+) dir=(%S+) metadata=http://127%.0%.0%.1:(%d+)\n$")
      assert.are.equal(tostring(fake.port), port)
      assert.are.equal("127.0.0.1:" .. mport, fake.env.GCE_METADATA_HOST)
      assert.are.equal(("googleapis.com=127.0.0.1:%d,run.app=127.0.0.1:%d,appspot.com=127.0.0.1:%d")
        :format(fake.port, fake.port, fake.port),
        fake.env.GCPR_CONNECT_TO)
      assert.is_true(#dir > 0)
    end)

    it("writes the sample credential files, mode 0600, in gcloud's formats", function()
      for _, name in ipairs({"sa-key.json", "authorized-user.json", "impersonated.json",
                             "external-file.json", "external-url.json", "subject-token.jwt"}) do
        assert.are.equal("600", mode_of(fake.home .. "/" .. name), name)
      end
      local user = json.decode(t.read_file(fake.home .. "/authorized-user.json"))
      assert.are.equal("authorized_user", user.type)
      assert.are.equal("764086051850-fake.apps.googleusercontent.com", user.client_id)
      assert.are.equal("demo-project", user.quota_project_id)
      assert.are.equal("googleapis.com", user.universe_domain)
      assert.is_true(user.refresh_token:find("^1//0g") ~= nil and #user.client_secret > 10)
      keep(user.refresh_token)
      keep(user.client_secret)

      local imp = json.decode(t.read_file(fake.home .. "/impersonated.json"))
      assert.are.equal("impersonated_service_account", imp.type)
      assert.are.equal(IAM .. DEPLOYER_SA .. ":generateAccessToken", imp.service_account_impersonation_url)
      assert.are.same({}, imp.delegates)
      assert.are.equal("authorized_user", imp.source_credentials.type)
      assert.is_true(imp.source_credentials.refresh_token == user.refresh_token)

      local file = json.decode(t.read_file(fake.home .. "/external-file.json"))
      assert.are.equal("external_account", file.type)
      assert.are.equal(PROVIDER, file.audience)
      assert.are.equal(JWT_TYPE, file.subject_token_type)
      assert.are.equal("https://sts.googleapis.com/v1/token", file.token_url)
      assert.are.equal(fake.home .. "/subject-token.jwt", file.credential_source.file)
      assert.are.equal(IAM .. DEPLOYER_SA .. ":generateAccessToken", file.service_account_impersonation_url)

      local url = json.decode(t.read_file(fake.home .. "/external-url.json"))
      assert.are.equal("http://" .. fake.env.GCE_METADATA_HOST .. "/subject-token", url.credential_source.url)
      assert.are.same({Metadata = "true"}, url.credential_source.headers)
      assert.are.same({type = "json", subject_token_field_name = "token"}, url.credential_source.format)
      assert.is_nil(url.service_account_impersonation_url)

      local _, claims = jwt_parts(keep(t.read_file(fake.home .. "/subject-token.jwt")))
      assert.are.equal("repo:demo/gcpr:ref:refs/heads/main", claims.sub)
      assert.are.equal("https://token.actions.example.com", claims.iss)
      assert.are.equal("https:" .. PROVIDER, claims.aud)
      assert.is_true(math.abs(claims.exp - os.time() - 86400) < 120)
    end)
  end)

  describe("metadata server", function()
    it("refuses a request without Metadata-Flavor and marks every answer with it", function()
      local r = metadata(fake, "/computeMetadata/v1/project/project-id", {})
      assert.are.equal(403, r.status)
      assert.matches("Missing Metadata%-Flavor:Google header", r.body)
      assert.are.equal("Google", r.headers["metadata-flavor"])
      r = metadata(fake, "/computeMetadata/v1/project/project-id", {["Metadata-Flavor"] = "google"})
      assert.are.equal(403, r.status)
      r = metadata(fake, "/")
      assert.are.equal(200, r.status)
      assert.are.equal("Google", r.headers["metadata-flavor"])
    end)

    it("serves the project, the default account and its listings", function()
      assert.are.equal("demo-project", metadata(fake, "/computeMetadata/v1/project/project-id").body)
      assert.are.equal("123456789", metadata(fake, "/computeMetadata/v1/project/numeric-project-id").body)
      assert.are.equal(COMPUTE_SA, metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/email").body)
      assert.are.equal(COMPUTE_SA .. "/\ndefault/\n", metadata(fake, "/computeMetadata/v1/instance/service-accounts/").body)
      local r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/?recursive=true")
      assert.are.same({aliases = {"default"}, email = COMPUTE_SA, scopes = {CLOUD}}, r.json)
      r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default")
      assert.are.equal(301, r.status)
      assert.are.equal(404, metadata(fake, "/computeMetadata/v1/instance/nothing").status)
    end)

    it("issues an access token the APIs accept for the instance's account", function()
      local r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/token")
      assert.are.equal(200, r.status)
      assert.are.equal("Bearer", r.json.token_type)
      assert.is_true(r.json.expires_in > 0)
      local token = keep(r.json.access_token)
      assert.are.equal(200, http(fake, {url = MIGS, headers = bearer(token)}).status)
      local q = last_request(fake, "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers")
      assert.are.equal(COMPUTE_SA, q.principal)
      assert.are.equal(CLOUD, q.scopes)

      r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/token?scopes=a,b")
      assert.are.equal(200, http(fake, {url = MIGS, headers = bearer(keep(r.json.access_token))}).status)
      assert.are.equal("a b", last_request(fake, q.path).scopes)
    end)

    it("issues ID tokens, with email claims only for format=full", function()
      local r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/identity?audience=")
      assert.are.equal(400, r.status)
      assert.matches("non%-empty audience parameter required", r.body)
      r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://x.example")
      assert.are.equal(200, r.status)
      local header, claims = jwt_parts(keep(r.body))
      assert.are.equal("RS256", header.alg)
      assert.are.equal("https://accounts.google.com", claims.iss)
      assert.are.equal("https://x.example", claims.aud)
      assert.is_nil(claims.email)
      r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://x.example&format=full")
      _, claims = jwt_parts(keep(r.body))
      assert.are.equal(COMPUTE_SA, claims.email)
      assert.is_true(claims.email_verified)
      assert.are.equal(3600, claims.exp - claims.iat)
    end)

    it("serves a URL-sourced subject token behind Metadata: true", function()
      assert.are.equal(400, metadata(fake, "/subject-token").status)
      local r = metadata(fake, "/subject-token", {Metadata = "true"})
      assert.are.equal(200, r.status)
      local _, claims = jwt_parts(keep(r.json.token))
      assert.are.equal("repo:demo/gcpr:ref:refs/heads/main", claims.sub)
    end)

    it("takes injected faults like the HTTPS side", function()
      fake:fault({path = "/computeMetadata/v1/instance/service-accounts/default/token", status = 503})
      local r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/token")
      assert.are.equal(503, r.status)
      assert.are.equal("Google", r.headers["metadata-flavor"])
      assert.are.equal(200, metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/token").status)
    end)
  end)

  describe("OAuth token endpoint", function()
    local function refresh(fields)
      local user = json.decode(t.read_file(fake.home .. "/authorized-user.json"))
      local form = {grant_type = "refresh_token", client_id = user.client_id,
        client_secret = user.client_secret, refresh_token = user.refresh_token}
      for k, v in pairs(fields or {}) do form[k] = v or nil end
      return http(fake, {url = "https://oauth2.googleapis.com/token", form = form}), user
    end

    it("refreshes the authorized user's token, with an ID token for the client", function()
      local r, user = refresh()
      assert.are.equal(200, r.status)
      assert.are.equal("Bearer", r.json.token_type)
      assert.matches(CLOUD, r.json.scope, 1, true)
      local _, claims = jwt_parts(keep(r.json.id_token))
      assert.are.equal(user.client_id, claims.aud)
      assert.are.equal(user.client_id, claims.azp)
      assert.are.equal("operator@example.com", claims.email)
      assert.is_true(claims.email_verified)
      assert.are.equal(200, http(fake, {url = MIGS, headers = bearer(keep(r.json.access_token))}).status)
      local q = last_request(fake, "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers")
      assert.are.equal("operator@example.com", q.principal)
      assert.are.same({grant_type = "refresh_token"}, last_request(fake, "/token").body)
    end)

    it("rejects a wrong client secret, an unknown refresh token and unconsented scopes", function()
      local r = refresh({client_secret = "GOCSPX-wrong"})
      assert.are.equal(401, r.status)
      assert.are.same({error = "invalid_client", error_description = "Unauthorized"}, r.json)
      r = refresh({refresh_token = "1//0gnot-the-one"})
      assert.are.equal(400, r.status)
      assert.are.same({error = "invalid_grant", error_description = "Bad Request"}, r.json)
      r = refresh({scope = "https://www.googleapis.com/auth/drive"})
      assert.are.equal(400, r.status)
      assert.are.equal("invalid_scope", r.json.error)
    end)

    it("answers a target_audience grant with a Google-signed ID token", function()
      local r = jwt_grant(fake, {target_audience = "https://" .. RUN_HOST})
      assert.are.equal(200, r.status)
      assert.is_nil(r.json.access_token)
      local header, claims = jwt_parts(keep(r.json.id_token))
      local client_id = key_doc(fake).client_id
      assert.are.equal("https://" .. RUN_HOST, claims.aud)
      assert.are.equal(client_id, claims.azp)
      assert.are.equal(client_id, claims.sub)
      assert.are.equal(RUNNER_SA, claims.email)
      local certs = http(fake, {url = "https://www.googleapis.com/oauth2/v3/certs"})
      assert.are.equal(200, certs.status)
      local jwk = certs.json.keys[1]
      assert.are.equal(header.kid, jwk.kid)
      assert.are.same({"RSA", "RS256", "sig", "AQAB"}, {jwk.kty, jwk.alg, jwk.use, jwk.e})
      local v1 = http(fake, {url = "https://www.googleapis.com/oauth2/v1/certs"})
      assert.matches("^%-%-%-%-%-BEGIN CERTIFICATE", v1.json[header.kid])
    end)

    it("delegates domain-wide to users of example.com only", function()
      local r = jwt_grant(fake, {scope = CLOUD, sub = "alice@example.com"})
      assert.are.equal(200, r.status)
      assert.are.equal(200, http(fake, {url = MIGS, headers = bearer(keep(r.json.access_token))}).status)
      assert.are.equal("alice@example.com",
        last_request(fake, "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers").principal)
      r = jwt_grant(fake, {scope = CLOUD, sub = "mallory@elsewhere.com"})
      assert.are.equal(401, r.status)
      assert.are.equal("unauthorized_client", r.json.error)
    end)

    it("judges assertions and tokens by its skewed clock", function()
      local token = access_token(fake)
      fake:config({clock_skew_s = -600})
      local r = jwt_grant(fake, {scope = CLOUD})
      assert.are.equal(400, r.status)
      assert.are.equal("invalid_grant", r.json.error)
      fake:config({clock_skew_s = 4000})
      r = jwt_grant(fake, {scope = CLOUD})
      assert.are.equal(400, r.status)
      assert.matches("iat and exp", r.json.error_description)
      assert.are.equal(401, http(fake, {url = MIGS, headers = bearer(token)}).status)
      assert.are.equal("expired", last_request(fake,
        "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers").auth)
      fake:config({clock_skew_s = 0})
      assert.are.equal(200, http(fake, {url = MIGS, headers = bearer(token)}).status)
      assert.are.equal(200, jwt_grant(fake, {scope = CLOUD}).status)
    end)
  end)

  describe("IAM Credentials", function()
    local function call(token, target, verb, body)
      return http(fake, {url = IAM .. target .. ":" .. verb, body = json.encode(body),
        headers = {Authorization = "Bearer " .. token, ["Content-Type"] = "application/json"}})
    end

    it("generates an access token for the target account with the scopes asked", function()
      local token = access_token(fake)
      local r = call(token, DEPLOYER_SA, "generateAccessToken", {scope = {CLOUD}, lifetime = "600s"})
      assert.are.equal(200, r.status)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", r.json.expireTime)
      local q = last_request(fake, "/v1/projects/-/serviceAccounts/" .. DEPLOYER_SA .. ":generateAccessToken")
      assert.are.equal(RUNNER_SA, q.principal)
      assert.are.equal(DEPLOYER_SA, q.impersonated)
      assert.are.equal(200, http(fake, {url = MIGS, headers = bearer(keep(r.json.accessToken))}).status)
      local use = last_request(fake, "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers")
      assert.are.equal(DEPLOYER_SA, use.principal)
      assert.are.equal(CLOUD, use.scopes)
    end)

    it("refuses unknown and denied accounts and delegates with Google's error", function()
      local token = access_token(fake)
      local r = call(token, "nobody@demo-project.iam.gserviceaccount.com", "generateAccessToken", {scope = {CLOUD}})
      assert.are.equal(403, r.status)
      assert.are.equal("PERMISSION_DENIED", r.json.error.status)
      assert.are.equal("Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        r.json.error.message)
      r = call(token, "denied@demo-project.iam.gserviceaccount.com", "generateIdToken", {audience = "x"})
      assert.are.equal(403, r.status)
      assert.matches("iam.serviceAccounts.getOpenIdToken", r.json.error.message, 1, true)
      r = call(token, DEPLOYER_SA, "signJwt", {payload = "{}",
        delegates = {"projects/-/serviceAccounts/denied@demo-project.iam.gserviceaccount.com"}})
      assert.are.equal(403, r.status)
      assert.matches("iam.serviceAccounts.signJwt", r.json.error.message, 1, true)
      assert.are.equal(401, http(fake, {url = IAM .. DEPLOYER_SA .. ":signJwt", body = "{}"}).status)
      r = call(access_token(fake, "https://www.googleapis.com/auth/compute"), DEPLOYER_SA, "signJwt", {payload = "{}"})
      assert.are.equal(403, r.status)
    end)

    it("generates ID tokens and signs JWTs with a per-account key", function()
      local token = access_token(fake)
      local r = call(token, "builder@demo-project.iam.gserviceaccount.com", "generateIdToken", {
        audience = "https://" .. RUN_HOST, includeEmail = true,
        delegates = {"projects/-/serviceAccounts/" .. DEPLOYER_SA}})
      assert.are.equal(200, r.status)
      local _, claims = jwt_parts(keep(r.json.token))
      assert.are.equal("builder@demo-project.iam.gserviceaccount.com", claims.email)
      assert.are.equal("https://" .. RUN_HOST, claims.aud)
      r = call(token, DEPLOYER_SA, "signJwt", {payload = json.encode({iss = DEPLOYER_SA, exp = os.time() + 600})})
      assert.are.equal(200, r.status)
      local header
      header, claims = jwt_parts(keep(r.json.signedJwt))
      assert.are.equal(r.json.keyId, header.kid)
      assert.are.equal(DEPLOYER_SA, claims.iss)
      local jwk = http(fake, {url = "https://www.googleapis.com/service_accounts/v1/jwk/" .. DEPLOYER_SA})
      assert.are.equal(r.json.keyId, jwk.json.keys[1].kid)
    end)
  end)

  describe("STS", function()
    local function exchange(fields)
      local form = {grant_type = TOKEN_EXCHANGE, audience = PROVIDER, scope = CLOUD,
        requested_token_type = ACCESS_TOKEN_TYPE, subject_token_type = JWT_TYPE,
        subject_token = keep(t.read_file(fake.home .. "/subject-token.jwt"))}
      for k, v in pairs(fields or {}) do form[k] = v end
      return http(fake, {url = "https://sts.googleapis.com/v1/token", form = form})
    end

    it("exchanges the subject token for a federated token usable on IAM Credentials", function()
      local r = exchange()
      assert.are.equal(200, r.status)
      assert.are.equal(ACCESS_TOKEN_TYPE, r.json.issued_token_type)
      assert.are.equal("Bearer", r.json.token_type)
      local token = keep(r.json.access_token)
      r = http(fake, {url = IAM .. DEPLOYER_SA .. ":generateAccessToken", body = json.encode({scope = {CLOUD}}),
        headers = {Authorization = "Bearer " .. token, ["Content-Type"] = "application/json"}})
      assert.are.equal(200, r.status)
      keep(r.json.accessToken)
      local q = last_request(fake, "/v1/projects/-/serviceAccounts/" .. DEPLOYER_SA .. ":generateAccessToken")
      assert.are.equal("principal://" .. POOL .. "/subject/repo:demo/gcpr:ref:refs/heads/main", q.principal)
      assert.are.same({grant_type = TOKEN_EXCHANGE}, last_request(fake, "/v1/token").body)
    end)

    it("rejects a wrong audience, a forged or expired subject token in STS's shape", function()
      local r = exchange({audience = "projects/123456789/gcpr-pool"})
      assert.are.equal(400, r.status)
      assert.are.equal("invalid_request", r.json.error)
      r = exchange({audience = PROVIDER:gsub("gcpr%-provider", "other")})
      assert.are.equal("invalid_target", r.json.error)
      r = exchange({subject_token = t.read_file(fake.home .. "/subject-token.jwt") .. "x"})
      assert.are.equal("invalid_grant", r.json.error)
      fake:config({clock_skew_s = 2 * 86400})
      r = exchange()
      assert.are.equal(400, r.status)
      assert.are.equal("invalid_grant", r.json.error)
    end)
  end)

  describe("the *.run.app target", function()
    local function id_token(audience)
      local r = metadata(fake, "/computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=" .. audience)
      return keep(r.body)
    end

    it("lets a request with an ID token for its URL through and echoes it", function()
      local r = http(fake, {url = "https://" .. RUN_HOST .. "/jobs/run?x=1", method = "POST",
        body = '{"n":2}', headers = {Authorization = "Bearer " .. id_token("https://" .. RUN_HOST),
        ["Content-Type"] = "application/json", ["User-Agent"] = "spec/1"}})
      assert.are.equal(200, r.status)
      assert.are.same({ok = true, aud = "https://" .. RUN_HOST, email = COMPUTE_SA, method = "POST",
        path = "/jobs/run", query = "x=1", body = {n = 2},
        headers = {["User-Agent"] = {"spec/1"}, ["Accept-Encoding"] = {}}}, r.json)
      local q = last_request(fake, "/jobs/run")
      assert.are.equal("valid", q.auth)
      assert.are.equal(COMPUTE_SA, q.principal)
      assert.are.equal("https://" .. RUN_HOST, q.audience)
      r = http(fake, {url = "https://" .. RUN_HOST .. "/jobs/run", headers =
        {Authorization = "Bearer " .. id_token("https://" .. RUN_HOST .. "/jobs")}})
      assert.are.equal(200, r.status)
    end)

    it("refuses no token, an access token and a token for another audience", function()
      local r = http(fake, {url = "https://" .. RUN_HOST .. "/"})
      assert.are.equal(401, r.status)
      assert.matches("Error: Unauthorized", r.body, 1, true)
      assert.are.equal("none", last_request(fake, "/").auth)
      r = http(fake, {url = "https://" .. RUN_HOST .. "/", headers = bearer(access_token(fake))})
      assert.are.equal(401, r.status)
      assert.are.equal("invalid", last_request(fake, "/").auth)
      r = http(fake, {url = "https://" .. RUN_HOST .. "/", headers = bearer(id_token("https://other-xyz-uc.a.run.app"))})
      assert.are.equal(403, r.status)
      assert.matches("Error: Forbidden", r.body, 1, true)
      assert.are.equal("https://other-xyz-uc.a.run.app", last_request(fake, "/").audience)
      r = http(fake, {url = "https://" .. RUN_HOST .. "/apix", headers = bearer(id_token("https://" .. RUN_HOST .. "/api"))})
      assert.are.equal(403, r.status)
    end)

    it("takes a developer's ID token for a Google tool's OAuth client", function()
      local r = http(fake, {url = "https://" .. RUN_HOST .. "/", headers = bearer(id_token("764086051850-fake.apps.googleusercontent.com"))})
      assert.are.equal(200, r.status)
    end)

    it("refuses an ID token that has expired on the fake's clock", function()
      local token = id_token("https://" .. RUN_HOST)
      fake:config({clock_skew_s = 3700})
      assert.are.equal(401, http(fake, {url = "https://" .. RUN_HOST .. "/", headers = bearer(token)}).status)
    end)
  end)

  it("stands in for an IAP-protected app on *.appspot.com, keyed to the IAP client ID", function()
    local url = "https://demo-project.appspot.com/admin"
    local r = http(fake, {url = url, headers = {Authorization = "Bearer " .. keep(metadata(fake,
      "/computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=123456789-iap.apps.googleusercontent.com").body)}})
    assert.are.equal(200, r.status)
    assert.are.equal("123456789-iap.apps.googleusercontent.com", r.json.aud)
    r = http(fake, {url = url, headers = {Authorization = "Bearer " .. keep(metadata(fake,
      "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://demo-project.appspot.com").body)}})
    assert.are.equal(401, r.status)
    assert.matches("^Invalid IAP credentials: JWT audience doesn't match", r.body)
    assert.are.equal(401, http(fake, {url = url}).status)
  end)

  it("logs the quota project a request names", function()
    http(fake, {url = MIGS, headers = {Authorization = "Bearer " .. access_token(fake), ["X-Goog-User-Project"] = "billing-project"}})
    assert.are.equal("billing-project", last_request(fake,
      "/compute/v1/projects/demo-project/zones/us-central1-a/instanceGroupManagers").quota_project)
  end)

  it("redirects /fake-redirect to its 'to' on any host", function()
    local r = http(fake, {url = "https://compute.googleapis.com/fake-redirect?to=https%3A%2F%2F" .. RUN_HOST .. "%2Fx"})
    assert.are.equal(302, r.status)
    assert.are.equal("https://" .. RUN_HOST .. "/x", r.headers.location)
    assert.are.equal(302, last_request(fake, "/fake-redirect").status)
  end)
end)

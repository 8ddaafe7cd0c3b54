-- support: what the integration specs share. Starts a fresh gcpr-fake in a temporary
-- directory, runs the real gcpr binary against it with the fake's env.sh, and reads the
-- fake's request log. Everything goes over loopback TLS; nothing is mocked.
local json = require "dkjson"

local M = {}

local build = os.getenv("GCPR_BUILD_DIR") or "build"
local source = os.getenv("GCPR_SOURCE_DIR") or "."
M.gcpr = build .. "/gcpr"
M.fake_bin = build .. "/gcpr-fake"
M.source = source

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.quote = sh_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

function M.write_file(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. sh_quote(path)) end
end

function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/gcpr-test.XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

local Fake = {}
Fake.__index = Fake

-- Starts gcpr-fake with extra arguments and waits for its ready line.
function M.start_fake(args)
  local dir = M.tmpdir()
  local self = setmetatable({dir = dir, home = dir .. "/fake"}, Fake)
  os.execute(("%s --dir %s %s > %s/fake.out 2> %s/fake.err & echo $! > %s/fake.pid")
    :format(sh_quote(M.fake_bin), sh_quote(self.home), args or "", dir, dir, dir))
  self.pid = read_file(dir .. "/fake.pid"):match("%d+")
  for _ = 1, 200 do
    local out = read_file(dir .. "/fake.out") or ""
    local port = out:match("gcpr%-fake ready https://127%.0%.0%.1:(%d+)")
    if port then
      self.port = tonumber(port)
      self.url = "https://127.0.0.1:" .. port
      break
    end
    os.execute("sleep 0.05")
  end
  assert(self.port, "gcpr-fake did not start: " .. (read_file(dir .. "/fake.err") or ""))
  self.env = {}
  for line in io.lines(self.home .. "/env.sh") do
    local k, v = line:match("^export ([%w_]+)='(.*)'$")
    if k then self.env[k] = v end
  end
  return self
end

function Fake:stop()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null; sleep 0.05") end
  self.pid = nil
end

-- Calls the fake's control API with curl; returns the decoded JSON answer.
function Fake:control(method, path, body)
  local cmd = ("curl -sS --cacert %s -X %s %s%s"):format(sh_quote(self.home .. "/ca.pem"), method,
    sh_quote(self.url .. path), body and (" -H 'Content-Type: application/json' -d " .. sh_quote(json.encode(body))) or "")
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return json.decode(out), out
end

function Fake:fault(spec) return self:control("POST", "/_fake/faults", spec) end
function Fake:config(spec) return self:control("POST", "/_fake/config", spec) end
function Fake:stats() return (self:control("GET", "/_fake/stats")) end

-- The request log as a list of decoded lines.
function Fake:requests()
  local list = {}
  local text = read_file(self.home .. "/requests.jsonl") or ""
  for line in text:gmatch("[^\n]+") do list[#list + 1] = json.decode(line) end
  return list
end

function Fake:log_text() return read_file(self.home .. "/requests.jsonl") or "" end

-- Escapes magic characters so a literal path can be used in a pattern.
function M.literal(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- Requests matching method and a path pattern.
function Fake:count(method, pattern)
  local n = 0
  for _, r in ipairs(self:requests()) do
    if (not method or r.method == method) and (not pattern or r.path:find(pattern)) then n = n + 1 end
  end
  return n
end

-- Runs gcpr with args (a list) and env (fake's env.sh plus overrides; false unsets).
-- Returns {code=, stdout=, stderr=}.
-- HOME is a fresh empty directory unless given, so no gcloud file of the machine's is found.
function M.run(fake, args, env_overrides)
  local env = {HOME = M.tmpdir(), CLOUDSDK_CONFIG = false, GOOGLE_CLOUD_QUOTA_PROJECT = false,
               NO_GCE_CHECK = false, GCPR_NO_METADATA = false, GCPR_ALLOW_SHARED_CREDENTIALS = false}
  if fake then for k, v in pairs(fake.env) do env[k] = v end end
  for k, v in pairs(env_overrides or {}) do env[k] = v end
  local parts, sets = {"env", "-u GCPR_LUA_DIR"}, {}
  for k, v in pairs(env) do
    if v == false then parts[#parts + 1] = "-u " .. k else sets[#sets + 1] = k .. "=" .. sh_quote(v) end
  end
  table.move(sets, 1, #sets, #parts + 1, parts)
  parts[#parts + 1] = sh_quote(M.gcpr)
  for _, a in ipairs(args) do parts[#parts + 1] = sh_quote(a) end
  local dir = M.tmpdir()
  local cmd = table.concat(parts, " ") .. (" > %s/out 2> %s/err < /dev/null"):format(dir, dir)
  local _, _, code = os.execute(cmd)
  local res = {code = code, stdout = read_file(dir .. "/out"), stderr = read_file(dir .. "/err"), cmd = cmd}
  os.execute("rm -rf " .. sh_quote(dir))
  -- `gcpr token` prints a token on purpose; everything else goes into the secret scan.
  if args[1] ~= "token" then M.transcript[#M.transcript + 1] = res.stdout .. res.stderr end
  return res
end

-- Everything gcpr printed in this test process (but `gcpr token`), for the secret scan.
M.transcript = {}

-- Writes a recipe file into dir and returns its path.
function M.recipe(dir, name, body)
  local path = dir .. "/" .. name .. ".lua"
  M.write_file(path, body)
  return path
end

M.json = json
return M

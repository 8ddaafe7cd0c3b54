-- gcp.cli: the built-in commands that are not recipes: `gcpr token` (oauth2l-like) and
-- `gcpr auth info`. Both use the run's auth defaults, set from the command line.
local auth = require "gcp.auth"
local errors = require "gcp.errors"
local http = require "gcp.http"
local json = require "gcp.json"

local M = {}

local function kind_of(opts) return opts.audience and "id" or "access" end

local function check_format(opts, allowed)
  local f = opts.format or allowed[1]
  for _, a in ipairs(allowed) do if f == a then return f end end
  errors.usage("--format must be " .. table.concat(allowed, ", ") .. "; got '" .. f .. "'", 0)
end

-- gcpr token: the token alone (bare), as a header line, or as JSON with its facts.
function M.token(_, opts)
  local format = check_format(opts, {"bare", "header", "json"})
  local kind = kind_of(opts)
  local token = kind == "id" and auth.id_token{} or auth.token{}
  if format == "bare" then return token end
  if format == "header" then return "Authorization: Bearer " .. token end
  local info = auth.info(auth.spec({}, kind))
  return {token = token, type = kind == "id" and "id_token" or "access_token",
          principal = info.principal, scopes = info.scopes, audience = info.audience,
          expires_in = info.expires_in and math.floor(info.expires_in)}
end

local function duration(s)
  s = math.floor(s)
  if s >= 3600 then return ("%dh%02dm%02ds"):format(s // 3600, s % 3600 // 60, s % 60) end
  if s >= 60 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return s .. "s"
end

-- The metadata server tells its default account's email; nothing else would.
local function metadata_email(host)
  local ok, res = pcall(http.request, {url = "http://" .. host .. "/computeMetadata/v1/instance/service-accounts/default/email",
                                       headers = {["Metadata-Flavor"] = "Google"}, auth = "none", timeout = 3})
  return ok and res.body:match("^%s*(.-)%s*$") or nil
end

-- gcpr auth info: which source won and why, the principal, scopes or audience, expiry,
-- quota project and how long detection took. Never a secret.
function M.auth_info(_, opts)
  local format = check_format(opts, {"text", "json"})
  local kind = kind_of(opts)
  local spec = auth.spec({}, kind)
  local t0 = require("gcpr.core").now()
  local got = pcall(kind == "id" and auth.id_token or auth.token, {})
  local elapsed = require("gcpr.core").now() - t0
  local info = auth.info(spec)
  if not got then
    local _, err = pcall(kind == "id" and auth.id_token or auth.token, {})
    error(err, 0)
  end
  if info.type == "metadata" and not opts.impersonate then info.email = info.email or metadata_email(info.metadata_host) end
  local out = {source = info.type, why = info.why, principal = info.email or info.principal,
               acting_through = info.source_principal, scopes = info.scopes, audience = info.audience,
               expires_in = info.expires_in and math.floor(info.expires_in),
               quota_project = info.quota_project,
               detection_ms = math.floor((info.detect_s or 0) * 1000 * 10 + 0.5) / 10,
               first_token_ms = math.floor(elapsed * 1000 * 10 + 0.5) / 10}
  if format == "json" then return out end
  local lines = {
    "source:         " .. out.source,
    "why:            " .. out.why,
    "principal:      " .. tostring(out.principal),
  }
  if out.acting_through then lines[#lines + 1] = "through:        " .. out.acting_through end
  if out.scopes then lines[#lines + 1] = "scopes:         " .. out.scopes end
  if out.audience then lines[#lines + 1] = "audience:       " .. out.audience end
  if out.expires_in then lines[#lines + 1] = "token expires:  in " .. duration(out.expires_in) end
  if out.quota_project then lines[#lines + 1] = "quota project:  " .. out.quota_project end
  lines[#lines + 1] = ("detection:      %.1f ms (first token: %.1f ms)"):format(out.detection_ms, out.first_token_ms)
  return table.concat(lines, "\n")
end

return M

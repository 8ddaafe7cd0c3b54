-- gcp.auth: which token a call uses. Options given to a call (scopes, impersonate,
-- delegates, subject, audience, quota_project) win over the run's defaults, which come
-- from the command line (--impersonate, --delegates, --subject, --scopes, --quota-project).
-- Credentials themselves stay in C; this only says what to ask for.
local core = require "gcpr.core"
local errors = require "gcp.errors"

local M = {}

M.defaults = {}

local function joined(v, name, level)
  if v == nil or v == false then return nil end
  if type(v) == "string" then return v end
  if type(v) == "table" then
    for _, item in ipairs(v) do
      if type(item) ~= "string" then error(name .. " must be a string or a list of strings", level + 1) end
    end
    return table.concat(v, " ")
  end
  error(name .. " must be a string or a list of strings", level + 1)
end

local function pick(opts, key)
  local v = opts[key]
  if v == nil then v = M.defaults[key] end
  if v == false then return nil end
  return v
end

-- The spec core.token / core.http take. kind: "access" or "id".
function M.spec(opts, kind, level)
  level = (level or 1) + 1
  opts = opts or {}
  local spec = {
    kind = kind,
    impersonate = pick(opts, "impersonate"),
    delegates = joined(pick(opts, "delegates"), "delegates", level),
    subject = pick(opts, "subject"),
    quota_project = pick(opts, "quota_project"),
  }
  if kind == "access" then
    spec.scopes = joined(pick(opts, "scopes"), "scopes", level)
  else
    spec.audience = opts.audience or M.defaults.audience
  end
  for _, k in ipairs({"impersonate", "subject", "quota_project", "audience"}) do
    if spec[k] ~= nil and type(spec[k]) ~= "string" then error(k .. " must be a string", level) end
  end
  return spec
end

local function get(spec, level)
  local token, err = core.token(spec)
  if not token then errors.raise({kind = err.kind, message = err.message, exit = err.exit}, level + 1) end
  return token
end

-- gcp.token{scopes=, impersonate=, delegates=, subject=} -> an access token.
function M.token(opts) return get(M.spec(opts, "access", 2), 2) end

-- gcp.id_token{audience=, impersonate=, delegates=} -> an ID token (OIDC) for audience.
function M.id_token(opts)
  local spec = M.spec(opts, "id", 2)
  return get(spec, 2)
end

-- What `gcpr auth info` shows for the token spec (after a token was obtained).
function M.info(spec) return core.auth_info(spec) end

return M

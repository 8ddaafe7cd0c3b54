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

local function pick(opts, d, key)
  local v = opts[key]
  if v == nil then v = d[key] end
  if v == false then return nil end
  return v
end

local function check_string(v, name, level)
  if v ~= nil and type(v) ~= "string" then error(name .. " must be a string", level + 1) end
  return v
end

-- Fills into req what core.token / core.http need to know about the token: kind ("access"
-- or "id"), scopes or audience, impersonate, delegates, subject, quota_project. Runs for
-- every request, so it is straight-line code.
function M.fill(req, opts, kind, level)
  level = (level or 1) + 1
  local d = M.defaults
  req.kind = kind
  req.impersonate = check_string(pick(opts, d, "impersonate"), "impersonate", level)
  req.subject = check_string(pick(opts, d, "subject"), "subject", level)
  req.quota_project = check_string(pick(opts, d, "quota_project"), "quota_project", level)
  local delegates = pick(opts, d, "delegates")
  if delegates ~= nil then req.delegates = joined(delegates, "delegates", level) end
  if kind == "access" then
    local scopes = pick(opts, d, "scopes")
    if scopes ~= nil then req.scopes = joined(scopes, "scopes", level) end
  else
    req.audience = check_string(opts.audience or d.audience, "audience", level)
  end
  return req
end

-- The spec core.token takes. kind: "access" or "id".
function M.spec(opts, kind, level)
  return M.fill({}, opts or {}, kind, (level or 1) + 1)
end

-- The token part of one gcp.http call: nil when neither the call nor the run's defaults set
-- a token option (the common case: no table is made), else a spec table for core.http.
function M.for_call(opts, kind, level)
  if kind == "access" and opts.scopes == nil and opts.impersonate == nil and
     opts.subject == nil and opts.delegates == nil and opts.quota_project == nil then
    local d = M.defaults
    if d.scopes == nil and d.impersonate == nil and d.subject == nil and d.delegates == nil and
       d.quota_project == nil then
      return nil
    end
  end
  return M.fill({}, opts, kind, (level or 1) + 1)
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

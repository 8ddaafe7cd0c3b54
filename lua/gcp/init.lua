-- gcp: the module recipes require. Tokens, HTTP, JSON, waiting on operations, concurrency,
-- logging and recipe definitions, each implemented in its own gcp.* file.
local core = require "gcpr.core"
local http = require "gcp.http"
local lro = require "gcp.lro"
local task = require "gcp.task"
local errors = require "gcp.errors"

local M = {}

M.version = core.version()
M.recipe = require("gcp.recipe").new
M.http = http.request
M.escape = http.escape
M.json = require "gcp.json"
M.log = require "gcp.log"
M.wait = lro.wait
M.parallel = task.parallel
M.map = task.map
M.sleep = core.sleep
M.now = core.time
M.is_error = errors.is

-- gcp.dry_run() -> true when mutating requests are printed instead of sent.
M.dry_run = core.dry_run

-- gcp.token{scopes = {...}} -> an access token for the current credentials.
function M.token(opts)
  local scopes = opts and opts.scopes or "https://www.googleapis.com/auth/cloud-platform"
  if type(scopes) == "table" then scopes = table.concat(scopes, " ") end
  if type(scopes) ~= "string" then error("gcp.token: scopes must be a string or a list", 2) end
  local token, err = core.token(scopes)
  if not token then errors.raise({kind = err.kind, message = err.message, exit = err.exit}, 2) end
  return token
end

return M

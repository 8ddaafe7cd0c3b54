-- gcp: the module recipes require. Tokens, HTTP, JSON, waiting on operations, concurrency,
-- logging and recipe definitions, each implemented in its own gcp.* file.
local core = require "gcpr.core"
local http = require "gcp.http"
local lro = require "gcp.lro"
local task = require "gcp.task"
local errors = require "gcp.errors"
local auth = require "gcp.auth"

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
M.pages = require("gcp.paging").pages
M.items = require("gcp.paging").items
M.list = require("gcp.paging").list
M.aggregated = require("gcp.paging").aggregated
M.update = require("gcp.rmw").update

-- Service helpers load on first use: a recipe pays start-up only for what it touches.
local SERVICES = {compute = "gcp.compute", cloudbuild = "gcp.cloudbuild", dataflow = "gcp.dataflow",
                  run = "gcp.run", iap = "gcp.iap"}
setmetatable(M, {__index = function(t, key)
  local name = SERVICES[key]
  if not name then return nil end
  local mod = require(name)
  rawset(t, key, mod)
  return mod
end})
M.now = core.time
M.is_error = errors.is

-- gcp.usage_error(message) -> a usage error (exit 2) to raise with error(e, 0) when a
-- recipe finds its params inconsistent, before sending anything.
function M.usage_error(message)
  return errors.new({kind = "usage", message = message, exit = 2}, 2)
end

-- gcp.dry_run() -> true when mutating requests are printed instead of sent.
M.dry_run = core.dry_run

-- gcp.token{scopes=, impersonate=, delegates=, subject=} -> an access token.
M.token = auth.token
-- gcp.id_token{audience=, impersonate=, delegates=} -> an ID token for audience.
M.id_token = auth.id_token

return M

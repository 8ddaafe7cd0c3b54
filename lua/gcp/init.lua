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
M.now = core.time
M.is_error = errors.is

-- gcp.dry_run() -> true when mutating requests are printed instead of sent.
M.dry_run = core.dry_run

-- gcp.token{scopes=, impersonate=, delegates=, subject=} -> an access token.
M.token = auth.token
-- gcp.id_token{audience=, impersonate=, delegates=} -> an ID token for audience.
M.id_token = auth.id_token

return M

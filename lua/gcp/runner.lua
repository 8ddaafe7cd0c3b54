-- gcp.runner: one command line's work inside a run: a recipe (load the file into a sandbox,
-- check what it returns, parse the params, call run(p)) or a built-in command (token,
-- auth info); the outcome becomes (exit code, stdout text, stderr text) for main.c to print.
local auth = require "gcp.auth"
local cli = require "gcp.cli"
local core = require "gcpr.core"
local errors = require "gcp.errors"
local json = require "gcp.json"
local params = require "gcp.params"
local recipe_mod = require "gcp.recipe"
local sandbox = require "gcp.sandbox"

local M = {}

-- Loads a recipe file and returns its definition (what gcp.recipe{...} made).
function M.load(path)
  local chunk, err = core.load_recipe(path, sandbox.env())
  if not chunk then errors.usage(err, 0) end
  local def = chunk()
  if not recipe_mod.is(def) then
    errors.usage(path .. " must end with 'return gcp.recipe{...}' (it returned " ..
                 type(def) .. ")", 0)
  end
  return def
end

local function run_recipe(args)
  local path = args[1]
  local argv = table.move(args, 2, #args, 1, {})
  local def = M.load(path)
  local ok, p = pcall(params.parse, def.params, argv)
  if not ok then
    if errors.is(p) then p.where = path end
    error(p, 0)
  end
  return def.run(p)
end

local function handler(e)
  if errors.is(e) then
    if e.exit ~= 2 and core.log_enabled("debug") then e.traceback = debug.traceback(nil, 2) end
    return e
  end
  return {plain = tostring(e), traceback = debug.traceback(nil, 2)}
end

local function render(result)
  if result == nil then return nil end
  if type(result) == "string" then return result .. "\n" end
  return json.encode(result, {pretty = true}) .. "\n"
end

local COMMANDS = {run = run_recipe, token = cli.token, ["auth info"] = cli.auth_info}

-- command: "run", "token" or "auth info"; args: RECIPE and params for run; opts: the
-- command line's --scopes, --audience, --impersonate, --delegates, --subject,
-- --quota-project and --format.
function M.main(command, args, opts)
  auth.defaults = {scopes = opts.scopes, impersonate = opts.impersonate, delegates = opts.delegates,
                   subject = opts.subject, quota_project = opts["quota-project"], audience = opts.audience}
  local ok, result = xpcall(COMMANDS[command], handler, args, opts)
  if ok then return 0, render(result), nil end
  local message
  if errors.is(result) then
    message = "gcpr: " .. errors.format(result)
  else
    message = "gcpr: " .. result.plain
  end
  if result.traceback and core.log_enabled("debug") then message = message .. "\n" .. result.traceback end
  return errors.is(result) and result.exit or 1, nil, message
end

return M

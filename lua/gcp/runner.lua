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

-- A recipe argument: a path (has a '/' or ends in .lua), or a name looked up as NAME.lua
-- along core.recipe_dirs(). -> path
function M.resolve(recipe)
  if recipe:find("/", 1, true) or recipe:find("%.lua$") then return recipe end
  local dirs = core.recipe_dirs()
  for _, dir in ipairs(dirs) do
    local path = dir .. "/" .. recipe .. ".lua"
    if core.readable(path) then return path end
  end
  errors.usage(("recipe '%s' not found (looked for %s.lua in: %s)"):format(recipe, recipe, table.concat(dirs, ", ")), 0)
end

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
  local path = M.resolve(args[1])
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

-- gcpr list: one line per recipe found along the search path (the first of a name wins).
local function list()
  local lines, seen = {}, {}
  for _, dir in ipairs(core.recipe_dirs()) do
    for _, name in ipairs(core.list_recipes(dir)) do
      if not seen[name] then
        seen[name] = true
        local ok, def = pcall(M.load, dir .. "/" .. name .. ".lua")
        local text = ok and def.description or ("(cannot load: " .. errors.format(def) .. ")")
        lines[#lines + 1] = ("%-26s %s"):format(name, text)
      end
    end
  end
  return #lines > 0 and table.concat(lines, "\n") or "no recipes found in " .. table.concat(core.recipe_dirs(), ", ")
end

-- gcpr describe RECIPE: its description and each param's type, default and help.
local function describe(args)
  local path = M.resolve(args[1])
  local def = M.load(path)
  local lines = {path, "", def.description, ""}
  if #def.params == 0 then lines[#lines + 1] = "No parameters." end
  for _, p in ipairs(def.params) do
    local tags = {}
    if p.default ~= nil then tags[#tags + 1] = "default " .. (type(p.default) == "table" and json.encode(p.default) or tostring(p.default))
    elseif p.required ~= false then tags[#tags + 1] = "required"
    else tags[#tags + 1] = "optional" end
    if p.min then tags[#tags + 1] = "min " .. p.min end
    if p.max then tags[#tags + 1] = "max " .. p.max end
    local kind = p.type == "list" and ("list of " .. (p.items or "string")) or p.type
    if p.choices then kind = kind .. " (" .. table.concat(p.choices, "|") .. ")" end
    lines[#lines + 1] = ("  %-16s %-24s %s%s"):format(p.name, kind, p.help or "", " [" .. table.concat(tags, ", ") .. "]")
  end
  return table.concat(lines, "\n")
end

local COMMANDS = {run = run_recipe, token = cli.token, ["auth info"] = cli.auth_info,
                  list = list, describe = describe}

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

-- gcp.sandbox: the _ENV a recipe runs in. An allow-list: no file, process or debug access,
-- no binary chunks, only the gcp modules to require. Reading an undefined global raises
-- with its name. pcall/xpcall cannot swallow the error that stops a run (deadline, memory).
local core = require "gcpr.core"

local M = {}

local BASICS = {"assert", "error", "ipairs", "next", "pairs", "print", "rawequal", "rawget",
                "rawlen", "rawset", "select", "setmetatable", "getmetatable", "tonumber",
                "tostring", "type", "_VERSION"}
local OS_ALLOWED = {"time", "clock", "date", "difftime"}

local function copy(t, without)
  local c = {}
  for k, v in pairs(t) do if not (without and without[k]) then c[k] = v end end
  return c
end

-- A recipe keeps its own string methods, but cannot reach the shared string table through
-- getmetatable("").__index and change it under the gcp modules.
getmetatable("").__metatable = false

local function guard(ok, ...)
  if not ok and core.killed() then error((...), 0) end
  return ok, ...
end

function M.env()
  local env = {}
  for _, name in ipairs(BASICS) do env[name] = _G[name] end
  env.string = copy(string, {dump = true})
  env.table = copy(table)
  env.math = copy(math)
  env.utf8 = copy(utf8)
  env.coroutine = copy(coroutine)
  env.os = {}
  for _, name in ipairs(OS_ALLOWED) do env.os[name] = os[name] end
  env.pcall = function(f, ...) return guard(pcall(f, ...)) end
  env.xpcall = function(f, handler, ...) return guard(xpcall(f, handler, ...)) end
  env.load = function(chunk, name, _, chunk_env)
    return load(chunk, name, "t", chunk_env or env)
  end
  env.require = function(name)
    if type(name) == "string" and (name == "gcp" or name:find("^gcp%.[%w_]+$")) then
      return require(name)
    end
    error("require: a recipe can load only the gcp modules, not '" .. tostring(name) .. "'", 2)
  end
  env._G = env
  return setmetatable(env, {
    __index = function(_, key)
      error("undefined global '" .. tostring(key) .. "'", 2)
    end,
  })
end

return M

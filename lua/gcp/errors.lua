-- gcp.errors: the one structured error that failures from the world become (HTTP status,
-- network, credentials, an operation that ended in error, a deadline), and usage errors.
-- An error carries what a user needs to act on it and never a token: kind, message, the
-- request's method and URL, Google's status/reason, the exit code, and where in the recipe.
local debug, getmetatable, setmetatable, tostring, type = debug, getmetatable, setmetatable, tostring, type
local concat = table.concat

local M = {}

local Error = {}
Error.__index = Error
Error.__name = "gcp.Error"
function Error:__tostring() return self.text end
M.Error = Error

-- The recipe line an error belongs to: the first Lua frame outside the gcp modules.
function M.where(level)
  local l = (level or 1) + 1
  while true do
    local info = debug.getinfo(l, "Sl")
    if not info then return nil end
    local src = info.source
    local in_gcp = src:find("^=gcp/") or src:find("^@.-lua/gcp/[%w_]+%.lua$")
    if info.what ~= "C" and not in_gcp and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline
    end
    l = l + 1
  end
end

local function describe(e)
  local parts = {}
  if e.method and e.url then parts[#parts + 1] = e.method .. " " .. e.url .. ":" end
  if e.status then
    parts[#parts + 1] = "HTTP " .. e.status .. (e.google_status and (" " .. e.google_status) or "") .. ":"
  end
  parts[#parts + 1] = e.message or "unknown error"
  if e.reason then parts[#parts + 1] = "(reason: " .. e.reason .. ")" end
  return concat(parts, " ")
end

-- fields: kind, message, and any of method, url, status, google_status, reason, exit,
-- errors, operation, ... level: as for error(); where it points in the recipe.
function M.new(fields, level)
  local e = setmetatable(fields, Error)
  e.exit = e.exit or 1
  e.where = e.where or M.where((level or 1) + 1)
  e.text = describe(e)
  return e
end

function M.raise(fields, level)
  error(M.new(fields, (level or 1) + 1), 0)
end

function M.usage(message, level)
  M.raise({kind = "usage", message = message, exit = 2}, (level or 1) + 1)
end

function M.is(e) return getmetatable(e) == Error end

-- One line for the user: "where: what".
function M.format(e)
  if M.is(e) then
    return e.where and (e.where .. ": " .. e.text) or e.text
  end
  return tostring(e)
end

function M.exit_code(e)
  if M.is(e) then return e.exit end
  return 1
end

return M

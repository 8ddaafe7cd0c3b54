-- gcp.log: leveled messages on stderr (debug shows with -v). Values are formatted with
-- string.format when more than one argument is given.
local core = require "gcpr.core"

local M = {}

local function emit(level, fmt, ...)
  if not core.log_enabled(level) then return end
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  core.log(level, msg)
end

function M.debug(...) emit("debug", ...) end
function M.info(...) emit("info", ...) end
function M.warn(...) emit("warn", ...) end
function M.error(...) emit("error", ...) end

return M

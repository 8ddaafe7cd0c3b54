-- gcp.json: JSON for recipes. null is gcp.json.null; arrays decoded from JSON, and tables
-- passed through gcp.json.array, encode as arrays even when empty.
local core = require "gcpr.core"

local M = {}

M.null = core.json_null

function M.encode(value, opts)
  return core.json_encode(value, opts and opts.pretty)
end

function M.decode(text)
  if type(text) ~= "string" then error("gcp.json.decode expects a string, got " .. type(text), 2) end
  return core.json_decode(text)
end

-- Marks t (or a new table) as a JSON array.
function M.array(t) return core.json_array(t) end

return M

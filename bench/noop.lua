-- noop: a recipe that does nothing. bench/run times `gcpr run bench/noop.lua` to measure
-- start-up: exec, dynamic linking, the Lua state, the embedded gcp modules, the sandbox,
-- loading and checking a recipe, and a clean exit.
local gcp = require "gcp"

return gcp.recipe{
  description = "Does nothing (start-up benchmark).",
  run = function() end,
}

-- gcp.recipe: what a recipe file returns: a description, typed params and a run function.
local params = require "gcp.params"

local M = {}

local Recipe = {}
Recipe.__index = Recipe
Recipe.__name = "gcp.Recipe"

function M.new(def)
  if type(def) ~= "table" then error("gcp.recipe expects a table {description=, params=, run=}", 2) end
  if type(def.description) ~= "string" or def.description == "" then
    error("gcp.recipe: description must be a non-empty string", 2)
  end
  if type(def.run) ~= "function" then error("gcp.recipe: run must be a function(p)", 2) end
  return setmetatable({description = def.description, params = params.check_declaration(def.params, 2),
                       run = def.run}, Recipe)
end

function M.is(v) return getmetatable(v) == Recipe end

return M

-- gcp.params: typed recipe parameters. A recipe declares them; the command line gives
-- name=value (converted to the declared type) or name:=json (a JSON value, type-checked).
-- Every problem is a usage error naming the parameter, raised before any request is sent.
local errors = require "gcp.errors"
local json = require "gcp.json"

local M = {}

local TYPES = {string = true, integer = true, number = true, boolean = true, list = true, json = true}
local LIST_ITEM_TYPES = {string = true, integer = true, number = true, boolean = true}

local function describe(p)
  local s = p.type
  if p.type == "list" then s = "list of " .. (p.items or "string") end
  if p.choices then s = s .. " (one of " .. table.concat(p.choices, ", ") .. ")" end
  if p.help then s = s .. ": " .. p.help end
  return s
end
M.describe = describe

-- Checks a recipe's declared params; raises at the recipe's gcp.recipe line when wrong.
function M.check_declaration(params, level)
  level = (level or 1) + 1
  if params == nil then return {} end
  if type(params) ~= "table" then error("gcp.recipe: params must be a list of {name=, type=, ...}", level) end
  local seen = {}
  for i, p in ipairs(params) do
    if type(p) ~= "table" or type(p.name) ~= "string" or not p.name:find("^[%a_][%w_]*$") then
      error("gcp.recipe: params[" .. i .. "] needs a name (letters, digits, _)", level)
    end
    if seen[p.name] then error("gcp.recipe: parameter '" .. p.name .. "' is declared twice", level) end
    seen[p.name] = true
    if not TYPES[p.type] then
      error("gcp.recipe: parameter '" .. p.name .. "' has type '" .. tostring(p.type) ..
            "'; expected string, integer, number, boolean, list or json", level)
    end
    if p.items ~= nil and (p.type ~= "list" or not LIST_ITEM_TYPES[p.items]) then
      error("gcp.recipe: parameter '" .. p.name .. "': items applies to lists of string, integer, number or boolean", level)
    end
  end
  return params
end

local function fail(p, message) errors.usage("parameter '" .. p.name .. "' " .. message, 0) end

local function scalar_from_text(p, kind, text)
  if kind == "string" then return text end
  if kind == "integer" then
    local v = text:find("^%s*[-+]?%d+%s*$") and math.tointeger(tonumber(text))
    if v == nil then fail(p, "expects an integer, got '" .. text .. "'") end
    return v
  end
  if kind == "number" then
    local v = tonumber(text)
    if v == nil then fail(p, "expects a number, got '" .. text .. "'") end
    return v
  end
  if kind == "boolean" then
    local t = text:lower()
    if t == "true" or t == "yes" or t == "1" or t == "on" then return true end
    if t == "false" or t == "no" or t == "0" or t == "off" then return false end
    fail(p, "expects true or false, got '" .. text .. "'")
  end
end

local function check_scalar(p, kind, v)
  if kind == "string" and type(v) == "string" then return v end
  if kind == "integer" and math.type(v) == "integer" then return v end
  if kind == "number" and type(v) == "number" then return v end
  if kind == "boolean" and type(v) == "boolean" then return v end
  fail(p, "expects " .. (kind == "integer" and "an " or "a ") .. kind .. ", got JSON " ..
          (v == json.null and "null" or json.encode(v)))
end

local function from_text(p, text)
  if p.type == "list" then
    local items = json.array()
    if text:find("%S") then
      for item in (text .. ","):gmatch("([^,]*),") do
        items[#items + 1] = scalar_from_text(p, p.items or "string", item:match("^%s*(.-)%s*$"))
      end
    end
    return items
  elseif p.type == "json" then
    local ok, v = pcall(json.decode, text)
    if not ok then fail(p, "expects JSON, got '" .. text .. "'") end
    return v
  end
  return scalar_from_text(p, p.type, text)
end

local function from_json(p, text)
  local ok, v = pcall(json.decode, text)
  if not ok then fail(p, "was given with := but '" .. text .. "' is not valid JSON") end
  if p.type == "json" then return v end
  if p.type == "list" then
    if type(v) ~= "table" or getmetatable(v) ~= getmetatable(json.array()) then
      fail(p, "expects a JSON array, got " .. text)
    end
    for i, item in ipairs(v) do v[i] = check_scalar(p, p.items or "string", item) end
    return v
  end
  return check_scalar(p, p.type, v)
end

local function check_value(p, v)
  if p.choices then
    local ok = false
    for _, c in ipairs(p.choices) do if c == v then ok = true end end
    if not ok then
      fail(p, "must be one of " .. table.concat(p.choices, ", ") .. "; got '" .. tostring(v) .. "'")
    end
  end
  if type(v) == "number" then
    if p.min and v < p.min then fail(p, "must be at least " .. p.min .. ", got " .. v) end
    if p.max and v > p.max then fail(p, "must be at most " .. p.max .. ", got " .. v) end
  end
  return v
end

-- Parses "name=value" / "name:=json" arguments against the declared params.
function M.parse(declared, argv)
  local by_name, names = {}, {}
  for _, p in ipairs(declared) do by_name[p.name] = p; names[#names + 1] = p.name end
  local values = {}
  for _, arg in ipairs(argv) do
    local name, op, value = arg:match("^([%a_][%w_%-]*)(:?=)(.*)$")
    if not name then
      errors.usage("expected name=value or name:=json, got '" .. arg .. "'", 0)
    end
    local p = by_name[name]
    if not p then
      errors.usage("unknown parameter '" .. name .. "' (this recipe takes: " ..
                   (#names > 0 and table.concat(names, ", ") or "no parameters") .. ")", 0)
    end
    if values[name] ~= nil then errors.usage("parameter '" .. name .. "' is given twice", 0) end
    values[name] = check_value(p, op == ":=" and from_json(p, value) or from_text(p, value))
  end
  for _, p in ipairs(declared) do
    if values[p.name] == nil then
      if p.default ~= nil then
        values[p.name] = p.default
      elseif p.required ~= false then
        errors.usage("missing required parameter '" .. p.name .. "' (" .. describe(p) .. ")", 0)
      end
    end
  end
  return values
end

return M

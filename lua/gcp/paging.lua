-- gcp.paging: lists that come a page at a time. Google's APIs page with pageToken /
-- nextPageToken; Compute's aggregatedList maps each zone or region to its items.
local http = require "gcp.http"

local M = {}

local function with_token(spec, token)
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  local q = {}
  for k, v in pairs(spec.query or {}) do q[k] = v end
  q.pageToken = token
  s.query = q
  return s
end

-- for page in gcp.pages{url=, query=, ...} do ... end: each page's decoded JSON.
function M.pages(spec)
  if type(spec) ~= "table" or type(spec.url) ~= "string" then
    error("gcp.pages expects a gcp.http spec {url = ..., ...}", 2)
  end
  local token, finished = nil, false
  return function()
    if finished then return nil end
    local page = http.request(with_token(spec, token)).json or {}
    token = page.nextPageToken
    finished = token == nil or token == ""
    return page
  end
end

-- for item in gcp.items(spec, "items") do ... end: every element of field across pages.
function M.items(spec, field)
  field = field or "items"
  local pages = M.pages(spec)
  local page, i = nil, 0
  return function()
    while true do
      if page and page[field] and i < #page[field] then
        i = i + 1
        return page[field][i]
      end
      page, i = pages(), 0
      if not page then return nil end
    end
  end
end

-- gcp.list(spec, "items") -> all the items in one list.
function M.list(spec, field)
  local out = {}
  for item in M.items(spec, field) do out[#out + 1] = item end
  return out
end

-- for scope, item in gcp.aggregated(spec, "instanceGroupManagers") do ... end: Compute's
-- aggregatedList, whose items map "zones/us-central1-a" to {[field] = {...}} or a warning.
function M.aggregated(spec, field)
  if type(field) ~= "string" then error("gcp.aggregated: name the field, e.g. \"instanceGroupManagers\"", 2) end
  local pages = M.pages(spec)
  local queue, head = {}, 1
  return function()
    while head > #queue do
      local page = pages()
      if not page then return nil end
      queue, head = {}, 1
      local scopes = {}
      for scope in pairs(page.items or {}) do scopes[#scopes + 1] = scope end
      table.sort(scopes)
      for _, scope in ipairs(scopes) do
        for _, item in ipairs(page.items[scope][field] or {}) do queue[#queue + 1] = {scope, item} end
      end
    end
    local pair = queue[head]
    head = head + 1
    return pair[1], pair[2]
  end
end

return M

-- gcp.task: concurrency for recipes. Each function runs as its own task (coroutine) on the
-- one loop; a task that waits lets the others run. Failures are collected, not lost: every
-- started task is joined before the first error is raised.
local core = require "gcpr.core"
local errors = require "gcp.errors"

local M = {}

-- gcp.parallel(f1, f2, ...) -> the first result of each, in order.
function M.parallel(...)
  local fns = table.pack(...)
  for i = 1, fns.n do
    if type(fns[i]) ~= "function" then
      error("gcp.parallel: argument " .. i .. " is a " .. type(fns[i]) .. ", expected a function", 2)
    end
  end
  local handles = {}
  for i = 1, fns.n do handles[i] = core.spawn(fns[i]) end
  local results, first_err = {}, nil
  for i = 1, fns.n do
    local ok, value = core.join(handles[i])
    if ok then results[i] = value
    elseif first_err == nil then first_err = value end
  end
  if first_err ~= nil then error(first_err, 0) end
  return table.unpack(results, 1, fns.n)
end

-- gcp.map(items, fn, {limit = N}) -> {fn(items[1], 1), ...}. At most limit calls are in
-- flight; after a failure no new item starts, the running ones finish, and the first error
-- is raised with how many items failed.
function M.map(items, fn, opts)
  if type(items) ~= "table" then error("gcp.map: items must be a list, got " .. type(items), 2) end
  if type(fn) ~= "function" then error("gcp.map: fn must be a function, got " .. type(fn), 2) end
  local limit = opts and opts.limit or 16
  if math.type(limit) ~= "integer" or limit < 1 then
    error("gcp.map: limit must be a positive integer", 2)
  end
  local n = #items
  local results, next_index, failures, first_err = {}, 0, 0, nil
  local function worker()
    while first_err == nil do
      next_index = next_index + 1
      local i = next_index
      if i > n then return end
      local ok, value = pcall(fn, items[i], i)
      if ok then
        results[i] = value
      else
        failures = failures + 1
        if first_err == nil then first_err = value end
      end
    end
  end
  local handles = {}
  for w = 1, math.min(limit, n) do handles[w] = core.spawn(worker) end
  for w = 1, #handles do core.join(handles[w]) end
  if first_err ~= nil then
    if errors.is(first_err) and failures > 1 then
      first_err.text = first_err.text .. " (and " .. (failures - 1) .. " more gcp.map items failed)"
    end
    error(first_err, 0)
  end
  return results
end

return M

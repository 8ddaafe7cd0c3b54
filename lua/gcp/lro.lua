-- gcp.lro: waiting on long-running operations until they really finish. A shape is
-- recognised from the object an API returned; each shape knows how to poll and how its
-- errors look. Compute zonal operations: the `wait` method in a loop until DONE.
local core = require "gcpr.core"
local errors = require "gcp.errors"
local http = require "gcp.http"
local log = require "gcp.log"

local M = {}

-- Compute answers a wait call at DONE or after about two minutes, whichever is first.
local COMPUTE_WAIT_HTTP_TIMEOUT = 150

local function compute_error(op)
  local list = op.error and op.error.errors or {}
  local parts = {}
  for _, e in ipairs(list) do parts[#parts + 1] = (e.code or "ERROR") .. ": " .. (e.message or "") end
  local message = "operation " .. tostring(op.name) .. " (" .. tostring(op.operationType) ..
                  " on " .. tostring(op.targetLink) .. ") failed: " .. table.concat(parts, "; ")
  return {kind = "operation", message = message, errors = list, operation = op,
          status = op.httpErrorStatusCode, google_status = op.httpErrorMessage}
end

local function compute_wait(op, opts, level)
  local deadline = opts.timeout and core.now() + opts.timeout
  local last_status, last_progress
  local url = op.selfLink
  if type(url) ~= "string" then error("gcp.wait: Compute operation has no selfLink", level + 1) end
  local failures = 0
  while op.status ~= "DONE" do
    if op.status ~= last_status or op.progress ~= last_progress then
      log.info("operation %s: %s%s", op.name, op.status,
               op.progress and op.progress > 0 and (" " .. op.progress .. "%") or "")
      last_status, last_progress = op.status, op.progress
    end
    if deadline and core.now() >= deadline then
      errors.raise({kind = "timeout", message = ("operation %s still %s after %gs (gcp.wait timeout)")
                    :format(op.name, op.status, opts.timeout), operation = op}, level + 1)
    end
    local ok, res = pcall(http.request, {method = "POST", url = url .. "/wait",
                                         timeout = COMPUTE_WAIT_HTTP_TIMEOUT})
    if ok then
      op, failures = res.json, 0
    elseif errors.is(res) and res.kind == "network" and failures < 5 then
      -- The operation goes on without us: a lost poll is retried, not fatal.
      failures = failures + 1
      log.warn("waiting on %s: %s; retrying in %ds", op.name, res.message, failures)
      core.sleep(failures)
    else
      error(res, 0)
    end
  end
  if op.error then errors.raise(compute_error(op), level + 1) end
  return op
end

-- gcp.wait(op, {timeout = seconds}) -> the finished operation. Raises a gcp.Error carrying
-- the operation's errors if it ended in error. In a dry run it returns op without waiting.
function M.wait(op, opts)
  opts = opts or {}
  if core.dry_run() then
    log.info("dry run: not waiting on the operation")
    return op
  end
  if type(op) ~= "table" then
    error("gcp.wait expects the operation an API returned (a table), got " .. type(op), 2)
  end
  if op.kind == "compute#operation" then return compute_wait(op, opts, 2) end
  error("gcp.wait: unrecognised operation (kind=" .. tostring(op.kind) .. ", name=" ..
        tostring(op.name) .. ")", 2)
end

return M

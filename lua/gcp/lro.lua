-- gcp.lro: waiting on long-running work until it has really finished. The shape is
-- recognised from the object an API returned; each shape knows how to poll it, what
-- "finished" means and what its failure looks like:
--   Compute operations (zonal, regional, global): the `wait` method until DONE;
--   Cloud SQL Admin operations: GET selfLink until DONE;
--   Cloud Build: from the trigger-run operation to the build, until a terminal status;
--   Dataflow jobs: until the state asked for (running, or a terminal state);
--   google.longrunning.Operation: GET {service}/{name} until done.
-- Polling backs off with jitter; a failed poll does not end the wait; a deadline error says
-- what was still pending. Progress is drawn in place on a terminal and logged otherwise.
local core = require "gcpr.core"
local errors = require "gcp.errors"
local http = require "gcp.http"
local log = require "gcp.log"

local M = {}

-- Compute answers a wait call at DONE or after about two minutes, whichever is first.
local COMPUTE_WAIT_HTTP_TIMEOUT = 150
local FIRST_DELAY, MAX_DELAY = 1, 30

local BUILD_TERMINAL = {SUCCESS = true, FAILURE = true, INTERNAL_ERROR = true, TIMEOUT = true,
                        CANCELLED = true, EXPIRED = true}
local DATAFLOW_TERMINAL = {JOB_STATE_DONE = true, JOB_STATE_FAILED = true, JOB_STATE_CANCELLED = true,
                           JOB_STATE_UPDATED = true, JOB_STATE_DRAINED = true}
local DATAFLOW_BAD = {JOB_STATE_FAILED = true, JOB_STATE_CANCELLED = true}

-- ---- progress ----

local Progress = {}
Progress.__index = Progress

local function progress(what)
  return setmetatable({what = what, started = core.now(), tty = core.stderr_is_terminal()}, Progress)
end

function Progress:update(state)
  if state == self.last then return end
  self.last = state
  if self.tty then
    core.progress(("%s: %s (%ds)"):format(self.what, state, math.floor(core.now() - self.started)))
  else
    log.info("%s: %s", self.what, state)
  end
end

function Progress:finish()
  if self.tty and self.last then core.progress(nil) end
end

-- ---- one polling loop for every shape ----

-- shape: {what=, done(obj) -> bool, state(obj) -> text, fetch(obj) -> obj, patient=bool}
-- patient: fetch itself waits server-side (Compute's wait), so no sleep between calls
-- unless it came back quickly.
local function poll(obj, shape, opts, level)
  local deadline = opts.timeout and core.now() + opts.timeout
  local delay = opts.interval or FIRST_DELAY
  local p = progress(shape.what(obj))
  local ok_all, result = pcall(function()
    while true do
      p:update(shape.state(obj))
      if shape.done(obj) then return obj end
      if deadline and core.now() >= deadline then
        errors.raise({kind = "timeout", exit = 3, last = obj,
                      message = ("%s still %s after %gs (gcp.wait timeout)"):format(shape.what(obj), shape.state(obj), opts.timeout)},
                     level + 2)
      end
      local t0 = core.now()
      local ok, new = pcall(shape.fetch, obj)
      if ok then
        obj = new
        if not shape.done(obj) and (not shape.patient or core.now() - t0 < 1) then
          local left = deadline and math.max(0, deadline - core.now()) or math.huge
          core.sleep(math.min(delay * (0.8 + 0.4 * math.random()), left), "before polling " .. shape.what(obj) .. " again")
          delay = math.min(delay * 1.5, MAX_DELAY)
        end
      elseif errors.is(new) and (new.kind == "network" or (new.status and new.status >= 500) or new.status == 429) then
        -- The work goes on without us: a failed poll is not the work failing.
        log.warn("waiting on %s: %s; polling again", shape.what(obj), new.message)
        core.sleep(math.min(delay, MAX_DELAY), "before polling " .. shape.what(obj) .. " again")
        delay = math.min(delay * 2, MAX_DELAY)
      else
        error(new, 0)
      end
    end
  end)
  p:finish()
  if not ok_all then error(result, 0) end
  return result
end

-- ---- Compute ----

local function compute_failure(op)
  local list = op.error and op.error.errors or {}
  local parts = {}
  for _, e in ipairs(list) do parts[#parts + 1] = (e.code or "ERROR") .. ": " .. (e.message or "") end
  return {kind = "operation", errors = list, operation = op,
          status = op.httpErrorStatusCode, google_status = op.httpErrorMessage,
          message = ("operation %s (%s on %s) failed: %s"):format(tostring(op.name), tostring(op.operationType),
                                                                 tostring(op.targetLink), table.concat(parts, "; "))}
end

local compute = {
  what = function(op) return "operation " .. tostring(op.name) end,
  state = function(op) return op.status .. ((op.progress or 0) > 0 and (" " .. op.progress .. "%") or "") end,
  done = function(op) return op.status == "DONE" end,
  fetch = function(op)
    return http.request{method = "POST", url = op.selfLink .. "/wait", timeout = COMPUTE_WAIT_HTTP_TIMEOUT}.json
  end,
  patient = true,
}

-- ---- Cloud SQL Admin ----

local sql = {
  what = function(op) return "Cloud SQL operation " .. tostring(op.name) end,
  state = function(op) return tostring(op.status) end,
  done = function(op) return op.status == "DONE" end,
  fetch = function(op) return http.request{url = op.selfLink}.json end,
}

local function sql_failure(op)
  local list = op.error and op.error.errors or {}
  local parts = {}
  for _, e in ipairs(list) do parts[#parts + 1] = (e.code or "ERROR") .. ": " .. (e.message or "") end
  return {kind = "operation", errors = list, operation = op,
          message = ("Cloud SQL operation %s (%s on %s) failed: %s"):format(tostring(op.name),
            tostring(op.operationType), tostring(op.targetId), table.concat(parts, "; "))}
end

-- ---- Cloud Build ----

local function build_url(b)
  if b.name and b.name:find("^projects/") then return "https://cloudbuild.googleapis.com/v1/" .. b.name end
  return ("https://cloudbuild.googleapis.com/v1/projects/%s/builds/%s"):format(b.projectId, b.id)
end

local build = {
  what = function(b) return "build " .. tostring(b.id) end,
  state = function(b) return tostring(b.status) end,
  done = function(b) return BUILD_TERMINAL[b.status] == true end,
  fetch = function(b) return http.request{url = build_url(b)}.json end,
}

local function build_failure(b)
  return {kind = "build", build = b, google_status = b.status,
          message = ("build %s finished %s%s; log: %s"):format(b.id, b.status,
            b.statusDetail and (" (" .. b.statusDetail .. ")") or "", tostring(b.logUrl))}
end

-- ---- Dataflow ----

local function dataflow_url(job)
  return ("https://dataflow.googleapis.com/v1b3/projects/%s/locations/%s/jobs/%s"):format(
    job.projectId, job.location, job.id)
end

local function dataflow(target)
  return {
    what = function(j) return "Dataflow job " .. tostring(j.name or j.id) end,
    state = function(j) return tostring(j.currentState) end,
    done = function(j)
      if DATAFLOW_TERMINAL[j.currentState] then return true end
      return target == "running" and j.currentState == "JOB_STATE_RUNNING"
    end,
    fetch = function(j) return http.request{url = dataflow_url(j)}.json end,
  }
end

-- ---- google.longrunning.Operation ----

-- The service root ("https://run.googleapis.com/v2") of the URL the operation came from.
local function service_root(url)
  return url and url:match("^(https://[^/]+/v[%w]+)/")
end

local function longrunning(root)
  return {
    what = function(op) return "operation " .. tostring(op.name) end,
    state = function(op) return op.done and "done" or "running" end,
    done = function(op) return op.done == true end,
    fetch = function(op) return http.request{url = root .. "/" .. op.name}.json end,
  }
end

local function longrunning_failure(op)
  local e = op.error
  return {kind = "operation", operation = op, google_status = e.status, errors = e.details,
          message = ("operation %s failed: %s%s"):format(op.name, e.code and ("code " .. e.code .. ": ") or "",
                                                         e.message or "")}
end

-- ---- gcp.wait ----

-- gcp.wait(x, {timeout=, interval=, ["until"]="running"|"done", url=}) -> the finished
-- object. x is what an API returned, or the response gcp.http gave (then its URL tells
-- where a google.longrunning.Operation lives). Raises a gcp.Error with the last known state
-- when the work failed or the timeout passed. In a dry run it returns x without waiting.
function M.wait(x, opts)
  opts = opts or {}
  if core.dry_run() then
    log.info("dry run: not waiting")
    return x
  end
  if type(x) ~= "table" then
    error("gcp.wait expects what an API returned (a table), got " .. type(x), 2)
  end
  local url = opts.url
  if x.status and x.json ~= nil and x.headers then
    url = url or x.url
    x = x.json
  end
  if x.job and x.job.currentState then x = x.job end
  if x.kind == "compute#operation" then
    local op = poll(x, compute, opts, 1)
    if op.error then errors.raise(compute_failure(op), 2) end
    return op
  elseif x.kind == "sql#operation" then
    local op = poll(x, sql, opts, 1)
    if op.error then errors.raise(sql_failure(op), 2) end
    return op
  elseif type(x.metadata) == "table" and type(x.metadata.build) == "table" then
    local b = poll(x.metadata.build, build, opts, 1)
    if b.status ~= "SUCCESS" then errors.raise(build_failure(b), 2) end
    return b
  elseif x.id and x.status and (x.logUrl or x.buildTriggerId or x.steps) then
    local b = poll(x, build, opts, 1)
    if b.status ~= "SUCCESS" then errors.raise(build_failure(b), 2) end
    return b
  elseif x.currentState and x.id then
    local target = opts["until"] or "done"
    if target ~= "running" and target ~= "done" then
      error('gcp.wait: until must be "running" or "done"', 2)
    end
    local job = poll(x, dataflow(target), opts, 1)
    if DATAFLOW_BAD[job.currentState] then
      errors.raise({kind = "job", job = job, google_status = job.currentState,
                    message = ("Dataflow job %s (%s) ended %s"):format(job.name, job.id, job.currentState)}, 2)
    end
    return job
  elseif type(x.name) == "string" and (x.done ~= nil or x.metadata ~= nil) then
    local root = service_root(url)
    if not root then
      error("gcp.wait: for operation " .. x.name .. " pass the gcp.http response, or {url = <the API's URL>}", 2)
    end
    local op = poll(x, longrunning(root), opts, 1)
    if op.error then errors.raise(longrunning_failure(op), 2) end
    return op
  end
  error("gcp.wait: unrecognised operation (kind=" .. tostring(x.kind) .. ", name=" .. tostring(x.name) .. ")", 2)
end

-- Exposed for specs: recognising a shape must not need the network.
M.service_root = service_root

-- For service helpers that wait on a resource's own state (a MIG becoming stable):
-- shape = {what=, state=, done=, fetch=}, as above.
function M.poll(obj, shape, opts) return poll(obj, shape, opts or {}, 2) end

return M

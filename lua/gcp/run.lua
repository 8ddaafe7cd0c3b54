-- gcp.run: Cloud Run. Call a service with an ID token (the audience defaults to the URL,
-- as Cloud Scheduler does), and run a job and wait for its execution.
local http = require "gcp.http"
local lro = require "gcp.lro"

local M = {}

local esc = http.escape

-- gcp.run.call(url, {method=, json=, body=, query=, headers=, audience=, accept=}) -> response
function M.call(url, opts)
  local spec = {}
  for k, v in pairs(opts or {}) do spec[k] = v end
  spec.url, spec.auth = url, "id_token"
  return http.request(spec)
end

-- gcp.run.run_job(project, region, job, {overrides=, timeout=}) -> the finished execution.
function M.run_job(project, region, job, opts)
  opts = opts or {}
  local url = ("https://run.googleapis.com/v2/projects/%s/locations/%s/jobs/%s:run"):format(
    esc(project), esc(region), esc(job))
  local res = http.request{method = "POST", url = url, json = {overrides = opts.overrides}}
  local op = lro.wait(res, {timeout = opts.timeout})
  return op.response or op
end

return M

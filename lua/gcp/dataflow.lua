-- gcp.dataflow: launch classic and Flex templates, with job names unique per run.
local core = require "gcpr.core"
local http = require "gcp.http"

local M = {}

M.BASE = "https://dataflow.googleapis.com/v1b3"
local esc = http.escape

-- A job name Dataflow accepts ([a-z]([-a-z0-9]*[a-z0-9])?) that is unique per run:
-- prefix-YYYYMMDD-HHMMSS-xxxx (UTC time and 4 random hex digits).
function M.job_name(prefix, now, random)
  if type(prefix) ~= "string" or prefix == "" then error("gcp.dataflow.job_name: prefix must be a non-empty string", 2) end
  local p = prefix:lower():gsub("[^%-a-z0-9]", "-"):gsub("%-+", "-"):gsub("^[^a-z]+", ""):gsub("%-$", "")
  if p == "" then p = "job" end
  local suffix = os.date("!%Y%m%d-%H%M%S", math.floor(now or core.time())) ..
                 ("-%04x"):format((random or math.random)(0, 0xffff))
  return p:sub(1, 100 - #suffix - 1) .. "-" .. suffix
end

local function location(project, region)
  return ("%s/projects/%s/locations/%s"):format(M.BASE, esc(project), esc(region))
end

-- Classic template at a gs:// path. opts: job_name (required), parameters, environment.
-- -> the gcp.http response; .json.job is the job (pass it to gcp.wait).
function M.launch_template(project, region, gcs_path, opts)
  if type(gcs_path) ~= "string" or not gcs_path:find("^gs://") then
    error("gcp.dataflow.launch_template: template must be a gs:// path", 2)
  end
  return http.request{method = "POST", url = location(project, region) .. "/templates:launch",
                      query = {gcsPath = gcs_path},
                      json = {jobName = opts.job_name, parameters = opts.parameters, environment = opts.environment}}
end

-- Flex template: container spec at a gs:// path.
function M.launch_flex_template(project, region, spec_path, opts)
  if type(spec_path) ~= "string" or not spec_path:find("^gs://") then
    error("gcp.dataflow.launch_flex_template: the container spec must be a gs:// path", 2)
  end
  return http.request{method = "POST", url = location(project, region) .. "/flexTemplates:launch",
                      json = {launchParameter = {jobName = opts.job_name, containerSpecGcsPath = spec_path,
                                                 parameters = opts.parameters, environment = opts.environment}}}
end

function M.get_job(project, region, id)
  return http.request{url = location(project, region) .. "/jobs/" .. esc(id)}.json
end

return M

-- Launch a Dataflow template under a job name unique to this run, and wait until the job
-- is running (or finished).
local gcp = require "gcp"

return gcp.recipe {
  description = "Launch a Dataflow classic or Flex template with a unique job name and wait for the state asked for.",
  params = {
    {name = "project", type = "string", help = "project ID"},
    {name = "region", type = "string", help = "Dataflow region, e.g. us-central1"},
    {name = "template", type = "string", help = "gs:// path of the template (the container spec for a Flex template)"},
    {name = "job_prefix", type = "string", help = "job names are PREFIX-YYYYMMDD-HHMMSS-xxxx"},
    {name = "parameters", type = "json", required = false, help = 'JSON object of template parameters'},
    {name = "flex", type = "boolean", default = false, help = "the template is a Flex template"},
    {name = "wait_for", type = "string", choices = {"running", "done", "none"}, default = "running",
     help = "running: until the job runs; done: until it finishes; none: do not wait"},
    {name = "timeout", type = "integer", default = 1800, min = 1, help = "seconds to wait"},
  },
  run = function(p)
    if p.parameters ~= nil and (type(p.parameters) ~= "table" or #p.parameters > 0) then
      error(gcp.usage_error('parameters must be a JSON object such as {"inputFile":"gs://..."}'), 0)
    end
    if not p.template:find("^gs://") then error(gcp.usage_error("template must be a gs:// path"), 0) end
    local name = gcp.dataflow.job_name(p.job_prefix)
    local launch = p.flex and gcp.dataflow.launch_flex_template or gcp.dataflow.launch_template
    local res = launch(p.project, p.region, p.template, {job_name = name, parameters = p.parameters})
    if gcp.dry_run() then return {jobName = name, dry_run = true} end
    local job = res.json.job
    gcp.log.info("launched %s (%s)", job.name, job.id)
    if p.wait_for ~= "none" then job = gcp.wait(job, {["until"] = p.wait_for, timeout = p.timeout}) end
    return {jobName = job.name, id = job.id, state = job.currentState}
  end,
}

-- Resize a managed instance group (zonal or regional), wait until the resize operation is
-- DONE and the group is stable, and report its new size.
local gcp = require "gcp"

return gcp.recipe {
  description = "Resize a managed instance group (zonal or regional) and wait until it is stable at the new size.",
  params = {
    {name = "project", type = "string", help = "project ID"},
    {name = "zone", type = "string", required = false, help = "zone of a zonal group, e.g. us-central1-a"},
    {name = "region", type = "string", required = false, help = "region of a regional group, e.g. us-central1"},
    {name = "mig", type = "string", help = "name of the managed instance group"},
    {name = "size", type = "integer", min = 0, help = "new target size"},
    {name = "stable_timeout", type = "integer", default = 900, min = 0, help = "seconds to wait for the group to become stable"},
  },
  run = function(p)
    if (p.zone == nil) == (p.region == nil) then
      error(gcp.usage_error("give exactly one of zone= or region="), 0)
    end
    local location = p.zone or p.region
    local op = gcp.compute.resize_mig(p.project, location, p.mig, p.size)
    gcp.wait(op)
    local mig = gcp.dry_run() and gcp.compute.get_mig(p.project, location, p.mig)
      or gcp.compute.wait_mig_stable(p.project, location, p.mig, {timeout = p.stable_timeout})
    gcp.log.info("%s: target size %s", mig.name, mig.targetSize)
    return {mig = mig.name, zone = p.zone, region = p.region, targetSize = mig.targetSize,
            stable = mig.status and mig.status.isStable, operation = op.json.name}
  end,
}

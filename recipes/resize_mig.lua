-- Resize a zonal managed instance group and wait until Compute reports the resize done.
local gcp = require "gcp"

return gcp.recipe {
  description = "Resize a zonal managed instance group and wait until the resize operation is DONE.",
  params = {
    {name = "project", type = "string", help = "project ID"},
    {name = "zone", type = "string", help = "zone of the group, e.g. us-central1-a"},
    {name = "mig", type = "string", help = "name of the managed instance group"},
    {name = "size", type = "integer", min = 0, help = "new target size"},
  },
  run = function(p)
    local mig_url = ("https://compute.googleapis.com/compute/v1/projects/%s/zones/%s/instanceGroupManagers/%s")
      :format(gcp.escape(p.project), gcp.escape(p.zone), gcp.escape(p.mig))
    local op = gcp.http{method = "POST", url = mig_url .. "/resize", query = {size = p.size}}.json
    gcp.wait(op)
    local mig = gcp.http{url = mig_url}.json
    gcp.log.info("%s: target size %s", mig.name, mig.targetSize)
    return {mig = mig.name, zone = p.zone, targetSize = mig.targetSize, operation = op.name}
  end,
}

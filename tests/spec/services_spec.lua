-- Specs for the parts of the service helpers that need no network: names and locations.
local compute = require "gcp.compute"
local dataflow = require "gcp.dataflow"
local lro = require "gcp.lro"

describe("gcp.compute", function()
  it("tells zones from regions", function()
    assert.is_true(compute.is_zone("us-central1-a"))
    assert.is_true(compute.is_zone("europe-west4-b"))
    assert.is_false(compute.is_zone("us-central1"))
    assert.is_false(compute.is_zone("global"))
  end)
  it("builds zonal and regional MIG URLs", function()
    assert.are.equal("https://compute.googleapis.com/compute/v1/projects/p/zones/us-central1-a/instanceGroupManagers/m",
                     compute.mig_url("p", "us-central1-a", "m"))
    assert.are.equal("https://compute.googleapis.com/compute/v1/projects/p/regions/us-central1/regionInstanceGroupManagers/m",
                     compute.mig_url("p", "us-central1", "m"))
  end)
end)

describe("gcp.dataflow.job_name", function()
  it("is prefix-YYYYMMDD-HHMMSS-xxxx in UTC, lower case, valid for Dataflow", function()
    local name = dataflow.job_name("Nightly_Export", 1795318378, function() return 0xbeef end)
    assert.are.equal("nightly-export-20261122-033258-beef", name)
    assert.matches("^[a-z][-a-z0-9]*[a-z0-9]$", dataflow.job_name("9 lives!"))
    assert.are_not.equal(dataflow.job_name("x"), dataflow.job_name("x", nil, function() return 1 end))
  end)
  it("stays within Dataflow's length limit", function()
    assert.is_true(#dataflow.job_name(string.rep("a", 500)) <= 100)
  end)
end)

describe("gcp.lro.service_root", function()
  it("finds the versioned service root an operation is polled under", function()
    assert.are.equal("https://run.googleapis.com/v2",
                     lro.service_root("https://run.googleapis.com/v2/projects/p/locations/l/jobs/j:run"))
    assert.are.equal("https://cloudbuild.googleapis.com/v1",
                     lro.service_root("https://cloudbuild.googleapis.com/v1/projects/p/triggers/t:run"))
    assert.is_nil(lro.service_root("https://example.com/"))
  end)
end)

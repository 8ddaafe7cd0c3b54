-- Specs for gcp.params: conversion from the command line, type checks and usage errors.
local params = require "gcp.params"
local errors = require "gcp.errors"
local json = require "gcp.json"

local declared = params.check_declaration({
  {name = "project", type = "string"},
  {name = "size", type = "integer", min = 0},
  {name = "ratio", type = "number", default = 0.5},
  {name = "force", type = "boolean", required = false},
  {name = "ranges", type = "list", required = false},
  {name = "ports", type = "list", items = "integer", required = false},
  {name = "mode", type = "string", choices = {"set", "add"}, default = "set"},
  {name = "labels", type = "json", required = false},
})

local function usage_error(argv)
  local ok, e = pcall(params.parse, declared, argv)
  assert.is_false(ok)
  assert.is_true(errors.is(e), tostring(e))
  assert.are.equal(2, e.exit)
  return e.message
end

describe("gcp.params.parse", function()
  it("converts name=value to the declared types and applies defaults", function()
    local p = params.parse(declared, {"project=demo", "size=4", "force=yes", "ranges=1.2.3.4/32, 5.6.7.8/32",
                                      "ports=80,443"})
    assert.are.equal("demo", p.project)
    assert.are.equal(4, p.size)
    assert.are.equal("integer", math.type(p.size))
    assert.are.equal(0.5, p.ratio)
    assert.is_true(p.force)
    assert.are.same({"1.2.3.4/32", "5.6.7.8/32"}, p.ranges)
    assert.are.same({80, 443}, p.ports)
    assert.are.equal("set", p.mode)
  end)

  it("takes name:=json as a typed JSON value", function()
    local p = params.parse(declared, {"project=demo", "size:=3", 'ranges:=["10.0.0.0/8"]',
                                      'labels:={"env":"dev"}', "ratio:=1.25"})
    assert.are.equal(3, p.size)
    assert.are.same({"10.0.0.0/8"}, p.ranges)
    assert.are.same({env = "dev"}, p.labels)
    assert.are.equal(1.25, p.ratio)
    assert.are.equal('["10.0.0.0/8"]', json.encode(p.ranges))
  end)

  it("keeps an empty list an array", function()
    local p = params.parse(declared, {"project=demo", "size=1", "ranges="})
    assert.are.equal("[]", json.encode(p.ranges))
  end)

  it("names a missing required parameter and what it expects", function()
    assert.matches("missing required parameter 'size' %(integer", usage_error({"project=demo"}))
  end)

  it("names a wrongly typed parameter", function()
    assert.matches("parameter 'size' expects an integer, got 'four'", usage_error({"project=x", "size=four"}))
    assert.matches("parameter 'size' expects an integer, got JSON 1.5", usage_error({"project=x", "size:=1.5"}))
    assert.matches("parameter 'force' expects true or false", usage_error({"project=x", "size=1", "force=maybe"}))
    assert.matches("parameter 'ports' expects an integer, got 'http'", usage_error({"project=x", "size=1", "ports=80,http"}))
    assert.matches("parameter 'ranges' expects a JSON array", usage_error({"project=x", "size=1", 'ranges:={"a":1}'}))
    assert.matches("not valid JSON", usage_error({"project=x", "size:=[1"}))
  end)

  it("enforces choices and bounds", function()
    assert.matches("'mode' must be one of set, add; got 'replace'", usage_error({"project=x", "size=1", "mode=replace"}))
    assert.matches("'size' must be at least 0, got %-1", usage_error({"project=x", "size=-1"}))
  end)

  it("rejects unknown, repeated and malformed arguments", function()
    assert.matches("unknown parameter 'sise' %(this recipe takes: project, size", usage_error({"sise=1"}))
    assert.matches("'project' is given twice", usage_error({"project=a", "project=b", "size=1"}))
    assert.matches("expected name=value or name:=json, got 'oops'", usage_error({"oops"}))
  end)
end)

describe("gcp.params.check_declaration", function()
  it("rejects unknown types and duplicate names at the recipe's line", function()
    assert.has_error(function() params.check_declaration({{name = "a", type = "int"}}) end,
      "gcp.recipe: parameter 'a' has type 'int'; expected string, integer, number, boolean, list or json")
    assert.has_error(function() params.check_declaration({{name = "a", type = "string"}, {name = "a", type = "string"}}) end,
      "gcp.recipe: parameter 'a' is declared twice")
    assert.has_error(function() params.check_declaration({{type = "string"}}) end)
  end)
end)

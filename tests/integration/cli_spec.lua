-- The command line itself: help, version, usage errors and where recipes are found.
local t = require "support"

describe("gcpr CLI", function()
  it("prints help and version", function()
    local r = t.run(nil, {"--help"})
    assert.are.equal(0, r.code)
    assert.matches("usage: gcpr run", r.stdout, 1, true)
    assert.matches("Exit codes:", r.stdout, 1, true)
    r = t.run(nil, {"--version"})
    assert.are.equal(0, r.code)
    assert.matches("^gcpr %d+%.%d+%.%d+\n$", r.stdout)
  end)

  it("exits 2 on bad usage with one clear message", function()
    for _, a in ipairs({{}, {"frobnicate"}, {"run"}, {"run", "--bogus", "x"}, {"run", "--timeout", "soon", "x"}}) do
      local r = t.run(nil, a)
      assert.are.equal(2, r.code)
      assert.matches("^gcpr: ", r.stderr)
    end
  end)

  it("exits 2 for a recipe it cannot find, saying where it looked", function()
    local r = t.run(nil, {"run", "no_such_recipe"})
    assert.are.equal(2, r.code)
    assert.matches("recipe 'no_such_recipe' not found %(looked for no_such_recipe%.lua in: .*recipes", r.stderr)
  end)

  it("finds recipes by name on GCPR_RECIPE_PATH", function()
    local dir = t.tmpdir()
    t.recipe(dir, "hello", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "greets", params = {{name = "who", type = "string"}},
        run = function(p) return "hello " .. p.who end}
    ]])
    local r = t.run(nil, {"run", "hello", "who=world"}, {GCPR_RECIPE_PATH = dir})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("hello world\n", r.stdout)
  end)

  it("loads the gcp modules from GCPR_LUA_DIR when it is set", function()
    local dir = t.tmpdir()
    os.execute("cp -r " .. t.quote(t.source .. "/lua/gcp") .. " " .. t.quote(dir .. "/gcp"))
    t.write_file(dir .. "/gcp/init.lua", (t.read_file(dir .. "/gcp/init.lua"):gsub("\nreturn M\n?$",
      "\nM.from_source_tree = true\nreturn M\n")))
    local path = t.recipe(dir, "which", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "which", run = function() return tostring(gcp.from_source_tree) end}
    ]])
    assert.are.equal("nil\n", t.run(nil, {"run", path}).stdout)
    local r = t.run(nil, {"run", path}, {GCPR_LUA_DIR = dir})
    assert.are.equal("true\n", r.stdout, r.stderr)
  end)

  it("runs the compiled-in modules from bytecode, or from their source when told to", function()
    local dir = t.tmpdir()
    -- A traceback through a gcp module names its file and line either way.
    local path = t.recipe(dir, "trace", [[
      local gcp = require "gcp"
      return gcp.recipe{description = "trace", run = function() return gcp.wait({}) end}
    ]])
    local fast = t.run(nil, {"run", path, "-v"})
    local slow = t.run(nil, {"run", path, "-v"}, {GCPR_LUA_FROM_SOURCE = "1"})
    for _, r in ipairs({fast, slow}) do
      assert.are.equal(1, r.code, r.stderr)
      assert.matches("gcp/lro%.lua:%d+: in function 'gcp%.[%w.]*wait'", r.stderr)
    end
    assert.not_matches("loading the gcp modules from source", fast.stderr, 1, true)
    assert.matches("loading the gcp modules from source: GCPR_LUA_FROM_SOURCE is set", slow.stderr, 1, true)
  end)

  it("exits 2 for a recipe that does not compile, with its line", function()
    local dir = t.tmpdir()
    local path = t.recipe(dir, "broken", "local gcp = require 'gcp'\nreturn gcp.recipe{\n")
    local r = t.run(nil, {"run", path})
    assert.are.equal(2, r.code)
    assert.matches("broken%.lua:%d+:", r.stderr)
    path = t.recipe(dir, "noreturn", "local x = 1\n")
    r = t.run(nil, {"run", path})
    assert.are.equal(2, r.code)
    assert.matches("must end with 'return gcp.recipe{...}'", r.stderr, 1, true)
  end)
end)

-- Specs for gcp.sandbox: what a recipe's _ENV holds, and what it does not.
local sandbox = require "gcp.sandbox"

describe("gcp.sandbox.env", function()
  local env = sandbox.env()

  it("has the safe basics and gcp's require", function()
    assert.are.equal(pairs, env.pairs)
    assert.is_function(env.string.format)
    assert.is_function(env.os.time)
    assert.is_function(env.require)
  end)

  it("has no process, file, debug or loader access", function()
    for _, name in ipairs({"io", "debug", "dofile", "loadfile", "package", "collectgarbage"}) do
      assert.has_error(function() return env[name] end, "undefined global '" .. name .. "'")
    end
    assert.is_nil(env.os.execute)
    assert.is_nil(env.os.getenv)
    assert.is_nil(env.string.dump)
  end)

  it("refuses binary chunks and non-gcp modules", function()
    local binary = string.dump(function() return 1 end)
    local f, err = env.load(binary)
    assert.is_nil(f)
    assert.matches("binary", err)
    assert.has_error(function() env.require("io") end,
      "require: a recipe can load only the gcp modules, not 'io'")
  end)

  it("loads text chunks into the sandbox by default", function()
    local f = env.load("return io")
    assert.has_error(f, "undefined global 'io'")
  end)

  it("hides the shared string table", function()
    assert.is_false(env.getmetatable(""))
  end)
end)

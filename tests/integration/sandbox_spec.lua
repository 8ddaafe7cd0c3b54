-- Recipes run sandboxed, with a deadline and a memory cap: escapes fail, runaway code ends
-- its run with a clear error, not the process.
local t = require "support"

local dir = t.tmpdir()

local function try(body, extra_args)
  local path = t.recipe(dir, "probe", ([[
    local gcp = require "gcp"
    return gcp.recipe{description = "probe", run = function()
      %s
    end}
  ]]):format(body))
  local args = {"run"}
  for _, a in ipairs(extra_args or {}) do args[#args + 1] = a end
  args[#args + 1] = path
  return t.run(nil, args)
end

describe("the recipe sandbox", function()
  it("has no way to run programs, open files or reach the host's globals", function()
    local cases = {
      {"return os.execute('id')", "attempt to call a nil value %(field 'execute'%)"},
      {"return io.popen('id')", "undefined global 'io'"},
      {"return io.open('/etc/passwd')", "undefined global 'io'"},
      {"return package.loadlib('libc.so.6', 'system')", "undefined global 'package'"},
      {"return debug.getregistry()", "undefined global 'debug'"},
      {"return dofile('/etc/passwd')", "undefined global 'dofile'"},
      {"return loadfile('/etc/passwd')", "undefined global 'loadfile'"},
      {"local m = require('os') return m", "a recipe can load only the gcp modules, not 'os'"},
      {"local m = require('gcpr.core') return m", "a recipe can load only the gcp modules, not 'gcpr.core'"},
      {"return os.getenv('GOOGLE_APPLICATION_CREDENTIALS')", "attempt to call a nil value %(field 'getenv'%)"},
      {"return string.dump(print)", "attempt to call a nil value %(field 'dump'%)"},
      {"return getmetatable('').__index", "attempt to index a boolean value"},
      {"return undefined_thing", "undefined global 'undefined_thing'"},
      {"return collectgarbage('count')", "undefined global 'collectgarbage'"},
    }
    for _, c in ipairs(cases) do
      local r = try(c[1])
      assert.are.equal(1, r.code, c[1] .. " should fail: " .. r.stdout)
      assert.matches(c[2], r.stderr, nil, nil, c[1])
      assert.matches("probe%.lua:%d+:", r.stderr, nil, nil, c[1])
    end
  end)

  it("refuses binary chunks", function()
    local r = try([[return assert(load("\27Lua\84\0\25\147\r\n\26\n"))]])
    assert.are.equal(1, r.code)
    assert.matches("attempt to load a binary chunk", r.stderr, 1, true)
  end)

  it("ends an infinite loop at the deadline, even one that catches errors", function()
    local r = try("while true do pcall(function() while true do end end) end", {"--timeout", "1"})
    assert.are.equal(3, r.code)
    assert.matches("run exceeded its deadline of 1s", r.stderr, 1, true)
  end)

  it("ends a runaway allocation at the memory cap", function()
    local r = try("local t = {} while true do t[#t + 1] = ('x'):rep(4096) .. #t end", {"--memory", "32"})
    assert.are.equal(3, r.code)
    assert.matches("run exceeded its memory cap of 32 MiB", r.stderr, 1, true)
  end)

  it("lets gcp primitives work only from tasks, not from recipe coroutines", function()
    local r = try("return coroutine.wrap(function() gcp.sleep(0) end)()")
    assert.are.equal(1, r.code)
    assert.matches("gcp.sleep must be called from the recipe or a gcp.parallel/gcp.map function", r.stderr, 1, true)
  end)
end)

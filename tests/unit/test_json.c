/* Unit tests for json.c: decoding into Lua values (null, arrays, depth limit), encoding
 * (sorted keys, empty array marker, escapes, cycles) and a round trip. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

#include "check.h"
#include "json.h"

static lua_State *L;

/* Runs Lua code with `core` bound to the json functions; returns its string result. */
static const char *run(const char *code) {
  lua_settop(L, 0);
  if (luaL_loadstring(L, code) != LUA_OK) return lua_tostring(L, -1);
  lua_getglobal(L, "core");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return lua_tostring(L, -1);
  return lua_tostring(L, -1);
}

int main(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);
  gcpr_open_json(L);
  lua_setglobal(L, "core");

  CHECK_STR(run("local core = ...; return core.json_encode({b = 1, a = {true, false}, c = 'x\\n\"'})"),
            "{\"a\":[true,false],\"b\":1,\"c\":\"x\\n\\\"\"}");
  CHECK_STR(run("local core = ...; return core.json_encode({list = core.json_array({}), obj = {}})"),
            "{\"list\":[],\"obj\":{}}");
  CHECK_STR(run("local core = ...; return core.json_encode({core.json_null, 1.5, 3, -0.1})"),
            "[null,1.5,3,-0.1]");
  CHECK_STR(run("local core = ...; local v = core.json_decode('{\"a\":[],\"b\":null,\"c\":[1,2]}')\n"
                "return core.json_encode(v)"),
            "{\"a\":[],\"b\":null,\"c\":[1,2]}");
  CHECK_STR(run("local core = ...; local v = core.json_decode('{\"n\":12345678901, \"f\":0.5}')\n"
                "return math.type(v.n) .. ' ' .. math.type(v.f)"),
            "integer float");
  CHECK_STR(run("local core = ...; local v = core.json_decode('{\"b\":null}')\n"
                "return tostring(v.b == core.json_null)"),
            "true");
  /* Errors: cycles, mixed keys, bad text, trailing garbage, too deep. */
  CHECK(strstr(run("local core = ...; local t = {}; t.self = t; return core.json_encode(t)"),
               "contains itself") != NULL);
  CHECK(strstr(run("local core = ...; return core.json_encode({1, 2, x = 3})"), "key") != NULL);
  CHECK(strstr(run("local core = ...; return core.json_decode('{\"a\":')"), "invalid JSON") != NULL);
  CHECK(strstr(run("local core = ...; return core.json_decode('{} x')"), "trailing") != NULL);
  CHECK(strstr(run("local core = ...; return core.json_decode(string.rep('[', 300) .. string.rep(']', 300))"),
               "deeper") != NULL);
  CHECK(strstr(run("local core = ...; return core.json_encode(0/0)"), "cannot encode") != NULL);
  /* Pretty output is indented and still sorted. */
  CHECK_STR(run("local core = ...; return core.json_encode({b = {1}, a = 2}, true)"),
            "{\n  \"a\": 2,\n  \"b\": [\n    1\n  ]\n}");
  lua_close(L);
  return check_report("test_json");
}

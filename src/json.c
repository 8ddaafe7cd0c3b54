/* json.c: converts between JSON text and Lua values. Decoding parses with cJSON and walks
 * the tree with a depth limit; encoding writes straight from Lua with cycle detection,
 * sorted object keys (stable dry-run output and logs) and explicit null / array markers. */
#define _POSIX_C_SOURCE 200809L
#include "json.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char array_mt_key;

/* ---- decoding ---- */

typedef struct { cJSON *tree; } tree_box;

static int tree_box_gc(lua_State *L) {
  tree_box *b = lua_touserdata(L, 1);
  cJSON_Delete(b->tree);
  b->tree = NULL;
  return 0;
}

static void push_item(lua_State *L, const cJSON *item, int depth) {
  if (depth > GCPR_JSON_MAX_DEPTH) luaL_error(L, "JSON nested deeper than %d levels", GCPR_JSON_MAX_DEPTH);
  luaL_checkstack(L, 3, "JSON nested too deep");
  if (cJSON_IsNull(item)) {
    lua_pushlightuserdata(L, NULL);
  } else if (cJSON_IsBool(item)) {
    lua_pushboolean(L, cJSON_IsTrue(item));
  } else if (cJSON_IsNumber(item)) {
    double d = item->valuedouble;
    if (d == floor(d) && fabs(d) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)d);
    else lua_pushnumber(L, d);
  } else if (cJSON_IsString(item)) {
    lua_pushstring(L, item->valuestring);
  } else if (cJSON_IsArray(item)) {
    lua_createtable(L, cJSON_GetArraySize(item), 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    lua_setmetatable(L, -2);
    lua_Integer i = 1;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
      push_item(L, c, depth + 1);
      lua_rawseti(L, -2, i);
    }
  } else if (cJSON_IsObject(item)) {
    lua_createtable(L, 0, cJSON_GetArraySize(item));
    for (const cJSON *c = item->child; c; c = c->next) {
      push_item(L, c, depth + 1);
      lua_setfield(L, -2, c->string);
    }
  } else {
    luaL_error(L, "unsupported JSON value");
  }
}

int gcpr_json_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen) {
  const char *end = NULL;
  cJSON *tree = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!tree) {
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    snprintf(err, errlen, "invalid JSON at byte %zu of %zu", at, len);
    return 0;
  }
  const char *p = end;
  while (p < text + len && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  if (p < text + len && *p) {
    cJSON_Delete(tree);
    snprintf(err, errlen, "invalid JSON: trailing characters at byte %zu of %zu",
             (size_t)(p - text), len);
    return 0;
  }
  tree_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->tree = tree;
  if (luaL_newmetatable(L, "gcpr.json.Tree")) {
    lua_pushcfunction(L, tree_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  push_item(L, tree, 0);
  cJSON_Delete(box->tree);
  box->tree = NULL;
  lua_remove(L, -2);
  return 1;
}

/* ---- encoding ---- */

typedef struct {
  char *data;
  size_t len, cap;
} strbuf;

static int strbuf_gc(lua_State *L) {
  strbuf *b = lua_touserdata(L, 1);
  free(b->data);
  b->data = NULL;
  return 0;
}

static void put(lua_State *L, strbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) luaL_error(L, "out of memory encoding JSON");
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

#define PUTS(s) put(L, b, s, sizeof(s) - 1)

static void put_string(lua_State *L, strbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  PUTS("\"");
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    put(L, b, s + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': PUTS("\\\""); break;
      case '\\': PUTS("\\\\"); break;
      case '\n': PUTS("\\n"); break;
      case '\r': PUTS("\\r"); break;
      case '\t': PUTS("\\t"); break;
      default: {
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        put(L, b, esc, 6);
      }
    }
  }
  put(L, b, s + run, n - run);
  PUTS("\"");
}

static void newline(lua_State *L, strbuf *b, int pretty, int depth) {
  if (!pretty) return;
  PUTS("\n");
  for (int i = 0; i < depth; i++) PUTS("  ");
}

static int is_array(lua_State *L, int idx, lua_Integer *n) {
  if (lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    int marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (marked) {
      *n = (lua_Integer)lua_rawlen(L, idx);
      return 1;
    }
  }
  lua_Integer count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return 0;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k > max) max = k;
    count++;
  }
  *n = max;
  return count > 0 && count == max;
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void encode_value(lua_State *L, strbuf *b, int idx, int depth, int pretty, int seen);

static void encode_table(lua_State *L, strbuf *b, int idx, int depth, int pretty, int seen) {
  /* __tojson(t) says what to encode instead of t (a gcp.http response uses it to make its
   * lazy fields); returning t itself encodes t as it is then. */
  if (luaL_getmetafield(L, idx, "__tojson") != LUA_TNIL) {
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    if (!lua_rawequal(L, -1, idx)) { /* depth + 1: a __tojson chain ends too */
      encode_value(L, b, lua_gettop(L), depth + 1, pretty, seen);
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, seen) != LUA_TNIL) luaL_error(L, "cannot encode a table that contains itself");
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, seen);
  lua_Integer n;
  if (is_array(L, idx, &n)) {
    PUTS("[");
    for (lua_Integer i = 1; i <= n; i++) {
      if (i > 1) PUTS(",");
      newline(L, b, pretty, depth + 1);
      lua_rawgeti(L, idx, i);
      encode_value(L, b, lua_gettop(L), depth + 1, pretty, seen);
      lua_pop(L, 1);
    }
    if (n > 0) newline(L, b, pretty, depth);
    PUTS("]");
  } else {
    size_t count = 0, cap = 16;
    const char **keys = lua_newuserdatauv(L, cap * sizeof *keys, 0);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "cannot encode a table with a %s key as JSON (object keys must be "
                   "strings, arrays must be 1..n)", luaL_typename(L, -1));
      if (count == cap) {
        const char **bigger = lua_newuserdatauv(L, cap * 2 * sizeof *keys, 0);
        memcpy(bigger, keys, cap * sizeof *keys);
        lua_replace(L, -3);
        keys = bigger;
        cap *= 2;
      }
      /* The table holds the key string, so the pointer stays valid while we encode. */
      keys[count++] = lua_tostring(L, -1);
    }
    qsort(keys, count, sizeof *keys, cmp_keys);
    PUTS("{");
    for (size_t i = 0; i < count; i++) {
      if (i > 0) PUTS(",");
      newline(L, b, pretty, depth + 1);
      put_string(L, b, keys[i], strlen(keys[i]));
      if (pretty) PUTS(": ");
      else PUTS(":");
      lua_getfield(L, idx, keys[i]);
      encode_value(L, b, lua_gettop(L), depth + 1, pretty, seen);
      lua_pop(L, 1);
    }
    if (count > 0) newline(L, b, pretty, depth);
    PUTS("}");
    lua_pop(L, 1);
  }
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, seen);
}

static void encode_value(lua_State *L, strbuf *b, int idx, int depth, int pretty, int seen) {
  if (depth > GCPR_JSON_MAX_DEPTH) luaL_error(L, "value nested deeper than %d levels", GCPR_JSON_MAX_DEPTH);
  luaL_checkstack(L, 6, "value nested too deep");
  switch (lua_type(L, idx)) {
    case LUA_TNIL: PUTS("null"); break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) != NULL) luaL_error(L, "cannot encode a userdata as JSON");
      PUTS("null");
      break;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) PUTS("true");
      else PUTS("false");
      break;
    case LUA_TNUMBER: {
      char num[64];
      int n;
      if (lua_isinteger(L, idx)) {
        n = snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(L, idx));
      } else {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) luaL_error(L, "cannot encode %f as JSON", d);
        /* Shortest of %.15g / %.17g that reads back as the same double. */
        n = snprintf(num, sizeof num, "%.15g", d);
        if (strtod(num, NULL) != d) n = snprintf(num, sizeof num, "%.17g", d);
      }
      put(L, b, num, (size_t)n);
      break;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      put_string(L, b, s, n);
      break;
    }
    case LUA_TTABLE: encode_table(L, b, idx, depth, pretty, seen); break;
    default: luaL_error(L, "cannot encode a %s as JSON", luaL_typename(L, idx));
  }
}

void gcpr_json_encode(lua_State *L, int idx, int pretty) {
  idx = lua_absindex(L, idx);
  strbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "gcpr.json.Buffer")) {
    lua_pushcfunction(L, strbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);
  int seen = lua_gettop(L);
  encode_value(L, b, idx, 0, pretty, seen);
  lua_pop(L, 1);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  lua_remove(L, -2);
}

static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  gcpr_json_encode(L, 1, lua_toboolean(L, 2));
  return 1;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[128];
  if (!gcpr_json_decode(L, s, len, err, sizeof err)) return luaL_error(L, "%s", err);
  return 1;
}

static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
  lua_setmetatable(L, 1);
  return 1;
}

static const luaL_Reg json_funcs[] = {{"json_encode", l_encode}, {"json_decode", l_decode},
                                      {"json_array", l_array}, {NULL, NULL}};

int gcpr_open_json(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, "json.array");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
  luaL_setfuncs(L, json_funcs, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "json_null");
  return 0;
}

/* host.c: the Lua state of a run. Host code (the gcp modules) sees the standard libraries
 * without process control or file access; recipes see far less: gcp/sandbox.lua builds their
 * _ENV from an allow-list, and core.load_recipe loads them as text only. The allocator
 * counts every byte of the state so a runaway recipe ends its own run, not the process. */
#define _POSIX_C_SOURCE 200809L
#include "host.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "loop.h"

#define MAX_RECIPE_BYTES (1 << 20)
/* Once the cap is hit, this much more is allowed so the error can be built and reported. */
#define MEM_GRACE (1 << 20)

void *gcpr_run_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  gcpr_run *run = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    run->mem_used -= old;
    return NULL;
  }
  if (run->mem_limit && nsize > old) {
    size_t limit = run->mem_limit + (run->kill_reason ? MEM_GRACE : 0);
    if (run->mem_used + (nsize - old) > limit) {
      if (!run->kill_reason) gcpr_run_kill(run, "memory cap");
      return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (p) run->mem_used = run->mem_used - old + nsize;
  return p;
}

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "gcpr: internal error outside any run: %s\n", msg ? msg : "(no message)");
  return 0;
}

/* core.load_recipe(path, env) -> chunk | nil, message. Text only: a precompiled chunk would
 * bypass every check the compiler makes. */
static int l_load_recipe(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  FILE *f = fopen(path, "rb");
  if (!f) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot open recipe %s: %s", path, strerror(errno));
    return 2;
  }
  luaL_Buffer b;
  char *buf = luaL_buffinitsize(L, &b, MAX_RECIPE_BYTES + 1);
  size_t n = fread(buf, 1, MAX_RECIPE_BYTES + 1, f);
  int failed = ferror(f);
  fclose(f);
  if (failed || n > MAX_RECIPE_BYTES) {
    lua_pushnil(L);
    lua_pushfstring(L, failed ? "cannot read recipe %s" : "recipe %s is larger than 1 MiB", path);
    return 2;
  }
  luaL_pushresultsize(&b, n);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  lua_pushfstring(L, "@%s", path);
  if (luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t") != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushvalue(L, 2);
  lua_setupvalue(L, -2, 1);
  return 1;
}

static int l_write(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  fwrite(s, 1, n, stdout);
  return 0;
}

/* core.recipe_dirs() -> where recipes are looked up by name: GCPR_RECIPE_PATH's entries,
 * ./recipes, then share/gcpr/recipes and recipes beside the directory holding the binary. */
static int l_recipe_dirs(lua_State *L) {
  lua_newtable(L);
  int n = 0;
  const char *env = getenv("GCPR_RECIPE_PATH");
  for (const char *p = env; p && *p;) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    if (len > 0) {
      lua_pushlstring(L, p, len);
      lua_rawseti(L, -2, ++n);
    }
    p = colon ? colon + 1 : NULL;
  }
  lua_pushliteral(L, "recipes");
  lua_rawseti(L, -2, ++n);
  char exe[4096];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  char *slash = len > 0 ? (exe[len] = '\0', strrchr(exe, '/')) : NULL;
  if (slash) {
    *slash = '\0';
    lua_pushfstring(L, "%s/../share/gcpr/recipes", exe);
    lua_rawseti(L, -2, ++n);
    lua_pushfstring(L, "%s/../recipes", exe);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* core.list_recipes(dir) -> sorted names of the *.lua files in dir ({} if unreadable). */
static int l_list_recipes(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  lua_newtable(L);
  DIR *d = opendir(dir);
  if (!d) return 1;
  char *names[1024];
  int n = 0;
  struct dirent *ent;
  while (n < 1024 && (ent = readdir(d))) {
    size_t len = strlen(ent->d_name);
    if (len > 4 && strcmp(ent->d_name + len - 4, ".lua") == 0 && (names[n] = strndup(ent->d_name, len - 4))) n++;
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_names);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    free(names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int l_readable(lua_State *L) {
  lua_pushboolean(L, access(luaL_checkstring(L, 1), R_OK) == 0);
  return 1;
}

static int l_version(lua_State *L) {
  lua_pushliteral(L, GCPR_VERSION);
  return 1;
}

/* Loads GCPR_LUA_DIR/gcp/x.lua under the chunk name the embedded copy has. Returns 1 when
 * loaded, 0 when the directory is not set or has no such file. */
static int load_dev_module(lua_State *L, const char *name, const char *file) {
  const char *dir = getenv("GCPR_LUA_DIR");
  if (!dir || !*dir) return 0;
  const char *path = lua_pushfstring(L, "%s/%s", dir, file);
  FILE *f = fopen(path, "rb");
  if (!f) {
    lua_pop(L, 1);
    return 0;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t n;
  char chunk[4096];
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) luaL_addlstring(&b, chunk, n);
  fclose(f);
  luaL_pushresult(&b);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  lua_pushfstring(L, "=%s", file);
  if (luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t") != LUA_OK)
    luaL_error(L, "error loading module '%s' from %s:\n\t%s", name, path, lua_tostring(L, -1));
  lua_replace(L, -4);
  lua_pop(L, 2);
  return 1;
}

/* lua_dump's writer into a luaL_Buffer, started on the first write as string.dump does
 * (the buffer must sit on top of the stack, and the function must be there when dumping
 * starts). */
typedef struct {
  luaL_Buffer b;
  int started;
} dump_state;

static int dump_to_buffer(lua_State *L, const void *p, size_t n, void *ud) {
  dump_state *d = ud;
  if (!d->started) {
    d->started = 1;
    luaL_buffinit(L, &d->b);
  }
  luaL_addlstring(&d->b, p, n);
  return 0;
}

/* Whether this process's Lua library compiles GCPR_BYTECODE_PROBE to the bytes the build's
 * did: after a Lua update that changed the bytecode, gcpr loads the modules' sources (about
 * 2 ms more at start-up) rather than misread bytecode. Checked once per process. */
static int bytecode_matches(lua_State *L) {
  static int matches = -1;
  if (matches >= 0) return matches;
  dump_state d = {.started = 0};
  if (luaL_loadbufferx(L, GCPR_BYTECODE_PROBE, sizeof GCPR_BYTECODE_PROBE - 1, "=probe", "t") !=
      LUA_OK)
    return lua_error(L);
  lua_dump(L, dump_to_buffer, &d, 1);
  if (!d.started) luaL_buffinit(L, &d.b);
  luaL_pushresult(&d.b);
  size_t len;
  const char *code = lua_tolstring(L, -1, &len);
  int forced = getenv("GCPR_LUA_FROM_SOURCE") != NULL;
  matches = !forced && len == gcpr_embedded_probe_len &&
            memcmp(code, gcpr_embedded_probe, len) == 0;
  lua_pop(L, 2);
  if (!matches)
    gcpr_log(GCPR_LOG_DEBUG, "loading the gcp modules from source: %s",
             forced ? "GCPR_LUA_FROM_SOURCE is set"
                    : "this Lua library compiles differently from the one gcpr was built with");
  return matches;
}

/* The one package searcher: the gcp modules, from GCPR_LUA_DIR when a developer sets it,
 * else from the copies compiled into the binary. Chunk names are "=gcp/x.lua" either way,
 * so errors and tracebacks name the source file. */
static int gcp_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *file = NULL;
  if (strcmp(name, "gcp") == 0) {
    file = "gcp/init.lua";
  } else if (strncmp(name, "gcp.", 4) == 0) {
    file = lua_pushfstring(L, "gcp/%s.lua", name + 4);
  } else {
    lua_pushfstring(L, "no gcp module '%s'", name);
    return 1;
  }
  if (load_dev_module(L, name, file)) {
    lua_pushstring(L, file);
    return 2;
  }
  for (const gcpr_embedded_module *m = gcpr_embedded_modules; m->name; m++) {
    if (strcmp(m->name, name) != 0) continue;
    lua_pushfstring(L, "=%s", m->file);
    /* Our own bytecode, made at build time by tools/embed_lua.c, when this Lua library
     * makes the same (recipes always load as text). */
    int ok = bytecode_matches(L)
                 ? luaL_loadbufferx(L, m->code, m->code_len, lua_tostring(L, -1), "b")
                 : luaL_loadbufferx(L, m->source, m->source_len, lua_tostring(L, -1), "t");
    if (ok != LUA_OK) return lua_error(L);
    lua_pushstring(L, m->file);
    return 2;
  }
  lua_pushfstring(L, "no gcp module '%s'", name);
  return 1;
}

static void remove_fields(lua_State *L, const char *table, const char *const *fields) {
  lua_getglobal(L, table);
  for (; *fields; fields++) {
    lua_pushnil(L);
    lua_setfield(L, -2, *fields);
  }
  lua_pop(L, 1);
}

int gcpr_host_open_core(lua_State *L) {
  lua_newtable(L);
  gcpr_open_task(L);
  gcpr_open_http(L);
  gcpr_open_auth(L);
  gcpr_open_json(L);
  gcpr_open_log(L);
  gcpr_open_loop(L);
  static const luaL_Reg host_funcs[] = {
      {"load_recipe", l_load_recipe}, {"write", l_write},         {"version", l_version},
      {"recipe_dirs", l_recipe_dirs},  {"list_recipes", l_list_recipes}, {"readable", l_readable},
      {NULL, NULL}};
  luaL_setfuncs(L, host_funcs, 0);
  return 1;
}

/* For busted specs run by the stock lua5.4: require "gcpr.core" loads the same primitives
 * (those that need a run refuse politely outside one). */
int luaopen_gcpr_core(lua_State *L);
int luaopen_gcpr_core(lua_State *L) { return gcpr_host_open_core(L); }

static int setup_state(lua_State *L) {
  /* Most of what a run allocates (requests, responses, their tables) dies young. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  luaL_openlibs(L);
  static const char *const os_fields[] = {"execute", "exit", "remove", "rename", "tmpname",
                                          "setlocale", "getenv", NULL};
  static const char *const io_fields[] = {"popen", "open", "lines", "input", "output",
                                          "tmpfile", "read", "close", NULL};
  static const char *const pkg_fields[] = {"loadlib", "cpath", "path", "searchpath", NULL};
  static const char *const g_fields[] = {"dofile", "loadfile", NULL};
  remove_fields(L, "os", os_fields);
  remove_fields(L, "io", io_fields);
  remove_fields(L, "package", pkg_fields);
  remove_fields(L, "_G", g_fields);
  lua_getglobal(L, "package");
  lua_createtable(L, 1, 0);
  lua_pushcfunction(L, gcp_searcher);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, -2, "searchers");
  lua_getfield(L, -1, "loaded");
  gcpr_host_open_core(L);
  lua_setfield(L, -2, "gcpr.core");
  lua_pop(L, 2);
  return 0;
}

gcpr_run *gcpr_host_new_run(size_t mem_limit) {
  gcpr_run *run = calloc(1, sizeof *run);
  if (!run) return NULL;
  lua_State *L = lua_newstate(gcpr_run_alloc, run);
  if (!L) {
    free(run);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_pushcfunction(L, setup_state);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    lua_close(L);
    free(run);
    return NULL;
  }
  run->L = L;
  /* The cap applies to what the run does, not to the libraries it starts with. */
  run->mem_limit = mem_limit ? run->mem_used + mem_limit : 0;
  return run;
}

void gcpr_host_free_run(gcpr_run *run) {
  if (!run) return;
  gcpr_run_cleanup(run);
  if (run->L) lua_close(run->L);
  free(run);
}

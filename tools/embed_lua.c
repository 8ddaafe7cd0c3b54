/* embed_lua: compiles the gcp Lua modules (lua/gcp/NAME.lua) to Lua bytecode and writes
 * them into one C file as byte arrays, with a table by module name ("gcp" for
 * gcp/init.lua, "gcp.http" for gcp/http.lua). It runs at build time and links the same
 * liblua as gcpr, so the bytecode is the format gcpr loads; a syntax error in a module
 * fails the build. Debug information is kept: tracebacks name gcp/x.lua and its lines.
 * The sources go in too, with the bytecode of GCPR_BYTECODE_PROBE (src/host.h), so that a
 * gcpr running on a Lua library that compiles differently loads the sources instead.
 *
 * usage: embed_lua OUT.c LUA_DIR gcp/a.lua gcp/b.lua ... */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include "host.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
  unsigned char *data;
  size_t len, cap;
} buf;

static int collect(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  buf *b = ud;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 65536;
    while (cap < b->len + n) cap *= 2;
    unsigned char *d = realloc(b->data, cap);
    if (!d) return 1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* Writes "DECL[] = {bytes..., 0};" (the 0 is not counted in sizes). */
static void put_bytes(FILE *out, const char *decl, const unsigned char *data, size_t len) {
  fprintf(out, "%s[] = {", decl);
  for (size_t k = 0; k < len; k++) fprintf(out, "%s%d,", k % 24 ? "" : "\n  ", (signed char)data[k]);
  fprintf(out, "%s0};\n", len % 24 ? "" : "\n  ");
}

/* "gcp/init.lua" -> "gcp", "gcp/http.lua" -> "gcp.http" */
static void module_name(const char *file, char *out, size_t n) {
  snprintf(out, n, "%s", file);
  char *dot = strrchr(out, '.');
  if (dot && strcmp(dot, ".lua") == 0) *dot = '\0';
  for (char *c = out; *c; c++)
    if (*c == '/') *c = '.';
  size_t len = strlen(out);
  if (len > 5 && strcmp(out + len - 5, ".init") == 0) out[len - 5] = '\0';
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: embed_lua OUT.c LUA_DIR gcp/x.lua...\n");
    return 2;
  }
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
  FILE *out = fopen(tmp, "w");
  if (!out) {
    perror(tmp);
    return 1;
  }
  fprintf(out, "/* Generated from lua/gcp by tools/embed_lua.c: Lua %s bytecode. Do not edit. */\n"
               "#include \"host.h\"\n\n", LUA_VERSION_MAJOR "." LUA_VERSION_MINOR);
  lua_State *L = luaL_newstate();
  int status = 0;
  for (int i = 3; i < argc && status == 0; i++) {
    char path[4096], chunkname[512];
    snprintf(path, sizeof path, "%s/%s", argv[2], argv[i]);
    snprintf(chunkname, sizeof chunkname, "=%s", argv[i]);
    FILE *f = fopen(path, "rb");
    buf src = {0}, code = {0};
    char chunk[8192];
    size_t n;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0) collect(L, chunk, n, &src);
    if (!f) {
      perror(path);
      status = 1;
    } else if (luaL_loadbufferx(L, (const char *)src.data, src.len, chunkname, "t") != LUA_OK) {
      fprintf(stderr, "embed_lua: %s\n", lua_tostring(L, -1));
      status = 1;
    } else if (lua_dump(L, collect, &code, 0) != 0 || !code.data) {
      fprintf(stderr, "embed_lua: cannot dump %s\n", path);
      status = 1;
    } else {
      char decl[64];
      snprintf(decl, sizeof decl, "static const char c%d", i - 3);
      put_bytes(out, decl, code.data, code.len);
      snprintf(decl, sizeof decl, "static const char s%d", i - 3);
      put_bytes(out, decl, src.data, src.len);
    }
    lua_settop(L, 0);
    if (f) fclose(f);
    free(src.data);
    free(code.data);
  }
  buf probe = {0};
  if (status == 0) {
    if (luaL_loadbufferx(L, GCPR_BYTECODE_PROBE, sizeof GCPR_BYTECODE_PROBE - 1, "=probe", "t") !=
            LUA_OK ||
        lua_dump(L, collect, &probe, 1) != 0 || !probe.data) {
      fprintf(stderr, "embed_lua: cannot compile the bytecode probe: %s\n",
              lua_isstring(L, -1) ? lua_tostring(L, -1) : "dump failed");
      status = 1;
    }
  }
  if (status == 0) {
    fprintf(out, "\nconst gcpr_embedded_module gcpr_embedded_modules[] = {\n");
    for (int i = 3; i < argc; i++) {
      char mod[512];
      module_name(argv[i], mod, sizeof mod);
      fprintf(out, "  {\"%s\", \"%s\", c%d, sizeof c%d - 1, s%d, sizeof s%d - 1},\n", mod,
              argv[i], i - 3, i - 3, i - 3, i - 3);
    }
    fprintf(out, "  {0, 0, 0, 0, 0, 0}\n};\n\n");
    put_bytes(out, "const char gcpr_embedded_probe", probe.data, probe.len);
    fprintf(out, "const size_t gcpr_embedded_probe_len = %zu;\n", probe.len);
  }
  free(probe.data);
  lua_close(L);
  if (fclose(out) != 0) status = 1;
  if (status != 0) {
    remove(tmp);
    return status;
  }
  if (rename(tmp, argv[1]) != 0) {
    perror(argv[1]);
    return 1;
  }
  return 0;
}

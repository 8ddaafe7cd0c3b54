/* host.h: builds the Lua state a run executes in: the standard libraries minus what no run
 * may use, the C primitives as the internal module "gcpr.core", the gcp modules (embedded,
 * or from GCPR_LUA_DIR), a memory cap, and text-only recipe loading into a sandbox _ENV. */
#ifndef GCPR_HOST_H
#define GCPR_HOST_H

#include <stddef.h>

#include "task.h"

/* A gcp module compiled into the binary (tools/embed_lua.c): its bytecode, made at build
 * time, and its source, loaded instead when the Lua library gcpr runs with does not make
 * the same bytecode as the one it was built with (see gcpr_embedded_probe). */
typedef struct {
  const char *name;  /* "gcp", "gcp.http" */
  const char *file;  /* "gcp/init.lua" */
  const char *code;
  size_t code_len;
  const char *source;
  size_t source_len;
} gcpr_embedded_module;

extern const gcpr_embedded_module gcpr_embedded_modules[];

/* A small chunk that uses most of the VM's instructions, and its stripped bytecode as the
 * build's Lua library made it. At run time the library compiles the chunk again; the
 * embedded bytecode is used only if the two dumps are the same bytes. */
#define GCPR_BYTECODE_PROBE                                                                \
  "local t, n <const> = {1, 2.5, 'x', k = true}, select('#', ...) "                     \
  "local function f(a, ...) local s = 0 for i = 1, #t do s = s + i * 2 // 1 % 3 end "     \
  "for k, v in pairs(t) do s = s .. tostring(k) end "                                      \
  "while a and a > 0 do a = a - 1 if a == 3 then goto done end end ::done:: "             \
  "return s, (a or 0) << 1 | 2 & ~3 ~ 4 >> 1, -a ^ 2 / 3, not a, #..., {...}, a:byte(), "  \
  "a ~= nil and a <= 1 and a >= 0 and a < 1 end "                                          \
  "do local c <close> = nil end return f(n, t.k, t[1]), f"
extern const char gcpr_embedded_probe[];
extern const size_t gcpr_embedded_probe_len;

/* Creates a run with its own lua_State capped at mem_limit bytes (0 = no cap). Returns NULL
 * when out of memory. Free with gcpr_host_free_run. */
gcpr_run *gcpr_host_new_run(size_t mem_limit);
void gcpr_host_free_run(gcpr_run *run);
/* Pushes the table of C primitives ("gcpr.core"). */
int gcpr_host_open_core(lua_State *L);

#endif

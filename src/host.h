/* host.h: builds the Lua state a run executes in: the standard libraries minus what no run
 * may use, the C primitives as the internal module "gcpr.core", the gcp modules (embedded,
 * or from GCPR_LUA_DIR), a memory cap, and text-only recipe loading into a sandbox _ENV. */
#ifndef GCPR_HOST_H
#define GCPR_HOST_H

#include <stddef.h>

#include "task.h"

typedef struct {
  const char *name;  /* "gcp", "gcp.http" */
  const char *file;  /* "gcp/init.lua" */
  const char *data;
  size_t len;
} gcpr_embedded_module;

extern const gcpr_embedded_module gcpr_embedded_modules[];

/* Creates a run with its own lua_State capped at mem_limit bytes (0 = no cap). Returns NULL
 * when out of memory. Free with gcpr_host_free_run. */
gcpr_run *gcpr_host_new_run(size_t mem_limit);
void gcpr_host_free_run(gcpr_run *run);
/* Pushes the table of C primitives ("gcpr.core"). */
int gcpr_host_open_core(lua_State *L);

#endif

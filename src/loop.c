/* loop.c: owns the event_base shared by every run in the process, plus the clocks
 * (monotonic for deadlines, wall for timestamps) that recipes and primitives read. */
#define _POSIX_C_SOURCE 200809L
#include "loop.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static struct event_base *base;

struct event_base *gcpr_loop_base(void) {
  if (!base) {
    struct event_config *cfg = event_config_new();
    /* One thread drives the loop: no locks. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!base) {
      fprintf(stderr, "gcpr: cannot create the event loop\n");
      abort();
    }
  }
  return base;
}

void gcpr_loop_free(void) {
  if (base) event_base_free(base);
  base = NULL;
}

double gcpr_loop_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timeval gcpr_loop_timeval(double seconds) {
  struct timeval tv;
  if (!(seconds > 0)) seconds = 0;
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  return tv;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, gcpr_loop_now());
  return 1;
}

static int l_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

static const luaL_Reg loop_funcs[] = {{"now", l_now}, {"time", l_time}, {NULL, NULL}};

int gcpr_open_loop(lua_State *L) {
  luaL_setfuncs(L, loop_funcs, 0);
  return 0;
}

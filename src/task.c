/* task.c: the coroutine scheduler. Runs own tasks (Lua threads); primitives park a task on
 * a gcpr_op and the loop resumes it when the op is done. Also the deadline, the kill switch
 * and the task primitives themselves: spawn, join and sleep. */
#define _POSIX_C_SOURCE 200809L
#include "task.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"

static char tasks_key;  /* registry: thread -> task handle, while the task runs */

#define TASK_MT "gcpr.Task"
#define OP_BOX_MT "gcpr.OpBox"

enum task_state { TASK_RUNNING, TASK_OK, TASK_FAILED };

typedef struct {
  gcpr_run *run;
  enum task_state state;
  int is_main;
  gcpr_op *joiner;
} task_handle;

gcpr_run *gcpr_run_of(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == gcpr_run_alloc ? ud : NULL;
}

/* ---- pending and ready ops ---- */

static void op_link(gcpr_run *run, gcpr_op *op) {
  op->run = run;
  op->prev = NULL;
  op->next = run->pending;
  if (run->pending) run->pending->prev = op;
  run->pending = op;
}

static void op_unlink(gcpr_op *op) {
  gcpr_run *run = op->run;
  if (op->prev) op->prev->next = op->next;
  else if (run->pending == op) run->pending = op->next;
  if (op->next) op->next->prev = op->prev;
  op->prev = op->next = NULL;
}

static void op_ready(gcpr_run *run, gcpr_op *op) {
  op->ready_next = NULL;
  if (run->ready_tail) run->ready_tail->ready_next = op;
  else run->ready_head = op;
  run->ready_tail = op;
  event_active(run->ready_ev, EV_READ, 0);
}

void gcpr_op_done(gcpr_op *op) {
  op->done = 1;
  /* An op that failed before its task yielded is queued by gcpr_op_yield. */
  if (op->run) op_ready(op->run, op);
}

/* Owns an op while its results are pushed, so an error there still frees it. */
typedef struct { gcpr_op *op; } op_box;

static int op_box_gc(lua_State *L) {
  op_box *box = lua_touserdata(L, 1);
  if (box->op) {
    gcpr_op *op = box->op;
    box->op = NULL;
    op->vt->destroy(op);
  }
  return 0;
}

static int op_continue(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  gcpr_op *op = (gcpr_op *)ctx;
  int base = lua_gettop(L);
  op_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->op = op;
  luaL_setmetatable(L, OP_BOX_MT);
  gcpr_run *run = op->run;
  if (run->kill_reason) return gcpr_run_raise_killed(L);
  int n = op->vt->push(L, op);
  box->op = NULL;
  op->vt->destroy(op);
  lua_remove(L, base + 1);
  return n;
}

gcpr_run *gcpr_task_check(lua_State *L, const char *primitive) {
  gcpr_run *run = gcpr_run_of(L);
  if (!run) luaL_error(L, "%s works only inside a gcpr run", primitive);
  if (run->kill_reason) gcpr_run_raise_killed(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushthread(L);
  int is_task = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  if (!is_task || !lua_isyieldable(L))
    luaL_error(L, "%s must be called from the recipe or a gcp.parallel/gcp.map function, "
               "not from inside coroutine.wrap/create or a metamethod", primitive);
  return run;
}

int gcpr_op_yield(lua_State *L, gcpr_op *op) {
  gcpr_run *run = gcpr_run_of(L);
  op->co = L;
  op_link(run, op);
  if (op->done) op_ready(run, op);
  run->yielded = op;
  return lua_yieldk(L, 0, (lua_KContext)op, op_continue);
}

/* ---- tasks ---- */

static void run_finish(gcpr_run *run, enum gcpr_run_state state) {
  if (run->state != GCPR_RUN_RUNNING) return;
  run->state = state;
  if (run->deadline_ev) event_del(run->deadline_ev);
  if (run->on_finish) run->on_finish(run, run->ud);
}

/* A task ended: keep its results (or error and traceback) in its handle (at hidx on L),
 * then wake whoever waits on it. Runs in protected mode, so allocation failures here are
 * the run's, not a panic. Leaves L's stack as it found it. */
static void task_ended(lua_State *L, int hidx, task_handle *h, lua_State *co, int status,
                       int nres) {
  gcpr_run *run = h->run;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  luaL_checkstack(L, nres + 4, "too many results");
  if (status == LUA_OK) {
    h->state = TASK_OK;
    lua_createtable(L, nres, 1);
    lua_xmove(co, L, nres);
    for (int i = nres; i >= 1; i--) lua_rawseti(L, -(i + 1), i);
  } else {
    h->state = TASK_FAILED;
    nres = 1;
    lua_createtable(L, 1, 2);
    lua_xmove(co, L, 1);
    /* The coroutine's stack is still intact: this is where the error happened. */
    const char *msg = lua_tostring(L, -1);
    luaL_traceback(L, co, msg ? msg : "(error object)", 0);
    lua_setfield(L, -3, "traceback");
    lua_rawseti(L, -2, 1);
  }
  lua_pushinteger(L, nres);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, hidx, 2);
  if (h->is_main) {
    int top = lua_gettop(L);
    lua_getiuservalue(L, hidx, 2);
    if (status == LUA_OK) {
      for (int i = 1; i <= nres; i++) lua_rawgeti(L, top + 1, i);
    } else {
      lua_getfield(L, top + 1, "traceback");
      lua_rawgeti(L, top + 1, 1);
    }
    lua_remove(L, top + 1);
    run_finish(run, run->kill_reason ? GCPR_RUN_KILLED
                    : status == LUA_OK ? GCPR_RUN_OK : GCPR_RUN_FAILED);
    lua_settop(L, top);
  } else if (run->kill_reason) {
    run_finish(run, GCPR_RUN_KILLED);
  } else if (h->joiner) {
    gcpr_op *j = h->joiner;
    h->joiner = NULL;
    gcpr_op_done(j);
  }
}

/* Resumes co (with nargs on its stack) and handles a yield, an end or an error. Runs in
 * protected mode, with the task's handle at hidx on L. */
static void task_step(lua_State *L, int hidx, task_handle *h, lua_State *co, int nargs) {
  gcpr_run *run = h->run;
  gcpr_op *outer = run->yielded;
  int nres = 0;
  run->yielded = NULL;
  int status = lua_resume(co, L, nargs, &nres);
  gcpr_op *op = run->yielded;
  run->yielded = outer;
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (op) return;
    lua_pushstring(co, "coroutine.yield called outside a coroutine (a recipe cannot yield "
                       "its task; use gcp.parallel or gcp.map for concurrency)");
    status = LUA_ERRRUN;
  }
  task_ended(L, hidx, h, co, status, nres);
}

static int resume_protected(lua_State *L) {
  gcpr_op *op = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushthread(op->co);
  lua_xmove(op->co, L, 1);
  lua_rawget(L, -2);
  lua_remove(L, 1);
  task_handle *h = luaL_checkudata(L, 1, TASK_MT);
  task_step(L, 1, h, op->co, 0);
  return 0;
}

static void ready_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gcpr_run *run = arg;
  lua_State *L = run->L;
  while (run->state == GCPR_RUN_RUNNING && !run->kill_reason && run->ready_head) {
    gcpr_op *op = run->ready_head;
    run->ready_head = op->ready_next;
    if (!run->ready_head) run->ready_tail = NULL;
    op_unlink(op);
    lua_pushcfunction(L, resume_protected);
    lua_pushlightuserdata(L, op);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      /* Only memory can fail here: the task's own errors end inside lua_resume. */
      lua_pop(L, 1);
      if (!run->kill_reason) run->kill_reason = "out of memory";
    }
  }
  if (run->state == GCPR_RUN_RUNNING && run->kill_reason) {
    lua_pushnil(L);
    run_finish(run, GCPR_RUN_KILLED);
    lua_pop(L, 1);
  }
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gcpr_run_kill(arg, "deadline");
}

void gcpr_run_kill(gcpr_run *run, const char *reason) {
  if (!run->kill_reason) run->kill_reason = reason;
  if (run->ready_ev) event_active(run->ready_ev, EV_READ, 0);
}

int gcpr_run_raise_killed(lua_State *L) {
  gcpr_run *run = gcpr_run_of(L);
  return luaL_error(L, "run stopped: %s", run && run->kill_reason ? run->kill_reason : "killed");
}

static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  gcpr_run *run = gcpr_run_of(L);
  if (!run->kill_reason && run->deadline > 0 && gcpr_loop_now() > run->deadline)
    gcpr_run_kill(run, "deadline");
  if (run->kill_reason) gcpr_run_raise_killed(L);
}

void gcpr_run_init(gcpr_run *run, double timeout_s) {
  lua_State *L = run->L;
  run->started = gcpr_loop_now();
  run->deadline = timeout_s > 0 ? run->started + timeout_s : 0;
  run->state = GCPR_RUN_RUNNING;
  run->ready_ev = event_new(gcpr_loop_base(), -1, 0, ready_cb, run);
  if (timeout_s > 0) {
    struct timeval tv = gcpr_loop_timeval(timeout_s);
    run->deadline_ev = evtimer_new(gcpr_loop_base(), deadline_cb, run);
    evtimer_add(run->deadline_ev, &tv);
  }
  /* Threads inherit the hook, so every task of the run is covered. */
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 10000);
}

/* Creates a task for the function at -(nargs+1) and its args (popped from L), and pushes
 * its handle. The thread lives in the handle's first user value. */
static task_handle *task_new(lua_State *L, gcpr_run *run, int nargs) {
  lua_State *co = lua_newthread(L);
  lua_insert(L, -(nargs + 2));
  lua_xmove(L, co, nargs + 1);
  task_handle *h = lua_newuserdatauv(L, sizeof *h, 2);
  h->run = run;
  h->state = TASK_RUNNING;
  h->is_main = 0;
  h->joiner = NULL;
  luaL_setmetatable(L, TASK_MT);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1);
  lua_remove(L, -2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return h;
}

static lua_State *task_thread(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  lua_State *co = lua_tothread(L, -1);
  lua_pop(L, 1);
  return co;
}

/* Runs in protected mode on run->L: fn, args..., nargs. */
static int start_protected(lua_State *L) {
  int nargs = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  task_handle *h = task_new(L, gcpr_run_of(L), nargs);
  h->is_main = 1;
  task_step(L, 1, h, task_thread(L, 1), nargs);
  return 0;
}

void gcpr_run_start(gcpr_run *run, int nargs) {
  lua_State *L = run->L;
  lua_pushcfunction(L, start_protected);
  lua_insert(L, -(nargs + 2));
  lua_pushinteger(L, nargs);
  if (lua_pcall(L, nargs + 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    gcpr_run_kill(run, "out of memory");
  }
}

void gcpr_run_cleanup(gcpr_run *run) {
  while (run->pending) {
    gcpr_op *op = run->pending;
    op_unlink(op);
    if (!op->done && op->vt->cancel) op->vt->cancel(op);
    op->vt->destroy(op);
  }
  run->ready_head = run->ready_tail = NULL;
  if (run->deadline_ev) event_free(run->deadline_ev);
  if (run->ready_ev) event_free(run->ready_ev);
  run->deadline_ev = run->ready_ev = NULL;
}

/* ---- primitives: spawn, join, sleep ---- */

static int l_spawn(lua_State *L) {
  gcpr_run *run = gcpr_task_check(L, "gcp.parallel");
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 1;
  task_handle *h = task_new(L, run, nargs);
  int hidx = lua_gettop(L);
  /* Run it now until it first waits, like ngx.thread.spawn: no extra trip through the loop. */
  task_step(L, hidx, h, task_thread(L, hidx), nargs);
  lua_settop(L, hidx);
  return 1;
}

typedef struct {
  gcpr_op op;
} join_op;

static int join_push_results(lua_State *L, int handle_idx) {
  task_handle *h = lua_touserdata(L, handle_idx);
  lua_getiuservalue(L, handle_idx, 2);
  int results = lua_gettop(L);
  lua_getfield(L, results, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n + 1, "too many results");
  lua_pushboolean(L, h->state == TASK_OK);
  for (int i = 1; i <= n; i++) lua_rawgeti(L, results, i);
  if (h->state == TASK_FAILED) {
    lua_getfield(L, results, "traceback");
    n++;
  }
  lua_remove(L, results);
  return n + 1;
}

static int join_push(lua_State *L, gcpr_op *op) {
  (void)op;
  /* The handle is still at index 1 of the joining task's stack. */
  return join_push_results(L, 1);
}

static void join_destroy(gcpr_op *op) { free(op); }

static void join_describe(gcpr_op *op, char *buf, size_t n) {
  (void)op;
  snprintf(buf, n, "a gcp.parallel/gcp.map child");
}

static const struct gcpr_op_vtable join_vt = {"join", join_describe, NULL, join_push,
                                              join_destroy};

static int l_join(lua_State *L) {
  task_handle *h = luaL_checkudata(L, 1, TASK_MT);
  lua_settop(L, 1);
  if (h->state != TASK_RUNNING) return join_push_results(L, 1);
  gcpr_task_check(L, "gcp.parallel");
  if (h->joiner) return luaL_error(L, "task is already being joined");
  join_op *j = calloc(1, sizeof *j);
  if (!j) return luaL_error(L, "out of memory");
  j->op.vt = &join_vt;
  h->joiner = &j->op;
  return gcpr_op_yield(L, &j->op);
}

typedef struct {
  gcpr_op op;
  struct event *timer;
  double seconds;
  char label[200]; /* why it sleeps, for deadline messages */
} sleep_op;

static void sleep_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gcpr_op_done(arg);
}

static void sleep_cancel(gcpr_op *op) { event_del(((sleep_op *)op)->timer); }
static int sleep_push(lua_State *L, gcpr_op *op) {
  (void)L;
  (void)op;
  return 0;
}
static void sleep_destroy(gcpr_op *op) {
  event_free(((sleep_op *)op)->timer);
  free(op);
}
static void sleep_describe(gcpr_op *op, char *buf, size_t n) {
  sleep_op *s = (sleep_op *)op;
  snprintf(buf, n, "gcp.sleep(%.3g)%s%s", s->seconds, s->label[0] ? " " : "", s->label);
}

static const struct gcpr_op_vtable sleep_vt = {"sleep", sleep_describe, sleep_cancel,
                                               sleep_push, sleep_destroy};

static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s < 1e9, 1, "expected a number of seconds >= 0");
  gcpr_task_check(L, "gcp.sleep");
  sleep_op *op = calloc(1, sizeof *op);
  if (!op) return luaL_error(L, "out of memory");
  op->op.vt = &sleep_vt;
  op->seconds = s;
  snprintf(op->label, sizeof op->label, "%s", luaL_optstring(L, 2, ""));
  op->timer = evtimer_new(gcpr_loop_base(), sleep_cb, op);
  struct timeval tv = gcpr_loop_timeval(s);
  evtimer_add(op->timer, &tv);
  return gcpr_op_yield(L, &op->op);
}

static int l_killed(lua_State *L) {
  gcpr_run *run = gcpr_run_of(L);
  lua_pushboolean(L, run && run->kill_reason != NULL);
  return 1;
}

static int l_dry_run(lua_State *L) {
  gcpr_run *run = gcpr_run_of(L);
  lua_pushboolean(L, run && run->dry_run);
  return 1;
}

static const luaL_Reg task_funcs[] = {{"spawn", l_spawn}, {"join", l_join},
                                      {"sleep", l_sleep}, {"killed", l_killed},
                                      {"dry_run", l_dry_run}, {NULL, NULL}};

int gcpr_open_task(lua_State *L) {
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &tasks_key);
  luaL_newmetatable(L, TASK_MT);
  lua_pop(L, 1);
  luaL_newmetatable(L, OP_BOX_MT);
  lua_pushcfunction(L, op_box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_setfuncs(L, task_funcs, 0);
  return 0;
}

size_t gcpr_run_describe_pending(gcpr_run *run, char *buf, size_t n) {
  size_t used = 0;
  int count = 0;
  buf[0] = '\0';
  for (gcpr_op *op = run->pending; op && used + 1 < n; op = op->next) {
    if (op->vt == &join_vt) continue;
    char one[512];
    if (op->vt->describe) op->vt->describe(op, one, sizeof one);
    else snprintf(one, sizeof one, "%s", op->vt->what);
    if (++count > 3) {
      used += (size_t)snprintf(buf + used, n - used, ", ...");
      break;
    }
    used += (size_t)snprintf(buf + used, n - used, "%s%s", count > 1 ? ", " : "", one);
  }
  return used < n ? used : n - 1;
}

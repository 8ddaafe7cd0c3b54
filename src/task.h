/* task.h: runs, tasks and pending operations: how a Lua coroutine waits on the loop.
 *
 * A run is one execution of a recipe in its own lua_State, with a deadline and a memory cap.
 * A task is a coroutine of a run (the main one, or a child of gcp.parallel / gcp.map).
 * A primitive that waits starts its work, hands a gcpr_op to gcpr_op_yield and yields; when
 * the work is done it calls gcpr_op_done, and the task resumes in the op's continuation,
 * where op->vt->push turns the result into Lua values (inside the coroutine, so any error or
 * memory failure there is the task's, never the process's). */
#ifndef GCPR_TASK_H
#define GCPR_TASK_H

#include <event2/event.h>
#include <lua.h>
#include <stddef.h>

typedef struct gcpr_run gcpr_run;
typedef struct gcpr_op gcpr_op;

struct gcpr_op_vtable {
  const char *what;                         /* "HTTP request", "sleep", ... */
  void (*describe)(gcpr_op *op, char *buf, size_t n); /* optional: for deadline errors */
  void (*cancel)(gcpr_op *op);              /* stop the work; it will not complete */
  int (*push)(lua_State *L, gcpr_op *op);   /* push the results; may raise */
  void (*destroy)(gcpr_op *op);             /* free everything */
};

struct gcpr_op {
  const struct gcpr_op_vtable *vt;
  gcpr_run *run;
  lua_State *co;
  gcpr_op *prev, *next;  /* the run's pending list */
  gcpr_op *ready_next;   /* the run's ready queue, once done */
  int done;
};

enum gcpr_run_state { GCPR_RUN_RUNNING, GCPR_RUN_OK, GCPR_RUN_FAILED, GCPR_RUN_KILLED };

struct gcpr_run {
  lua_State *L;
  size_t mem_used, mem_limit;
  double started, deadline;            /* monotonic seconds; deadline 0 = none */
  struct event *deadline_ev, *ready_ev;
  gcpr_op *pending;
  gcpr_op *ready_head, *ready_tail;
  gcpr_op *yielded;                    /* set by gcpr_op_yield for the resume in flight */
  enum gcpr_run_state state;
  const char *kill_reason;             /* static text: why the run was stopped */
  int dry_run;
  /* Called once when the main task ends or the run is killed. For RUN_OK the main task's
   * results are on top of L's stack; for RUN_FAILED its traceback (string) and, on top,
   * its error value. Returns with the stack as it found it. */
  void (*on_finish)(gcpr_run *run, void *ud);
  void *ud;
};

/* Sets up the run's deadline (0 = none) and events; run->L must already exist. */
void gcpr_run_init(gcpr_run *run, double timeout_s);
/* Starts fn (on top of L's stack, consumed) as the main task with nargs arguments below it. */
void gcpr_run_start(gcpr_run *run, int nargs);
/* Cancels and frees what is still pending and frees the events (L stays open). */
void gcpr_run_cleanup(gcpr_run *run);
/* Marks the run killed (deadline, memory, signal): it finishes as soon as control returns to
 * the loop, and any Lua code still running raises. */
void gcpr_run_kill(gcpr_run *run, const char *reason);
/* The allocator of every run's state (its ud is the run), so a state tells its run. */
void *gcpr_run_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* The run L belongs to, or NULL for a state gcpr did not create (the Lua test module). */
gcpr_run *gcpr_run_of(lua_State *L);
/* Writes what the run still waits on ("POST https://...", "gcp.sleep(5)"), for errors. */
size_t gcpr_run_describe_pending(gcpr_run *run, char *buf, size_t n);

/* For a primitive: raises unless L is a task that may wait. Returns its run. */
gcpr_run *gcpr_task_check(lua_State *L, const char *primitive);
int gcpr_op_yield(lua_State *L, gcpr_op *op);
void gcpr_op_done(gcpr_op *op);

/* Raised by the count hook and the sandbox's pcall guard once a run is killed. */
int gcpr_run_raise_killed(lua_State *L);

int gcpr_open_task(lua_State *L);

#endif

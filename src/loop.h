/* loop.h: the process's one libevent loop and its clock. Every primitive that waits
 * registers its work here (curl sockets and timers, sleeps, run deadlines, signals). */
#ifndef GCPR_LOOP_H
#define GCPR_LOOP_H

#include <event2/event.h>
#include <lua.h>

struct event_base *gcpr_loop_base(void);
void gcpr_loop_free(void);
/* Monotonic seconds, for deadlines and durations. */
double gcpr_loop_now(void);
struct timeval gcpr_loop_timeval(double seconds);

int gcpr_open_loop(lua_State *L);

#endif

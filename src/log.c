/* log.c: leveled diagnostics on stderr (gcp.log.* and the -v request log), and URL
 * redaction so no credential carried in a query string reaches a log line. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum gcpr_log_level min_level = GCPR_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gcpr_log_set_level(enum gcpr_log_level level) { min_level = level; }

int gcpr_log_enabled(enum gcpr_log_level level) { return level >= min_level; }

static void log_line(enum gcpr_log_level level, const char *msg, size_t len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %.*s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
          ts.tv_nsec / 1000000, level_names[level], (int)len, msg);
}

void gcpr_log(enum gcpr_log_level level, const char *fmt, ...) {
  if (!gcpr_log_enabled(level)) return;
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  log_line(level, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static const char *const secret_params[] = {"access_token", "token", "id_token", "key",
                                            "assertion", "client_secret", "refresh_token",
                                            "code", NULL};

static int is_secret_param(const char *name, size_t len) {
  for (int i = 0; secret_params[i]; i++)
    if (strlen(secret_params[i]) == len && strncasecmp(secret_params[i], name, len) == 0)
      return 1;
  return 0;
}

void gcpr_log_redact_url(const char *url, char *out, size_t n) {
  size_t o = 0;
  const char *q = strchr(url, '?');
  const char *p = url;
  if (n == 0) return;
  #define PUT(c) do { if (o + 1 < n) out[o++] = (c); } while (0)
  while (*p && (!q || p <= q)) PUT(*p++);
  while (q && *p) {
    const char *eq = p;
    while (*eq && *eq != '=' && *eq != '&' && *eq != '#') eq++;
    int secret = is_secret_param(p, (size_t)(eq - p));
    while (p < eq) PUT(*p++);
    if (*p == '=') {
      PUT(*p++);
      if (secret) {
        for (const char *r = "REDACTED"; *r; r++) PUT(*r);
        while (*p && *p != '&' && *p != '#') p++;
      }
    }
    while (*p && *p != '&') PUT(*p++);
    if (*p == '&') PUT(*p++);
  }
  #undef PUT
  out[o] = '\0';
}

static int l_log(lua_State *L) {
  static const char *const names[] = {"debug", "info", "warn", "error", NULL};
  int level = luaL_checkoption(L, 1, NULL, names);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  if (gcpr_log_enabled((enum gcpr_log_level)level))
    log_line((enum gcpr_log_level)level, msg, len);
  return 0;
}

static int l_log_enabled(lua_State *L) {
  static const char *const names[] = {"debug", "info", "warn", "error", NULL};
  lua_pushboolean(L, gcpr_log_enabled((enum gcpr_log_level)luaL_checkoption(L, 1, NULL, names)));
  return 1;
}

/* core.stderr_is_terminal() -> whether progress can be drawn in place. */
static int l_stderr_is_terminal(lua_State *L) {
  lua_pushboolean(L, isatty(2));
  return 1;
}

/* core.progress(text) draws text over the current terminal line (nil clears it). */
static int l_progress(lua_State *L) {
  const char *text = luaL_optstring(L, 1, NULL);
  fprintf(stderr, "\r\033[K%s", text ? text : "");
  fflush(stderr);
  return 0;
}

static const luaL_Reg log_funcs[] = {{"log", l_log},
                                     {"log_enabled", l_log_enabled},
                                     {"stderr_is_terminal", l_stderr_is_terminal},
                                     {"progress", l_progress},
                                     {NULL, NULL}};

int gcpr_open_log(lua_State *L) {
  luaL_setfuncs(L, log_funcs, 0);
  return 0;
}

/* log.h: the one place gcpr writes diagnostics to stderr, with levels and redaction. */
#ifndef GCPR_LOG_H
#define GCPR_LOG_H

#include <lua.h>
#include <stddef.h>

enum gcpr_log_level { GCPR_LOG_DEBUG, GCPR_LOG_INFO, GCPR_LOG_WARN, GCPR_LOG_ERROR };

/* Messages below this level are dropped; -v lowers it to DEBUG. */
void gcpr_log_set_level(enum gcpr_log_level level);
int gcpr_log_enabled(enum gcpr_log_level level);
void gcpr_log(enum gcpr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Copies url into out (size n) with the values of credential-bearing query parameters
 * (access_token, token, key, assertion, ...) replaced by "REDACTED". */
void gcpr_log_redact_url(const char *url, char *out, size_t n);

int gcpr_open_log(lua_State *L);

#endif

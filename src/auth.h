/* auth.h: credentials and tokens. Key material is parsed and kept here, in C; callers get
 * access tokens only. Tokens are cached per (principal, scopes), refreshed ahead of expiry,
 * and a refresh is single-flight: every caller waiting on it shares one token request. */
#ifndef GCPR_AUTH_H
#define GCPR_AUTH_H

#include <lua.h>

/* Exit codes a credential failure maps to: the user's input (file) or the world. */
#define GCPR_EXIT_FAILED 1
#define GCPR_EXIT_USAGE 2

typedef struct gcpr_token_req gcpr_token_req;

/* Called once with either a token or an error message (never both); both are only valid
 * during the call. exit_code says whose fault an error is. */
typedef void (*gcpr_token_cb)(void *ud, const char *token, const char *error, int exit_code);

/* Asks for an access token for the space-separated scopes. If one is cached, sets *token
 * and returns NULL; if the credentials cannot be used at all, sets *error and *exit_code and
 * returns NULL; otherwise returns a pending request whose cb fires exactly once unless it is
 * cancelled first. */
gcpr_token_req *gcpr_auth_access_token(const char *scopes, const char **token,
                                       const char **error, int *exit_code, gcpr_token_cb cb,
                                       void *ud);
void gcpr_auth_cancel(gcpr_token_req *req);
/* Drops every cached token and the loaded credentials (at exit). */
void gcpr_auth_cleanup(void);

int gcpr_open_auth(lua_State *L);

#endif

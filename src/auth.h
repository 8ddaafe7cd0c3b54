/* auth.h: credentials and tokens. Credentials are found the way Google's libraries find
 * them (Application Default Credentials) and parsed here, in C: callers get tokens, never
 * key material, refresh tokens or client secrets. Tokens are cached per (principal, scopes
 * or audience), refreshed ahead of expiry, and a refresh is single-flight: every caller
 * that needs it waits on the one request. */
#ifndef GCPR_AUTH_H
#define GCPR_AUTH_H

#include <lua.h>

/* Exit codes a credential failure maps to: the user's input (a file, a setting) or the
 * world (an endpoint refused or could not be reached). */
#define GCPR_EXIT_FAILED 1
#define GCPR_EXIT_USAGE 2

enum gcpr_token_kind { GCPR_TOKEN_ACCESS, GCPR_TOKEN_ID };

/* What token to get. Strings are borrowed for the duration of the call. */
typedef struct {
  enum gcpr_token_kind kind;
  const char *scopes;      /* ACCESS: space- or comma-separated; NULL = cloud-platform */
  const char *audience;    /* ID: the aud claim */
  const char *impersonate; /* a service account to impersonate on top of the credentials */
  const char *delegates;   /* comma-separated delegate chain for impersonation */
  const char *subject;     /* a user to act as (domain-wide delegation, service-account keys) */
} gcpr_token_spec;

typedef struct gcpr_token_req gcpr_token_req;

/* Called once with either a token or an error message (never both); both are only valid
 * during the call. exit_code says whose fault an error is. */
typedef void (*gcpr_token_cb)(void *ud, const char *token, const char *error, int exit_code);

/* Asks for a token. If a fresh one is cached, sets *token and returns NULL; if the request
 * cannot even start (no or bad credentials), sets *error and *exit_code and returns NULL;
 * otherwise returns a pending request whose cb fires exactly once unless cancelled. */
gcpr_token_req *gcpr_auth_token(const gcpr_token_spec *spec, const char **token,
                                const char **error, int *exit_code, gcpr_token_cb cb, void *ud);
void gcpr_auth_cancel(gcpr_token_req *req);
/* An API answered 401 to token: drop it from the cache (if still cached) so the next
 * request fetches a new one. */
void gcpr_auth_invalidate(const gcpr_token_spec *spec, const char *token);
/* The quota project to bill (x-goog-user-project): GOOGLE_CLOUD_QUOTA_PROJECT, else the
 * credentials file's quota_project_id, else NULL. */
const char *gcpr_auth_quota_project(void);
/* Drops every cached token and every loaded credential (at exit). */
void gcpr_auth_cleanup(void);

int gcpr_open_auth(lua_State *L);

#endif

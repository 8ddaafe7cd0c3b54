/* http.h: HTTP requests on the shared loop (curl multi driven by libevent through curl's
 * socket API), for C callers (token requests) and, through core.http, for recipes. */
#ifndef GCPR_HTTP_H
#define GCPR_HTTP_H

#include <curl/curl.h>
#include <lua.h>
#include <stddef.h>

typedef struct gcpr_http gcpr_http;

/* The longest method a request takes ("PROPPATCH", "BASELINE-CONTROL" fit). */
#define GCPR_HTTP_METHOD_MAX 23
typedef void (*gcpr_http_cb)(gcpr_http *req, void *ud);

/* NULL when out of memory or the method is longer than GCPR_HTTP_METHOD_MAX. */
gcpr_http *gcpr_http_new(const char *method, const char *url);
/* Adds "Name: value". Returns 0, or -1 when out of memory. */
int gcpr_http_add_header(gcpr_http *req, const char *line);
/* Adds "Authorization: Bearer token"; the request logs it as redacted. */
int gcpr_http_set_bearer(gcpr_http *req, const char *token);
/* Copies the body. */
int gcpr_http_set_body(gcpr_http *req, const char *data, size_t len);
void gcpr_http_set_timeout(gcpr_http *req, double seconds);
/* Starts the transfer; cb fires once when it ends (any outcome) unless it is cancelled. */
int gcpr_http_start(gcpr_http *req, gcpr_http_cb cb, void *ud);
/* Stops a started transfer without calling back. Then free it. */
void gcpr_http_cancel(gcpr_http *req);
void gcpr_http_free(gcpr_http *req);

/* After the callback: */
CURLcode gcpr_http_result(const gcpr_http *req);   /* CURLE_OK when a response arrived */
const char *gcpr_http_error(const gcpr_http *req); /* curl's message when it did not */
long gcpr_http_status(const gcpr_http *req);
const char *gcpr_http_body(const gcpr_http *req, size_t *len);
const char *gcpr_http_url(const gcpr_http *req);
size_t gcpr_http_header_count(const gcpr_http *req);
const char *gcpr_http_header_line(const gcpr_http *req, size_t i); /* "name: value" */

/* Whether an access token may be sent to url: https, and a host under googleapis.com or
 * one the user allowlisted in GCPR_TOKEN_HOSTS. */
int gcpr_http_token_allowed(const char *url);

void gcpr_http_cleanup(void);
int gcpr_open_http(lua_State *L);

#endif

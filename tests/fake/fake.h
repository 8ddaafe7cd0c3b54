/* fake.h: what gcpr-fake's modules share: the server state, the life of one API call
 * (receive, hold, answer, log), Google's error shapes, and each module's entry points.
 * One process, one thread, one libevent loop; nothing here blocks. */
#ifndef GCPR_FAKE_H
#define GCPR_FAKE_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/ssl.h>

struct fake_oauth;
struct fake_compute;
struct fake_faults;

/* Settings that POST /_fake/config can change at run time. */
struct fake_settings {
  long op_delay_ms;      /* an operation goes PENDING -> RUNNING at half, DONE at full */
  long wait_max_ms;      /* longest an operations/{op}/wait call is held */
  long token_lifetime_s; /* expires_in of issued access tokens */
};

struct fake_stats {
  long requests; /* API requests received (control calls excluded) */
  long inflight; /* received and not yet answered or dropped */
  long max_inflight;
  long tokens_issued;
};

struct fake_call;

struct fake {
  struct event_base *base;
  struct evhttp *http;
  SSL_CTX *tls;
  char *dir; /* absolute */
  FILE *request_log;
  struct fake_settings settings;
  struct fake_stats stats;
  struct fake_oauth *oauth;
  struct fake_compute *compute;
  struct fake_faults *faults;
  struct fake_call *calls; /* every API call not yet answered, for shutdown */
};

/* What an injected fault does to the call it matched (a copy: clearing the faults while the
 * call is held changes nothing). */
struct fake_fault_effect {
  long id;
  int status;        /* 0: the normal answer's status */
  char *retry_after; /* Retry-After header value, or NULL */
  long delay_ms;
  int drop;          /* close the connection without answering */
  char *body;        /* replaces the answer's body, or NULL */
  char *op_error_code; /* the operation this call creates ends DONE with this error */
  char *op_error_message;
  int op_error_http_status;
};

enum fake_auth { FAKE_AUTH_NONE, FAKE_AUTH_INVALID, FAKE_AUTH_EXPIRED, FAKE_AUTH_VALID };

typedef void (*fake_call_fn)(struct fake_call *call, void *arg);

/* A list of held calls waiting for one thing (an operation reaching DONE). */
struct fake_waitlist {
  struct fake_call *first;
};

/* One API request from the moment it is received until it is answered or dropped. Owned by
 * fake_call.c; handlers read these fields and answer with fake_call_respond*. */
struct fake_call {
  struct fake *fake;
  struct evhttp_request *req;
  const char *method; /* static string */
  char *host;         /* Host header, or NULL */
  char *path;         /* raw, as received */
  char *query;        /* raw query string, or NULL */
  struct evkeyvalq params; /* decoded query parameters */
  char *body_text;    /* request body, NUL-terminated, or NULL when empty */
  cJSON *body;        /* body parsed as JSON, or NULL */
  size_t body_error_at; /* where a JSON body failed to parse */
  cJSON *log_body;    /* what the request log shows as body; NULL logs null */
  enum fake_auth auth;
  char *principal;    /* client_email of a valid token, else NULL */
  char *scopes;       /* scopes of a valid token, else NULL */
  long inflight_at_receipt;
  struct fake_fault_effect *fault; /* or NULL */
  /* Holding: a timer, a watch for the client closing, and optionally a wait list. */
  struct event *timer;
  struct event *close_watch;
  struct fake_waitlist *waiting_on;
  struct fake_call *wait_next, **wait_prev;
  fake_call_fn on_wake;
  void *wake_arg;
  struct fake_call *next, **prev; /* in fake->calls */
};

/* fake_main.c */
/* Allocation that cannot fail: a test server out of memory aborts with one line.
 * fake_strdup(NULL) is NULL. */
void *fake_malloc(size_t n);
char *fake_strdup(const char *s);
/* Writes data to dir/name with mode (replacing the file and its mode). Returns 0, or -1
 * with errno set. */
int fake_write_file(const char *dir, const char *name, const char *data, size_t len,
                    mode_t mode);
/* Formats a wall-clock time in milliseconds as RFC 3339: UTC "Z" when utc_offset_min is 0,
 * else with that offset ("-07:00"). out must hold 32 bytes. */
void fake_format_time(long long ms, int utc_offset_min, char out[32]);
long long fake_now_ms(void);
/* Fills out with n random lowercase hex digits plus NUL. */
void fake_random_hex(char *out, size_t n);

/* fake_call.c */
void fake_call_receive(struct fake *fake, struct evhttp_request *req);
/* Answers with a JSON body (taken, freed here) or raw text, logs the call, frees it. */
void fake_call_respond_json(struct fake_call *call, int status, cJSON *body);
void fake_call_respond_text(struct fake_call *call, int status, const char *body);
/* Google's API error body: {"error":{"code","message","errors":[{message,domain,reason}]
 * [,"status"]}}; status may be NULL (Compute's errors carry none). */
cJSON *fake_google_error(int code, const char *message, const char *reason,
                         const char *status);
void fake_call_respond_error(struct fake_call *call, int code, const char *message,
                             const char *reason, const char *status);
void fake_call_respond_unknown_url(struct fake_call *call);
/* Holds the call until fn runs after ms, or until fake_waitlist_wake when list is given;
 * fn then answers it. A client that disconnects meanwhile is logged with status 0 and
 * freed without calling fn. */
void fake_call_hold(struct fake_call *call, long ms, struct fake_waitlist *list,
                    fake_call_fn fn, void *arg);
void fake_waitlist_wake(struct fake_waitlist *list);
/* At shutdown: logs every call still held with status 0 and frees it (evhttp_free then
 * closes its connection). */
void fake_calls_drop_all(struct fake *fake);
/* Sends a JSON reply to a control request (not logged, not counted). */
void fake_reply_json(struct evhttp_request *req, int status, cJSON *body);

/* fake_tls.c: writes dir/ca.pem; returns the listener's SSL_CTX or NULL with *err set. */
SSL_CTX *fake_tls_create(const char *dir, const char **err);
struct bufferevent *fake_tls_bufferevent(struct event_base *base, void *ssl_ctx);

/* fake_oauth.c */
struct fake_oauth *fake_oauth_create(const char *dir, const char **err);
void fake_oauth_free(struct fake_oauth *oauth);
void fake_oauth_token_endpoint(struct fake_call *call);
/* Classifies an Authorization header; on FAKE_AUTH_VALID sets *principal and *scopes to
 * the token's (owned by the token table). */
enum fake_auth fake_oauth_check(struct fake_oauth *oauth, const char *authorization,
                                const char **principal, const char **scopes);

/* fake_compute.c */
struct fake_compute *fake_compute_create(struct fake *fake);
void fake_compute_free(struct fake_compute *compute);
void fake_compute_handle(struct fake_call *call);

/* fake_control.c: faults and the /_fake/ control API. */
struct fake_faults *fake_faults_create(void);
void fake_faults_free(struct fake_faults *faults);
/* Returns a copy of the effect of the first matching fault with uses left (using one), or
 * NULL. */
struct fake_fault_effect *fake_faults_match(struct fake_faults *faults, const char *method,
                                            const char *path);
void fake_fault_effect_free(struct fake_fault_effect *effect);
void fake_control_handle(struct fake *fake, struct evhttp_request *req, const char *path);

#endif

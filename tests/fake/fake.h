/* fake.h: what gcpr-fake's modules share: the server state, the life of one API call
 * (receive, hold, answer, log), Google's error shapes, the identities every module agrees
 * on, and each module's entry points. One process, one libevent loop on one thread (plus a
 * worker that only makes RSA keys, fake_keys.c); nothing on the loop blocks. */
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

/* The identities the whole fake shares. */
#define FAKE_PROJECT_ID "demo-project"
#define FAKE_PROJECT_NUMBER "123456789"
#define FAKE_RUNNER_SA "gcpr-runner@" FAKE_PROJECT_ID ".iam.gserviceaccount.com"
#define FAKE_DEPLOYER_SA "deployer@" FAKE_PROJECT_ID ".iam.gserviceaccount.com"
#define FAKE_COMPUTE_SA "1234567890-compute@developer.gserviceaccount.com"
#define FAKE_USER_EMAIL "operator@example.com"
#define FAKE_USER_CLIENT_ID "764086051850-fake.apps.googleusercontent.com"
#define FAKE_IAP_CLIENT_ID FAKE_PROJECT_NUMBER "-iap.apps.googleusercontent.com"
#define FAKE_CLOUD_PLATFORM "https://www.googleapis.com/auth/cloud-platform"
#define FAKE_GOOGLE_ISSUER "https://accounts.google.com"
#define FAKE_IAM_CREDENTIALS_URL "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"

struct fake_oauth;
struct fake_compute;
struct fake_faults;
struct fake_keys;
struct fake_idtoken;
struct fake_iam;
struct fake_sts;
struct fake_services;

/* Settings that POST /_fake/config can change at run time. */
struct fake_settings {
  long op_delay_ms;      /* an operation goes PENDING -> RUNNING at half, DONE at full */
  long wait_max_ms;      /* longest an operations/{op}/wait call is held */
  long token_lifetime_s; /* expires_in of issued access tokens */
  long id_token_lifetime_s; /* exp - iat of the ID tokens the fake signs */
  long clock_skew_s;     /* added to the real time wherever the fake checks or sets expiry */
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
  struct evhttp *http;          /* HTTPS: the Google APIs, the token endpoints, *.run.app */
  struct evhttp *metadata_http; /* plain HTTP: the GCE metadata server */
  int port, metadata_port;
  SSL_CTX *tls;
  char *dir; /* absolute */
  FILE *request_log;
  struct fake_settings settings;
  struct fake_stats stats;
  struct fake_oauth *oauth;
  struct fake_compute *compute;
  struct fake_faults *faults;
  struct fake_keys *keys;
  struct fake_idtoken *idtoken;
  struct fake_iam *iam;
  struct fake_sts *sts;
  struct fake_services *services;
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
  int gzip;          /* send the answer's body gzip-encoded (Content-Encoding: gzip) */
  char *body;        /* replaces the answer's body, or NULL */
  cJSON *headers;    /* [[name, value], ...] added to the answer (repeats kept), or NULL */
  char *op_error_code; /* the operation this call creates ends DONE with this error */
  char *op_error_message;
  int op_error_http_status;
  char *build_status; /* the Cloud Build build this call starts ends with this status */
  char *job_state;    /* the Dataflow job this call launches ends in this state */
};

enum fake_auth { FAKE_AUTH_NONE, FAKE_AUTH_INVALID, FAKE_AUTH_EXPIRED, FAKE_AUTH_VALID };

enum fake_listener { FAKE_LISTENER_HTTPS, FAKE_LISTENER_METADATA };

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
  enum fake_listener listener;
  const char *method; /* static string */
  char *host;         /* Host header, or NULL */
  char *path;         /* raw, as received */
  char *query;        /* raw query string, or NULL */
  struct evkeyvalq params; /* decoded query parameters */
  char *body_text;    /* request body, NUL-terminated, or NULL when empty */
  cJSON *body;        /* body parsed as JSON, or NULL */
  size_t body_error_at; /* where a JSON body failed to parse */
  cJSON *log_body;    /* what the request log shows as body; NULL logs null */
  cJSON *log_extra;   /* more fields for the log line (fake_call_log_extra), or NULL */
  enum fake_auth auth;
  char *principal;    /* principal of a valid token, else NULL */
  char *scopes;       /* scopes of a valid token, else NULL */
  char *quota_project; /* X-Goog-User-Project header, or NULL */
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
/* Token endpoints log only {"grant_type": ...}: their forms carry assertions and secrets. */
struct fake_call;
void fake_log_grant_type(struct fake_call *call, const char *grant_type);
/* printf into a fresh fake_malloc'd string. */
char *fake_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes data to dir/name with mode (replacing the file and its mode). Returns 0, or -1
 * with errno set. */
int fake_write_file(const char *dir, const char *name, const char *data, size_t len,
                    mode_t mode);
/* Formats a wall-clock time in milliseconds as RFC 3339: UTC "Z" when utc_offset_min is 0,
 * else with that offset ("-07:00"). out must hold 32 bytes. */
void fake_format_time(long long ms, int utc_offset_min, char out[32]);
long long fake_now_ms(void);
/* The fake's own clock: the real time shifted by the clock_skew_s setting. Every expiry the
 * fake sets or checks uses it. */
long long fake_clock_ms(const struct fake *fake);
long long fake_clock_s(const struct fake *fake);
/* Whether a space-separated scope list (NULL: none) holds scope. */
int fake_has_scope(const char *scopes, const char *scope);
/* Fills out with n random lowercase hex digits plus NUL. */
void fake_random_hex(char *out, size_t n);
/* Fills out with n random decimal digits (the first not 0) plus NUL; n < 64. */
void fake_random_digits(char *out, size_t n);
/* Fills out with n random base64url characters plus NUL; n < 256. */
void fake_random_b64url(char *out, size_t n);
/* Writes doc as JSON laid out as gcloud and the Cloud console write it (two-space indent,
 * members in insertion order, trailing newline), like fake_write_file. */
int fake_write_json_file(const char *dir, const char *name, const cJSON *doc, mode_t mode);

/* fake_call.c */
void fake_call_receive(struct fake *fake, struct evhttp_request *req,
                       enum fake_listener listener);
/* Answers with a JSON body (taken, freed here) or raw text, logs the call, frees it. Every
 * answer on the metadata listener carries Metadata-Flavor: Google. */
void fake_call_respond_json(struct fake_call *call, int status, cJSON *body);
void fake_call_respond_text(struct fake_call *call, int status, const char *body);
void fake_call_respond_typed(struct fake_call *call, int status, const char *content_type,
                             const char *body);
/* Wipes the values of a parsed form (they may be secrets) and frees them. */
void fake_form_clear(struct evkeyvalq *form);
/* The object whose members are added to the call's log line (created on first use). */
cJSON *fake_call_log_extra(struct fake_call *call);
/* Dispatches the call again a little later: for a handler whose signing key is still being
 * made (fake_keys.c). The handler must not have answered it. */
void fake_call_retry_later(struct fake_call *call);
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

/* fake_oauth.c: the token table, the service-account key, the authorized user, and the
 * OAuth2 token endpoint. runner_client_id is the unique id of FAKE_RUNNER_SA (sa-key.json's
 * client_id). Writes sa-key.json, authorized-user.json and impersonated.json. */
struct fake_oauth *fake_oauth_create(const char *dir, const char *runner_client_id,
                                     const char **err);
void fake_oauth_free(struct fake_oauth *oauth);
void fake_oauth_token_endpoint(struct fake_call *call);
/* Remembers and returns a new access token (owned by the token table) for principal with
 * scopes (space-separated), valid lifetime_s from now on the fake's clock. */
const char *fake_oauth_issue(struct fake *fake, const char *prefix, const char *principal,
                             const char *scopes, long lifetime_s);
/* Classifies an Authorization header; on FAKE_AUTH_VALID sets *principal and *scopes to
 * the token's (owned by the token table). */
enum fake_auth fake_oauth_check(struct fake *fake, const char *authorization,
                                const char **principal, const char **scopes);

/* fake_keys.c: RSA keys made on a worker thread so the loop never waits for them. Slots are
 * reserved before fake_keys_start and made in that order; a slot reads NULL until its key
 * exists. fake_keys_wait blocks until it does: for start-up only, never on the loop. The
 * store owns the keys. */
struct fake_keys *fake_keys_create(void);
int fake_keys_reserve(struct fake_keys *keys);
int fake_keys_start(struct fake_keys *keys);
EVP_PKEY *fake_keys_get(struct fake_keys *keys, int slot);
EVP_PKEY *fake_keys_wait(struct fake_keys *keys, int slot);
void fake_keys_free(struct fake_keys *keys);

/* fake_idtoken.c: the fake "Google" signing key, ID tokens signed with it, and its public
 * keys at /oauth2/v3/certs (JWKS) and /oauth2/v1/certs (PEM certificates). */
struct fake_idtoken *fake_idtoken_create(struct fake_keys *keys);
void fake_idtoken_free(struct fake_idtoken *idtoken);
int fake_idtoken_ready(const struct fake *fake);
/* Claims {"iss","azp","aud","sub"} to which a caller adds its own before signing. */
cJSON *fake_idtoken_claims(const char *aud, const char *azp, const char *sub);
/* Adds iat and exp to claims (taken, freed here) and signs them: a malloc'd JWT, or NULL
 * while the key is not made yet (see fake_idtoken_ready). */
char *fake_idtoken_sign(struct fake *fake, cJSON *claims);
/* Checks a JWT's signature, issuer and expiry; on FAKE_AUTH_VALID or FAKE_AUTH_EXPIRED sets
 * *claims (caller frees). */
enum fake_auth fake_idtoken_verify(struct fake *fake, const char *jwt, cJSON **claims);
void fake_idtoken_certs(struct fake_call *call);
/* An RS256 JWT over claims_json with header {"alg","kid","typ"}; malloc'd, or NULL. */
char *fake_jwt_sign(EVP_PKEY *key, const char *kid, const char *claims_json);
/* A public key as a JWK {"kty","alg","use","kid","n","e"}. */
cJSON *fake_jwk(EVP_PKEY *key, const char *kid);

/* fake_iam.c: the service accounts and the IAM Credentials API. */
struct fake_iam *fake_iam_create(struct fake_keys *keys);
void fake_iam_free(struct fake_iam *iam);
/* The numeric unique id (OAuth client id) of a known service account, or NULL. */
const char *fake_iam_unique_id(const struct fake_iam *iam, const char *email);
void fake_iam_handle(struct fake_call *call);
void fake_iam_jwk(struct fake_call *call);

/* fake_sts.c: the external OIDC issuer, the workload identity pool and the Security Token
 * Service. fake_sts_create reserves the issuer's key (before fake_keys_start);
 * fake_sts_write_files waits for it and writes subject-token.jwt, external-file.json and
 * external-url.json, returning 0 or -1 with *err set. */
struct fake_sts *fake_sts_create(struct fake_keys *keys);
int fake_sts_write_files(struct fake_sts *sts, const char *dir, int metadata_port,
                         const char **err);
void fake_sts_free(struct fake_sts *sts);
void fake_sts_token(struct fake_call *call);
void fake_sts_subject_token(struct fake_call *call);

/* fake_metadata.c: everything on the metadata listener. */
void fake_metadata_handle(struct fake_call *call);

/* fake_target.c: the ID-token-protected stand-ins for Cloud Run (*.run.app) and for an app
 * behind IAP (*.appspot.com), and the redirect endpoint. fake_target_host says whether a
 * Host header names one of them. */
int fake_target_host(const char *host);
void fake_target_handle(struct fake_call *call);
void fake_target_redirect(struct fake_call *call);

/* fake_compute.c */
struct fake_compute *fake_compute_create(struct fake *fake);
void fake_compute_free(struct fake_compute *compute);
void fake_compute_handle(struct fake_call *call);

/* fake_services.c: Cloud Build, Dataflow, Cloud SQL Admin and Cloud Run v2 (jobs). Their
 * long-running work moves on the fake's op delay, judged when it is looked at. */
struct fake_services *fake_services_create(struct fake *fake);
void fake_services_free(struct fake_services *services);
/* /v1/projects/...: Cloud Build and Cloud SQL Admin, and IAM Credentials for the rest. */
void fake_services_v1(struct fake_call *call);
void fake_services_dataflow(struct fake_call *call);
void fake_services_run(struct fake_call *call);

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

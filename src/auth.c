/* auth.c: credentials and the token cache.
 *
 * Credentials are found as Google's libraries find them (Application Default Credentials:
 * GOOGLE_APPLICATION_CREDENTIALS, then gcloud's ADC file, then the metadata server) and
 * parsed here; key material, refresh tokens and client secrets never leave C. Each source
 * is a `cred` that knows how to fetch an access or ID token for one cache entry; service-
 * account impersonation and domain-wide delegation are creds layered on another cred.
 * Entries are cached per (principal, scopes or audience), refreshed ahead of expiry, and a
 * fetch is single-flight: every caller waits on the one request. */
#define _DEFAULT_SOURCE
#include "auth.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"
#include "task.h"

#define MAX_CRED_FILE_BYTES (64 * 1024)
/* google-auth refreshes this long before expiry (3 min 45 s). */
#define REFRESH_MARGIN_S 225.0
#define DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define CLOUD_PLATFORM "https://www.googleapis.com/auth/cloud-platform"
#define IAM_CREDENTIALS_URL "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
#define METADATA_ATTEMPTS 3
#define METADATA_TIMEOUT_S 3.0
#define JWT_GRANT "urn:ietf:params:oauth:grant-type:jwt-bearer"

typedef struct cred cred;
typedef struct entry entry;

struct cred_vtable {
  const char *type;
  /* Starts fetching e's token; the fetch ends with entry_done or entry_fail, possibly
   * before this returns. */
  void (*fetch)(cred *c, entry *e);
  void (*destroy)(cred *c);
};

struct cred {
  const struct cred_vtable *vt;
  char *id;            /* unique; also how errors name the principal until email is known */
  char *email;         /* the principal, when known */
  char *quota_project; /* quota_project_id of the file it came from */
  cred *next;
};

struct gcpr_token_req {
  entry *e;
  gcpr_token_cb cb;
  void *ud;
  gcpr_token_req *prev, *next;
};

struct entry {
  cred *c;
  enum gcpr_token_kind kind;
  char *key; /* normalized scopes, or the audience */
  char *token;
  double refresh_at, expires_at;
  int fetching, attempts;
  char *last_error; /* why the last fetch failed, for callers that asked while it ran */
  int last_code;
  gcpr_http *req;        /* the HTTP step in flight */
  gcpr_token_req *inner; /* waiting on another entry (an impersonation's source) */
  gcpr_token_req *waiters;
  entry *next;
};

static cred *creds;
static entry *entries;

static struct {
  int loaded;
  cred *cred;
  char *error;
  int exit_code;
  char *why;
  double detect_s;
} adc;

/* ---- small helpers ---- */

static char *xvprintf(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s) vsnprintf(s, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = xvprintf(fmt, ap);
  va_end(ap);
  return s;
}

static void secret_free(char *s) {
  if (s) OPENSSL_cleanse(s, strlen(s));
  free(s);
}

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static const char *json_string(const cJSON *obj, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
  return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Wipes every string value of a parsed document before it is freed. */
static void cleanse_json(cJSON *item) {
  for (; item; item = item->next) {
    if (cJSON_IsString(item) && item->valuestring)
      OPENSSL_cleanse(item->valuestring, strlen(item->valuestring));
    cleanse_json(item->child);
  }
}

static void secret_json_free(cJSON *doc) {
  cleanse_json(doc);
  cJSON_Delete(doc);
}

static char *urlencode(const char *s) {
  char *e = curl_easy_escape(NULL, s, 0);
  char *copy = xstrdup(e);
  if (e) OPENSSL_cleanse(e, strlen(e));
  curl_free(e);
  return copy;
}

/* The exp claim of a JWT (unverified: only to know when to refresh it), or 0. */
static double jwt_exp(const char *jwt) {
  const char *a = strchr(jwt, '.'), *b = a ? strchr(a + 1, '.') : NULL;
  if (!b) return 0;
  size_t n = (size_t)(b - a - 1);
  unsigned char *buf = malloc(n + 1);
  long len = buf ? gcpr_b64url_decode(a + 1, n, buf) : -1;
  double exp = 0;
  if (len > 0) {
    cJSON *claims = cJSON_ParseWithLength((char *)buf, (size_t)len);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    if (cJSON_IsNumber(v)) exp = v->valuedouble;
    cJSON_Delete(claims);
  }
  free(buf);
  return exp;
}

/* A string claim of a JWT's payload (unverified), malloc'd, or NULL. */
static char *jwt_claim(const char *jwt, const char *name) {
  const char *a = strchr(jwt, '.'), *b = a ? strchr(a + 1, '.') : NULL;
  if (!b) return NULL;
  size_t n = (size_t)(b - a - 1);
  unsigned char *buf = malloc(n + 1);
  long len = buf ? gcpr_b64url_decode(a + 1, n, buf) : -1;
  char *value = NULL;
  if (len > 0) {
    cJSON *claims = cJSON_ParseWithLength((char *)buf, (size_t)len);
    value = xstrdup(json_string(claims, name));
    cJSON_Delete(claims);
  }
  free(buf);
  return value;
}

/* "2026-11-22T04:00:00Z" or with fractional seconds -> epoch seconds, or 0. */
static double rfc3339(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (double)timegm(&tm);
}

static const char *who(const cred *c) { return c->email ? c->email : c->id; }

/* ---- entries ---- */

static void notify(entry *e, const char *token, const char *error, int code) {
  gcpr_token_req *w = e->waiters;
  e->waiters = NULL;
  while (w) {
    gcpr_token_req *next = w->next;
    gcpr_token_cb cb = w->cb;
    void *ud = w->ud;
    free(w);
    cb(ud, token, error, code);
    w = next;
  }
}

static void entry_done(entry *e, const char *token, double lifetime) {
  secret_free(e->token);
  e->token = xstrdup(token);
  e->fetching = 0;
  free(e->last_error);
  e->last_error = NULL;
  if (!e->token) {
    notify(e, NULL, "out of memory storing a token", GCPR_EXIT_FAILED);
    return;
  }
  if (!(lifetime > 0)) lifetime = 3600;
  double margin = lifetime / 4 < REFRESH_MARGIN_S ? lifetime / 4 : REFRESH_MARGIN_S;
  e->expires_at = gcpr_loop_now() + lifetime;
  e->refresh_at = e->expires_at - margin;
  /* A copy: a waiter may invalidate the entry (a 401) before the others have been told. */
  char *copy = xstrdup(e->token);
  notify(e, copy, copy ? NULL : "out of memory", copy ? 0 : GCPR_EXIT_FAILED);
  secret_free(copy);
}

static void entry_fail(entry *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void entry_fail(entry *e, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = xvprintf(fmt, ap);
  va_end(ap);
  e->fetching = 0;
  free(e->last_error);
  e->last_error = msg;
  e->last_code = code;
  char *copy = xstrdup(msg);
  notify(e, NULL, copy ? copy : "out of memory", code);
  free(copy);
}

static char *what_token(const entry *e) {
  return e->kind == GCPR_TOKEN_ACCESS ? xprintf("an access token for %s", who(e->c))
                                      : xprintf("an ID token for %s (audience %s)", who(e->c), e->key);
}

static entry *find_entry(cred *c, enum gcpr_token_kind kind, const char *key) {
  for (entry *e = entries; e; e = e->next)
    if (e->c == c && e->kind == kind && strcmp(e->key, key) == 0) return e;
  entry *e = calloc(1, sizeof *e);
  if (!e || !(e->key = strdup(key))) {
    free(e);
    return NULL;
  }
  e->c = c;
  e->kind = kind;
  e->next = entries;
  entries = e;
  return e;
}

/* Returns the fresh token, or starts a fetch unless one runs, then joins its waiters. A
 * fetch that ends before this returns (a failure found at once) is reported through
 * *token / *error rather than through cb. */
static gcpr_token_req *entry_request(entry *e, const char **token, const char **error,
                                     int *code, gcpr_token_cb cb, void *ud) {
  *token = NULL;
  *error = NULL;
  if (e->token && !e->fetching && gcpr_loop_now() < e->refresh_at) {
    *token = e->token;
    return NULL;
  }
  if (!e->fetching) {
    e->fetching = 1;
    e->attempts = 0;
    e->c->vt->fetch(e->c, e);
    if (!e->fetching) {
      if (e->last_error || !e->token) {
        *error = e->last_error ? e->last_error : "out of memory";
        *code = e->last_error ? e->last_code : GCPR_EXIT_FAILED;
      } else {
        *token = e->token;
      }
      return NULL;
    }
  }
  gcpr_token_req *w = calloc(1, sizeof *w);
  if (!w) {
    *error = "out of memory";
    *code = GCPR_EXIT_FAILED;
    return NULL;
  }
  w->e = e;
  w->cb = cb;
  w->ud = ud;
  w->next = e->waiters;
  if (e->waiters) e->waiters->prev = w;
  e->waiters = w;
  return w;
}

void gcpr_auth_cancel(gcpr_token_req *w) {
  entry *e = w->e;
  if (w->prev) w->prev->next = w->next;
  else e->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  free(w);
  /* The fetch itself goes on: the next caller will want the token anyway. */
}

/* ---- HTTP steps shared by the sources ---- */

static void start_step(entry *e, gcpr_http *req, gcpr_http_cb cb) {
  if (!req || gcpr_http_start(req, cb, e) != 0) {
    gcpr_http_free(req);
    entry_fail(e, GCPR_EXIT_FAILED, "cannot start a token request (out of memory)");
    return;
  }
  e->req = req;
}

static gcpr_http *form_post(const char *url, const char *body) {
  gcpr_http *req = gcpr_http_new("POST", url);
  if (req && (gcpr_http_set_body(req, body, strlen(body)) != 0 ||
              gcpr_http_add_header(req, "Content-Type: application/x-www-form-urlencoded") != 0)) {
    gcpr_http_free(req);
    return NULL;
  }
  return req;
}

static gcpr_http *json_post(const char *url, const char *body, const char *bearer) {
  gcpr_http *req = gcpr_http_new("POST", url);
  if (req && (gcpr_http_set_body(req, body, strlen(body)) != 0 ||
              gcpr_http_add_header(req, "Content-Type: application/json") != 0 ||
              gcpr_http_set_bearer(req, bearer) != 0)) {
    gcpr_http_free(req);
    return NULL;
  }
  return req;
}

/* Why a token endpoint said no, in its own words: OAuth's {error, error_description} or
 * an API's {error: {code, status, message}}; never the body verbatim. */
static char *refusal(gcpr_http *req, const cJSON *doc) {
  if (gcpr_http_result(req) != CURLE_OK) return xstrdup(gcpr_http_error(req));
  long status = gcpr_http_status(req);
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(doc, "error");
  if (cJSON_IsString(err)) {
    const char *desc = json_string(doc, "error_description");
    return xprintf("HTTP %ld: %s%s%s", status, err->valuestring, desc ? ": " : "", desc ? desc : "");
  }
  if (cJSON_IsObject(err)) {
    const char *st = json_string(err, "status"), *msg = json_string(err, "message");
    return xprintf("HTTP %ld%s%s: %s", status, st ? " " : "", st ? st : "", msg ? msg : "(no message)");
  }
  return xprintf("HTTP %ld", status);
}

enum expiry { EXPIRES_IN, EXPIRE_TIME, JWT_EXP };

/* Ends a step whose answer is JSON holding the token in `field`. */
static void finish_json(entry *e, gcpr_http *req, const char *field, enum expiry how,
                        const char *url) {
  size_t len;
  const char *body = gcpr_http_body(req, &len);
  cJSON *doc = gcpr_http_result(req) == CURLE_OK ? cJSON_ParseWithLength(body, len) : NULL;
  const char *token = gcpr_http_status(req) == 200 ? json_string(doc, field) : NULL;
  if (token) {
    double lifetime = 0;
    if (how == EXPIRES_IN) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "expires_in");
      lifetime = cJSON_IsNumber(v) ? v->valuedouble : 0;
    } else if (how == EXPIRE_TIME) {
      lifetime = rfc3339(json_string(doc, "expireTime")) - (double)time(NULL);
    } else {
      lifetime = jwt_exp(token) - (double)time(NULL);
    }
    entry_done(e, token, lifetime);
  } else {
    char *what = what_token(e), *why = refusal(req, doc);
    entry_fail(e, GCPR_EXIT_FAILED, "getting %s from %s failed: %s", what, url,
               why ? why : "out of memory");
    free(what);
    free(why);
  }
  secret_json_free(doc);
}

/* ---- service-account keys: the JWT bearer grant (RFC 7523) ---- */

typedef struct {
  cred base;
  EVP_PKEY *key;
  char *issuer; /* the service account: iss of every assertion, also under delegation */
  char *kid, *token_uri, *subject;
} sa_cred;

static void sa_answer(gcpr_http *req, void *ud) {
  entry *e = ud;
  e->req = NULL;
  sa_cred *sa = (sa_cred *)e->c;
  finish_json(e, req, e->kind == GCPR_TOKEN_ACCESS ? "access_token" : "id_token",
              e->kind == GCPR_TOKEN_ACCESS ? EXPIRES_IN : JWT_EXP, sa->token_uri);
  gcpr_http_free(req);
}

static void sa_fetch(cred *c, entry *e) {
  sa_cred *sa = (sa_cred *)c;
  time_t now = time(NULL);
  cJSON *header = cJSON_CreateObject(), *claims = cJSON_CreateObject();
  char *h = NULL, *cl = NULL, *jwt = NULL, *body = NULL;
  const char *err = "out of memory";
  int ok = header && claims && cJSON_AddStringToObject(header, "alg", "RS256") &&
           cJSON_AddStringToObject(header, "typ", "JWT") &&
           (!sa->kid || cJSON_AddStringToObject(header, "kid", sa->kid)) &&
           cJSON_AddStringToObject(claims, "iss", sa->issuer) &&
           cJSON_AddStringToObject(claims, "aud", sa->token_uri) &&
           cJSON_AddNumberToObject(claims, "iat", (double)now) &&
           cJSON_AddNumberToObject(claims, "exp", (double)now + 3600) &&
           (!sa->subject || cJSON_AddStringToObject(claims, "sub", sa->subject)) &&
           cJSON_AddStringToObject(claims, e->kind == GCPR_TOKEN_ACCESS ? "scope" : "target_audience",
                                   e->key);
  if (ok && (h = cJSON_PrintUnformatted(header)) && (cl = cJSON_PrintUnformatted(claims)))
    jwt = gcpr_jwt_sign_rs256(sa->key, h, cl, &err);
  if (jwt) body = xprintf("grant_type=%s&assertion=%s", "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer", jwt);
  cJSON_Delete(header);
  cJSON_Delete(claims);
  free(h);
  free(cl);
  secret_free(jwt);
  if (!body) {
    entry_fail(e, GCPR_EXIT_FAILED, "cannot sign a token request for %s: %s", who(c), err);
    return;
  }
  gcpr_http *req = form_post(sa->token_uri, body);
  secret_free(body);
  start_step(e, req, sa_answer);
}

static void sa_destroy(cred *c) {
  sa_cred *sa = (sa_cred *)c;
  EVP_PKEY_free(sa->key);
  free(sa->issuer);
  free(sa->kid);
  free(sa->token_uri);
  free(sa->subject);
}

static const struct cred_vtable sa_vt = {"service_account", sa_fetch, sa_destroy};

/* ---- authorized_user: gcloud's user credentials, the refresh-token grant ---- */

typedef struct {
  cred base;
  char *client_id, *client_secret, *refresh_token, *token_uri;
} user_cred;

static void user_answer(gcpr_http *req, void *ud) {
  entry *e = ud;
  e->req = NULL;
  user_cred *u = (user_cred *)e->c;
  size_t len;
  const char *body = gcpr_http_body(req, &len);
  cJSON *doc = gcpr_http_result(req) == CURLE_OK ? cJSON_ParseWithLength(body, len) : NULL;
  const char *id_token = json_string(doc, "id_token");
  /* The grant's ID token names the user: the principal for messages and `auth info`. */
  if (id_token && !e->c->email) e->c->email = jwt_claim(id_token, "email");
  secret_json_free(doc);
  finish_json(e, req, e->kind == GCPR_TOKEN_ACCESS ? "access_token" : "id_token",
              e->kind == GCPR_TOKEN_ACCESS ? EXPIRES_IN : JWT_EXP, u->token_uri);
  gcpr_http_free(req);
}

static void user_fetch(cred *c, entry *e) {
  user_cred *u = (user_cred *)c;
  if (e->kind == GCPR_TOKEN_ID && strcmp(e->key, u->client_id) != 0) {
    entry_fail(e, GCPR_EXIT_USAGE,
               "user credentials (authorized_user) can only get ID tokens whose audience is "
               "their own OAuth client %s, not %s: impersonate a service account "
               "(--impersonate or impersonate=) to call that audience",
               u->client_id, e->key);
    return;
  }
  char *id = urlencode(u->client_id), *secret = urlencode(u->client_secret),
       *refresh = urlencode(u->refresh_token);
  char *scope = e->kind == GCPR_TOKEN_ACCESS ? urlencode(e->key) : NULL;
  char *body = id && secret && refresh && (scope || e->kind == GCPR_TOKEN_ID)
                   ? xprintf("grant_type=refresh_token&client_id=%s&client_secret=%s&refresh_token=%s%s%s",
                             id, secret, refresh, scope ? "&scope=" : "", scope ? scope : "")
                   : NULL;
  free(id);
  secret_free(secret);
  secret_free(refresh);
  free(scope);
  gcpr_http *req = body ? form_post(u->token_uri, body) : NULL;
  secret_free(body);
  start_step(e, req, user_answer);
}

static void user_destroy(cred *c) {
  user_cred *u = (user_cred *)c;
  free(u->client_id);
  secret_free(u->client_secret);
  secret_free(u->refresh_token);
  free(u->token_uri);
}

static const struct cred_vtable user_vt = {"authorized_user", user_fetch, user_destroy};

/* ---- the metadata server (GCE, GKE, Cloud Run, Cloud Functions, Cloud Build) ---- */

typedef struct {
  cred base;
  char *host;
  char *context; /* set when it is ADC's last resort: what was tried before it */
  double probe_started, first_answer_s; /* how long finding it took */
} md_cred;

static void md_fetch(cred *c, entry *e);

static int md_flavored(gcpr_http *req) {
  for (size_t i = 0; i < gcpr_http_header_count(req); i++) {
    const char *line = gcpr_http_header_line(req, i);
    if (strncasecmp(line, "metadata-flavor:", 16) == 0) {
      const char *v = line + 16;
      while (*v == ' ') v++;
      return strcasecmp(v, "Google") == 0;
    }
  }
  return 0;
}

static void md_answer(gcpr_http *req, void *ud) {
  entry *e = ud;
  md_cred *md = (md_cred *)e->c;
  e->req = NULL;
  char url[1024];
  snprintf(url, sizeof url, "http://%s", md->host);
  if (gcpr_http_result(req) != CURLE_OK) {
    char why[CURL_ERROR_SIZE + 64];
    snprintf(why, sizeof why, "%s", gcpr_http_error(req));
    gcpr_http_free(req);
    if (++e->attempts < METADATA_ATTEMPTS) {
      md_fetch(e->c, e);
      return;
    }
    entry_fail(e, md->context ? GCPR_EXIT_USAGE : GCPR_EXIT_FAILED,
               "%s%sthe metadata server at %s did not answer (%s; %d attempts)",
               md->context ? md->context : "", md->context ? " " : "", md->host, why,
               METADATA_ATTEMPTS);
    return;
  }
  if (!md_flavored(req)) {
    entry_fail(e, md->context ? GCPR_EXIT_USAGE : GCPR_EXIT_FAILED,
               "%s%s%s answered without 'Metadata-Flavor: Google': it is not a metadata server",
               md->context ? md->context : "", md->context ? " " : "", url);
    gcpr_http_free(req);
    return;
  }
  if (md->first_answer_s == 0) md->first_answer_s = gcpr_loop_now();
  if (e->kind == GCPR_TOKEN_ACCESS) {
    finish_json(e, req, "access_token", EXPIRES_IN, url);
  } else if (gcpr_http_status(req) == 200) {
    size_t len;
    const char *body = gcpr_http_body(req, &len);
    char *token = strndup(body, len);
    if (token) {
      char *end = token + strlen(token);
      while (end > token && (end[-1] == '\n' || end[-1] == ' ')) *--end = '\0';
      entry_done(e, token, jwt_exp(token) - (double)time(NULL));
    } else {
      entry_fail(e, GCPR_EXIT_FAILED, "out of memory");
    }
    secret_free(token);
  } else {
    char *what = what_token(e);
    entry_fail(e, GCPR_EXIT_FAILED, "getting %s from the metadata server at %s failed: HTTP %ld",
               what, md->host, gcpr_http_status(req));
    free(what);
  }
  gcpr_http_free(req);
}

static void md_fetch(cred *c, entry *e) {
  md_cred *md = (md_cred *)c;
  if (md->probe_started == 0) md->probe_started = gcpr_loop_now();
  char *arg = urlencode(e->key);
  char *url = NULL;
  if (arg && e->kind == GCPR_TOKEN_ACCESS) {
    for (char *p = arg; (p = strstr(p, "%20")); p++) memcpy(p, "%2C", 3);
    url = xprintf("http://%s/computeMetadata/v1/instance/service-accounts/default/token?scopes=%s",
                  md->host, arg);
  } else if (arg) {
    url = xprintf("http://%s/computeMetadata/v1/instance/service-accounts/default/identity?audience=%s&format=full",
                  md->host, arg);
  }
  free(arg);
  gcpr_http *req = url ? gcpr_http_new("GET", url) : NULL;
  free(url);
  if (req && gcpr_http_add_header(req, "Metadata-Flavor: Google") != 0) {
    gcpr_http_free(req);
    req = NULL;
  }
  if (req) gcpr_http_set_timeout(req, METADATA_TIMEOUT_S);
  start_step(e, req, md_answer);
}

static void md_destroy(cred *c) {
  md_cred *md = (md_cred *)c;
  free(md->host);
  free(md->context);
}

static const struct cred_vtable md_vt = {"metadata", md_fetch, md_destroy};

/* ---- impersonation: IAM Credentials on top of another credential ---- */

typedef struct {
  cred base;
  cred *source;
  char *target;
  char *delegates; /* JSON array text of "projects/-/serviceAccounts/EMAIL" */
} imp_cred;

static void imp_answer(gcpr_http *req, void *ud) {
  entry *e = ud;
  e->req = NULL;
  const char *url = gcpr_http_url(req);
  if (e->kind == GCPR_TOKEN_ACCESS) finish_json(e, req, "accessToken", EXPIRE_TIME, url);
  else finish_json(e, req, "token", JWT_EXP, url);
  gcpr_http_free(req);
}

static char *scope_array(const char *scopes) {
  cJSON *arr = cJSON_CreateArray();
  char *copy = xstrdup(scopes), *save = NULL, *text = NULL;
  if (arr && copy) {
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
      cJSON_AddItemToArray(arr, cJSON_CreateString(t));
    text = cJSON_PrintUnformatted(arr);
  }
  free(copy);
  cJSON_Delete(arr);
  return text;
}

static void imp_source_ready(void *ud, const char *token, const char *error, int code) {
  entry *e = ud;
  imp_cred *imp = (imp_cred *)e->c;
  e->inner = NULL;
  if (!token) {
    entry_fail(e, code, "impersonating %s: %s", imp->target, error);
    return;
  }
  char *body = NULL;
  if (e->kind == GCPR_TOKEN_ACCESS) {
    char *scopes = scope_array(e->key);
    if (scopes)
      body = xprintf("{\"delegates\":%s,\"scope\":%s,\"lifetime\":\"3600s\"}", imp->delegates, scopes);
    free(scopes);
  } else {
    cJSON *aud = cJSON_CreateString(e->key);
    char *a = aud ? cJSON_PrintUnformatted(aud) : NULL;
    if (a) body = xprintf("{\"audience\":%s,\"includeEmail\":true,\"delegates\":%s}", a, imp->delegates);
    free(a);
    cJSON_Delete(aud);
  }
  char *target = urlencode(imp->target);
  char *url = target ? xprintf("%s%s:%s", IAM_CREDENTIALS_URL, target,
                               e->kind == GCPR_TOKEN_ACCESS ? "generateAccessToken" : "generateIdToken")
                     : NULL;
  gcpr_http *req = body && url ? json_post(url, body, token) : NULL;
  free(target);
  free(url);
  free(body);
  start_step(e, req, imp_answer);
}

static void imp_fetch(cred *c, entry *e) {
  imp_cred *imp = (imp_cred *)c;
  entry *src = find_entry(imp->source, GCPR_TOKEN_ACCESS, CLOUD_PLATFORM);
  if (!src) {
    entry_fail(e, GCPR_EXIT_FAILED, "out of memory");
    return;
  }
  const char *token, *error;
  int code = GCPR_EXIT_FAILED;
  e->inner = entry_request(src, &token, &error, &code, imp_source_ready, e);
  if (!e->inner) imp_source_ready(e, token, error, code);
}

static void imp_destroy(cred *c) {
  imp_cred *imp = (imp_cred *)c;
  free(imp->target);
  free(imp->delegates);
}

static const struct cred_vtable imp_vt = {"impersonated_service_account", imp_fetch, imp_destroy};

/* ---- external_account: workload identity federation through STS ---- */

typedef struct {
  cred base;
  char *audience, *subject_token_type, *token_url;
  char *file, *url;
  char **headers; /* "Name: value" lines for url, NULL-terminated */
  char *field;    /* JSON field of the subject token, NULL for text */
  char *origin;   /* the file it came from, for messages */
} ext_cred;

static void ext_answer(gcpr_http *req, void *ud) {
  entry *e = ud;
  e->req = NULL;
  finish_json(e, req, "access_token", EXPIRES_IN, ((ext_cred *)e->c)->token_url);
  gcpr_http_free(req);
}

static void ext_exchange(entry *e, const char *subject) {
  ext_cred *x = (ext_cred *)e->c;
  char *aud = urlencode(x->audience), *scope = urlencode(e->key), *sub = urlencode(subject),
       *type = urlencode(x->subject_token_type);
  char *body = aud && scope && sub && type
                   ? xprintf("grant_type=%s&audience=%s&scope=%s&requested_token_type=%s"
                             "&subject_token=%s&subject_token_type=%s",
                             "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange", aud, scope,
                             "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token", sub, type)
                   : NULL;
  free(aud);
  free(scope);
  secret_free(sub);
  free(type);
  gcpr_http *req = body ? form_post(x->token_url, body) : NULL;
  secret_free(body);
  start_step(e, req, ext_answer);
}

/* The subject token from a text or JSON source; NULL with *why on failure. */
static char *ext_subject(ext_cred *x, const char *data, size_t len, const char **why) {
  if (!x->field) {
    char *s = strndup(data, len);
    if (s) {
      char *end = s + strlen(s);
      while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ')) *--end = '\0';
    }
    *why = s && *s ? NULL : "it is empty";
    if (*why) secret_free(s);
    return *why ? NULL : s;
  }
  cJSON *doc = cJSON_ParseWithLength(data, len);
  char *s = xstrdup(json_string(doc, x->field));
  secret_json_free(doc);
  *why = s ? NULL : "it is not JSON with the subject_token_field_name field";
  return s;
}

static void ext_url_answer(gcpr_http *req, void *ud) {
  entry *e = ud;
  ext_cred *x = (ext_cred *)e->c;
  e->req = NULL;
  const char *why = NULL;
  char *subject = NULL;
  if (gcpr_http_result(req) != CURLE_OK) why = gcpr_http_error(req);
  else if (gcpr_http_status(req) != 200) why = "it did not answer 200";
  else {
    size_t len;
    const char *body = gcpr_http_body(req, &len);
    subject = ext_subject(x, body, len, &why);
  }
  if (subject) ext_exchange(e, subject);
  else
    entry_fail(e, GCPR_EXIT_FAILED, "getting the subject token from %s (credential_source.url in %s) failed: %s",
               x->url, x->origin, why);
  secret_free(subject);
  gcpr_http_free(req);
}

static void ext_fetch(cred *c, entry *e) {
  ext_cred *x = (ext_cred *)c;
  if (e->kind == GCPR_TOKEN_ID) {
    entry_fail(e, GCPR_EXIT_USAGE,
               "external_account credentials (%s) get ID tokens only through a service account: "
               "add service_account_impersonation_url to the file, or impersonate one",
               x->origin);
    return;
  }
  if (x->url) {
    gcpr_http *req = gcpr_http_new("GET", x->url);
    for (char **h = x->headers; req && h && *h; h++)
      if (gcpr_http_add_header(req, *h) != 0) {
        gcpr_http_free(req);
        req = NULL;
      }
    start_step(e, req, ext_url_answer);
    return;
  }
  FILE *f = fopen(x->file, "rb");
  char buf[16384];
  size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
  int err = f ? 0 : errno;
  if (f) fclose(f);
  const char *why = NULL;
  char *subject = f ? ext_subject(x, buf, n, &why) : NULL;
  OPENSSL_cleanse(buf, sizeof buf);
  if (!subject) {
    entry_fail(e, GCPR_EXIT_USAGE, "cannot read the subject token file %s (credential_source.file in %s): %s",
               x->file, x->origin, f ? why : strerror(err));
    return;
  }
  ext_exchange(e, subject);
  secret_free(subject);
}

static void ext_destroy(cred *c) {
  ext_cred *x = (ext_cred *)c;
  free(x->audience);
  free(x->subject_token_type);
  free(x->token_url);
  free(x->file);
  free(x->url);
  for (char **h = x->headers; h && *h; h++) free(*h);
  free(x->headers);
  free(x->field);
  free(x->origin);
}

static const struct cred_vtable ext_vt = {"external_account", ext_fetch, ext_destroy};

/* ---- building creds ---- */

static cred *cred_find(const char *id) {
  for (cred *c = creds; c; c = c->next)
    if (strcmp(c->id, id) == 0) return c;
  return NULL;
}

/* Takes ownership of c (allocated by the caller with its type's size). */
static cred *cred_add(cred *c, const struct cred_vtable *vt, char *id) {
  if (!c || !id) {
    free(c);
    free(id);
    return NULL;
  }
  c->vt = vt;
  c->id = id;
  c->next = creds;
  creds = c;
  return c;
}

typedef struct {
  char *error;
  int exit_code;
} load_error;

static cred *load_fail(load_error *le, int code, char *msg) {
  if (!le->error) {
    le->error = msg ? msg : xstrdup("out of memory loading credentials");
    le->exit_code = code;
  } else {
    free(msg);
  }
  return NULL;
}

/* "https://.../serviceAccounts/EMAIL:generateAccessToken" -> EMAIL */
static char *target_of(const char *url) {
  const char *p = url ? strstr(url, "/serviceAccounts/") : NULL;
  const char *end = p ? strrchr(p, ':') : NULL;
  if (!p || !end || end <= p + 17) return NULL;
  int n = 0;
  char *raw = strndup(p + 17, (size_t)(end - p - 17));
  char *email = raw ? curl_easy_unescape(NULL, raw, 0, &n) : NULL;
  char *copy = xstrdup(email);
  curl_free(email);
  free(raw);
  return copy;
}

/* JSON array text of "projects/-/serviceAccounts/EMAIL" from a comma list or JSON list. */
static char *delegates_json(const char *comma, const cJSON *list) {
  cJSON *arr = cJSON_CreateArray();
  char *copy = comma ? xstrdup(comma) : NULL, *save = NULL, *text = NULL;
  if (!arr) return NULL;
  for (char *t = copy ? strtok_r(copy, ", ", &save) : NULL; t; t = strtok_r(NULL, ", ", &save)) {
    char *d = strncmp(t, "projects/", 9) == 0 ? xstrdup(t) : xprintf("projects/-/serviceAccounts/%s", t);
    cJSON_AddItemToArray(arr, cJSON_CreateString(d ? d : ""));
    free(d);
  }
  const cJSON *item;
  cJSON_ArrayForEach(item, list) {
    if (!cJSON_IsString(item)) continue;
    const char *t = item->valuestring;
    char *d = strncmp(t, "projects/", 9) == 0 ? xstrdup(t) : xprintf("projects/-/serviceAccounts/%s", t);
    cJSON_AddItemToArray(arr, cJSON_CreateString(d ? d : ""));
    free(d);
  }
  text = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  free(copy);
  return text;
}

static cred *imp_new(cred *source, const char *target, const char *delegates_comma,
                     const cJSON *delegates_list) {
  char *delegates = delegates_json(delegates_comma, delegates_list);
  char *id = delegates ? xprintf("%s as %s via %s", source->id, target, delegates) : NULL;
  cred *found = id ? cred_find(id) : NULL;
  if (found) {
    free(id);
    free(delegates);
    return found;
  }
  imp_cred *imp = calloc(1, sizeof *imp);
  if (imp) {
    imp->source = source;
    imp->target = xstrdup(target);
    imp->delegates = delegates;
    imp->base.email = xstrdup(target);
    imp->base.quota_project = xstrdup(source->quota_project);
    delegates = NULL;
  }
  free(delegates);
  return cred_add(&imp->base, &imp_vt, id);
}

static cred *sa_from_json(const cJSON *doc, const char *path, load_error *le) {
  const char *email = json_string(doc, "client_email");
  const char *pem = json_string(doc, "private_key");
  const char *token_uri = json_string(doc, "token_uri");
  const char *missing = !email ? "client_email" : !pem ? "private_key" : NULL;
  if (missing)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s has no '%s': download a new key with "
                             "'gcloud iam service-accounts keys create'", path, missing));
  if (!token_uri) token_uri = DEFAULT_TOKEN_URI;
  if (strncmp(token_uri, "https://", 8) != 0)
    return load_fail(le, GCPR_EXIT_USAGE, xprintf("credentials file %s: token_uri must be an https URL", path));
  EVP_PKEY *key = gcpr_pem_private_key(pem, strlen(pem));
  ERR_clear_error();
  if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
    EVP_PKEY_free(key);
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s: 'private_key' is not a PEM RSA private key "
                             "(the file may be damaged or truncated)", path));
  }
  sa_cred *sa = calloc(1, sizeof *sa);
  if (!sa) {
    EVP_PKEY_free(key);
    return load_fail(le, GCPR_EXIT_FAILED, NULL);
  }
  sa->key = key;
  sa->issuer = xstrdup(email);
  sa->kid = xstrdup(json_string(doc, "private_key_id"));
  sa->token_uri = xstrdup(token_uri);
  sa->base.email = xstrdup(email);
  sa->base.quota_project = xstrdup(json_string(doc, "quota_project_id"));
  return cred_add(&sa->base, &sa_vt, xprintf("%s", email));
}

static cred *user_from_json(const cJSON *doc, const char *path, load_error *le) {
  const char *fields[] = {"client_id", "client_secret", "refresh_token"};
  for (int i = 0; i < 3; i++)
    if (!json_string(doc, fields[i]))
      return load_fail(le, GCPR_EXIT_USAGE,
                       xprintf("credentials file %s has no '%s': run 'gcloud auth "
                               "application-default login' again", path, fields[i]));
  const char *token_uri = json_string(doc, "token_uri");
  user_cred *u = calloc(1, sizeof *u);
  if (!u) return load_fail(le, GCPR_EXIT_FAILED, NULL);
  u->client_id = xstrdup(json_string(doc, "client_id"));
  u->client_secret = xstrdup(json_string(doc, "client_secret"));
  u->refresh_token = xstrdup(json_string(doc, "refresh_token"));
  u->token_uri = xstrdup(token_uri ? token_uri : DEFAULT_TOKEN_URI);
  u->base.quota_project = xstrdup(json_string(doc, "quota_project_id"));
  return cred_add(&u->base, &user_vt, xprintf("user credentials (client %s)", u->client_id));
}

static cred *ext_from_json(const cJSON *doc, const char *path, load_error *le) {
  const char *audience = json_string(doc, "audience");
  const char *type = json_string(doc, "subject_token_type");
  const char *token_url = json_string(doc, "token_url");
  const cJSON *src = cJSON_GetObjectItemCaseSensitive(doc, "credential_source");
  const char *missing = !audience ? "audience" : !type ? "subject_token_type"
                        : !token_url ? "token_url" : !cJSON_IsObject(src) ? "credential_source" : NULL;
  if (missing)
    return load_fail(le, GCPR_EXIT_USAGE, xprintf("credentials file %s has no '%s'", path, missing));
  const char *file = json_string(src, "file"), *url = json_string(src, "url");
  if (!file && !url)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s: credential_source must have 'file' or 'url' "
                             "(executable and AWS sources are not supported)", path));
  const cJSON *format = cJSON_GetObjectItemCaseSensitive(src, "format");
  const char *ftype = json_string(format, "type");
  const char *field = json_string(format, "subject_token_field_name");
  if (ftype && strcmp(ftype, "json") == 0 && !field)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s: format type json needs subject_token_field_name", path));
  ext_cred *x = calloc(1, sizeof *x);
  if (!x) return load_fail(le, GCPR_EXIT_FAILED, NULL);
  x->audience = xstrdup(audience);
  x->subject_token_type = xstrdup(type);
  x->token_url = xstrdup(token_url);
  x->file = xstrdup(file);
  x->url = xstrdup(url);
  x->field = ftype && strcmp(ftype, "json") == 0 ? xstrdup(field) : NULL;
  x->origin = xstrdup(path);
  const cJSON *headers = cJSON_GetObjectItemCaseSensitive(src, "headers");
  x->headers = calloc((size_t)cJSON_GetArraySize(headers) + 1, sizeof *x->headers);
  int n = 0;
  const cJSON *h;
  cJSON_ArrayForEach(h, headers) {
    if (cJSON_IsString(h) && x->headers) x->headers[n++] = xprintf("%s: %s", h->string, h->valuestring);
  }
  x->base.quota_project = xstrdup(json_string(doc, "quota_project_id"));
  cred *c = cred_add(&x->base, &ext_vt, xprintf("federated identity (%s)", audience));
  const char *imp_url = json_string(doc, "service_account_impersonation_url");
  if (!c || !imp_url) return c;
  char *target = target_of(imp_url);
  if (!target)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s: cannot read the service account from "
                             "service_account_impersonation_url", path));
  cred *imp = imp_new(c, target, NULL, NULL);
  free(target);
  return imp ? imp : load_fail(le, GCPR_EXIT_FAILED, NULL);
}

static cred *cred_from_json(const cJSON *doc, const char *path, load_error *le, int nested);

static cred *imp_from_json(const cJSON *doc, const char *path, load_error *le) {
  const cJSON *src = cJSON_GetObjectItemCaseSensitive(doc, "source_credentials");
  const char *url = json_string(doc, "service_account_impersonation_url");
  if (!cJSON_IsObject(src) || !url)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s needs 'source_credentials' and "
                             "'service_account_impersonation_url'", path));
  cred *source = cred_from_json(src, path, le, 1);
  if (!source) return NULL;
  char *target = target_of(url);
  if (!target)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("credentials file %s: cannot read the service account from "
                             "service_account_impersonation_url", path));
  cred *c = imp_new(source, target, NULL, cJSON_GetObjectItemCaseSensitive(doc, "delegates"));
  free(target);
  if (c && !c->quota_project) c->quota_project = xstrdup(json_string(doc, "quota_project_id"));
  return c ? c : load_fail(le, GCPR_EXIT_FAILED, NULL);
}

static cred *cred_from_json(const cJSON *doc, const char *path, load_error *le, int nested) {
  const char *type = json_string(doc, "type");
  if (!type)
    return load_fail(le, GCPR_EXIT_USAGE, xprintf("credentials file %s has no 'type' field", path));
  if (strcmp(type, "service_account") == 0) return sa_from_json(doc, path, le);
  if (strcmp(type, "authorized_user") == 0) return user_from_json(doc, path, le);
  if (strcmp(type, "external_account") == 0) return ext_from_json(doc, path, le);
  if (!nested && strcmp(type, "impersonated_service_account") == 0) return imp_from_json(doc, path, le);
  return load_fail(le, GCPR_EXIT_USAGE,
                   xprintf("credentials file %s has type '%s', which gcpr does not support "
                           "(supported: service_account, authorized_user, "
                           "impersonated_service_account, external_account)", path, type));
}

static int holds_secrets(const cJSON *doc) {
  const char *type = json_string(doc, "type");
  return type && strcmp(type, "external_account") != 0;
}

static cred *load_file(const char *path, const char *origin, load_error *le) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return load_fail(le, GCPR_EXIT_USAGE,
                     xprintf("cannot read credentials file %s (%s): %s", path, origin, strerror(errno)));
  struct stat st;
  int mode_ok = fstat(fileno(f), &st) == 0;
  char *buf = malloc(MAX_CRED_FILE_BYTES + 1);
  size_t n = buf && mode_ok && S_ISREG(st.st_mode) ? fread(buf, 1, MAX_CRED_FILE_BYTES + 1, f) : 0;
  int read_errno = ferror(f) ? errno : (!S_ISREG(st.st_mode) ? EISDIR : 0);
  fclose(f);
  if (!buf) return load_fail(le, GCPR_EXIT_FAILED, NULL);
  cJSON *doc = NULL;
  cred *c = NULL;
  if (!mode_ok || read_errno) {
    load_fail(le, GCPR_EXIT_USAGE, xprintf("cannot read credentials file %s (%s): %s", path, origin,
                                           strerror(read_errno ? read_errno : errno)));
  } else if (n > MAX_CRED_FILE_BYTES) {
    load_fail(le, GCPR_EXIT_USAGE, xprintf("credentials file %s is larger than 64 KiB: it is not a credentials file", path));
  } else if (!(doc = cJSON_ParseWithLength(buf, n)) || !cJSON_IsObject(doc)) {
    load_fail(le, GCPR_EXIT_USAGE,
              xprintf("credentials file %s is not a JSON key file (expected the JSON that gcloud "
                      "writes for a key, a login or a workload identity configuration)", path));
  } else if (holds_secrets(doc) && (st.st_mode & 077) && !getenv("GCPR_ALLOW_SHARED_CREDENTIALS")) {
    load_fail(le, GCPR_EXIT_USAGE,
              xprintf("credentials file %s can be read by group or others (mode %04o): run "
                      "'chmod 600 %s', or set GCPR_ALLOW_SHARED_CREDENTIALS=1 if it is shared on purpose",
                      path, (unsigned)(st.st_mode & 07777), path));
  } else {
    c = cred_from_json(doc, path, le, 0);
  }
  secret_json_free(doc);
  OPENSSL_cleanse(buf, n < MAX_CRED_FILE_BYTES + 1 ? n : MAX_CRED_FILE_BYTES + 1);
  free(buf);
  return c;
}

static int metadata_skipped(const char **why) {
  const char *v = getenv("GCPR_NO_METADATA");
  if (v && *v && strcmp(v, "0") != 0) return *why = "GCPR_NO_METADATA", 1;
  v = getenv("NO_GCE_CHECK");
  if (v && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)) return *why = "NO_GCE_CHECK", 1;
  return 0;
}

static void adc_load(void) {
  if (adc.loaded) return;
  adc.loaded = 1;
  double t0 = gcpr_loop_now();
  load_error le = {NULL, 0};
  const char *gac = getenv("GOOGLE_APPLICATION_CREDENTIALS");
  char well_known[4096] = "";
  const char *cfg = getenv("CLOUDSDK_CONFIG"), *home = getenv("HOME");
  if (cfg && *cfg) snprintf(well_known, sizeof well_known, "%s/application_default_credentials.json", cfg);
  else if (home && *home)
    snprintf(well_known, sizeof well_known, "%s/.config/gcloud/application_default_credentials.json", home);
  const char *skip;
  if (gac && *gac) {
    adc.why = xprintf("GOOGLE_APPLICATION_CREDENTIALS is set to %s", gac);
    adc.cred = load_file(gac, "from GOOGLE_APPLICATION_CREDENTIALS", &le);
  } else if (well_known[0] && access(well_known, F_OK) == 0) {
    adc.why = xprintf("GOOGLE_APPLICATION_CREDENTIALS is not set; gcloud's application default "
                      "credentials file %s exists", well_known);
    adc.cred = load_file(well_known, "gcloud's application default credentials", &le);
  } else if (!metadata_skipped(&skip)) {
    const char *host = getenv("GCE_METADATA_HOST");
    if (!host || !*host) host = getenv("GCE_METADATA_IP");
    if (!host || !*host) host = "metadata.google.internal";
    adc.why = xprintf("GOOGLE_APPLICATION_CREDENTIALS is not set and there is no gcloud file %s: "
                      "using the metadata server at %s", well_known[0] ? well_known : "(HOME unset)", host);
    md_cred *md = calloc(1, sizeof *md);
    if (md) {
      md->host = xstrdup(host);
      md->context = xprintf("no credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, "
                            "there is no %s (run 'gcloud auth application-default login'), and",
                            well_known[0] ? well_known : "gcloud ADC file (HOME is unset)");
    }
    adc.cred = cred_add(&md->base, &md_vt, xprintf("the metadata server's default service account"));
    if (!adc.cred) load_fail(&le, GCPR_EXIT_FAILED, NULL);
  } else {
    load_fail(&le, GCPR_EXIT_USAGE,
              xprintf("no credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, there is "
                      "no %s (run 'gcloud auth application-default login'), and the metadata "
                      "server is skipped (%s is set)",
                      well_known[0] ? well_known : "gcloud ADC file (HOME is unset)", skip));
  }
  adc.error = le.error;
  adc.exit_code = le.exit_code;
  adc.detect_s = gcpr_loop_now() - t0;
}

/* The cred a spec asks for: ADC, then a subject (domain-wide delegation), then
 * impersonation on top. */
static cred *cred_for(const gcpr_token_spec *spec, const char **error, int *code) {
  adc_load();
  if (adc.error) {
    *error = adc.error;
    *code = adc.exit_code;
    return NULL;
  }
  cred *c = adc.cred;
  if (spec->subject && *spec->subject) {
    if (c->vt != &sa_vt) {
      *error = "a subject (domain-wide delegation) needs service-account key credentials";
      *code = GCPR_EXIT_USAGE;
      return NULL;
    }
    char *id = xprintf("%s as user %s", c->id, spec->subject);
    cred *found = id ? cred_find(id) : NULL;
    if (found) {
      free(id);
      c = found;
    } else {
      sa_cred *base = (sa_cred *)c, *sa = calloc(1, sizeof *sa);
      if (sa && EVP_PKEY_up_ref(base->key) == 1) {
        sa->key = base->key;
        sa->issuer = xstrdup(base->issuer);
        sa->kid = xstrdup(base->kid);
        sa->token_uri = xstrdup(base->token_uri);
        sa->subject = xstrdup(spec->subject);
        sa->base.email = xstrdup(spec->subject);
        sa->base.quota_project = xstrdup(c->quota_project);
      } else {
        free(sa);
        sa = NULL;
      }
      c = cred_add(sa ? &sa->base : NULL, &sa_vt, id);
    }
  }
  if (c && spec->impersonate && *spec->impersonate)
    c = imp_new(c, spec->impersonate, spec->delegates, NULL);
  if (!c) {
    *error = "out of memory";
    *code = GCPR_EXIT_FAILED;
  }
  return c;
}

/* Sorted, space-separated, so "a b" and "b,a" share one token. */
static char *normalize_scopes(const char *scopes) {
  char *copy = xstrdup(scopes && *scopes ? scopes : CLOUD_PLATFORM);
  if (!copy) return NULL;
  char *items[64];
  int n = 0;
  for (char *save = NULL, *t = strtok_r(copy, " ,\t\n", &save); t && n < 64;
       t = strtok_r(NULL, " ,\t\n", &save))
    items[n++] = t;
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
      char *t = items[j];
      items[j] = items[j - 1];
      items[j - 1] = t;
    }
  size_t len = 1;
  for (int i = 0; i < n; i++) len += strlen(items[i]) + 1;
  char *out = malloc(len);
  if (out) {
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
      if (i > 0 && strcmp(items[i], items[i - 1]) == 0) continue;
      if (out[0]) strcat(out, " ");
      strcat(out, items[i]);
    }
  }
  free(copy);
  return out;
}

static entry *entry_for(const gcpr_token_spec *spec, const char **error, int *code) {
  cred *c = cred_for(spec, error, code);
  if (!c) return NULL;
  entry *e = NULL;
  if (spec->kind == GCPR_TOKEN_ACCESS) {
    char *key = normalize_scopes(spec->scopes);
    e = key ? find_entry(c, GCPR_TOKEN_ACCESS, key) : NULL;
    free(key);
  } else {
    const char *aud = spec->audience;
    if ((!aud || !*aud) && c->vt == &user_vt) aud = ((user_cred *)c)->client_id;
    if (!aud || !*aud) {
      *error = "an ID token needs an audience";
      *code = GCPR_EXIT_USAGE;
      return NULL;
    }
    e = find_entry(c, GCPR_TOKEN_ID, aud);
  }
  if (!e) {
    *error = "out of memory";
    *code = GCPR_EXIT_FAILED;
  }
  return e;
}

gcpr_token_req *gcpr_auth_token(const gcpr_token_spec *spec, const char **token,
                                const char **error, int *exit_code, gcpr_token_cb cb, void *ud) {
  *token = NULL;
  *error = NULL;
  entry *e = entry_for(spec, error, exit_code);
  if (!e) return NULL;
  return entry_request(e, token, error, exit_code, cb, ud);
}

void gcpr_auth_invalidate(const gcpr_token_spec *spec, const char *token) {
  const char *error;
  int code;
  entry *e = entry_for(spec, &error, &code);
  if (e && e->token && token && strcmp(e->token, token) == 0 && !e->fetching) {
    secret_free(e->token);
    e->token = NULL;
  }
}

const char *gcpr_auth_quota_project(void) {
  static const char *env;
  static int read;
  if (!read) env = getenv("GOOGLE_CLOUD_QUOTA_PROJECT"), read = 1;
  if (env && *env) return env;
  adc_load();
  return adc.cred ? adc.cred->quota_project : NULL;
}

void gcpr_auth_cleanup(void) {
  for (entry *e = entries; e; e = e->next)
    if (e->inner) {
      gcpr_auth_cancel(e->inner);
      e->inner = NULL;
    }
  while (entries) {
    entry *e = entries;
    entries = e->next;
    gcpr_http_free(e->req);
    while (e->waiters) gcpr_auth_cancel(e->waiters);
    secret_free(e->token);
    free(e->last_error);
    free(e->key);
    free(e);
  }
  while (creds) {
    cred *c = creds;
    creds = c->next;
    c->vt->destroy(c);
    free(c->id);
    free(c->email);
    free(c->quota_project);
    free(c);
  }
  free(adc.error);
  free(adc.why);
  memset(&adc, 0, sizeof adc);
}

/* ---- Lua: core.token(spec) -> token | nil, err; core.auth_info(spec) -> table ---- */

/* Reads a token spec from the table at idx; the strings stay owned by the table. */
static void spec_from_table(lua_State *L, int idx, gcpr_token_spec *spec) {
  memset(spec, 0, sizeof *spec);
  static const char *const fields[] = {"scopes", "audience", "impersonate", "delegates", "subject"};
  const char **slots[] = {&spec->scopes, &spec->audience, &spec->impersonate, &spec->delegates,
                          &spec->subject};
  for (int i = 0; i < 5; i++) {
    lua_getfield(L, idx, fields[i]);
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
      luaL_error(L, "token option '%s' must be a string", fields[i]);
    *slots[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  lua_getfield(L, idx, "kind");
  const char *kind = lua_tostring(L, -1);
  spec->kind = kind && strcmp(kind, "id") == 0 ? GCPR_TOKEN_ID : GCPR_TOKEN_ACCESS;
  lua_pop(L, 1);
}

typedef struct {
  gcpr_op op;
  gcpr_token_req *req;
  char *token, *error;
  int exit_code;
} token_op;

static void token_op_cancel(gcpr_op *op) {
  token_op *t = (token_op *)op;
  if (t->req) gcpr_auth_cancel(t->req);
  t->req = NULL;
}

static void token_op_destroy(gcpr_op *op) {
  token_op *t = (token_op *)op;
  secret_free(t->token);
  free(t->error);
  free(t);
}

static int token_op_push(lua_State *L, gcpr_op *op) {
  token_op *t = (token_op *)op;
  if (t->token) {
    lua_pushstring(L, t->token);
    return 1;
  }
  lua_pushnil(L);
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "auth");
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, t->error ? t->error : "out of memory");
  lua_setfield(L, -2, "message");
  lua_pushinteger(L, t->exit_code);
  lua_setfield(L, -2, "exit");
  return 2;
}

static void token_op_describe(gcpr_op *op, char *buf, size_t n) {
  (void)op;
  snprintf(buf, n, "a token");
}

static const struct gcpr_op_vtable token_vt = {"token", token_op_describe, token_op_cancel,
                                               token_op_push, token_op_destroy};

static void token_op_ready(void *ud, const char *token, const char *error, int exit_code) {
  token_op *t = ud;
  t->req = NULL;
  t->token = xstrdup(token);
  t->error = xstrdup(error);
  t->exit_code = exit_code;
  gcpr_op_done(&t->op);
}

static int l_token(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  gcpr_token_spec spec;
  spec_from_table(L, 1, &spec);
  gcpr_task_check(L, "gcp.token");
  token_op *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "out of memory");
  t->op.vt = &token_vt;
  const char *token, *error;
  t->exit_code = GCPR_EXIT_FAILED;
  t->req = gcpr_auth_token(&spec, &token, &error, &t->exit_code, token_op_ready, t);
  if (!t->req) token_op_ready(t, token, error, t->exit_code);
  return gcpr_op_yield(L, &t->op);
}

static void set_string(lua_State *L, const char *field, const char *value) {
  if (!value) return;
  lua_pushstring(L, value);
  lua_setfield(L, -2, field);
}

/* What `gcpr auth info` shows: which source won and why, the principal, the cached token's
 * expiry. Never a secret. Call after core.token so the token's facts are known. */
static int l_auth_info(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  gcpr_token_spec spec;
  spec_from_table(L, 1, &spec);
  const char *error;
  int code;
  entry *e = entry_for(&spec, &error, &code);
  lua_newtable(L);
  set_string(L, "why", adc.why);
  double detect_s = adc.detect_s;
  if (adc.cred && adc.cred->vt == &md_vt && ((md_cred *)adc.cred)->first_answer_s > 0)
    detect_s += ((md_cred *)adc.cred)->first_answer_s - ((md_cred *)adc.cred)->probe_started;
  lua_pushnumber(L, detect_s);
  lua_setfield(L, -2, "detect_s");
  if (!e) {
    set_string(L, "error", error);
    return 1;
  }
  cred *c = e->c;
  set_string(L, "type", c->vt->type);
  set_string(L, "principal", who(c));
  set_string(L, "email", c->email);
  set_string(L, "quota_project", gcpr_auth_quota_project());
  set_string(L, e->kind == GCPR_TOKEN_ACCESS ? "scopes" : "audience", e->key);
  if (c->vt == &imp_vt) set_string(L, "source_principal", who(((imp_cred *)c)->source));
  if (adc.cred && adc.cred->vt == &md_vt) {
    md_cred *md = (md_cred *)adc.cred;
    set_string(L, "metadata_host", md->host);
  }
  if (e->token) {
    lua_pushnumber(L, e->expires_at - gcpr_loop_now());
    lua_setfield(L, -2, "expires_in");
  }
  return 1;
}

static const luaL_Reg auth_funcs[] = {{"token", l_token}, {"auth_info", l_auth_info}, {NULL, NULL}};

int gcpr_open_auth(lua_State *L) {
  luaL_setfuncs(L, auth_funcs, 0);
  return 0;
}

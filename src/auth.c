/* auth.c: credentials and the access-token cache. Today's source is a service-account key
 * named by GOOGLE_APPLICATION_CREDENTIALS: its private key is parsed here and never leaves
 * C; a token is the JWT bearer grant (RFC 7523) signed RS256 and sent to the key's own
 * token_uri. Tokens are cached per (principal, scopes), refreshed ahead of expiry, and a
 * refresh is single-flight: every caller that needs it waits on the one request. */
#define _POSIX_C_SOURCE 200809L
#include "auth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "http.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"
#include "task.h"

#define MAX_KEY_FILE_BYTES (64 * 1024)
/* google-auth refreshes this long before expiry (3 min 45 s). */
#define REFRESH_MARGIN_S 225.0
#define DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"

typedef struct {
  int loaded;
  char *error;
  int exit_code;
  char *path, *email, *kid, *token_uri;
  EVP_PKEY *key;
} credentials;

typedef struct cache_entry cache_entry;

struct gcpr_token_req {
  cache_entry *entry;
  gcpr_token_cb cb;
  void *ud;
  gcpr_token_req *prev, *next;
};

struct cache_entry {
  char *scopes;
  char *token;
  double refresh_at, expires_at;
  gcpr_http *refresh;
  gcpr_token_req *waiters;
  cache_entry *next;
};

static credentials cred;
static cache_entry *cache;

/* ---- loading the key ---- */

static char *dupf(const char *fmt, const char *a, const char *b) {
  size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, fmt, a, b ? b : "");
  return s;
}

static void cred_fail(char *msg, int exit_code) {
  cred.error = msg ? msg : strdup("out of memory loading credentials");
  cred.exit_code = exit_code;
}

static const char *json_string(const cJSON *obj, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
  return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Wipes every string value of a parsed key file before it is freed. */
static void cleanse_json(cJSON *item) {
  for (; item; item = item->next) {
    if (cJSON_IsString(item) && item->valuestring)
      OPENSSL_cleanse(item->valuestring, strlen(item->valuestring));
    cleanse_json(item->child);
  }
}

static void load_service_account(const cJSON *doc) {
  const char *email = json_string(doc, "client_email");
  const char *pem = json_string(doc, "private_key");
  const char *kid = json_string(doc, "private_key_id");
  const char *token_uri = json_string(doc, "token_uri");
  const char *missing = !email ? "client_email" : !pem ? "private_key" : NULL;
  if (missing) {
    cred_fail(dupf("credentials file %s has no '%s': download a new key with "
                   "'gcloud iam service-accounts keys create'", cred.path, missing),
              GCPR_EXIT_USAGE);
    return;
  }
  if (!token_uri) token_uri = DEFAULT_TOKEN_URI;
  if (strncmp(token_uri, "https://", 8) != 0) {
    cred_fail(dupf("credentials file %s: token_uri must be an https URL%s", cred.path, NULL),
              GCPR_EXIT_USAGE);
    return;
  }
  cred.key = gcpr_pem_private_key(pem, strlen(pem));
  ERR_clear_error();
  if (!cred.key || EVP_PKEY_get_base_id(cred.key) != EVP_PKEY_RSA) {
    cred_fail(dupf("credentials file %s: 'private_key' is not a PEM RSA private key "
                   "(the file may be damaged or truncated)%s", cred.path, NULL),
              GCPR_EXIT_USAGE);
    return;
  }
  cred.email = strdup(email);
  cred.kid = kid ? strdup(kid) : NULL;
  cred.token_uri = strdup(token_uri);
  if (!cred.email || !cred.token_uri || (kid && !cred.kid)) cred_fail(NULL, GCPR_EXIT_FAILED);
}

static void load_credentials(void) {
  if (cred.loaded) return;
  cred.loaded = 1;
  const char *path = getenv("GOOGLE_APPLICATION_CREDENTIALS");
  if (!path || !*path) {
    cred_fail(strdup("no credentials: set GOOGLE_APPLICATION_CREDENTIALS to the path of a "
                     "service-account key file"),
              GCPR_EXIT_USAGE);
    return;
  }
  cred.path = strdup(path);
  if (!cred.path) return cred_fail(NULL, GCPR_EXIT_FAILED);
  FILE *f = fopen(path, "rb");
  if (!f) {
    cred_fail(dupf("cannot read credentials file %s (from GOOGLE_APPLICATION_CREDENTIALS): %s",
                   path, strerror(errno)),
              GCPR_EXIT_USAGE);
    return;
  }
  char *buf = malloc(MAX_KEY_FILE_BYTES + 1);
  size_t n = buf ? fread(buf, 1, MAX_KEY_FILE_BYTES + 1, f) : 0;
  int read_error = ferror(f);
  fclose(f);
  if (!buf) return cred_fail(NULL, GCPR_EXIT_FAILED);
  cJSON *doc = NULL;
  if (read_error) {
    cred_fail(dupf("cannot read credentials file %s: %s", path, strerror(errno)),
              GCPR_EXIT_USAGE);
  } else if (n > MAX_KEY_FILE_BYTES) {
    cred_fail(dupf("credentials file %s is larger than 64 KiB: it is not a key file%s", path,
                   NULL),
              GCPR_EXIT_USAGE);
  } else if (!(doc = cJSON_ParseWithLength(buf, n)) || !cJSON_IsObject(doc)) {
    cred_fail(dupf("credentials file %s is not a JSON key file (expected the JSON that "
                   "'gcloud iam service-accounts keys create' writes)%s", path, NULL),
              GCPR_EXIT_USAGE);
  } else {
    const char *type = json_string(doc, "type");
    if (!type)
      cred_fail(dupf("credentials file %s has no 'type' field%s", path, NULL), GCPR_EXIT_USAGE);
    else if (strcmp(type, "service_account") == 0)
      load_service_account(doc);
    else
      cred_fail(dupf("credentials file %s has type '%s', which gcpr does not support yet "
                     "(supported: service_account)", path, type),
                GCPR_EXIT_USAGE);
  }
  if (doc) {
    cleanse_json(doc);
    cJSON_Delete(doc);
  }
  OPENSSL_cleanse(buf, n < MAX_KEY_FILE_BYTES + 1 ? n : MAX_KEY_FILE_BYTES + 1);
  free(buf);
}

/* ---- the cache ---- */

/* Sorted, space-separated, so "a b" and "b,a" share one token. */
static char *normalize_scopes(const char *scopes) {
  char *copy = strdup(scopes);
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
  char *out = malloc(strlen(scopes) + 1);
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

static cache_entry *find_entry(const char *scopes) {
  for (cache_entry *e = cache; e; e = e->next)
    if (strcmp(e->scopes, scopes) == 0) return e;
  cache_entry *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->scopes = strdup(scopes);
  if (!e->scopes) {
    free(e);
    return NULL;
  }
  e->next = cache;
  cache = e;
  return e;
}

static void drop_token(cache_entry *e) {
  if (e->token) {
    OPENSSL_cleanse(e->token, strlen(e->token));
    free(e->token);
  }
  e->token = NULL;
}

static void notify_waiters(cache_entry *e, const char *token, const char *error, int code) {
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

static void token_response(gcpr_http *req, void *ud) {
  cache_entry *e = ud;
  char msg[1024];
  const char *error = NULL;
  size_t len;
  const char *body = gcpr_http_body(req, &len);
  cJSON *doc = gcpr_http_result(req) == CURLE_OK ? cJSON_ParseWithLength(body, len) : NULL;
  long status = gcpr_http_status(req);
  if (gcpr_http_result(req) != CURLE_OK) {
    snprintf(msg, sizeof msg, "getting an access token for %s from %s failed: %s", cred.email,
             cred.token_uri, gcpr_http_error(req));
    error = msg;
  } else if (status != 200 || !json_string(doc, "access_token")) {
    const char *code = json_string(doc, "error");
    const char *desc = json_string(doc, "error_description");
    snprintf(msg, sizeof msg, "getting an access token for %s from %s failed: HTTP %ld%s%s%s%s",
             cred.email, cred.token_uri, status, code ? ": " : "", code ? code : "",
             desc ? ": " : "", desc ? desc : "");
    error = msg;
  } else {
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(doc, "expires_in");
    double lifetime = cJSON_IsNumber(exp) && exp->valuedouble > 0 ? exp->valuedouble : 3600;
    double margin = lifetime / 4 < REFRESH_MARGIN_S ? lifetime / 4 : REFRESH_MARGIN_S;
    drop_token(e);
    e->token = strdup(json_string(doc, "access_token"));
    e->expires_at = gcpr_loop_now() + lifetime;
    e->refresh_at = e->expires_at - margin;
    if (!e->token) error = "out of memory storing a token";
  }
  if (doc) {
    cleanse_json(doc);
    cJSON_Delete(doc);
  }
  e->refresh = NULL;
  gcpr_http_free(req);
  notify_waiters(e, error ? NULL : e->token, error, GCPR_EXIT_FAILED);
}

static char *make_assertion(const char *scopes, const char **err) {
  time_t now = time(NULL);
  cJSON *header = cJSON_CreateObject(), *claims = cJSON_CreateObject();
  char *h = NULL, *c = NULL, *jwt = NULL;
  *err = "out of memory";
  if (header && claims && cJSON_AddStringToObject(header, "alg", "RS256") &&
      cJSON_AddStringToObject(header, "typ", "JWT") &&
      (!cred.kid || cJSON_AddStringToObject(header, "kid", cred.kid)) &&
      cJSON_AddStringToObject(claims, "iss", cred.email) &&
      cJSON_AddStringToObject(claims, "scope", scopes) &&
      cJSON_AddStringToObject(claims, "aud", cred.token_uri) &&
      cJSON_AddNumberToObject(claims, "iat", (double)now) &&
      cJSON_AddNumberToObject(claims, "exp", (double)now + 3600) &&
      (h = cJSON_PrintUnformatted(header)) && (c = cJSON_PrintUnformatted(claims)))
    jwt = gcpr_jwt_sign_rs256(cred.key, h, c, err);
  cJSON_Delete(header);
  cJSON_Delete(claims);
  free(h);
  free(c);
  return jwt;
}

static int start_refresh(cache_entry *e, const char **err) {
  char *jwt = make_assertion(e->scopes, err);
  if (!jwt) return -1;
  static const char prefix[] =
      "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
  size_t n = sizeof prefix - 1 + strlen(jwt);
  char *body = malloc(n + 1);
  gcpr_http *req = gcpr_http_new("POST", cred.token_uri);
  int rc = -1;
  *err = "out of memory";
  if (body && req) {
    memcpy(body, prefix, sizeof prefix - 1);
    memcpy(body + sizeof prefix - 1, jwt, strlen(jwt) + 1);
    if (gcpr_http_set_body(req, body, n) == 0 &&
        gcpr_http_add_header(req, "Content-Type: application/x-www-form-urlencoded") == 0 &&
        gcpr_http_start(req, token_response, e) == 0) {
      e->refresh = req;
      rc = 0;
    }
  }
  if (body) OPENSSL_cleanse(body, n);
  OPENSSL_cleanse(jwt, strlen(jwt));
  free(body);
  free(jwt);
  if (rc != 0) gcpr_http_free(req);
  return rc;
}

gcpr_token_req *gcpr_auth_access_token(const char *scopes, const char **token,
                                       const char **error, int *exit_code, gcpr_token_cb cb,
                                       void *ud) {
  *token = NULL;
  *error = NULL;
  load_credentials();
  if (cred.error) {
    *error = cred.error;
    *exit_code = cred.exit_code;
    return NULL;
  }
  char *key = normalize_scopes(scopes);
  cache_entry *e = key && key[0] ? find_entry(key) : NULL;
  free(key);
  *exit_code = GCPR_EXIT_FAILED;
  if (!e) {
    *error = "no scopes given, or out of memory";
    return NULL;
  }
  if (e->token && gcpr_loop_now() < e->refresh_at) {
    *token = e->token;
    return NULL;
  }
  gcpr_token_req *w = calloc(1, sizeof *w);
  if (!w) {
    *error = "out of memory";
    return NULL;
  }
  if (!e->refresh && start_refresh(e, error) != 0) {
    free(w);
    return NULL;
  }
  w->entry = e;
  w->cb = cb;
  w->ud = ud;
  w->next = e->waiters;
  if (e->waiters) e->waiters->prev = w;
  e->waiters = w;
  return w;
}

void gcpr_auth_cancel(gcpr_token_req *w) {
  cache_entry *e = w->entry;
  if (w->prev) w->prev->next = w->next;
  else e->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  free(w);
  /* The token request itself goes on: the next caller will want the token anyway. */
}

void gcpr_auth_cleanup(void) {
  while (cache) {
    cache_entry *e = cache;
    cache = e->next;
    if (e->refresh) gcpr_http_free(e->refresh);
    while (e->waiters) gcpr_auth_cancel(e->waiters);
    drop_token(e);
    free(e->scopes);
    free(e);
  }
  EVP_PKEY_free(cred.key);
  free(cred.error);
  free(cred.path);
  free(cred.email);
  free(cred.kid);
  free(cred.token_uri);
  memset(&cred, 0, sizeof cred);
}

/* ---- core.token(scopes) -> token | nil, err ---- */

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
  if (t->token) OPENSSL_cleanse(t->token, strlen(t->token));
  free(t->token);
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
  snprintf(buf, n, "an access token from %s", cred.token_uri ? cred.token_uri : "?");
}

static const struct gcpr_op_vtable token_vt = {"token", token_op_describe, token_op_cancel,
                                               token_op_push, token_op_destroy};

static void token_op_ready(void *ud, const char *token, const char *error, int exit_code) {
  token_op *t = ud;
  t->req = NULL;
  t->token = token ? strdup(token) : NULL;
  t->error = error ? strdup(error) : NULL;
  t->exit_code = exit_code;
  gcpr_op_done(&t->op);
}

static int l_token(lua_State *L) {
  const char *scopes = luaL_checkstring(L, 1);
  gcpr_task_check(L, "gcp.token");
  token_op *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "out of memory");
  t->op.vt = &token_vt;
  const char *token, *error;
  t->req = gcpr_auth_access_token(scopes, &token, &error, &t->exit_code, token_op_ready, t);
  if (!t->req) token_op_ready(t, token, error, t->exit_code);
  return gcpr_op_yield(L, &t->op);
}

static const luaL_Reg auth_funcs[] = {{"token", l_token}, {NULL, NULL}};

int gcpr_open_auth(lua_State *L) {
  luaL_setfuncs(L, auth_funcs, 0);
  return 0;
}

/* http.c: HTTP on the shared loop. curl multi is driven by libevent through curl's socket
 * and timer callbacks (curl's multi-event.c pattern); each transfer keeps its state in
 * CURLOPT_PRIVATE and is handed back after CURLMSG_DONE. Connections to configured host
 * suffixes can be redirected (GCPR_CONNECT_TO, via CURLOPT_CONNECT_TO, which keeps Host and
 * SNI) and TLS verified against GCPR_CA_BUNDLE: that is how tests reach gcpr-fake on the
 * production code path. core.http adds the access token (from auth.c) where it is allowed. */
#define _POSIX_C_SOURCE 200809L
#include "http.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "task.h"

#define MAX_RESPONSE_BYTES (64u << 20)
#define CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_TIMEOUT_S 60.0
#define RESPONSE_MT "gcpr.http.Response"
#define MAX_HEADERS 128

struct gcpr_http {
  CURL *easy;
  struct curl_slist *headers, *connect_to;
  char *method, *url;
  char *body;
  size_t body_len;
  char *resp;
  size_t resp_len, resp_cap;
  char *hbuf;                   /* response header lines, each NUL-terminated */
  size_t hbuf_len, hbuf_cap;
  size_t hoff[MAX_HEADERS];     /* where each line starts in hbuf */
  size_t nhdrs;
  long status;
  int has_bearer, too_large, running;
  double timeout_s, started;
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
  gcpr_http_cb cb;
  void *ud;
};

/* ---- configuration read once from the environment ---- */

typedef struct {
  char suffix[256];
  char target[300]; /* "HOST:PORT" */
} connect_rule;

static struct {
  int loaded;
  connect_rule rules[16];
  int nrules;
  char token_hosts[16][256];
  int ntoken_hosts;
  const char *ca_bundle;
} cfg;

static void load_config(void) {
  if (cfg.loaded) return;
  cfg.loaded = 1;
  cfg.ca_bundle = getenv("GCPR_CA_BUNDLE");
  const char *s = getenv("GCPR_CONNECT_TO");
  /* "suffix=host:port,suffix=host:port" */
  while (s && *s && cfg.nrules < 16) {
    const char *end = strchr(s, ',');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    const char *eq = memchr(s, '=', n);
    if (eq && eq > s && (size_t)(eq - s) < sizeof cfg.rules[0].suffix &&
        n - (size_t)(eq - s) - 1 < sizeof cfg.rules[0].target) {
      connect_rule *r = &cfg.rules[cfg.nrules++];
      memcpy(r->suffix, s, (size_t)(eq - s));
      r->suffix[eq - s] = '\0';
      memcpy(r->target, eq + 1, n - (size_t)(eq - s) - 1);
      r->target[n - (size_t)(eq - s) - 1] = '\0';
    } else {
      gcpr_log(GCPR_LOG_WARN, "GCPR_CONNECT_TO: ignoring '%.*s' (expected SUFFIX=HOST:PORT)",
               (int)n, s);
    }
    s = end ? end + 1 : NULL;
  }
  strcpy(cfg.token_hosts[cfg.ntoken_hosts++], "googleapis.com");
  s = getenv("GCPR_TOKEN_HOSTS");
  while (s && *s && cfg.ntoken_hosts < 16) {
    const char *end = strchr(s, ',');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    while (n && *s == '.') s++, n--;
    if (n > 0 && n < sizeof cfg.token_hosts[0]) {
      memcpy(cfg.token_hosts[cfg.ntoken_hosts], s, n);
      cfg.token_hosts[cfg.ntoken_hosts++][n] = '\0';
    }
    s = end ? end + 1 : NULL;
  }
}

static int host_matches(const char *host, const char *suffix) {
  size_t h = strlen(host), n = strlen(suffix);
  if (h == n) return strcasecmp(host, suffix) == 0;
  return h > n && host[h - n - 1] == '.' && strcasecmp(host + h - n, suffix) == 0;
}

/* Splits an absolute http(s) URL into scheme, host and port (defaulted from the scheme).
 * Refuses URLs with userinfo ("user@host"), whose host is easy to misread. Cheap: it runs
 * for every request. */
static int url_parts(const char *url, char *scheme, size_t sn, char *host, size_t hn,
                     long *port) {
  const char *sep = strstr(url, "://");
  if (!sep || (size_t)(sep - url) >= sn) return 0;
  memcpy(scheme, url, (size_t)(sep - url));
  scheme[sep - url] = '\0';
  const char *h = sep + 3, *end = h + strcspn(h, "/?#");
  if (memchr(h, '@', (size_t)(end - h))) return 0;
  const char *colon = NULL;
  if (*h == '[') {
    const char *close = memchr(h, ']', (size_t)(end - h));
    if (!close) return 0;
    h++;
    colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
    end = colon ? colon : close + 1;
    if ((size_t)(close - h) >= hn) return 0;
    memcpy(host, h, (size_t)(close - h));
    host[close - h] = '\0';
  } else {
    colon = memchr(h, ':', (size_t)(end - h));
    const char *hend = colon ? colon : end;
    if (hend == h || (size_t)(hend - h) >= hn) return 0;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
  }
  if (colon) {
    char *p;
    *port = strtol(colon + 1, &p, 10);
    if (p == colon + 1 || *port <= 0 || *port > 65535) return 0;
  } else {
    *port = strcasecmp(scheme, "https") == 0 ? 443 : strcasecmp(scheme, "http") == 0 ? 80 : 0;
  }
  return 1;
}

int gcpr_http_token_allowed(const char *url) {
  char scheme[16], host[256];
  long port;
  load_config();
  if (!url_parts(url, scheme, sizeof scheme, host, sizeof host, &port)) return 0;
  if (strcasecmp(scheme, "https") != 0) return 0;
  for (int i = 0; i < cfg.ntoken_hosts; i++)
    if (host_matches(host, cfg.token_hosts[i])) return 1;
  return 0;
}

/* ---- curl multi on libevent ---- */

static CURLM *multi;
static struct event *multi_timer;
static CURL *idle_easy[32];
static int nidle;

static void check_done(void) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    gcpr_http *req = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
    req->result = msg->data.result;
    curl_multi_remove_handle(multi, req->easy);
    req->running = 0;
    if (req->result == CURLE_OK)
      curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
    else if (req->too_large)
      snprintf(req->errbuf, sizeof req->errbuf, "response larger than %u MiB",
               MAX_RESPONSE_BYTES >> 20);
    else if (!req->errbuf[0])
      snprintf(req->errbuf, sizeof req->errbuf, "%s", curl_easy_strerror(req->result));
    if (gcpr_log_enabled(GCPR_LOG_DEBUG)) {
      char shown[2048];
      gcpr_log_redact_url(req->url, shown, sizeof shown);
      double ms = (gcpr_loop_now() - req->started) * 1000;
      if (req->result == CURLE_OK)
        gcpr_log(GCPR_LOG_DEBUG, "< %ld %s %s (%.1f ms, %zu bytes)", req->status, req->method,
                 shown, ms, req->resp_len);
      else
        gcpr_log(GCPR_LOG_DEBUG, "< failed %s %s (%.1f ms): %s", req->method, shown, ms,
                 req->errbuf);
    }
    req->cb(req, req->ud);
  }
}

static void socket_event(evutil_socket_t fd, short kind, void *arg) {
  (void)arg;
  int running;
  int action = (kind & EV_READ ? CURL_CSELECT_IN : 0) | (kind & EV_WRITE ? CURL_CSELECT_OUT : 0);
  curl_multi_socket_action(multi, fd, action, &running);
  check_done();
}

static void timer_event(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  (void)arg;
  int running;
  curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done();
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)easy;
  (void)userp;
  struct event *ev = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (ev) event_free(ev);
    curl_multi_assign(multi, s, NULL);
    return 0;
  }
  short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) |
                       EV_PERSIST);
  if (ev) {
    if (event_get_events(ev) == kind) return 0;
    event_del(ev);
    event_assign(ev, gcpr_loop_base(), s, kind, socket_event, NULL);
  } else {
    ev = event_new(gcpr_loop_base(), s, kind, socket_event, NULL);
    curl_multi_assign(multi, s, ev);
  }
  event_add(ev, NULL);
  return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  (void)userp;
  if (timeout_ms < 0) {
    evtimer_del(multi_timer);
  } else {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(multi_timer, &tv);
  }
  return 0;
}

static int ensure_multi(void) {
  if (multi) return 0;
  load_config();
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
  multi = curl_multi_init();
  if (!multi) return -1;
  multi_timer = evtimer_new(gcpr_loop_base(), timer_event, NULL);
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 256L);
  return 0;
}

void gcpr_http_cleanup(void) {
  while (nidle > 0) curl_easy_cleanup(idle_easy[--nidle]);
  if (multi) curl_multi_cleanup(multi);
  if (multi_timer) event_free(multi_timer);
  if (multi) curl_global_cleanup();
  multi = NULL;
  multi_timer = NULL;
}

/* ---- one request ---- */

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud) {
  gcpr_http *req = ud;
  size_t n = size * nmemb;
  if (req->resp_len + n > MAX_RESPONSE_BYTES) {
    req->too_large = 1;
    return 0;
  }
  if (req->resp_len + n + 1 > req->resp_cap) {
    size_t cap = req->resp_cap ? req->resp_cap : 4096;
    while (cap < req->resp_len + n + 1) cap *= 2;
    char *p = realloc(req->resp, cap);
    if (!p) return 0;
    req->resp = p;
    req->resp_cap = cap;
  }
  memcpy(req->resp + req->resp_len, data, n);
  req->resp_len += n;
  req->resp[req->resp_len] = '\0';
  return n;
}

static void clear_headers(gcpr_http *req) {
  req->nhdrs = 0;
  req->hbuf_len = 0;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ud) {
  gcpr_http *req = ud;
  size_t n = size * nmemb;
  /* A new status line (after 100 Continue or a redirect) starts a new header set. */
  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    clear_headers(req);
    return n;
  }
  size_t len = n;
  while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n')) len--;
  if (len == 0 || !memchr(data, ':', len) || req->nhdrs == MAX_HEADERS) return n;
  if (req->hbuf_len + len + 1 > req->hbuf_cap) {
    size_t cap = req->hbuf_cap ? req->hbuf_cap : 1024;
    while (cap < req->hbuf_len + len + 1) cap *= 2;
    char *p = realloc(req->hbuf, cap);
    if (!p) return 0;
    req->hbuf = p;
    req->hbuf_cap = cap;
  }
  memcpy(req->hbuf + req->hbuf_len, data, len);
  req->hbuf[req->hbuf_len + len] = '\0';
  req->hoff[req->nhdrs++] = req->hbuf_len;
  req->hbuf_len += len + 1;
  return n;
}

gcpr_http *gcpr_http_new(const char *method, const char *url) {
  gcpr_http *req = calloc(1, sizeof *req);
  if (!req) return NULL;
  req->method = strdup(method);
  req->url = strdup(url);
  req->timeout_s = DEFAULT_TIMEOUT_S;
  if (!req->method || !req->url) {
    gcpr_http_free(req);
    return NULL;
  }
  return req;
}

int gcpr_http_add_header(gcpr_http *req, const char *line) {
  struct curl_slist *l = curl_slist_append(req->headers, line);
  if (!l) return -1;
  req->headers = l;
  return 0;
}

int gcpr_http_set_bearer(gcpr_http *req, const char *token) {
  size_t n = strlen(token) + sizeof "Authorization: Bearer ";
  char *line = malloc(n);
  if (!line) return -1;
  snprintf(line, n, "Authorization: Bearer %s", token);
  int rc = gcpr_http_add_header(req, line);
  OPENSSL_cleanse(line, n);
  free(line);
  if (rc == 0) req->has_bearer = 1;
  return rc;
}

int gcpr_http_set_body(gcpr_http *req, const char *data, size_t len) {
  free(req->body);
  req->body = malloc(len ? len : 1);
  if (!req->body) return -1;
  memcpy(req->body, data, len);
  req->body_len = len;
  return 0;
}

void gcpr_http_set_timeout(gcpr_http *req, double seconds) { req->timeout_s = seconds; }

static int set_connect_to(gcpr_http *req) {
  char scheme[16], host[256];
  long port;
  if (cfg.nrules == 0 || !url_parts(req->url, scheme, sizeof scheme, host, sizeof host, &port))
    return 0;
  for (int i = 0; i < cfg.nrules; i++) {
    if (port != 443 || !host_matches(host, cfg.rules[i].suffix)) continue;
    char entry[600];
    snprintf(entry, sizeof entry, "%s:443:%s", host, cfg.rules[i].target);
    req->connect_to = curl_slist_append(NULL, entry);
    return req->connect_to ? 0 : -1;
  }
  return 0;
}

/* Options that are the same for every transfer, set once per easy handle: handles go back
 * to a pool without curl_easy_reset, and every per-request option is set on each start. */
static CURL *new_easy(void) {
  CURL *e = curl_easy_init();
  if (!e) return NULL;
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_USERAGENT, "gcpr/" GCPR_VERSION);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (cfg.ca_bundle) curl_easy_setopt(e, CURLOPT_CAINFO, cfg.ca_bundle);
  return e;
}

int gcpr_http_start(gcpr_http *req, gcpr_http_cb cb, void *ud) {
  if (ensure_multi() != 0) return -1;
  CURL *e = nidle > 0 ? idle_easy[--nidle] : new_easy();
  if (!e) return -1;
  req->easy = e;
  req->cb = cb;
  req->ud = ud;
  /* No "Expect: 100-continue" round trip for bodies. */
  if (gcpr_http_add_header(req, "Expect:") != 0 || set_connect_to(req) != 0) return -1;
  curl_easy_setopt(e, CURLOPT_URL, req->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, req);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_s * 1000));
  curl_easy_setopt(e, CURLOPT_CONNECT_TO, req->connect_to);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
  curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
  if (strcmp(req->method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(req->method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    if (strcmp(req->method, "POST") != 0)
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
  }
  req->started = gcpr_loop_now();
  if (gcpr_log_enabled(GCPR_LOG_DEBUG)) {
    char shown[2048];
    gcpr_log_redact_url(req->url, shown, sizeof shown);
    gcpr_log(GCPR_LOG_DEBUG, "> %s %s%s", req->method, shown,
             req->has_bearer ? " (Authorization: Bearer REDACTED)" : "");
  }
  if (curl_multi_add_handle(multi, e) != CURLM_OK) return -1;
  req->running = 1;
  return 0;
}

void gcpr_http_cancel(gcpr_http *req) {
  if (req->running) curl_multi_remove_handle(multi, req->easy);
  req->running = 0;
}

void gcpr_http_free(gcpr_http *req) {
  if (!req) return;
  gcpr_http_cancel(req);
  if (req->easy) {
    /* Nothing of this request may outlive it inside the handle. */
    curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(req->easy, CURLOPT_CONNECT_TO, NULL);
    curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, NULL);
    if (nidle < (int)(sizeof idle_easy / sizeof idle_easy[0])) idle_easy[nidle++] = req->easy;
    else curl_easy_cleanup(req->easy);
  }
  if (req->has_bearer)
    for (struct curl_slist *l = req->headers; l; l = l->next) OPENSSL_cleanse(l->data, strlen(l->data));
  curl_slist_free_all(req->headers);
  curl_slist_free_all(req->connect_to);
  clear_headers(req);
  free(req->hbuf);
  free(req->method);
  free(req->url);
  free(req->body);
  free(req->resp);
  free(req);
}

CURLcode gcpr_http_result(const gcpr_http *req) { return req->result; }
const char *gcpr_http_error(const gcpr_http *req) { return req->errbuf; }
long gcpr_http_status(const gcpr_http *req) { return req->status; }
const char *gcpr_http_body(const gcpr_http *req, size_t *len) {
  *len = req->resp_len;
  return req->resp ? req->resp : "";
}
const char *gcpr_http_method(const gcpr_http *req) { return req->method; }
const char *gcpr_http_url(const gcpr_http *req) { return req->url; }
size_t gcpr_http_header_count(const gcpr_http *req) { return req->nhdrs; }
const char *gcpr_http_header_line(const gcpr_http *req, size_t i) {
  return req->hbuf + req->hoff[i];
}

/* ---- core.http: the primitive recipes reach through gcp.http ---- */

enum http_auth { AUTH_NONE, AUTH_ACCESS, AUTH_ID };

typedef struct {
  gcpr_op op;
  gcpr_http *req;
  gcpr_token_req *token_req;
  char *method, *url, *body;
  size_t body_len;
  char **headers; /* "Name: value", NULL-terminated */
  double timeout_s;
  enum http_auth auth;
  char *scopes, *audience, *impersonate, *delegates, *subject, *quota_project;
  char *token; /* the token sent, so a 401 can invalidate exactly it */
  int retried, redirects;
  char *error;
  int exit_code;
} http_op;

static void http_op_describe(gcpr_op *op, char *buf, size_t n) {
  http_op *h = (http_op *)op;
  char shown[1024];
  gcpr_log_redact_url(h->url, shown, sizeof shown);
  snprintf(buf, n, "%s %s%s", h->method, shown, h->token_req ? " (getting a token)" : "");
}

static void http_op_cancel(gcpr_op *op) {
  http_op *h = (http_op *)op;
  if (h->token_req) gcpr_auth_cancel(h->token_req);
  h->token_req = NULL;
  if (h->req) gcpr_http_cancel(h->req);
}

static void secret_free(char *s) {
  if (s) OPENSSL_cleanse(s, strlen(s));
  free(s);
}

static void http_op_destroy(gcpr_op *op) {
  http_op *h = (http_op *)op;
  gcpr_http_free(h->req);
  for (char **p = h->headers; p && *p; p++) free(*p);
  free(h->headers);
  free(h->method);
  free(h->url);
  free(h->body);
  free(h->scopes);
  free(h->audience);
  free(h->impersonate);
  free(h->delegates);
  free(h->subject);
  free(h->quota_project);
  secret_free(h->token);
  free(h->error);
  free(h);
}

static void push_error(lua_State *L, const char *kind, const char *msg, int exit_code) {
  lua_pushnil(L);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_pushinteger(L, exit_code);
  lua_setfield(L, -2, "exit");
}

static int http_op_push(lua_State *L, gcpr_op *op) {
  http_op *h = (http_op *)op;
  gcpr_http *req = h->req;
  if (h->error) {
    push_error(L, "auth", h->error, h->exit_code);
    return 2;
  }
  if (req->result != CURLE_OK) {
    push_error(L, "network", req->errbuf, GCPR_EXIT_FAILED);
    lua_pushinteger(L, req->result);
    lua_setfield(L, -2, "curl_code");
    return 2;
  }
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, req->status);
  lua_setfield(L, -2, "status");
  lua_createtable(L, 0, (int)req->nhdrs);
  const char *ctype = NULL;
  for (size_t i = 0; i < req->nhdrs; i++) {
    const char *line = gcpr_http_header_line(req, i);
    const char *colon = strchr(line, ':');
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    char name[128];
    size_t n = (size_t)(colon - line);
    if (n >= sizeof name) continue;
    for (size_t k = 0; k < n; k++) name[k] = (char)(line[k] >= 'A' && line[k] <= 'Z' ? line[k] + 32 : line[k]);
    name[n] = '\0';
    if (strcmp(name, "content-type") == 0) ctype = v;
    /* Repeated headers are joined with ", " as RFC 9110 allows. */
    if (lua_getfield(L, -1, name) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushstring(L, v);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, v);
    }
    lua_setfield(L, -2, name);
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, req->resp ? req->resp : "", req->resp_len);
  lua_setfield(L, -2, "body");
  /* JSON is decoded the first time res.json is read: many calls never look at it. */
  if (req->resp_len > 0 && ctype && strstr(ctype, "json")) {
    luaL_setmetatable(L, RESPONSE_MT);
  }
  return 1;
}

/* __index of a JSON response: decodes body into json (or json_error) on first use. */
static int response_index(lua_State *L) {
  const char *key = lua_tostring(L, 2);
  if (!key || (strcmp(key, "json") != 0 && strcmp(key, "json_error") != 0)) return 0;
  lua_getfield(L, 1, "body");
  size_t len;
  const char *body = lua_tolstring(L, -1, &len);
  char err[128];
  if (body && gcpr_json_decode(L, body, len, err, sizeof err)) {
    lua_setfield(L, 1, "json");
  } else {
    lua_pushstring(L, body ? err : "no body");
    lua_setfield(L, 1, "json_error");
  }
  lua_pushnil(L);
  lua_setmetatable(L, 1);
  lua_getfield(L, 1, key);
  return 1;
}

static const struct gcpr_op_vtable http_vt = {"HTTP request", http_op_describe, http_op_cancel,
                                              http_op_push, http_op_destroy};

static void op_fail(http_op *h, const char *error, int exit_code) {
  free(h->error);
  h->error = strdup(error ? error : "cannot start the request (out of memory)");
  h->exit_code = error ? exit_code : GCPR_EXIT_FAILED;
  gcpr_op_done(&h->op);
}

static gcpr_token_spec token_spec(const http_op *h) {
  gcpr_token_spec spec = {h->auth == AUTH_ID ? GCPR_TOKEN_ID : GCPR_TOKEN_ACCESS, h->scopes,
                          h->audience, h->impersonate, h->delegates, h->subject};
  return spec;
}

static void begin(http_op *h);

/* "scheme://host:port" of url, for comparing origins. */
static int origin_of(const char *url, char *out, size_t n) {
  char scheme[16], host[256];
  long port;
  if (!url_parts(url, scheme, sizeof scheme, host, sizeof host, &port)) return 0;
  for (char *c = host; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
  snprintf(out, n, "%s://%s:%ld", scheme, host, port);
  return 1;
}

/* Follows a redirect here rather than in curl, so the new host gets the same connection
 * routing (GCPR_CONNECT_TO) and credentials are decided by us: a token goes on only to the
 * same scheme, host and port; any other origin gets the request without one. Returns 1 when
 * a new request was started. */
static int follow_redirect(http_op *h, gcpr_http *req) {
  long st = req->status;
  if (st != 301 && st != 302 && st != 303 && st != 307 && st != 308) return 0;
  const char *location = NULL;
  for (size_t i = 0; i < req->nhdrs; i++) {
    const char *line = gcpr_http_header_line(req, i);
    if (strncasecmp(line, "location:", 9) == 0) {
      location = line + 9;
      while (*location == ' ') location++;
    }
  }
  if (!location || !*location) return 0;
  if (++h->redirects > 5) return 0;
  CURLU *u = curl_url();
  char *next = NULL;
  if (u && curl_url_set(u, CURLUPART_URL, h->url, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK)
    curl_url_get(u, CURLUPART_URL, &next, 0);
  curl_url_cleanup(u);
  char from[300], to[300];
  if (!next || !origin_of(h->url, from, sizeof from) || !origin_of(next, to, sizeof to) ||
      (strncmp(next, "https://", 8) != 0 && strncmp(next, "http://", 7) != 0)) {
    curl_free(next);
    return 0;
  }
  if (strcmp(from, to) != 0) h->auth = AUTH_NONE;
  if (st == 303 || ((st == 301 || st == 302) && strcmp(h->method, "POST") == 0)) {
    free(h->method);
    h->method = strdup("GET");
    free(h->body);
    h->body = NULL;
    h->body_len = 0;
  }
  free(h->url);
  h->url = strdup(next);
  curl_free(next);
  gcpr_log(GCPR_LOG_DEBUG, "following HTTP %ld to %s%s", st, to,
           h->auth == AUTH_NONE && h->token ? " (without the token: another origin)" : "");
  secret_free(h->token);
  h->token = NULL;
  gcpr_http_free(h->req);
  h->req = NULL;
  if (!h->method || !h->url) {
    op_fail(h, NULL, 0);
    return 1;
  }
  begin(h);
  return 1;
}

static void http_done(gcpr_http *req, void *ud) {
  http_op *h = ud;
  /* An API that says 401 to a token we hold gets one new token and one retry: tokens can be
   * revoked or expire early; a second 401 is the answer. */
  if (h->token && !h->retried && req->result == CURLE_OK && req->status == 401) {
    gcpr_token_spec spec = token_spec(h);
    h->retried = 1;
    gcpr_log(GCPR_LOG_DEBUG, "401 from %s: getting a new token and retrying once", h->method);
    gcpr_auth_invalidate(&spec, h->token);
    gcpr_http_free(h->req);
    h->req = NULL;
    begin(h);
    return;
  }
  if (req->result == CURLE_OK && follow_redirect(h, req)) return;
  gcpr_op_done(&h->op);
}

static void send_with(http_op *h, const char *token) {
  gcpr_http *req = gcpr_http_new(h->method, h->url);
  int failed = !req;
  for (char **p = h->headers; !failed && p && *p; p++) failed = gcpr_http_add_header(req, *p) != 0;
  if (!failed && h->body) failed = gcpr_http_set_body(req, h->body, h->body_len) != 0;
  if (!failed && token) {
    secret_free(h->token);
    h->token = strdup(token);
    failed = !h->token || gcpr_http_set_bearer(req, token) != 0;
  }
  if (!failed && token && h->auth == AUTH_ACCESS) {
    const char *quota = h->quota_project ? h->quota_project : gcpr_auth_quota_project();
    if (quota && *quota) {
      char line[512];
      snprintf(line, sizeof line, "x-goog-user-project: %s", quota);
      failed = gcpr_http_add_header(req, line) != 0;
    }
  }
  if (!failed) {
    req->timeout_s = h->timeout_s;
  }
  h->req = req;
  if (failed || gcpr_http_start(req, http_done, h) != 0) op_fail(h, NULL, 0);
}

static void token_ready(void *ud, const char *token, const char *error, int exit_code) {
  http_op *h = ud;
  h->token_req = NULL;
  if (token) send_with(h, token);
  else op_fail(h, error, exit_code);
}

static void begin(http_op *h) {
  if (h->auth == AUTH_NONE) {
    send_with(h, NULL);
    return;
  }
  gcpr_token_spec spec = token_spec(h);
  const char *token = NULL, *error = NULL;
  int exit_code = GCPR_EXIT_FAILED;
  h->token_req = gcpr_auth_token(&spec, &token, &error, &exit_code, token_ready, h);
  if (!h->token_req) token_ready(h, token, error, exit_code);
}

static char *opt_copy(lua_State *L, int t, const char *field) {
  lua_getfield(L, t, field);
  if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
    luaL_error(L, "core.http: '%s' must be a string", field);
  const char *s = lua_tostring(L, -1);
  char *copy = s ? strdup(s) : NULL;
  lua_pop(L, 1);
  return copy;
}

static int parse_spec(lua_State *L, http_op *h, const char **auth) {
  static const char *const fields[] = {"scopes", "audience", "impersonate", "delegates",
                                       "subject", "quota_project"};
  char **slots[] = {&h->scopes, &h->audience, &h->impersonate, &h->delegates, &h->subject,
                    &h->quota_project};
  h->method = opt_copy(L, 1, "method");
  h->url = opt_copy(L, 1, "url");
  if (!h->method) h->method = strdup("GET");
  for (int i = 0; i < 6; i++) *slots[i] = opt_copy(L, 1, fields[i]);
  lua_getfield(L, 1, "timeout");
  h->timeout_s = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : DEFAULT_TIMEOUT_S;
  lua_pop(L, 1);
  lua_getfield(L, 1, "auth");
  *auth = lua_isnil(L, -1) ? "auto" : lua_tostring(L, -1);
  lua_pop(L, 1); /* the string stays referenced by the spec table */
  size_t len;
  lua_getfield(L, 1, "body");
  const char *body = lua_tolstring(L, -1, &len);
  if (body && (h->body = malloc(len ? len : 1))) {
    memcpy(h->body, body, len);
    h->body_len = len;
  }
  lua_pop(L, 1);
  int n = 0;
  if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      n++;
      lua_pop(L, 1);
    }
    h->headers = calloc((size_t)n + 1, sizeof *h->headers);
    n = 0;
    lua_pushnil(L);
    while (h->headers && lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
        if ((h->headers[n] = malloc(kl + vl + 3))) {
          snprintf(h->headers[n], kl + vl + 3, "%s: %s", k, v);
          n++;
        }
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return h->method && h->url && (!body || h->body);
}

static int pending_gc(lua_State *L) {
  http_op **box = lua_touserdata(L, 1);
  if (*box) http_op_destroy(&(*box)->op);
  *box = NULL;
  return 0;
}

/* core.http{method=, url=, headers={name=value}, body=, timeout=, auth="auto"|"access_token"|
 * "id_token"|"none", scopes=, audience=, impersonate=, delegates=, subject=, quota_project=}
 * -> response | nil, err. gcp/http.lua builds the spec and the errors. */
static int l_http(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  gcpr_task_check(L, "gcp.http");
  http_op *h = calloc(1, sizeof *h);
  if (!h) return luaL_error(L, "out of memory");
  h->op.vt = &http_vt;
  /* Held by a box until it is handed to the loop, so an error while parsing frees it. */
  http_op **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = h;
  if (luaL_newmetatable(L, "gcpr.http.Pending")) {
    lua_pushcfunction(L, pending_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  const char *auth = NULL;
  int ok = parse_spec(L, h, &auth);
  *box = NULL;
  if (!ok) {
    http_op_destroy(&h->op);
    return luaL_error(L, h->url ? "out of memory" : "core.http: 'url' is required");
  }
  const char *refusal = NULL;
  if (strcmp(auth, "none") == 0) {
    h->auth = AUTH_NONE;
  } else if (strcmp(auth, "auto") == 0) {
    h->auth = gcpr_http_token_allowed(h->url) ? AUTH_ACCESS : AUTH_NONE;
  } else if (strcmp(auth, "access_token") == 0) {
    h->auth = AUTH_ACCESS;
    if (!gcpr_http_token_allowed(h->url))
      refusal = "refusing to send an access token to %s: access tokens go only to https hosts "
                "under googleapis.com (add others to GCPR_TOKEN_HOSTS)";
  } else if (strcmp(auth, "id_token") == 0) {
    h->auth = AUTH_ID;
    if (strncasecmp(h->url, "https://", 8) != 0)
      refusal = "refusing to send an ID token to %s over plain http";
    else if (!h->audience)
      refusal = "an ID token for %s needs an audience";
  } else {
    refusal = "core.http: unknown auth for %s";
  }
  if (refusal) {
    lua_pushfstring(L, refusal, h->url);
    http_op_destroy(&h->op);
    return lua_error(L);
  }
  begin(h);
  return gcpr_op_yield(L, &h->op);
}

static int l_token_allowed(lua_State *L) {
  lua_pushboolean(L, gcpr_http_token_allowed(luaL_checkstring(L, 1)));
  return 1;
}

/* core.uuid4() -> a random RFC 4122 version 4 UUID (Compute's requestId). */
static int l_uuid4(lua_State *L) {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) return luaL_error(L, "no randomness for a UUID");
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  char id[37];
  snprintf(id, sizeof id, "%08x-%04x-%04x-%04x-%04x%08x",
                  (unsigned)b[0] << 24 | (unsigned)b[1] << 16 | (unsigned)b[2] << 8 | b[3],
                  (unsigned)b[4] << 8 | b[5], (unsigned)b[6] << 8 | b[7], (unsigned)b[8] << 8 | b[9],
                  (unsigned)b[10] << 8 | b[11],
                  (unsigned)b[12] << 24 | (unsigned)b[13] << 16 | (unsigned)b[14] << 8 | b[15]);
  lua_pushstring(L, id);
  return 1;
}

/* core.http_date(s) -> epoch seconds of an HTTP date (Retry-After), or nil. */
static int l_http_date(lua_State *L) {
  time_t t = curl_getdate(luaL_checkstring(L, 1), NULL);
  if (t < 0) return 0;
  lua_pushinteger(L, (lua_Integer)t);
  return 1;
}

static const luaL_Reg http_funcs[] = {{"http", l_http},
                                      {"token_allowed", l_token_allowed},
                                      {"uuid4", l_uuid4},
                                      {"http_date", l_http_date},
                                      {NULL, NULL}};

int gcpr_open_http(lua_State *L) {
  luaL_newmetatable(L, RESPONSE_MT);
  lua_pushcfunction(L, response_index);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, http_funcs, 0);
  return 0;
}

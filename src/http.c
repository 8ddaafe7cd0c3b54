/* http.c: HTTP on the shared loop. curl multi is driven by libevent through curl's socket
 * and timer callbacks (curl's multi-event.c pattern); each transfer keeps its state in
 * CURLOPT_PRIVATE and is handed back after CURLMSG_DONE. Connections to configured host
 * suffixes can be redirected (GCPR_CONNECT_TO, via CURLOPT_CONNECT_TO, which keeps Host and
 * SNI) and TLS verified against GCPR_CA_BUNDLE: that is how tests reach gcpr-fake on the
 * production code path. core.http adds the access token (from auth.c) where it is allowed. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "http.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <openssl/rand.h>
#include <stddef.h>
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
#define MAX_HEADERS 128

struct gcpr_http {
  /* Everything up to hoff is zeroed when the request goes back to the pool, except the
   * curl handle and the five buffers, which are kept (wiped) with their capacities. */
  CURL *easy;
  struct curl_slist *headers, *headers_last; /* the caller's lines (curl_slist_append) */
  struct curl_slist fixed[4];                /* Authorization, Expect, User-Agent, Accept-Encoding */
  char method[GCPR_HTTP_METHOD_MAX + 1];
  char *url, *body, *bearer, *resp, *hbuf;
  size_t url_cap, body_len, body_cap, bearer_len, bearer_cap, resp_len, resp_cap;
  size_t hbuf_len, hbuf_cap, nhdrs;          /* response header lines, each NUL-terminated */
  long status;
  int has_bearer, has_body, own_user_agent, own_accept_encoding, too_large, running;
  double timeout_s, started;
  CURLcode result;
  gcpr_http_cb cb;
  void *ud;
  /* Not zeroed (errbuf is emptied): */
  size_t hoff[MAX_HEADERS];                  /* where each header line starts in hbuf */
  char errbuf[CURL_ERROR_SIZE];
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

/* Set when curl asks to be called "now" (a transfer was just added). */
static int due_now;

static void timer_event(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  (void)arg;
  int running;
  due_now = 0;
  curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done();
}

/* Lets curl send what was just added now, instead of on the next loop turn (one
 * epoll_wait and a timer later). Only for callers outside curl's callbacks and outside
 * check_done, which is where a task adds a transfer. */
static void send_due(void) {
  if (due_now) timer_event(-1, 0, NULL);
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
  due_now = timeout_ms == 0;
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


/* ---- one request ----
 *
 * Requests are pooled with their curl handle and buffers (URL, body, bearer line, response,
 * response headers), so a warm request allocates nothing of its own. The fixed request
 * headers (User-Agent, Accept-Encoding, "Expect:" for bodies, Authorization) are list nodes
 * inside the request, linked after the caller's headers. curl adds a custom header line to
 * the request once; with CURLOPT_USERAGENT or CURLOPT_ACCEPT_ENCODING it would format the
 * line (aprintf) and then copy it again, byte by byte both times. curl leaves out its own
 * Accept-Encoding when a custom one is present, so CURLOPT_ACCEPT_ENCODING is set only to
 * make curl decode gzip bodies. */

static const char user_agent_line[] = "User-Agent: gcpr/" GCPR_VERSION;
static const char accept_encoding_line[] = "Accept-Encoding: gzip";
static const char no_expect_line[] = "Expect:"; /* no "Expect: 100-continue" round trip */
static const char bearer_prefix[] = "Authorization: Bearer ";

#define POOL_MAX 32
#define POOL_KEEP_BYTES (64u << 10) /* a buffer larger than this is not kept for reuse */
static gcpr_http *pool[POOL_MAX];
static int npool;

/* Grows *buf to hold n bytes. Returns 0, or -1 when out of memory. The old block is wiped
 * before it is freed (realloc would leave a copy of a token response in free memory). */
static int reserve(char **buf, size_t *cap, size_t n) {
  if (n <= *cap) return 0;
  size_t c = *cap ? *cap : 256;
  while (c < n) c *= 2;
  char *p = malloc(c);
  if (!p) return -1;
  if (*buf) {
    memcpy(p, *buf, *cap);
    explicit_bzero(*buf, *cap);
    free(*buf);
  }
  *buf = p;
  *cap = c;
  return 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud) {
  gcpr_http *req = ud;
  size_t n = size * nmemb;
  if (req->resp_len + n > MAX_RESPONSE_BYTES) {
    req->too_large = 1;
    return 0;
  }
  if (reserve(&req->resp, &req->resp_cap, req->resp_len + n + 1) != 0) return 0;
  memcpy(req->resp + req->resp_len, data, n);
  req->resp_len += n;
  req->resp[req->resp_len] = '\0';
  return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ud) {
  gcpr_http *req = ud;
  size_t n = size * nmemb;
  /* A new status line (after 100 Continue or a redirect) starts a new header set. */
  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    req->nhdrs = 0;
    req->hbuf_len = 0;
    return n;
  }
  size_t len = n;
  while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n')) len--;
  if (len == 0 || !memchr(data, ':', len) || req->nhdrs == MAX_HEADERS) return n;
  if (reserve(&req->hbuf, &req->hbuf_cap, req->hbuf_len + len + 1) != 0) return 0;
  memcpy(req->hbuf + req->hbuf_len, data, len);
  req->hbuf[req->hbuf_len + len] = '\0';
  req->hoff[req->nhdrs++] = req->hbuf_len;
  req->hbuf_len += len + 1;
  return n;
}

/* Options that are the same for every transfer, set once per easy handle: handles are
 * reused without curl_easy_reset, and every per-request option is set on each start. */
static CURL *new_easy(void) {
  CURL *e = curl_easy_init();
  if (!e) return NULL;
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  /* Enables decoding; the header itself is one of the fixed lines. */
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "gzip");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (cfg.ca_bundle) curl_easy_setopt(e, CURLOPT_CAINFO, cfg.ca_bundle);
  return e;
}

static void http_destroy(gcpr_http *req) {
  if (req->easy) curl_easy_cleanup(req->easy);
  free(req->url);
  free(req->body);
  free(req->bearer);
  free(req->resp);
  free(req->hbuf);
  free(req);
}

gcpr_http *gcpr_http_new(const char *method, const char *url) {
  size_t mlen = strlen(method), ulen = strlen(url);
  if (mlen > GCPR_HTTP_METHOD_MAX) return NULL;
  gcpr_http *req = npool > 0 ? pool[--npool] : calloc(1, sizeof *req);
  if (!req) return NULL;
  if (reserve(&req->url, &req->url_cap, ulen + 1) != 0) {
    http_destroy(req);
    return NULL;
  }
  memcpy(req->method, method, mlen + 1);
  memcpy(req->url, url, ulen + 1);
  req->timeout_s = DEFAULT_TIMEOUT_S;
  return req;
}

int gcpr_http_add_header(gcpr_http *req, const char *line) {
  struct curl_slist *l = curl_slist_append(req->headers, line);
  if (!l) return -1;
  req->headers = l;
  if (strncasecmp(line, "user-agent:", 11) == 0) req->own_user_agent = 1;
  if (strncasecmp(line, "accept-encoding:", 16) == 0) req->own_accept_encoding = 1;
  return 0;
}

int gcpr_http_set_bearer(gcpr_http *req, const char *token) {
  size_t n = sizeof bearer_prefix - 1, t = strlen(token);
  if (reserve(&req->bearer, &req->bearer_cap, n + t + 1) != 0) return -1;
  memcpy(req->bearer, bearer_prefix, n);
  memcpy(req->bearer + n, token, t + 1);
  req->bearer_len = n + t;
  req->has_bearer = 1;
  return 0;
}

int gcpr_http_set_body(gcpr_http *req, const char *data, size_t len) {
  if (reserve(&req->body, &req->body_cap, len + 1) != 0) return -1;
  memcpy(req->body, data, len);
  req->body_len = len;
  req->has_body = 1;
  return 0;
}

void gcpr_http_set_timeout(gcpr_http *req, double seconds) { req->timeout_s = seconds; }

/* The CURLOPT_CONNECT_TO list for url's host when a GCPR_CONNECT_TO rule routes it, else
 * NULL. One list per host, made on first use and kept until cleanup. */
typedef struct {
  char host[256];
  struct curl_slist *list;
} route;
static route *routes;
static int nroutes, routes_cap;

static int route_for(const char *url, struct curl_slist **out) {
  char scheme[16], host[256];
  long port;
  *out = NULL;
  if (cfg.nrules == 0 || !url_parts(url, scheme, sizeof scheme, host, sizeof host, &port) ||
      port != 443)
    return 0;
  for (int i = 0; i < nroutes; i++)
    if (strcasecmp(routes[i].host, host) == 0) {
      *out = routes[i].list;
      return 0;
    }
  for (int i = 0; i < cfg.nrules; i++) {
    if (!host_matches(host, cfg.rules[i].suffix)) continue;
    if (nroutes == routes_cap) {
      int cap = routes_cap ? routes_cap * 2 : 16;
      route *grown = realloc(routes, (size_t)cap * sizeof *grown);
      if (!grown) return -1;
      routes = grown;
      routes_cap = cap;
    }
    char entry[600];
    snprintf(entry, sizeof entry, "%s:443:%s", host, cfg.rules[i].target);
    struct curl_slist *list = curl_slist_append(NULL, entry);
    if (!list) return -1;
    snprintf(routes[nroutes].host, sizeof routes[nroutes].host, "%s", host);
    routes[nroutes++].list = list;
    *out = list;
    return 0;
  }
  return 0;
}

/* Links the fixed header nodes after the caller's headers; returns the list's head. */
static struct curl_slist *link_headers(gcpr_http *req) {
  struct curl_slist *tail = NULL;
  int n = 0;
  if (!req->own_accept_encoding) {
    req->fixed[n] = (struct curl_slist){(char *)accept_encoding_line, tail};
    tail = &req->fixed[n++];
  }
  if (!req->own_user_agent) {
    req->fixed[n] = (struct curl_slist){(char *)user_agent_line, tail};
    tail = &req->fixed[n++];
  }
  if (req->has_body) {
    req->fixed[n] = (struct curl_slist){(char *)no_expect_line, tail};
    tail = &req->fixed[n++];
  }
  if (req->has_bearer) {
    req->fixed[n] = (struct curl_slist){req->bearer, tail};
    tail = &req->fixed[n++];
  }
  if (!req->headers) return tail;
  struct curl_slist *last = req->headers;
  while (last->next) last = last->next;
  last->next = tail;
  req->headers_last = last;
  return req->headers;
}

int gcpr_http_start(gcpr_http *req, gcpr_http_cb cb, void *ud) {
  struct curl_slist *route;
  if (ensure_multi() != 0 || route_for(req->url, &route) != 0) return -1;
  CURL *e = req->easy ? req->easy : (req->easy = new_easy());
  if (!e) return -1;
  req->cb = cb;
  req->ud = ud;
  curl_easy_setopt(e, CURLOPT_URL, req->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, req);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, link_headers(req));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_s * 1000));
  curl_easy_setopt(e, CURLOPT_CONNECT_TO, route);
  if (strcmp(req->method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(req->method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->has_body ? req->body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)(req->has_body ? req->body_len : 0));
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

/* Back to the pool, with nothing of this request left in it: the caller's headers freed,
 * the bearer line, body and response wiped, the handle's per-request options undone. */
void gcpr_http_free(gcpr_http *req) {
  if (!req) return;
  gcpr_http_cancel(req);
  if (req->easy) {
    CURL *e = req->easy;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_CONNECT_TO, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    /* Back to a plain GET. Order matters: setting POSTFIELDS (even to NULL) makes the
     * handle POST again, so HTTPGET comes last. Every start sets its method anyway. */
    if (strcmp(req->method, "GET") != 0) {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
      curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
  }
  /* Requests carry secrets both ways (assertions, refresh tokens and client secrets in
   * bodies, a caller's own Authorization line, API keys in URLs; tokens in responses):
   * what a request wrote into its buffers and header lines is wiped before it is pooled
   * or freed. explicit_bzero: memset's speed, and not optimised away. */
  if (req->headers_last) req->headers_last->next = NULL;
  for (struct curl_slist *l = req->headers; l; l = l->next) explicit_bzero(l->data, strlen(l->data));
  curl_slist_free_all(req->headers);
  if (req->has_bearer) explicit_bzero(req->bearer, req->bearer_len);
  if (req->has_body) explicit_bzero(req->body, req->body_len);
  if (req->resp_len) explicit_bzero(req->resp, req->resp_len);
  if (req->hbuf_len) explicit_bzero(req->hbuf, req->hbuf_len);
  if (req->url) explicit_bzero(req->url, strlen(req->url));
  if (npool == POOL_MAX || req->resp_cap > POOL_KEEP_BYTES || req->body_cap > POOL_KEEP_BYTES ||
      req->hbuf_cap > POOL_KEEP_BYTES || req->url_cap > POOL_KEEP_BYTES) {
    http_destroy(req);
    return;
  }
  /* Keep the handle and the buffers; clear the rest. */
  gcpr_http keep = *req;
  memset(req, 0, offsetof(gcpr_http, hoff));
  req->easy = keep.easy;
  req->url = keep.url, req->url_cap = keep.url_cap;
  req->body = keep.body, req->body_cap = keep.body_cap;
  req->bearer = keep.bearer, req->bearer_cap = keep.bearer_cap;
  req->resp = keep.resp, req->resp_cap = keep.resp_cap;
  req->hbuf = keep.hbuf, req->hbuf_cap = keep.hbuf_cap;
  req->errbuf[0] = '\0';
  pool[npool++] = req;
}

CURLcode gcpr_http_result(const gcpr_http *req) { return req->result; }
const char *gcpr_http_error(const gcpr_http *req) { return req->errbuf; }
long gcpr_http_status(const gcpr_http *req) { return req->status; }
const char *gcpr_http_body(const gcpr_http *req, size_t *len) {
  *len = req->resp_len;
  return req->resp_len ? req->resp : "";
}
const char *gcpr_http_url(const gcpr_http *req) { return req->url; }
size_t gcpr_http_header_count(const gcpr_http *req) { return req->nhdrs; }
const char *gcpr_http_header_line(const gcpr_http *req, size_t i) {
  return req->hbuf + req->hoff[i];
}

void gcpr_http_cleanup(void) {
  while (npool > 0) http_destroy(pool[--npool]);
  while (nroutes > 0) curl_slist_free_all(routes[--nroutes].list);
  free(routes);
  routes = NULL;
  routes_cap = 0;
  if (multi) curl_multi_cleanup(multi);
  if (multi_timer) event_free(multi_timer);
  if (multi) curl_global_cleanup();
  multi = NULL;
  multi_timer = NULL;
}

/* ---- core.http: the primitive recipes reach through gcp.http ---- */

enum http_auth { AUTH_NONE, AUTH_ACCESS, AUTH_ID };

/* One call of core.http, with every string it needs copied into one block after it. */
typedef struct {
  gcpr_op op;
  gcpr_http *req;
  gcpr_token_req *token_req;
  char method[GCPR_HTTP_METHOD_MAX + 1];
  char *url;        /* in the block, or allocated after a redirect (url_owned) */
  int url_owned;
  const char *body; /* NULL for none */
  size_t body_len;
  const char *headers; /* nheaders lines "Name: value", each NUL-terminated */
  size_t nheaders;
  double timeout_s;
  enum http_auth auth;
  const char *scopes, *audience, *impersonate, *delegates, *subject, *quota_project;
  int retried, redirects;
  char *error;
  int exit_code;
  char block[];
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

static void http_op_destroy(gcpr_op *op) {
  http_op *h = (http_op *)op;
  gcpr_http_free(h->req);
  if (h->url_owned) free(h->url);
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

/* ---- a response's lazy fields ----
 * Most calls never read res.headers or res.json, so both are made on first use. Each
 * response has its own metatable, which holds "lines": the header lines as curl delivered
 * them, NUL-separated, in one string. */

/* Pushes the header lines of the response at res and returns them (NULL, nothing pushed,
 * for a table that is not a response). */
static const char *response_lines(lua_State *L, int res, size_t *len) {
  *len = 0;
  if (luaL_getmetafield(L, res, "lines") == LUA_TNIL) return NULL;
  return lua_tolstring(L, -1, len);
}

/* Sets res.headers = {lower-case name = value} and pushes it. Repeated headers are joined
 * with ", " as RFC 9110 allows. */
static void make_headers(lua_State *L, int res) {
  size_t len;
  const char *lines = response_lines(L, res, &len), *end = lines + len;
  lua_newtable(L);
  for (const char *line = lines; line && line < end; line += strlen(line) + 1) {
    const char *colon = strchr(line, ':');
    char name[128];
    size_t n = colon ? (size_t)(colon - line) : 0;
    if (n == 0 || n >= sizeof name) continue;
    for (size_t k = 0; k < n; k++)
      name[k] = (char)(line[k] >= 'A' && line[k] <= 'Z' ? line[k] + 32 : line[k]);
    name[n] = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
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
  lua_pushvalue(L, -1);
  lua_setfield(L, res, "headers");
  if (lines) lua_remove(L, -2);
}

/* Decodes the body into res.json (or the reason into res.json_error) once, when the
 * response says it is JSON and has a body; both stay nil otherwise. */
static void make_json(lua_State *L, int res) {
  if (!lua_getmetatable(L, res)) return;
  int done = lua_getfield(L, -1, "json_done") != LUA_TNIL;
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "json_done");
  lua_pop(L, 1);
  if (done) return;
  size_t len, blen;
  const char *lines = response_lines(L, res, &len), *end = lines + len;
  int is_json = 0;
  for (const char *line = lines; line && line < end && !is_json; line += strlen(line) + 1)
    is_json = strncasecmp(line, "content-type:", 13) == 0 && strstr(line + 13, "json");
  if (lines) lua_pop(L, 1);
  lua_getfield(L, res, "body");
  const char *body = lua_tolstring(L, -1, &blen);
  char err[128];
  if (is_json && body && blen > 0) {
    if (gcpr_json_decode(L, body, blen, err, sizeof err)) {
      lua_setfield(L, res, "json");
    } else {
      lua_pushstring(L, err);
      lua_setfield(L, res, "json_error");
    }
  }
  lua_pop(L, 1);
}

static int response_index(lua_State *L) {
  const char *key = lua_tostring(L, 2);
  if (!key || lua_type(L, 2) != LUA_TSTRING) return 0;
  if (strcmp(key, "headers") == 0) {
    make_headers(L, 1);
    return 1;
  }
  if (strcmp(key, "json") != 0 && strcmp(key, "json_error") != 0) return 0;
  make_json(L, 1);
  lua_rawget(L, 1);
  return 1;
}

/* Makes every lazy field, so pairs() and gcp.json.encode see the whole response. */
static void make_all(lua_State *L, int res) {
  lua_pushliteral(L, "headers");
  if (lua_rawget(L, res) == LUA_TNIL) {
    lua_pop(L, 1);
    make_headers(L, res);
  }
  lua_pop(L, 1);
  make_json(L, res);
}

static int raw_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int response_pairs(lua_State *L) {
  make_all(L, 1);
  lua_pushcfunction(L, raw_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int response_tojson(lua_State *L) {
  make_all(L, 1);
  lua_settop(L, 1);
  return 1;
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
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, req->status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, req->resp_len ? req->resp : "", req->resp_len);
  lua_setfield(L, -2, "body");
  /* headers and json are made when first read (most calls never read them): the response's
   * own metatable keeps the header lines as received, one string. */
  lua_createtable(L, 0, 5);
  lua_pushlstring(L, req->hbuf_len ? req->hbuf : "", req->hbuf_len);
  lua_setfield(L, -2, "lines");
  lua_pushcfunction(L, response_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, response_pairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushcfunction(L, response_tojson);
  lua_setfield(L, -2, "__tojson");
  lua_setmetatable(L, -2);
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
  int had_token = h->auth != AUTH_NONE;
  if (strcmp(from, to) != 0) h->auth = AUTH_NONE;
  if (st == 303 || ((st == 301 || st == 302) && strcmp(h->method, "POST") == 0)) {
    strcpy(h->method, "GET");
    h->body = NULL;
    h->body_len = 0;
  }
  if (h->url_owned) free(h->url);
  h->url = strdup(next);
  h->url_owned = 1;
  curl_free(next);
  gcpr_log(GCPR_LOG_DEBUG, "following HTTP %ld to %s%s", st, to,
           had_token && h->auth == AUTH_NONE ? " (without the token: another origin)" : "");
  gcpr_http_free(h->req);
  h->req = NULL;
  if (!h->url) {
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
  if (req->has_bearer && !h->retried && req->result == CURLE_OK && req->status == 401) {
    gcpr_token_spec spec = token_spec(h);
    h->retried = 1;
    gcpr_log(GCPR_LOG_DEBUG, "401 from %s: getting a new token and retrying once", h->method);
    /* The token sent, so that exactly it is dropped from the cache. */
    gcpr_auth_invalidate(&spec, req->bearer + sizeof bearer_prefix - 1);
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
  const char *line = h->headers;
  for (size_t i = 0; !failed && i < h->nheaders; i++, line += strlen(line) + 1)
    failed = gcpr_http_add_header(req, line) != 0;
  if (!failed && h->body) failed = gcpr_http_set_body(req, h->body, h->body_len) != 0;
  if (!failed && token) failed = gcpr_http_set_bearer(req, token) != 0;
  if (!failed && token && h->auth == AUTH_ACCESS) {
    const char *quota = h->quota_project ? h->quota_project : gcpr_auth_quota_project();
    if (quota && *quota) {
      char header[512];
      snprintf(header, sizeof header, "x-goog-user-project: %s", quota);
      failed = gcpr_http_add_header(req, header) != 0;
    }
  }
  if (!failed) gcpr_http_set_timeout(req, h->timeout_s);
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

/* Copies n bytes of src and a NUL to *p; returns the copy and moves *p past it. */
static char *block_put(char **p, const char *src, size_t n) {
  char *at = *p;
  memcpy(at, src, n);
  at[n] = '\0';
  *p += n + 1;
  return at;
}

/* core.http(method, url, headers, body, timeout, auth, token) -> response | nil, err
 *   method   "GET", "POST", ... (upper case)        url  an absolute http(s) URL
 *   headers  nil or {name = value}                   body nil or a string
 *   timeout  nil (60 s) or seconds                   auth nil ("auto"), "access_token",
 *                                                         "id_token" or "none"
 *   token    nil or {scopes=, audience=, impersonate=, delegates=, subject=, quota_project=}
 * gcp/http.lua checks the arguments, builds them and turns failures into errors (a URL that
 * is not http(s) comes back as an error of kind "usage"). Everything that can raise happens
 * before the request is allocated. */
static int l_http(lua_State *L) {
  static const char *const fields[] = {"scopes", "audience", "impersonate", "delegates",
                                       "subject", "quota_project"};
  lua_settop(L, 7);
  size_t mlen, ulen, blen = 0;
  const char *method = luaL_checklstring(L, 1, &mlen);
  const char *url = luaL_checklstring(L, 2, &ulen);
  if (!lua_isnil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  const char *body = lua_isnil(L, 4) ? NULL : luaL_checklstring(L, 4, &blen);
  double timeout_s = luaL_optnumber(L, 5, DEFAULT_TIMEOUT_S);
  const char *auth = luaL_optstring(L, 6, "auto");
  const char *opt[6] = {NULL};
  size_t optlen[6] = {0}, size = ulen + 1 + (body ? blen + 1 : 0), nheaders = 0;
  if (!lua_isnil(L, 7)) {
    luaL_checktype(L, 7, LUA_TTABLE);
    for (int i = 0; i < 6; i++) { /* the values stay on the stack (8..13) while in use */
      int t = lua_getfield(L, 7, fields[i]);
      if (t != LUA_TNIL && t != LUA_TSTRING)
        return luaL_error(L, "core.http: token option '%s' must be a string", fields[i]);
      if (t == LUA_TSTRING) size += (optlen[i] = lua_rawlen(L, -1)) + 1;
      opt[i] = lua_tostring(L, -1);
    }
  }
  if (mlen > GCPR_HTTP_METHOD_MAX || strlen(method) != mlen)
    return luaL_error(L, "core.http: method '%s' is too long or has a NUL byte", method);
  if (strlen(url) != ulen) return luaL_error(L, "core.http: the URL has a NUL byte");
  gcpr_task_check(L, "gcp.http");
  if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0) {
    push_error(L, "usage", "url must be an http(s) URL", GCPR_EXIT_USAGE);
    return 2;
  }
  if (!lua_isnil(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
        /* Lines are NUL-terminated from here on: a NUL inside would cut one in two. */
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
        if (strlen(k) != kl || strlen(v) != vl)
          return luaL_error(L, "core.http: header '%s' has a NUL byte", k);
        size += kl + 2 + vl + 1, nheaders++;
      }
      lua_pop(L, 1);
    }
  }
  enum http_auth mode = AUTH_NONE;
  const char *refusal = NULL;
  if (strcmp(auth, "auto") == 0) {
    mode = gcpr_http_token_allowed(url) ? AUTH_ACCESS : AUTH_NONE;
  } else if (strcmp(auth, "access_token") == 0) {
    mode = AUTH_ACCESS;
    if (!gcpr_http_token_allowed(url))
      refusal = "refusing to send an access token to %s: access tokens go only to https hosts "
                "under googleapis.com (add others to GCPR_TOKEN_HOSTS)";
  } else if (strcmp(auth, "id_token") == 0) {
    mode = AUTH_ID;
    if (strncasecmp(url, "https://", 8) != 0)
      refusal = "refusing to send an ID token to %s over plain http";
    else if (!opt[1])
      refusal = "an ID token for %s needs an audience";
  } else if (strcmp(auth, "none") != 0) {
    refusal = "core.http: unknown auth for %s";
  }
  if (refusal) return luaL_error(L, refusal, url);

  http_op *h = calloc(1, sizeof *h + size);
  if (!h) return luaL_error(L, "out of memory");
  h->op.vt = &http_vt;
  memcpy(h->method, method, mlen + 1);
  h->timeout_s = timeout_s;
  h->auth = mode;
  char *p = h->block;
  h->url = block_put(&p, url, ulen);
  if (body) h->body = block_put(&p, body, blen), h->body_len = blen;
  const char **slots[] = {&h->scopes, &h->audience, &h->impersonate, &h->delegates,
                          &h->subject, &h->quota_project};
  for (int i = 0; i < 6; i++)
    if (opt[i]) *slots[i] = block_put(&p, opt[i], optlen[i]);
  if (nheaders) {
    h->headers = p;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      size_t kl, vl;
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
          h->nheaders < nheaders) {
        const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
        memcpy(p, k, kl);
        memcpy(p + kl, ": ", 2);
        p += kl + 2;
        block_put(&p, v, vl);
        h->nheaders++;
      }
      lua_pop(L, 1);
    }
  }
  begin(h);
  send_due();
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
  luaL_setfuncs(L, http_funcs, 0);
  return 0;
}

/* fake_call.c: the life of one API request in gcpr-fake, on either listener: receipt (auth,
 * body, fault), dispatch by listener, host and path, holding it on timers without blocking
 * the loop, answering it in Google's shapes or dropping it, and its line in requests.jsonl.
 * Control calls (/_fake/) only pass through here on their way to fake_control.c. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/crypto.h>

/* BODY_JSON: parsed, and a body that is not JSON is refused; BODY_ANY: parsed when it is JSON,
 * taken as it is otherwise; BODY_FORM: never parsed or logged here (it holds secrets). */
enum body_kind { BODY_JSON, BODY_ANY, BODY_FORM };

struct route {
  const char *path; /* the exact path, or a prefix when it ends in '/' */
  int needs_auth;
  enum body_kind body;
  void (*handle)(struct fake_call *call);
};

/* The HTTPS listener's Google endpoints, whatever the host (they share one certificate). */
static const struct route routes[] = {
    {"/token", 0, BODY_FORM, fake_oauth_token_endpoint},
    {"/compute/v1/", 1, BODY_JSON, fake_compute_handle},
    {"/v1/token", 0, BODY_FORM, fake_sts_token},
    {"/v1/projects/", 1, BODY_JSON, fake_services_v1},
    {"/v1b3/projects/", 1, BODY_JSON, fake_services_dataflow},
    {"/v2/projects/", 1, BODY_JSON, fake_services_run},
    {"/oauth2/v3/certs", 0, BODY_JSON, fake_idtoken_certs},
    {"/oauth2/v1/certs", 0, BODY_JSON, fake_idtoken_certs},
    {"/service_accounts/v1/jwk/", 0, BODY_JSON, fake_iam_jwk},
};
static const struct route redirect_route = {"/fake-redirect", 0, BODY_ANY,
                                            fake_target_redirect};
static const struct route target_route = {"/", 0, BODY_ANY, fake_target_handle};
static const struct route metadata_route = {"/", 0, BODY_FORM, fake_metadata_handle};

static const struct route *find_route(enum fake_listener listener, const char *host,
                                      const char *path) {
  if (listener == FAKE_LISTENER_METADATA) return &metadata_route;
  if (strcmp(path, redirect_route.path) == 0) return &redirect_route;
  if (fake_target_host(host)) return &target_route;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    size_t n = strlen(routes[i].path);
    if (routes[i].path[n - 1] == '/' ? strncmp(path, routes[i].path, n) == 0
                                     : strcmp(path, routes[i].path) == 0)
      return &routes[i];
  }
  return NULL;
}

static const char *method_name(enum evhttp_cmd_type type) {
  switch (type) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
  }
  return "UNKNOWN";
}

static const char *auth_name(enum fake_auth auth) {
  switch (auth) {
    case FAKE_AUTH_NONE: return "none";
    case FAKE_AUTH_INVALID: return "invalid";
    case FAKE_AUTH_EXPIRED: return "expired";
    case FAKE_AUTH_VALID: return "valid";
  }
  return "none";
}

static void add_string_or_null(cJSON *obj, const char *key, const char *value) {
  if (value)
    cJSON_AddStringToObject(obj, key, value);
  else
    cJSON_AddNullToObject(obj, key);
}

static void call_log(struct fake_call *call, int status) {
  FILE *log = call->fake->request_log;
  if (!log) return;
  char time[32];
  fake_format_time(fake_now_ms(), 0, time);
  cJSON *line = cJSON_CreateObject();
  cJSON_AddStringToObject(line, "time", time);
  cJSON_AddStringToObject(line, "method", call->method);
  add_string_or_null(line, "host", call->host);
  cJSON_AddStringToObject(line, "path", call->path);
  add_string_or_null(line, "query", call->query);
  cJSON_AddStringToObject(line, "auth", auth_name(call->auth));
  add_string_or_null(line, "principal", call->principal);
  add_string_or_null(line, "scopes", call->scopes);
  add_string_or_null(line, "quota_project", call->quota_project);
  const cJSON *body = call->log_body ? call->log_body : call->body;
  cJSON_AddItemToObject(line, "body", body ? cJSON_Duplicate(body, 1) : cJSON_CreateNull());
  cJSON_AddNumberToObject(line, "status", status);
  cJSON_AddNumberToObject(line, "inflight", (double)call->inflight_at_receipt);
  if (call->fault)
    cJSON_AddNumberToObject(line, "fault", (double)call->fault->id);
  else
    cJSON_AddNullToObject(line, "fault");
  for (const cJSON *item = call->log_extra ? call->log_extra->child : NULL; item;
       item = item->next)
    cJSON_AddItemToObject(line, item->string, cJSON_Duplicate(item, 1));
  char *text = cJSON_PrintUnformatted(line);
  if (text) {
    fputs(text, log);
    fputc('\n', log);
    fflush(log);
  }
  free(text);
  cJSON_Delete(line);
}

static void waitlist_unlink(struct fake_call *call) {
  if (!call->waiting_on) return;
  *call->wait_prev = call->wait_next;
  if (call->wait_next) call->wait_next->wait_prev = call->wait_prev;
  call->waiting_on = NULL;
  call->wait_next = NULL;
  call->wait_prev = NULL;
}

/* Stops everything that could still call back into this call. */
static void call_disarm(struct fake_call *call) {
  if (call->timer) evtimer_del(call->timer);
  if (call->close_watch) {
    event_free(call->close_watch);
    call->close_watch = NULL;
  }
  waitlist_unlink(call);
  struct evhttp_connection *evcon = evhttp_request_get_connection(call->req);
  if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
}

static void call_free(struct fake_call *call) {
  *call->prev = call->next;
  if (call->next) call->next->prev = call->prev;
  if (call->timer) event_free(call->timer);
  evhttp_clear_headers(&call->params);
  free(call->host);
  free(call->path);
  free(call->query);
  if (call->body_text) OPENSSL_cleanse(call->body_text, strlen(call->body_text));
  free(call->body_text);
  cJSON_Delete(call->body);
  cJSON_Delete(call->log_body);
  cJSON_Delete(call->log_extra);
  free(call->principal);
  free(call->scopes);
  free(call->quota_project);
  fake_fault_effect_free(call->fault);
  free(call);
}

static void call_finish(struct fake_call *call, int status) {
  call_log(call, status);
  call->fake->stats.inflight--;
  call_free(call);
}

/* Closes the client's connection without an answer (a "drop" fault, or the client left). */
static void call_abandon(struct fake_call *call) {
  struct evhttp_connection *evcon = evhttp_request_get_connection(call->req);
  call_disarm(call);
  call_finish(call, 0);
  if (evcon) evhttp_connection_free(evcon);
}

/* libevent is freeing the connection (the client closed it while the request was held): the
 * request has been detached from the connection and is ours to free. */
static void call_connection_freed(struct evhttp_connection *evcon, void *arg) {
  struct fake_call *call = arg;
  struct evhttp_request *req = call->req;
  (void)evcon;
  call_disarm(call);
  call_finish(call, 0);
  evhttp_request_free(req);
}

static void call_client_closed(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  call_abandon(arg);
}

static void call_timer_fired(evutil_socket_t fd, short what, void *arg) {
  struct fake_call *call = arg;
  (void)fd;
  (void)what;
  waitlist_unlink(call);
  call->on_wake(call, call->wake_arg);
}

/* Watches for the client going away while the call is held. Reading stops (libevent 2.1
 * aborts on data that arrives for a request not yet answered; it resumes reading once the
 * answer is sent), so EV_CLOSED sees the close; the close callback covers a connection that
 * libevent frees itself. */
static void watch_close(struct fake_call *call) {
  struct evhttp_connection *evcon = evhttp_request_get_connection(call->req);
  if (call->close_watch || !evcon) return;
  evhttp_connection_set_closecb(evcon, call_connection_freed, call);
  struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
  bufferevent_disable(bev, EV_READ);
  struct event_base *base = call->fake->base;
  evutil_socket_t fd = bufferevent_getfd(bev);
  if (fd < 0 || !(event_base_get_features(base) & EV_FEATURE_EARLY_CLOSE)) return;
  call->close_watch = event_new(base, fd, EV_CLOSED, call_client_closed, call);
  if (call->close_watch) event_add(call->close_watch, NULL);
}

void fake_call_hold(struct fake_call *call, long ms, struct fake_waitlist *list,
                    fake_call_fn fn, void *arg) {
  call->on_wake = fn;
  call->wake_arg = arg;
  if (!call->timer) call->timer = evtimer_new(call->fake->base, call_timer_fired, call);
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  evtimer_add(call->timer, &tv);
  if (list) {
    waitlist_unlink(call);
    call->waiting_on = list;
    call->wait_next = list->first;
    if (list->first) list->first->wait_prev = &call->wait_next;
    call->wait_prev = &list->first;
    list->first = call;
  }
  watch_close(call);
}

void fake_waitlist_wake(struct fake_waitlist *list) {
  struct fake_call *call;
  while ((call = list->first) != NULL) {
    waitlist_unlink(call);
    evtimer_del(call->timer);
    call->on_wake(call, call->wake_arg);
  }
}

#define JSON_TYPE "application/json; charset=UTF-8"

static void send_reply(struct evhttp_request *req, int status, const char *content_type,
                       const char *body, size_t len) {
  struct evbuffer *buf = evbuffer_new();
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
  /* evhttp would send the body after a HEAD's headers too, and the client would read it
   * as the start of the next response on the connection. */
  if (buf && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) evbuffer_add(buf, body, len);
  evhttp_send_reply(req, status, NULL, buf);
  if (buf) evbuffer_free(buf);
}

/* body as a gzip member (RFC 1952) whose deflate data is stored blocks (RFC 1951 3.2.4):
 * valid gzip any client must decode, with no compression library. */
static unsigned char *gzip_stored(const char *body, size_t len, size_t *out_len) {
  size_t blocks = len / 65535 + 1;
  unsigned char *out = fake_malloc(10 + blocks * 5 + len + 8), *p = out;
  static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};
  memcpy(p, head, sizeof head);
  p += sizeof head;
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < len; i++) {
    crc ^= (unsigned char)body[i];
    for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
  }
  crc ^= 0xffffffffu;
  size_t done = 0;
  do {
    size_t n = len - done > 65535 ? 65535 : len - done;
    *p++ = done + n == len; /* BFINAL, BTYPE 00 (stored) */
    *p++ = (unsigned char)(n & 0xff), *p++ = (unsigned char)(n >> 8);
    *p++ = (unsigned char)(~n & 0xff), *p++ = (unsigned char)((~n >> 8) & 0xff);
    memcpy(p, body + done, n);
    p += n, done += n;
  } while (done < len);
  for (int i = 0; i < 4; i++) *p++ = (unsigned char)(crc >> (8 * i));
  for (int i = 0; i < 4; i++) *p++ = (unsigned char)((uint32_t)len >> (8 * i));
  *out_len = (size_t)(p - out);
  return out;
}

void fake_call_respond_typed(struct fake_call *call, int status, const char *content_type,
                             const char *body) {
  const struct fake_fault_effect *fault = call->fault;
  struct evkeyvalq *headers = evhttp_request_get_output_headers(call->req);
  if (fault && fault->body) body = fault->body;
  if (fault && fault->retry_after) evhttp_add_header(headers, "Retry-After", fault->retry_after);
  const cJSON *pair;
  if (fault && fault->headers)
    cJSON_ArrayForEach(pair, fault->headers) {
      evhttp_add_header(headers, cJSON_GetArrayItem(pair, 0)->valuestring,
                        cJSON_GetArrayItem(pair, 1)->valuestring);
    }
  if (call->listener == FAKE_LISTENER_METADATA) {
    evhttp_add_header(headers, "Metadata-Flavor", "Google");
    evhttp_add_header(headers, "Server", "Metadata Server for VM");
  }
  call_disarm(call);
  if (fault && fault->gzip) {
    size_t len;
    unsigned char *gz = gzip_stored(body, strlen(body), &len);
    evhttp_add_header(headers, "Content-Encoding", "gzip");
    send_reply(call->req, status, content_type, (const char *)gz, len);
    free(gz);
  } else {
    send_reply(call->req, status, content_type, body, strlen(body));
  }
  call_finish(call, status);
}

void fake_call_respond_text(struct fake_call *call, int status, const char *body) {
  fake_call_respond_typed(call, status, JSON_TYPE, body);
}

void fake_form_clear(struct evkeyvalq *form) {
  for (struct evkeyval *field = form->tqh_first; field; field = field->next.tqe_next)
    OPENSSL_cleanse(field->value, strlen(field->value));
  evhttp_clear_headers(form);
}

cJSON *fake_call_log_extra(struct fake_call *call) {
  if (!call->log_extra) call->log_extra = cJSON_CreateObject();
  return call->log_extra;
}

void fake_call_respond_json(struct fake_call *call, int status, cJSON *body) {
  char *text = body ? cJSON_PrintUnformatted(body) : NULL;
  cJSON_Delete(body);
  fake_call_respond_text(call, status, text ? text : "{}");
  free(text);
}

void fake_reply_json(struct evhttp_request *req, int status, cJSON *body) {
  char *text = body ? cJSON_PrintUnformatted(body) : NULL;
  cJSON_Delete(body);
  send_reply(req, status, JSON_TYPE, text ? text : "{}", text ? strlen(text) : 2);
  free(text);
}

cJSON *fake_google_error(int code, const char *message, const char *reason,
                         const char *status) {
  cJSON *root = cJSON_CreateObject();
  cJSON *error = cJSON_AddObjectToObject(root, "error");
  cJSON_AddNumberToObject(error, "code", code);
  cJSON_AddStringToObject(error, "message", message);
  cJSON *item = cJSON_CreateObject();
  cJSON_AddStringToObject(item, "message", message);
  cJSON_AddStringToObject(item, "domain", "global");
  cJSON_AddStringToObject(item, "reason", reason);
  cJSON_AddItemToArray(cJSON_AddArrayToObject(error, "errors"), item);
  if (status) cJSON_AddStringToObject(error, "status", status);
  return root;
}

void fake_call_respond_error(struct fake_call *call, int code, const char *message,
                             const char *reason, const char *status) {
  fake_call_respond_json(call, code, fake_google_error(code, message, reason, status));
}

void fake_call_respond_unknown_url(struct fake_call *call) {
  char message[512];
  snprintf(message, sizeof message, "The requested URL %.400s was not found on this server.",
           call->path);
  fake_call_respond_error(call, 404, message, "notFound", "NOT_FOUND");
}

static void respond_unauthenticated(struct fake_call *call) {
  cJSON *body = fake_google_error(
      401,
      "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
      "cookie or other valid authentication credential. See "
      "https://developers.google.com/identity/sign-in/web/devconsole-project.",
      "authError", "UNAUTHENTICATED");
  cJSON *item = cJSON_GetArrayItem(
      cJSON_GetObjectItem(cJSON_GetObjectItem(body, "error"), "errors"), 0);
  cJSON_ReplaceItemInObject(item, "message", cJSON_CreateString("Invalid Credentials"));
  cJSON_AddStringToObject(item, "location", "Authorization");
  cJSON_AddStringToObject(item, "locationType", "header");
  evhttp_add_header(evhttp_request_get_output_headers(call->req), "WWW-Authenticate",
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"");
  fake_call_respond_json(call, 401, body);
}

/* An injected status answers in Google's error shape, with the message, reason and status
 * Google's front ends use for that code. */
static void respond_injected(struct fake_call *call, int code) {
  static const struct {
    int code;
    const char *message, *reason, *status;
  } known[] = {
      {400, "Bad Request", "badRequest", "INVALID_ARGUMENT"},
      {403, "The caller does not have permission", "forbidden", "PERMISSION_DENIED"},
      {404, "Requested entity was not found.", "notFound", "NOT_FOUND"},
      {409, "The operation was aborted.", "aborted", "ABORTED"},
      {429, "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'.",
       "rateLimitExceeded", "RESOURCE_EXHAUSTED"},
      {500, "Internal error encountered.", "backendError", "INTERNAL"},
      {502, "Bad Gateway", "backendError", "UNAVAILABLE"},
      {503, "The service is currently unavailable.", "backendError", "UNAVAILABLE"},
      {504, "The request timed out. Please try again.", "backendError", "DEADLINE_EXCEEDED"},
  };
  if (code == 401) {
    respond_unauthenticated(call);
    return;
  }
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (known[i].code == code) {
      fake_call_respond_error(call, code, known[i].message, known[i].reason,
                              known[i].status);
      return;
    }
  }
  fake_call_respond_error(call, code, "Unknown error.", "unknown", "UNKNOWN");
}

/* Google quotes the text around a JSON syntax error with a caret under it. */
static void respond_malformed_json(struct fake_call *call) {
  const char *text = call->body_text;
  size_t len = strlen(text), at = call->body_error_at < len ? call->body_error_at : len;
  size_t from = at > 20 ? at - 20 : 0, to = at + 20 < len ? at + 20 : len;
  char snippet[48], message[160];
  for (size_t i = from; i < to; i++)
    snippet[i - from] = text[i] == '\n' || text[i] == '\r' || text[i] == '\t' ? ' ' : text[i];
  snippet[to - from] = '\0';
  snprintf(message, sizeof message, "Invalid JSON payload received. Unexpected token.\n%s\n%*s^",
           snippet, (int)(at - from), "");
  fake_call_respond_error(call, 400, message, "parseError", "INVALID_ARGUMENT");
}

static void call_proceed(struct fake_call *call, void *arg) {
  const struct fake_fault_effect *fault = call->fault;
  const struct route *route = find_route(call->listener, call->host, call->path);
  (void)arg;
  if (fault && fault->drop) {
    call_abandon(call);
  } else if (fault && fault->status) {
    respond_injected(call, fault->status);
  } else if (!route) {
    fake_call_respond_unknown_url(call);
  } else if (route->needs_auth && call->auth != FAKE_AUTH_VALID) {
    respond_unauthenticated(call);
  } else if (call->body_text && route->body == BODY_JSON && !call->body) {
    respond_malformed_json(call);
  } else {
    route->handle(call);
  }
}

static void read_body(struct fake_call *call, const struct route *route) {
  struct evbuffer *in = evhttp_request_get_input_buffer(call->req);
  size_t len = evbuffer_get_length(in);
  if (len == 0) return;
  call->body_text = fake_malloc(len + 1);
  evbuffer_copyout(in, call->body_text, len);
  call->body_text[len] = '\0';
  if (route && route->body == BODY_FORM) return;
  const char *end = NULL;
  call->body = cJSON_ParseWithLengthOpts(call->body_text, len, &end, 0);
  if (!call->body) call->body_error_at = end ? (size_t)(end - call->body_text) : 0;
}

void fake_call_retry_later(struct fake_call *call) {
  fake_call_hold(call, 10, NULL, call_proceed, NULL);
}

void fake_call_receive(struct fake *fake, struct evhttp_request *req,
                       enum fake_listener listener) {
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
  const char *host = evhttp_find_header(headers, "Host");
  if (!path || !*path) {
    evhttp_send_error(req, 400, NULL);
    return;
  }
  if (listener == FAKE_LISTENER_HTTPS && strncmp(path, "/_fake/", 7) == 0 &&
      !fake_target_host(host)) {
    fake_control_handle(fake, req, path);
    return;
  }
  struct fake_call *call = fake_malloc(sizeof *call);
  memset(call, 0, sizeof *call);
  call->fake = fake;
  call->req = req;
  call->listener = listener;
  call->method = method_name(evhttp_request_get_command(req));
  call->host = fake_strdup(host);
  call->quota_project = fake_strdup(evhttp_find_header(headers, "X-Goog-User-Project"));
  call->path = fake_strdup(path);
  call->query = fake_strdup(evhttp_uri_get_query(uri));
  evhttp_parse_query_str(call->query ? call->query : "", &call->params);
  const struct route *route = find_route(listener, host, path);
  read_body(call, route);
  const char *principal = NULL, *scopes = NULL;
  call->auth = fake_oauth_check(fake, evhttp_find_header(headers, "Authorization"),
                                &principal, &scopes);
  call->principal = fake_strdup(principal);
  call->scopes = fake_strdup(scopes);
  call->fault = fake_faults_match(fake->faults, call->method, path);

  call->next = fake->calls;
  if (fake->calls) fake->calls->prev = &call->next;
  call->prev = &fake->calls;
  fake->calls = call;
  fake->stats.requests++;
  call->inflight_at_receipt = ++fake->stats.inflight;
  if (fake->stats.inflight > fake->stats.max_inflight)
    fake->stats.max_inflight = fake->stats.inflight;

  /* A drop always goes through the loop once: the connection must not be freed from inside
   * libevent's own request callback. */
  if (call->fault && (call->fault->delay_ms > 0 || call->fault->drop))
    fake_call_hold(call, call->fault->delay_ms, NULL, call_proceed, NULL);
  else
    call_proceed(call, NULL);
}

void fake_calls_drop_all(struct fake *fake) {
  while (fake->calls) {
    call_disarm(fake->calls);
    call_finish(fake->calls, 0);
  }
}

void fake_log_grant_type(struct fake_call *call, const char *grant_type) {
  cJSON_Delete(call->log_body);
  call->log_body = cJSON_CreateObject();
  if (grant_type) cJSON_AddStringToObject(call->log_body, "grant_type", grant_type);
  else cJSON_AddNullToObject(call->log_body, "grant_type");
}

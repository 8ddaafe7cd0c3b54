/* fake_target.c: what gcpr-fake serves that is not a Google API. Stand-ins for apps that
 * Google's front ends protect with ID tokens, which echo what they received as JSON once
 * an unexpired ID token the fake signed gets the request through (with the values of its
 * User-Agent and Accept-Encoding headers): a private Cloud Run
 * service on every *.run.app host (audience: the service URL, a URL under it the request's
 * URL starts with, or a Google tool's own OAuth client ID as in a developer's gcloud
 * token), and an app behind Identity-Aware Proxy on every *.appspot.com host (audience:
 * the IAP OAuth client ID). Each refuses like the front end it imitates. And
 * /fake-redirect?to=URL on any host, a 302 for testing that clients drop credentials when a
 * redirect changes host. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The OAuth clients whose developer ID tokens Cloud Run takes: the fake's authorized user's
 * and gcloud's. */
static const char *const developer_clients[] = {FAKE_USER_CLIENT_ID,
                                                "32555940559.apps.googleusercontent.com"};

enum target_kind { NOT_A_TARGET, CLOUD_RUN, IAP };
#define PAGE_HEAD                                                                         \
  "<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n"
#define HTML_TYPE "text/html; charset=UTF-8"

/* The host without a :443 (or any) port; out must hold 256 bytes. Returns its length. */
static size_t bare_host(const char *host, char out[256]) {
  size_t n = strcspn(host, ":");
  if (n > 255) n = 255;
  memcpy(out, host, n);
  out[n] = '\0';
  return n;
}

static enum target_kind target_kind(const char *host) {
  static const struct {
    const char *suffix;
    enum target_kind kind;
  } suffixes[] = {{".run.app", CLOUD_RUN}, {".appspot.com", IAP}};
  char bare[256];
  size_t n = host ? bare_host(host, bare) : 0;
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    size_t m = strlen(suffixes[i].suffix);
    if (n > m && strcasecmp(bare + n - m, suffixes[i].suffix) == 0) return suffixes[i].kind;
  }
  return NOT_A_TARGET;
}

int fake_target_host(const char *host) {
  return target_kind(host) != NOT_A_TARGET;
}

static void respond_cloud_run_page(struct fake_call *call, int status) {
  char body[1200];
  if (status == 401) {
    evhttp_add_header(evhttp_request_get_output_headers(call->req), "WWW-Authenticate",
                      "Bearer error=\"invalid_token\" error_description=\"The access token "
                      "could not be verified\"");
    snprintf(body, sizeof body,
             PAGE_HEAD "<title>401 Unauthorized</title>\n</head>\n<body text=#000000 "
                       "bgcolor=#ffffff>\n<h1>Error: Unauthorized</h1>\n<h2>Your client does "
                       "not have permission to the requested URL <code>%.400s</code>.</h2>\n"
                       "<h2></h2>\n</body></html>\n",
             call->path);
  } else {
    snprintf(body, sizeof body,
             PAGE_HEAD "<title>403 Forbidden</title>\n</head>\n<body text=#000000 "
                       "bgcolor=#ffffff>\n<h1>Error: Forbidden</h1>\n<h2>Your client does not "
                       "have permission to get URL <code>%.400s</code> from this server.</h2>\n"
                       "<h2></h2>\n</body></html>\n",
             call->path);
  }
  fake_call_respond_typed(call, status, HTML_TYPE, body);
}

/* IAP refuses every bad credential with 401 and a one-line reason. */
static void respond_iap_denied(struct fake_call *call, const char *aud) {
  char body[600];
  if (aud)
    snprintf(body, sizeof body,
             "Invalid IAP credentials: JWT audience doesn't match this application ('aud' claim "
             "(%.200s) doesn't match expected value (" FAKE_IAP_CLIENT_ID "))",
             aud);
  else
    snprintf(body, sizeof body, "Invalid IAP credentials: %s",
             call->auth == FAKE_AUTH_NONE      ? "empty token"
             : call->auth == FAKE_AUTH_EXPIRED ? "JWT has expired"
                                               : "Unable to parse JWT");
  fake_call_respond_typed(call, 401, HTML_TYPE, body);
}

/* Cloud Run takes the service URL as audience, or a URL below it that the request's URL
 * starts with, up to a '/' or '?' ("https://HOST/api" for "https://HOST/api/v1?x=1", not
 * for "https://HOST/apix"), or a developer's token for a Google tool's client. */
static int cloud_run_audience(const struct fake_call *call, const char *aud) {
  for (size_t i = 0; i < sizeof developer_clients / sizeof developer_clients[0]; i++)
    if (strcmp(aud, developer_clients[i]) == 0) return 1;
  char host[256], *url;
  size_t host_len = bare_host(call->host, host);
  size_t size = host_len + strlen(call->path) + (call->query ? strlen(call->query) : 0) + 16;
  url = fake_malloc(size);
  snprintf(url, size, "https://%s%s%s%s", host, call->path, call->query ? "?" : "",
           call->query ? call->query : "");
  size_t base = strlen("https://") + host_len, n = strlen(aud);
  int ok = n >= base && strncasecmp(aud, url, base) == 0 &&
           (n == base || (aud[base] == '/' && strncmp(aud + base, url + base, n - base) == 0 &&
                          (aud[n - 1] == '/' || url[n] == '\0' || url[n] == '/' ||
                           url[n] == '?')));
  free(url);
  return ok;
}

static void set_principal(struct fake_call *call, enum fake_auth auth, const char *email) {
  call->auth = auth;
  free(call->principal);
  free(call->scopes);
  call->principal = fake_strdup(email);
  call->scopes = NULL;
}

static const char *string_member(const cJSON *obj, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Any request to a target host. Cloud Run reads X-Serverless-Authorization before
 * Authorization, IAP Proxy-Authorization. The log's auth says whether the ID token itself
 * is valid (signature, issuer, expiry); its audience is logged beside it. */
void fake_target_handle(struct fake_call *call) {
  enum target_kind kind = target_kind(call->host);
  struct evkeyvalq *headers = evhttp_request_get_input_headers(call->req);
  const char *authorization = evhttp_find_header(
      headers, kind == IAP ? "Proxy-Authorization" : "X-Serverless-Authorization");
  if (!authorization) authorization = evhttp_find_header(headers, "Authorization");
  cJSON *claims = NULL;
  enum fake_auth auth = authorization ? FAKE_AUTH_INVALID : FAKE_AUTH_NONE;
  if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
    const char *jwt = authorization + 7;
    while (*jwt == ' ') jwt++;
    auth = fake_idtoken_verify(call->fake, jwt, &claims);
  }
  const char *aud = string_member(claims, "aud");
  set_principal(call, auth, string_member(claims, "email"));
  if (aud) cJSON_AddStringToObject(fake_call_log_extra(call), "audience", aud);
  int aud_ok = aud && (kind == IAP ? strcmp(aud, FAKE_IAP_CLIENT_ID) == 0
                                   : cloud_run_audience(call, aud));
  if (kind == IAP && (auth != FAKE_AUTH_VALID || !aud_ok)) {
    respond_iap_denied(call, auth == FAKE_AUTH_VALID ? aud : NULL);
  } else if (auth != FAKE_AUTH_VALID) {
    respond_cloud_run_page(call, 401);
  } else if (!aud_ok) {
    respond_cloud_run_page(call, 403);
  } else {
    cJSON *echo = cJSON_CreateObject();
    cJSON_AddTrueToObject(echo, "ok");
    cJSON_AddStringToObject(echo, "aud", aud);
    if (call->principal)
      cJSON_AddStringToObject(echo, "email", call->principal);
    else
      cJSON_AddNullToObject(echo, "email");
    cJSON_AddStringToObject(echo, "method", call->method);
    cJSON_AddStringToObject(echo, "path", call->path);
    if (call->query)
      cJSON_AddStringToObject(echo, "query", call->query);
    else
      cJSON_AddNullToObject(echo, "query");
    cJSON_AddItemToObject(echo, "body",
                          call->body ? cJSON_Duplicate(call->body, 1) : cJSON_CreateNull());
    /* Every value each of these headers arrived with, so a client sending one twice shows. */
    static const char *const echoed[] = {"User-Agent", "Accept-Encoding"};
    cJSON *seen = cJSON_AddObjectToObject(echo, "headers");
    for (size_t i = 0; i < sizeof echoed / sizeof echoed[0]; i++) {
      cJSON *values = cJSON_AddArrayToObject(seen, echoed[i]);
      for (struct evkeyval *kv = headers->tqh_first; kv; kv = kv->next.tqe_next)
        if (strcasecmp(kv->key, echoed[i]) == 0)
          cJSON_AddItemToArray(values, cJSON_CreateString(kv->value));
    }
    fake_call_respond_json(call, 200, echo);
  }
  cJSON_Delete(claims);
}

/* /fake-redirect?to=URL on any host: 302 to URL. */
void fake_target_redirect(struct fake_call *call) {
  const char *to = evhttp_find_header(&call->params, "to");
  if (!to || !*to) {
    fake_call_respond_error(call, 400, "Missing required parameter 'to'.", "required",
                            "INVALID_ARGUMENT");
    return;
  }
  evhttp_add_header(evhttp_request_get_output_headers(call->req), "Location", to);
  fake_call_respond_typed(call, 302, HTML_TYPE, "");
}

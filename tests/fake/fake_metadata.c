/* fake_metadata.c: the GCE metadata server as gcpr-fake serves it on its plain-HTTP
 * listener: a small tree under /computeMetadata/v1/ (project, instance, the default service
 * account under both its names), directory listings and ?recursive=true JSON, ?alt=json,
 * the service account's access token and ID token (identity), Google's
 * "Metadata-Flavor: Google" request check (fake_call.c adds the header to every answer), and
 * /subject-token for URL-sourced external credentials (fake_sts.c). */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define V1 "/computeMetadata/v1/"
#define TEXT_TYPE "application/text"
#define JSON_TYPE "application/json"
#define HTML_TYPE "text/html; charset=UTF-8"
#define INSTANCE_ID "4520031799277581759"
#define INSTANCE_NAME "gcpr-vm"
#define ZONE "us-central1-a"
#define INSTANCE_CREATED_S 1700000000

enum node_kind { TEXT, NUMBER, LIST, TOKEN, IDENTITY };

#define SERVICE_ACCOUNT_NODES(account)                                                    \
  {"instance/service-accounts/" account "/aliases", LIST, "default"},                     \
  {"instance/service-accounts/" account "/email", TEXT, FAKE_COMPUTE_SA},                 \
  {"instance/service-accounts/" account "/identity", IDENTITY, NULL},                     \
  {"instance/service-accounts/" account "/scopes", LIST, FAKE_CLOUD_PLATFORM},            \
  {"instance/service-accounts/" account "/token", TOKEN, NULL},

/* Sorted by path, so a directory's children are contiguous and listed in order. */
static const struct node {
  const char *path; /* under /computeMetadata/v1/ */
  enum node_kind kind;
  const char *value;
} nodes[] = {
    {"instance/hostname", TEXT, INSTANCE_NAME "." ZONE ".c." FAKE_PROJECT_ID ".internal"},
    {"instance/id", NUMBER, INSTANCE_ID},
    {"instance/name", TEXT, INSTANCE_NAME},
    SERVICE_ACCOUNT_NODES(FAKE_COMPUTE_SA)
    SERVICE_ACCOUNT_NODES("default")
    {"instance/zone", TEXT, "projects/" FAKE_PROJECT_NUMBER "/zones/" ZONE},
    {"project/numeric-project-id", NUMBER, FAKE_PROJECT_NUMBER},
    {"project/project-id", TEXT, FAKE_PROJECT_ID},
};
#define N_NODES (sizeof nodes / sizeof nodes[0])

static const char *query_param(struct fake_call *call, const char *name) {
  return evhttp_find_header(&call->params, name);
}

static void respond_not_found(struct fake_call *call) {
  char body[700];
  snprintf(body, sizeof body,
           "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not "
           "Found)!!1</title>\n  <p><b>404.</b> <ins>That\xe2\x80\x99s an error.</ins>\n  "
           "<p>The requested URL <code>%.400s</code> was not found on this server.  "
           "<ins>That\xe2\x80\x99s all we know.</ins>\n",
           call->path);
  fake_call_respond_typed(call, 404, HTML_TYPE, body);
}

static void respond_forbidden(struct fake_call *call) {
  char body[700];
  snprintf(body, sizeof body,
           "Your client does not have permission to get URL <code>%.400s</code> from this "
           "server. Missing Metadata-Flavor:Google header.\n",
           call->path);
  fake_call_respond_typed(call, 403, HTML_TYPE, body);
}

/* The metadata server sends a directory's URL without its slash to the URL with it. */
static void respond_moved(struct fake_call *call) {
  size_t size = strlen(call->path) + (call->query ? strlen(call->query) : 0) + 3;
  char *location = fake_malloc(size);
  snprintf(location, size, "%s/%s%s", call->path, call->query ? "?" : "",
           call->query ? call->query : "");
  evhttp_add_header(evhttp_request_get_output_headers(call->req), "Location", location);
  free(location);
  fake_call_respond_typed(call, 301, HTML_TYPE, "");
}

/* "numeric-project-id" -> "numericProjectId", as ?recursive=true writes keys; an account
 * name (with '@') stays as it is. */
static char *camel_case(const char *name, size_t n) {
  char *out = fake_malloc(n + 1), *p = out;
  int keep = memchr(name, '@', n) != NULL, upper = 0;
  for (size_t i = 0; i < n; i++) {
    if (name[i] == '-' && !keep) {
      upper = 1;
      continue;
    }
    *p++ = upper ? (char)toupper((unsigned char)name[i]) : name[i];
    upper = 0;
  }
  *p = '\0';
  return out;
}

static cJSON *value_json(const struct node *node) {
  if (node->kind == NUMBER) return cJSON_CreateRaw(node->value); /* exact beyond 2^53 */
  if (node->kind == LIST) {
    cJSON *list = cJSON_CreateArray();
    cJSON_AddItemToArray(list, cJSON_CreateString(node->value));
    return list;
  }
  return cJSON_CreateString(node->value);
}

static void respond_directory(struct fake_call *call, const char *dir) {
  size_t dir_len = strlen(dir);
  const char *recursive = query_param(call, "recursive");
  if (recursive && strcmp(recursive, "true") == 0) {
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; i < N_NODES; i++) {
      if (strncmp(nodes[i].path, dir, dir_len) != 0 || nodes[i].kind == TOKEN ||
          nodes[i].kind == IDENTITY)
        continue;
      cJSON *at = root;
      for (const char *p = nodes[i].path + dir_len;;) {
        const char *slash = strchr(p, '/');
        char *key = camel_case(p, slash ? (size_t)(slash - p) : strlen(p));
        if (!slash) {
          cJSON_AddItemToObject(at, key, value_json(&nodes[i]));
          free(key);
          break;
        }
        cJSON *next = cJSON_GetObjectItemCaseSensitive(at, key);
        if (!next) next = cJSON_AddObjectToObject(at, key);
        free(key);
        at = next;
        p = slash + 1;
      }
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    fake_call_respond_typed(call, 200, JSON_TYPE, text ? text : "{}");
    free(text);
    return;
  }
  size_t size = 1, len = 0;
  for (size_t i = 0; i < N_NODES; i++) size += strlen(nodes[i].path) + 2;
  char *listing = fake_malloc(size), *last = NULL;
  size_t last_len = 0;
  for (size_t i = 0; i < N_NODES; i++) {
    if (strncmp(nodes[i].path, dir, dir_len) != 0) continue;
    const char *child = nodes[i].path + dir_len, *slash = strchr(child, '/');
    size_t n = slash ? (size_t)(slash - child) + 1 : strlen(child);
    if (last && last_len == n && strncmp(last, child, n) == 0) continue;
    memcpy(listing + len, child, n);
    last = listing + len;
    last_len = n;
    len += n;
    listing[len++] = '\n';
  }
  listing[len] = '\0';
  fake_call_respond_typed(call, 200, TEXT_TYPE, listing);
  free(listing);
}

static void respond_token(struct fake_call *call) {
  const char *asked = query_param(call, "scopes");
  char *scopes = fake_strdup(asked && *asked ? asked : FAKE_CLOUD_PLATFORM);
  for (char *p = scopes; *p; p++)
    if (*p == ',') *p = ' ';
  long lifetime = call->fake->settings.token_lifetime_s;
  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "access_token", fake_oauth_issue(call->fake, "ya29.c.",
                                                                 FAKE_COMPUTE_SA, scopes,
                                                                 lifetime));
  cJSON_AddNumberToObject(body, "expires_in", (double)lifetime);
  cJSON_AddStringToObject(body, "token_type", "Bearer");
  free(scopes);
  fake_call_respond_json(call, 200, body);
}

/* The instance's ID token: email claims and the compute_engine block only with format=full,
 * as on GCE. */
static void respond_identity(struct fake_call *call) {
  const char *audience = query_param(call, "audience");
  const char *format = query_param(call, "format");
  if (!audience || !*audience) {
    fake_call_respond_typed(call, 400, TEXT_TYPE, "non-empty audience parameter required\n");
    return;
  }
  if (!fake_idtoken_ready(call->fake)) {
    fake_call_retry_later(call);
    return;
  }
  const char *unique_id = fake_iam_unique_id(call->fake->iam, FAKE_COMPUTE_SA);
  cJSON *claims = fake_idtoken_claims(audience, unique_id, unique_id);
  if (format && strcmp(format, "full") == 0) {
    cJSON_AddStringToObject(claims, "email", FAKE_COMPUTE_SA);
    cJSON_AddBoolToObject(claims, "email_verified", 1);
    cJSON *gce = cJSON_AddObjectToObject(cJSON_AddObjectToObject(claims, "google"),
                                         "compute_engine");
    cJSON_AddNumberToObject(gce, "instance_creation_timestamp", INSTANCE_CREATED_S);
    cJSON_AddStringToObject(gce, "instance_id", INSTANCE_ID);
    cJSON_AddStringToObject(gce, "instance_name", INSTANCE_NAME);
    cJSON_AddStringToObject(gce, "project_id", FAKE_PROJECT_ID);
    cJSON_AddNumberToObject(gce, "project_number", strtod(FAKE_PROJECT_NUMBER, NULL));
    cJSON_AddStringToObject(gce, "zone", ZONE);
  }
  char *jwt = fake_idtoken_sign(call->fake, claims);
  fake_call_respond_typed(call, 200, "text/plain; charset=utf-8", jwt ? jwt : "");
  if (jwt) OPENSSL_cleanse(jwt, strlen(jwt));
  free(jwt);
}

static void respond_leaf(struct fake_call *call, const struct node *node) {
  const char *alt = query_param(call, "alt");
  if (node->kind == TOKEN) {
    respond_token(call);
  } else if (node->kind == IDENTITY) {
    respond_identity(call);
  } else if (alt && strcmp(alt, "json") == 0) {
    cJSON *value = value_json(node);
    char *text = cJSON_PrintUnformatted(value);
    cJSON_Delete(value);
    fake_call_respond_typed(call, 200, JSON_TYPE, text ? text : "null");
    free(text);
  } else if (node->kind == LIST) {
    size_t n = strlen(node->value) + 2;
    char *text = fake_malloc(n);
    snprintf(text, n, "%s\n", node->value);
    fake_call_respond_typed(call, 200, TEXT_TYPE, text);
    free(text);
  } else {
    fake_call_respond_typed(call, 200, TEXT_TYPE, node->value);
  }
}

static void handle_v1(struct fake_call *call, const char *rel) {
  size_t n = strlen(rel);
  int is_dir = n == 0 || rel[n - 1] == '/', exists = 0, has_children = 0;
  for (size_t i = 0; i < N_NODES; i++) {
    if (!is_dir && strcmp(nodes[i].path, rel) == 0) {
      respond_leaf(call, &nodes[i]);
      return;
    }
    if (strncmp(nodes[i].path, rel, n) == 0) {
      exists |= is_dir;
      has_children |= !is_dir && nodes[i].path[n] == '/';
    }
  }
  if (exists)
    respond_directory(call, rel);
  else if (has_children)
    respond_moved(call);
  else
    respond_not_found(call);
}

void fake_metadata_handle(struct fake_call *call) {
  struct evkeyvalq *headers = evhttp_request_get_input_headers(call->req);
  const char *flavor = evhttp_find_header(headers, "Metadata-Flavor");
  if (strcmp(call->path, "/subject-token") == 0) {
    fake_sts_subject_token(call);
  } else if (!flavor || strcmp(flavor, "Google") != 0) {
    respond_forbidden(call);
  } else if (strcmp(call->method, "GET") != 0 && strcmp(call->method, "HEAD") != 0) {
    evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", "GET, HEAD");
    fake_call_respond_typed(call, 405, HTML_TYPE, "Method Not Allowed\n");
  } else if (strcmp(call->path, "/") == 0) {
    fake_call_respond_typed(call, 200, TEXT_TYPE, "computeMetadata/\n");
  } else if (strcmp(call->path, "/computeMetadata/") == 0) {
    fake_call_respond_typed(call, 200, TEXT_TYPE, "v1/\n");
  } else if (strcmp(call->path, "/computeMetadata") == 0 ||
             strcmp(call->path, "/computeMetadata/v1") == 0) {
    respond_moved(call);
  } else if (strncmp(call->path, V1, strlen(V1)) == 0) {
    char *rel = evhttp_uridecode(call->path + strlen(V1), 0, NULL);
    if (rel)
      handle_v1(call, rel);
    else
      respond_not_found(call);
    free(rel);
  } else {
    respond_not_found(call);
  }
}

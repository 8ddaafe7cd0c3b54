/* fake_compute.c: the Compute Engine v1 API as gcpr-fake serves it: a store of locations
 * (zones, regions, global), managed instance groups (zonal and regional), Cloud Armor
 * security policies and operations; get/list/aggregated list/resize of MIGs; get/patch of
 * policies and get/patch/add/remove of their rules; get and wait of zone, region and global
 * operations, which move PENDING -> RUNNING -> DONE on timers and apply their change (or end
 * in an injected error) at DONE. Shapes and messages follow Compute's REST reference. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "jwt.h"

#define SELF_LINK_BASE "https://www.googleapis.com/compute/v1/"
#define PACIFIC_OFFSET_MIN (-7 * 60) /* Compute writes its timestamps in Pacific time */
#define MAX_RESULTS 500
#define MAX_PATH_SEGMENTS 8

enum scope_kind { SCOPE_ZONE, SCOPE_REGION, SCOPE_GLOBAL };
static const char *const scope_collection[] = {"zones", "regions", "global"};
static const char *const scope_field[] = {"zone", "region", NULL};
/* Zonal and regional MIGs live in differently named collections. */
static const char *const mig_collection[] = {"instanceGroupManagers",
                                             "regionInstanceGroupManagers", NULL};
#define DEFAULT_RULE_PRIORITY 2147483647L

struct location {
  struct location *next;
  char *project;
  enum scope_kind kind;
  char *name;
  char *self_link;
};

struct mig {
  struct mig *next; /* sorted by name */
  const struct location *loc;
  char *name;
  char id[24];
  char *self_link;
  char *instance_template;
  char *base_instance_name;
  long target_size;
  long pending_size; /* target of the newest resize not yet DONE */
  int resizing;      /* resize operations not yet DONE */
  long long created_ms;
  char fingerprint[16];
};

enum op_status { OP_PENDING, OP_RUNNING, OP_DONE };

struct op {
  struct op *next;
  struct fake_compute *compute;
  const struct location *loc;
  char name[80];
  char id[24];
  char *self_link;
  const char *type;
  char *target_link;
  const char *target_id;
  char *user;
  char *request_id;
  enum op_status status;
  long delay_ms;
  long long insert_ms, start_ms, end_ms;
  char *error_code, *error_message;
  int http_error_status;
  void (*apply)(struct op *op); /* the change the operation makes at DONE */
  struct mig *mig;
  long size;
  struct policy *policy; /* a security policy change: what it changes and how */
  cJSON *payload;
  long priority;
  struct event *timer;
  struct fake_waitlist waiters;
};

/* A Cloud Armor security policy, kept in its REST shape (rules sorted by priority). */
struct policy {
  struct policy *next;
  const struct location *loc; /* the project's global scope */
  char *name;
  cJSON *json;
};

struct fake_compute {
  struct fake *fake;
  struct location *locations;
  struct mig *migs;
  struct policy *policies;
  struct op *ops;
};

static void random_id(char out[24]) {
  unsigned long long v;
  RAND_bytes((unsigned char *)&v, sizeof v);
  snprintf(out, 24, "%llu", 1000000000000000000ULL + v % 8000000000000000000ULL);
}

static void new_fingerprint(char out[16]) {
  unsigned char raw[8];
  RAND_bytes(raw, sizeof raw);
  EVP_EncodeBlock((unsigned char *)out, raw, sizeof raw);
}

static void add_time(cJSON *obj, const char *key, long long ms) {
  char text[32];
  fake_format_time(ms, PACIFIC_OFFSET_MIN, text);
  cJSON_AddStringToObject(obj, key, text);
}

/* ---- the store ---- */

static const struct location *add_location(struct fake_compute *compute, const char *project,
                                           enum scope_kind kind, const char *name) {
  struct location *loc = fake_malloc(sizeof *loc);
  loc->project = fake_strdup(project);
  loc->kind = kind;
  loc->name = fake_strdup(name);
  loc->self_link = kind == SCOPE_GLOBAL
                       ? fake_format(SELF_LINK_BASE "projects/%s/global", project)
                       : fake_format(SELF_LINK_BASE "projects/%s/%s/%s", project,
                                scope_collection[kind], name);
  loc->next = compute->locations;
  compute->locations = loc;
  return loc;
}

static const struct location *find_location(const struct fake_compute *compute,
                                            const char *project, enum scope_kind kind,
                                            const char *name) {
  for (const struct location *loc = compute->locations; loc; loc = loc->next)
    if (loc->kind == kind && strcmp(loc->project, project) == 0 && strcmp(loc->name, name) == 0)
      return loc;
  return NULL;
}

static int project_known(const struct fake_compute *compute, const char *project) {
  for (const struct location *loc = compute->locations; loc; loc = loc->next)
    if (strcmp(loc->project, project) == 0) return 1;
  return 0;
}

static void add_mig(struct fake_compute *compute, const struct location *loc, const char *name,
                    const char *template_name, long size) {
  struct mig *mig = fake_malloc(sizeof *mig);
  memset(mig, 0, sizeof *mig);
  mig->loc = loc;
  mig->name = fake_strdup(name);
  random_id(mig->id);
  mig->self_link = fake_format("%s/%s/%s", loc->self_link, mig_collection[loc->kind], name);
  mig->instance_template = fake_format(SELF_LINK_BASE "projects/%s/global/instanceTemplates/%s",
                                  loc->project, template_name);
  mig->base_instance_name = fake_strdup(name);
  mig->target_size = mig->pending_size = size;
  mig->created_ms = fake_now_ms() - 86400000LL;
  new_fingerprint(mig->fingerprint);
  struct mig **at = &compute->migs;
  while (*at && strcmp((*at)->name, name) < 0) at = &(*at)->next;
  mig->next = *at;
  *at = mig;
}

static struct mig *find_mig(const struct fake_compute *compute, const struct location *loc,
                            const char *name) {
  for (struct mig *mig = compute->migs; mig; mig = mig->next)
    if (mig->loc == loc && strcmp(mig->name, name) == 0) return mig;
  return NULL;
}

/* Operations are found by name or by their numeric id, as Compute allows. */
static struct op *find_op(const struct fake_compute *compute, const struct location *loc,
                          const char *name) {
  for (struct op *op = compute->ops; op; op = op->next)
    if (op->loc == loc && (strcmp(op->name, name) == 0 || strcmp(op->id, name) == 0))
      return op;
  return NULL;
}

static cJSON *rule_json(long priority, const char *action, const char *range,
                        const char *description) {
  cJSON *rule = cJSON_CreateObject();
  cJSON_AddStringToObject(rule, "kind", "compute#securityPolicyRule");
  cJSON_AddStringToObject(rule, "description", description);
  cJSON_AddNumberToObject(rule, "priority", (double)priority);
  cJSON *match = cJSON_AddObjectToObject(rule, "match");
  cJSON_AddStringToObject(match, "versionedExpr", "SRC_IPS_V1");
  cJSON *ranges = cJSON_AddArrayToObject(cJSON_AddObjectToObject(match, "config"),
                                         "srcIpRanges");
  cJSON_AddItemToArray(ranges, cJSON_CreateString(range));
  cJSON_AddStringToObject(rule, "action", action);
  cJSON_AddFalseToObject(rule, "preview");
  return rule;
}

static void add_policy(struct fake_compute *compute, const struct location *loc,
                       const char *name) {
  struct policy *policy = fake_malloc(sizeof *policy);
  char id[24], fingerprint[16];
  random_id(id);
  new_fingerprint(fingerprint);
  policy->loc = loc;
  policy->name = fake_strdup(name);
  cJSON *o = policy->json = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", "compute#securityPolicy");
  cJSON_AddStringToObject(o, "id", id);
  add_time(o, "creationTimestamp", fake_now_ms() - 86400000LL);
  cJSON_AddStringToObject(o, "name", name);
  cJSON_AddStringToObject(o, "description", "");
  cJSON *rules = cJSON_AddArrayToObject(o, "rules");
  cJSON_AddItemToArray(rules, rule_json(1, "deny(403)", "9.9.9.0/24", "block stopcorp"));
  cJSON_AddItemToArray(rules, rule_json(DEFAULT_RULE_PRIORITY, "allow", "*", "default rule"));
  cJSON_AddStringToObject(o, "fingerprint", fingerprint);
  char *self_link = fake_format("%s/securityPolicies/%s", loc->self_link, name);
  cJSON_AddStringToObject(o, "selfLink", self_link);
  free(self_link);
  cJSON_AddStringToObject(o, "type", "CLOUD_ARMOR");
  policy->next = compute->policies;
  compute->policies = policy;
}

static struct policy *find_policy(const struct fake_compute *compute,
                                  const struct location *loc, const char *name) {
  for (struct policy *policy = compute->policies; policy; policy = policy->next)
    if (policy->loc == loc && strcmp(policy->name, name) == 0) return policy;
  return NULL;
}

static void add_seed_policies(struct fake_compute *compute) {
  add_policy(compute, find_location(compute, "demo-project", SCOPE_GLOBAL, "global"),
             "stopcorp");
}

struct fake_compute *fake_compute_create(struct fake *fake) {
  static const struct {
    const char *project;
    enum scope_kind kind;
    const char *name;
  } seed_locations[] = {
      {"demo-project", SCOPE_ZONE, "us-central1-a"},
      {"demo-project", SCOPE_REGION, "us-central1"},
      {"demo-project", SCOPE_GLOBAL, "global"},
  };
  static const struct {
    const char *project;
    enum scope_kind kind;
    const char *location, *name, *instance_template;
    long target_size;
  } seed_migs[] = {
      {"demo-project", SCOPE_ZONE, "us-central1-a", "td-central-ig", "td-template", 1},
      {"demo-project", SCOPE_ZONE, "us-central1-a", "td-central-ig-2", "td-template", 2},
      {"demo-project", SCOPE_REGION, "us-central1", "td-regional-ig", "td-template", 2},
  };
  struct fake_compute *compute = fake_malloc(sizeof *compute);
  memset(compute, 0, sizeof *compute);
  compute->fake = fake;
  for (size_t i = 0; i < sizeof seed_locations / sizeof seed_locations[0]; i++)
    add_location(compute, seed_locations[i].project, seed_locations[i].kind,
                 seed_locations[i].name);
  for (size_t i = 0; i < sizeof seed_migs / sizeof seed_migs[0]; i++)
    add_mig(compute,
            find_location(compute, seed_migs[i].project, seed_migs[i].kind,
                          seed_migs[i].location),
            seed_migs[i].name, seed_migs[i].instance_template, seed_migs[i].target_size);
  add_seed_policies(compute);
  return compute;
}

void fake_compute_free(struct fake_compute *compute) {
  if (!compute) return;
  while (compute->ops) {
    struct op *op = compute->ops;
    compute->ops = op->next;
    if (op->timer) event_free(op->timer);
    free(op->self_link);
    free(op->target_link);
    free(op->user);
    free(op->request_id);
    free(op->error_code);
    free(op->error_message);
    cJSON_Delete(op->payload);
    free(op);
  }
  while (compute->policies) {
    struct policy *policy = compute->policies;
    compute->policies = policy->next;
    free(policy->name);
    cJSON_Delete(policy->json);
    free(policy);
  }
  while (compute->migs) {
    struct mig *mig = compute->migs;
    compute->migs = mig->next;
    free(mig->name);
    free(mig->self_link);
    free(mig->instance_template);
    free(mig->base_instance_name);
    free(mig);
  }
  while (compute->locations) {
    struct location *loc = compute->locations;
    compute->locations = loc->next;
    free(loc->project);
    free(loc->name);
    free(loc->self_link);
    free(loc);
  }
  free(compute);
}

/* ---- JSON shapes ---- */

static cJSON *mig_json(const struct mig *mig) {
  cJSON *o = cJSON_CreateObject();
  const struct location *loc = mig->loc;
  long none = mig->target_size, creating = 0, deleting = 0;
  if (mig->resizing) {
    none = mig->pending_size < mig->target_size ? mig->pending_size : mig->target_size;
    creating = mig->pending_size > mig->target_size ? mig->pending_size - mig->target_size : 0;
    deleting = mig->target_size - none;
  }
  cJSON_AddStringToObject(o, "kind", "compute#instanceGroupManager");
  cJSON_AddStringToObject(o, "id", mig->id);
  add_time(o, "creationTimestamp", mig->created_ms);
  cJSON_AddStringToObject(o, "name", mig->name);
  cJSON_AddStringToObject(o, scope_field[loc->kind], loc->self_link);
  cJSON_AddStringToObject(o, "instanceTemplate", mig->instance_template);
  cJSON *version = cJSON_CreateObject();
  cJSON_AddStringToObject(version, "instanceTemplate", mig->instance_template);
  cJSON_AddNumberToObject(cJSON_AddObjectToObject(version, "targetSize"), "calculated",
                          (double)mig->target_size);
  cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "versions"), version);
  char *group = fake_format("%s/instanceGroups/%s", loc->self_link, mig->name);
  cJSON_AddStringToObject(o, "instanceGroup", group);
  free(group);
  cJSON_AddStringToObject(o, "baseInstanceName", mig->base_instance_name);
  cJSON_AddStringToObject(o, "fingerprint", mig->fingerprint);
  cJSON *actions = cJSON_AddObjectToObject(o, "currentActions");
  static const char *const action_names[] = {
      "abandoning", "creating",  "creatingWithoutRetries", "deleting", "none",
      "recreating", "refreshing", "restarting", "resuming", "starting",
      "stopping",   "suspending", "verifying"};
  for (size_t i = 0; i < sizeof action_names / sizeof action_names[0]; i++) {
    long n = strcmp(action_names[i], "none") == 0       ? none
             : strcmp(action_names[i], "creating") == 0 ? creating
             : strcmp(action_names[i], "deleting") == 0 ? deleting
                                                        : 0;
    cJSON_AddNumberToObject(actions, action_names[i], (double)n);
  }
  cJSON *status = cJSON_AddObjectToObject(o, "status");
  cJSON_AddBoolToObject(status, "isStable", !mig->resizing);
  cJSON_AddBoolToObject(cJSON_AddObjectToObject(status, "versionTarget"), "isReached", 1);
  cJSON *stateful = cJSON_AddObjectToObject(status, "stateful");
  cJSON_AddBoolToObject(stateful, "hasStatefulConfig", 0);
  cJSON_AddBoolToObject(cJSON_AddObjectToObject(stateful, "perInstanceConfigs"),
                        "allEffective", 1);
  cJSON_AddBoolToObject(cJSON_AddObjectToObject(status, "allInstancesConfig"), "effective", 1);
  cJSON_AddNumberToObject(o, "targetSize", (double)mig->target_size);
  cJSON_AddStringToObject(o, "selfLink", mig->self_link);
  cJSON *policy = cJSON_AddObjectToObject(o, "updatePolicy");
  cJSON_AddStringToObject(policy, "type", "PROACTIVE");
  cJSON_AddStringToObject(policy, "minimalAction", "REPLACE");
  cJSON *surge = cJSON_AddObjectToObject(policy, "maxSurge");
  cJSON_AddNumberToObject(surge, "fixed", 1);
  cJSON_AddNumberToObject(surge, "calculated", 1);
  cJSON *unavailable = cJSON_AddObjectToObject(policy, "maxUnavailable");
  cJSON_AddNumberToObject(unavailable, "fixed", 1);
  cJSON_AddNumberToObject(unavailable, "calculated", 1);
  cJSON_AddStringToObject(policy, "replacementMethod", "SUBSTITUTE");
  cJSON_AddStringToObject(o, "listManagedInstancesResults", "PAGELESS");
  return o;
}

static const char *http_error_message(int status) {
  static const struct {
    int status;
    const char *text;
  } texts[] = {{400, "BAD REQUEST"},       {403, "FORBIDDEN"},
               {404, "NOT FOUND"},         {409, "CONFLICT"},
               {412, "PRECONDITION FAILED"}, {429, "TOO MANY REQUESTS"},
               {500, "INTERNAL SERVER ERROR"}, {503, "SERVICE UNAVAILABLE"}};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    if (texts[i].status == status) return texts[i].text;
  return "ERROR";
}

static cJSON *op_json(const struct op *op) {
  static const char *const status_names[] = {"PENDING", "RUNNING", "DONE"};
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", "compute#operation");
  cJSON_AddStringToObject(o, "id", op->id);
  cJSON_AddStringToObject(o, "name", op->name);
  if (scope_field[op->loc->kind])
    cJSON_AddStringToObject(o, scope_field[op->loc->kind], op->loc->self_link);
  if (op->request_id) cJSON_AddStringToObject(o, "clientOperationId", op->request_id);
  cJSON_AddStringToObject(o, "operationType", op->type);
  cJSON_AddStringToObject(o, "targetLink", op->target_link);
  cJSON_AddStringToObject(o, "targetId", op->target_id);
  cJSON_AddStringToObject(o, "status", status_names[op->status]);
  cJSON_AddStringToObject(o, "user", op->user);
  cJSON_AddNumberToObject(o, "progress", op->status == OP_DONE ? 100 : 0);
  add_time(o, "insertTime", op->insert_ms);
  if (op->status != OP_PENDING) add_time(o, "startTime", op->start_ms);
  if (op->status == OP_DONE) add_time(o, "endTime", op->end_ms);
  if (op->status == OP_DONE && op->error_code) {
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "code", op->error_code);
    cJSON_AddStringToObject(item, "message", op->error_message);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(cJSON_AddObjectToObject(o, "error"), "errors"),
                         item);
    cJSON_AddNumberToObject(o, "httpErrorStatusCode", op->http_error_status);
    cJSON_AddStringToObject(o, "httpErrorMessage", http_error_message(op->http_error_status));
  }
  cJSON_AddStringToObject(o, "selfLink", op->self_link);
  return o;
}

/* ---- operations ---- */

static void op_finish(struct op *op) {
  op->status = OP_DONE;
  op->end_ms = fake_now_ms();
  if (!op->error_code) op->apply(op);
  if (op->mig) op->mig->resizing--;
  if (op->policy && !op->error_code) {
    char fingerprint[16];
    new_fingerprint(fingerprint);
    cJSON_ReplaceItemInObjectCaseSensitive(op->policy->json, "fingerprint",
                                           cJSON_CreateString(fingerprint));
  }
  fake_waitlist_wake(&op->waiters);
}

static void op_advance(evutil_socket_t fd, short what, void *arg) {
  struct op *op = arg;
  (void)fd;
  (void)what;
  if (op->status == OP_PENDING) {
    long rest = op->delay_ms - op->delay_ms / 2;
    struct timeval tv = {rest / 1000, (rest % 1000) * 1000};
    op->status = OP_RUNNING;
    op->start_ms = fake_now_ms();
    evtimer_add(op->timer, &tv);
  } else {
    op_finish(op);
  }
}

static void apply_resize(struct op *op) {
  op->mig->target_size = op->size;
  new_fingerprint(op->mig->fingerprint);
}

/* Makes an operation on a resource at loc, not yet started; a fault's op_error on the call
 * makes it end in that error. */
static struct op *op_new(struct fake_compute *compute, struct fake_call *call,
                         const struct location *loc, const char *target_link,
                         const char *target_id, const char *type,
                         void (*apply)(struct op *)) {
  struct op *op = fake_malloc(sizeof *op);
  memset(op, 0, sizeof *op);
  char hex13[14], hex8a[9], hex8b[9];
  fake_random_hex(hex13, 13);
  fake_random_hex(hex8a, 8);
  fake_random_hex(hex8b, 8);
  op->compute = compute;
  op->loc = loc;
  op->insert_ms = op->start_ms = fake_now_ms();
  snprintf(op->name, sizeof op->name, "operation-%lld-%s-%s-%s", op->insert_ms, hex13, hex8a,
           hex8b);
  random_id(op->id);
  op->self_link = fake_format("%s/operations/%s", loc->self_link, op->name);
  op->type = type;
  op->target_link = fake_strdup(target_link);
  op->target_id = target_id;
  op->user = fake_strdup(call->principal ? call->principal : "");
  op->apply = apply;
  op->delay_ms = compute->fake->settings.op_delay_ms;
  if (call->fault && call->fault->op_error_code) {
    op->error_code = fake_strdup(call->fault->op_error_code);
    op->error_message = fake_strdup(call->fault->op_error_message);
    op->http_error_status = call->fault->op_error_http_status;
  }
  op->next = compute->ops;
  compute->ops = op;
  return op;
}

static void op_run(struct op *op) {
  if (op->mig) op->mig->resizing++;
  if (op->delay_ms <= 0) {
    op_finish(op);
    return;
  }
  long first = op->delay_ms / 2;
  struct timeval tv = {first / 1000, (first % 1000) * 1000};
  op->timer = evtimer_new(op->compute->fake->base, op_advance, op);
  evtimer_add(op->timer, &tv);
}

static void answer_op(struct fake_call *call, void *arg) {
  fake_call_respond_json(call, 200, op_json(arg));
}

/* ---- request handling ---- */

static void respond_not_found(struct fake_call *call, const char *resource) {
  char message[600];
  snprintf(message, sizeof message, "The resource '%.500s' was not found", resource);
  fake_call_respond_error(call, 404, message, "notFound", NULL);
}

static void respond_invalid(struct fake_call *call, const char *reason, const char *fmt,
                            const char *field, const char *value) {
  char message[600];
  snprintf(message, sizeof message, fmt, field, value);
  fake_call_respond_error(call, 400, message, reason, NULL);
}

static void respond_method_not_allowed(struct fake_call *call, const char *allowed) {
  char message[200];
  snprintf(message, sizeof message, "Request method '%s' is not supported for this resource.",
           call->method);
  evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", allowed);
  fake_call_respond_error(call, 405, message, "methodNotAllowed", NULL);
}

/* Parses a whole decimal number; returns -1 for anything else. */
static int parse_long(const char *text, long *out) {
  char *end;
  if (!text || !*text || isspace((unsigned char)*text)) return -1;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (*end || errno) return -1;
  *out = v;
  return 0;
}

static int is_request_id(const char *s) {
  static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  int nonzero = 0;
  if (strlen(s) != sizeof shape - 1) return 0;
  for (size_t i = 0; shape[i]; i++) {
    if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i])) return 0;
    nonzero |= shape[i] == 'x' && s[i] != '0';
  }
  return nonzero;
}

/* Reads maxResults and pageToken (our tokens encode an offset); answers the call with
 * Compute's error and returns -1 when either is bad. */
static int parse_paging(struct fake_call *call, long *max_out, long *offset_out) {
  long max_results = MAX_RESULTS, offset = 0;
  const char *max_text = evhttp_find_header(&call->params, "maxResults");
  const char *token = evhttp_find_header(&call->params, "pageToken");
  if (max_text && parse_long(max_text, &max_results) != 0) {
    respond_invalid(call, "invalid", "Invalid value at '%s' (TYPE_UINT32), \"%s\"",
                    "max_results", max_text);
    return -1;
  }
  if (max_results < 0 || max_results > MAX_RESULTS) {
    respond_invalid(call, "invalid",
                    max_results < 0
                        ? "Invalid value for field '%s': '%s'. Must be greater than or equal to 0."
                        : "Invalid value for field '%s': '%s'. Must be less than or equal to 500.",
                    "maxResults", max_text);
    return -1;
  }
  if (max_results == 0) max_results = MAX_RESULTS;
  if (token) {
    unsigned char decoded[32];
    size_t len = strlen(token);
    long n = len < 40 ? gcpr_b64url_decode(token, len, decoded) : -1;
    if (n > 0) decoded[n] = '\0';
    if (n <= 1 || decoded[0] != 'o' || parse_long((const char *)decoded + 1, &offset) != 0 ||
        offset < 0) {
      respond_invalid(call, "invalid", "Invalid value for field '%s': '%s'.", "pageToken",
                      token);
      return -1;
    }
  }
  *max_out = max_results;
  *offset_out = offset;
  return 0;
}

static void add_next_page_token(cJSON *o, long offset) {
  char raw[32], next[GCPR_B64URL_LEN(sizeof raw)];
  int n = snprintf(raw, sizeof raw, "o%ld", offset);
  gcpr_b64url_encode((const unsigned char *)raw, (size_t)n, next);
  cJSON_AddStringToObject(o, "nextPageToken", next);
}

static void list_migs(struct fake_compute *compute, struct fake_call *call,
                      const struct location *loc) {
  long max_results, offset;
  if (parse_paging(call, &max_results, &offset) != 0) return;
  cJSON *o = cJSON_CreateObject(), *items = cJSON_CreateArray();
  cJSON_AddStringToObject(o, "kind", loc->kind == SCOPE_ZONE
                                         ? "compute#instanceGroupManagerList"
                                         : "compute#regionInstanceGroupManagerList");
  char *id = fake_format("projects/%s/%s/%s/%s", loc->project, scope_collection[loc->kind],
                    loc->name, mig_collection[loc->kind]);
  cJSON_AddStringToObject(o, "id", id);
  free(id);
  long index = 0, listed = 0;
  for (const struct mig *mig = compute->migs; mig; mig = mig->next) {
    if (mig->loc != loc || index++ < offset) continue;
    if (listed == max_results) {
      add_next_page_token(o, offset + listed);
      break;
    }
    cJSON_AddItemToArray(items, mig_json(mig));
    listed++;
  }
  /* Compute leaves out an empty items array. */
  if (listed)
    cJSON_AddItemToObject(o, "items", items);
  else
    cJSON_Delete(items);
  char *self_link = fake_format("%s/%s", loc->self_link, mig_collection[loc->kind]);
  cJSON_AddStringToObject(o, "selfLink", self_link);
  free(self_link);
  fake_call_respond_json(call, 200, o);
}

static void resize_mig(struct fake_compute *compute, struct fake_call *call, struct mig *mig) {
  const char *size_text = evhttp_find_header(&call->params, "size");
  const char *request_id = evhttp_find_header(&call->params, "requestId");
  long size;
  if (!size_text) {
    fake_call_respond_error(call, 400, "Required field 'size' not specified", "required", NULL);
    return;
  }
  if (parse_long(size_text, &size) != 0 || size > 0x7fffffffL || size < -0x7fffffffL) {
    respond_invalid(call, "invalid", "Invalid value at '%s' (TYPE_INT32), \"%s\"", "size",
                    size_text);
    return;
  }
  if (size < 0) {
    respond_invalid(call, "invalid",
                    "Invalid value for field '%s': '%s'. Must be greater than or equal to 0.",
                    "size", size_text);
    return;
  }
  if (request_id && !is_request_id(request_id)) {
    respond_invalid(call, "invalid",
                    "Invalid value for field '%s': '%s'. The request id must be a valid UUID "
                    "with the exception that zero UUID is not supported "
                    "(00000000-0000-0000-0000-000000000000).",
                    "requestId", request_id);
    return;
  }
  /* Compute's requestId: a retry of the same request gets the first one's operation. */
  for (struct op *op = compute->ops; request_id && op; op = op->next) {
    if (op->request_id && strcmp(op->request_id, request_id) == 0 && op->mig == mig) {
      fake_call_respond_json(call, 200, op_json(op));
      return;
    }
  }
  struct op *op = op_new(compute, call, mig->loc, mig->self_link, mig->id,
                         mig->loc->kind == SCOPE_ZONE
                             ? "compute.instanceGroupManagers.resize"
                             : "compute.regionInstanceGroupManagers.resize",
                         apply_resize);
  op->mig = mig;
  op->size = size;
  if (request_id) op->request_id = fake_strdup(request_id);
  mig->pending_size = size;
  op_run(op);
  fake_call_respond_json(call, 200, op_json(op));
}

static void handle_migs(struct fake_compute *compute, struct fake_call *call,
                        const struct location *loc, char **seg, int n) {
  int is_get = strcmp(call->method, "GET") == 0, is_post = strcmp(call->method, "POST") == 0;
  if (n == 5) {
    if (is_get)
      list_migs(compute, call, loc);
    else
      respond_method_not_allowed(call, "GET");
    return;
  }
  if (n > 7 || (n == 7 && strcmp(seg[6], "resize") != 0)) {
    fake_call_respond_unknown_url(call);
    return;
  }
  struct mig *mig = find_mig(compute, loc, seg[5]);
  if (n == 6 && !is_get) {
    respond_method_not_allowed(call, "GET");
  } else if (n == 7 && !is_post) {
    respond_method_not_allowed(call, "POST");
  } else if (!mig) {
    char *resource = fake_format("projects/%s/%s/%s/%s/%s", loc->project,
                            scope_collection[loc->kind], loc->name, mig_collection[loc->kind],
                            seg[5]);
    respond_not_found(call, resource);
    free(resource);
  } else if (n == 6) {
    fake_call_respond_json(call, 200, mig_json(mig));
  } else {
    resize_mig(compute, call, mig);
  }
}

/* {scope}/operations/{op}[/wait]: seg[at] is the operation's name. */
static void handle_ops(struct fake_compute *compute, struct fake_call *call,
                       const struct location *loc, char **seg, int n, int at) {
  int wait = n == at + 2 && strcmp(seg[at + 1], "wait") == 0;
  if (n < at + 1 || n > at + 2 || (n == at + 2 && !wait)) {
    fake_call_respond_unknown_url(call);
    return;
  }
  if (strcmp(call->method, wait ? "POST" : "GET") != 0) {
    respond_method_not_allowed(call, wait ? "POST" : "GET");
    return;
  }
  struct op *op = find_op(compute, loc, seg[at]);
  if (!op) {
    char *resource = loc->kind == SCOPE_GLOBAL
                         ? fake_format("projects/%s/global/operations/%s", loc->project, seg[at])
                         : fake_format("projects/%s/%s/%s/operations/%s", loc->project,
                                  scope_collection[loc->kind], loc->name, seg[at]);
    respond_not_found(call, resource);
    free(resource);
  } else if (wait && op->status != OP_DONE) {
    fake_call_hold(call, compute->fake->settings.wait_max_ms, &op->waiters, answer_op, op);
  } else {
    answer_op(call, op);
  }
}

/* ---- Cloud Armor security policies ---- */

static cJSON *policy_rules(const struct policy *policy) {
  return cJSON_GetObjectItemCaseSensitive(policy->json, "rules");
}

static cJSON *find_rule(const struct policy *policy, long priority) {
  cJSON *rule;
  cJSON_ArrayForEach(rule, policy_rules(policy)) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(rule, "priority");
    if (cJSON_IsNumber(p) && (long)p->valuedouble == priority) return rule;
  }
  return NULL;
}

/* Members of a request body that never overwrite the stored resource. */
static int read_only_member(const char *key) {
  static const char *const keys[] = {"kind", "id", "creationTimestamp", "name", "selfLink",
                                     "fingerprint", "priority", "rules"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (strcmp(key, keys[i]) == 0) return 1;
  return 0;
}

static void merge_members(cJSON *into, const cJSON *from) {
  const cJSON *item;
  cJSON_ArrayForEach(item, from) {
    if (read_only_member(item->string)) continue;
    cJSON *copy = cJSON_Duplicate(item, 1);
    if (cJSON_GetObjectItemCaseSensitive(into, item->string))
      cJSON_ReplaceItemInObjectCaseSensitive(into, item->string, copy);
    else
      cJSON_AddItemToObject(into, item->string, copy);
  }
}

/* A policy PATCH changes the policy's own fields; its rules change only rule by rule. */
static void apply_policy_patch(struct op *op) {
  merge_members(op->policy->json, op->payload);
}

static void apply_patch_rule(struct op *op) {
  cJSON *rule = find_rule(op->policy, op->priority);
  if (rule) merge_members(rule, op->payload);
}

static void apply_add_rule(struct op *op) {
  cJSON *rules = policy_rules(op->policy), *rule = cJSON_CreateObject();
  cJSON_AddStringToObject(rule, "kind", "compute#securityPolicyRule");
  cJSON_AddNumberToObject(rule, "priority", (double)op->priority);
  merge_members(rule, op->payload);
  if (!cJSON_GetObjectItemCaseSensitive(rule, "preview")) cJSON_AddFalseToObject(rule, "preview");
  /* Rules stay sorted by priority: the later ones move behind the new one (cJSON's
   * InsertItemInArray is unreliable in the 1.7 releases). */
  cJSON *later = cJSON_CreateArray(), *item;
  for (int i = 0; (item = cJSON_GetArrayItem(rules, i)) != NULL;) {
    if ((long)cJSON_GetObjectItemCaseSensitive(item, "priority")->valuedouble > op->priority)
      cJSON_AddItemToArray(later, cJSON_DetachItemViaPointer(rules, item));
    else
      i++;
  }
  cJSON_AddItemToArray(rules, rule);
  while ((item = cJSON_DetachItemFromArray(later, 0)) != NULL) cJSON_AddItemToArray(rules, item);
  cJSON_Delete(later);
}

static void apply_remove_rule(struct op *op) {
  cJSON *rule = find_rule(op->policy, op->priority);
  if (rule) cJSON_Delete(cJSON_DetachItemViaPointer(policy_rules(op->policy), rule));
}

static void respond_policy_op(struct fake_compute *compute, struct fake_call *call,
                              struct policy *policy, const char *type,
                              void (*apply)(struct op *), long priority) {
  const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(policy->json, "id"));
  const char *link =
      cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(policy->json, "selfLink"));
  struct op *op = op_new(compute, call, policy->loc, link, id, type, apply);
  op->policy = policy;
  op->payload = call->body ? cJSON_Duplicate(call->body, 1) : NULL;
  op->priority = priority;
  op_run(op);
  fake_call_respond_json(call, 200, op_json(op));
}

/* The priority query parameter of getRule, patchRule and removeRule (Compute takes a missing
 * one as 0); answers the call and returns -1 when it is no number. */
static int rule_priority(struct fake_call *call, long *priority) {
  const char *text = evhttp_find_header(&call->params, "priority");
  *priority = 0;
  if (!text) return 0;
  if (parse_long(text, priority) != 0 || *priority < 0 || *priority > DEFAULT_RULE_PRIORITY) {
    respond_invalid(call, "invalid", "Invalid value at '%s' (TYPE_INT32), \"%s\"", "priority",
                    text);
    return -1;
  }
  return 0;
}

static void respond_required(struct fake_call *call, const char *field) {
  char message[200];
  snprintf(message, sizeof message, "Required field '%s' not specified", field);
  fake_call_respond_error(call, 400, message, "required", NULL);
}

/* Checks a SecurityPolicyRule body's match; answers the call and returns -1 if it is bad. */
static int check_rule_match(struct fake_call *call, const cJSON *rule) {
  const cJSON *match = cJSON_GetObjectItemCaseSensitive(rule, "match");
  if (!match) return 0;
  const cJSON *expr = cJSON_GetObjectItemCaseSensitive(match, "versionedExpr");
  if (cJSON_GetObjectItemCaseSensitive(match, "expr") && !expr) return 0; /* a CEL match */
  if (!cJSON_IsString(expr) || strcmp(expr->valuestring, "SRC_IPS_V1") != 0) {
    respond_invalid(call, "invalid", "Invalid value for field '%s': '%s'.",
                    "resource.match.versionedExpr",
                    cJSON_IsString(expr) ? expr->valuestring : "");
    return -1;
  }
  const cJSON *ranges = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(match, "config"), "srcIpRanges");
  int count = cJSON_IsArray(ranges) ? cJSON_GetArraySize(ranges) : 0;
  const cJSON *range;
  cJSON_ArrayForEach(range, ranges) {
    if (!cJSON_IsString(range) || !*range->valuestring) count = 0;
  }
  if (count < 1) {
    respond_required(call, "resource.match.config.srcIpRanges");
    return -1;
  }
  if (count > 10) {
    char text[16];
    snprintf(text, sizeof text, "%d", count);
    respond_invalid(call, "invalid",
                    "Invalid value for field '%s': '%s'. Maximum number of allowed IP ranges "
                    "in a rule is 10.",
                    "resource.match.config.srcIpRanges", text);
    return -1;
  }
  return 0;
}

static void patch_policy(struct fake_compute *compute, struct fake_call *call,
                         struct policy *policy) {
  const cJSON *given = cJSON_GetObjectItemCaseSensitive(call->body, "fingerprint");
  const char *current =
      cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(policy->json, "fingerprint"));
  if (!cJSON_IsObject(call->body))
    respond_required(call, "resource");
  else if (!cJSON_IsString(given) || strcmp(given->valuestring, current) != 0)
    fake_call_respond_error(call, 412,
                            "Supplied fingerprint does not match current resource fingerprint.",
                            "conditionNotMet", NULL);
  else
    respond_policy_op(compute, call, policy, "patch", apply_policy_patch, 0);
}

static void add_rule(struct fake_compute *compute, struct fake_call *call,
                     struct policy *policy) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(call->body, "priority");
  if (!cJSON_IsObject(call->body)) {
    respond_required(call, "resource");
  } else if (p && (!cJSON_IsNumber(p) || p->valuedouble < 0 ||
                   p->valuedouble > (double)DEFAULT_RULE_PRIORITY ||
                   p->valuedouble != (double)(long)p->valuedouble)) {
    respond_invalid(call, "invalid", "Invalid value for field '%s': '%s'.", "resource.priority",
                    cJSON_IsString(p) ? p->valuestring : "");
  } else if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->body, "action"))) {
    respond_required(call, "resource.action");
  } else if (find_rule(policy, p ? (long)p->valuedouble : 0)) {
    fake_call_respond_error(call, 400, "Cannot have rules with the same priorities.", "invalid",
                            NULL);
  } else if (check_rule_match(call, call->body) == 0) {
    respond_policy_op(compute, call, policy, "addSecurityPolicyRule", apply_add_rule,
                      p ? (long)p->valuedouble : 0);
  }
}

static void rule_verb(struct fake_compute *compute, struct fake_call *call,
                      struct policy *policy, const char *verb) {
  long priority;
  int is_get = strcmp(verb, "getRule") == 0;
  if (strcmp(call->method, is_get ? "GET" : "POST") != 0) {
    respond_method_not_allowed(call, is_get ? "GET" : "POST");
    return;
  }
  if (strcmp(verb, "addRule") == 0) {
    add_rule(compute, call, policy);
    return;
  }
  if (rule_priority(call, &priority) != 0) return;
  cJSON *rule = find_rule(policy, priority);
  if (!rule) {
    char message[200];
    snprintf(message, sizeof message,
             "Invalid value for field 'priority': '%ld'. The rule with the specified priority "
             "does not exist.",
             priority);
    fake_call_respond_error(call, 400, message, "invalid", NULL);
  } else if (is_get) {
    fake_call_respond_json(call, 200, cJSON_Duplicate(rule, 1));
  } else if (strcmp(verb, "removeRule") == 0) {
    if (priority == DEFAULT_RULE_PRIORITY)
      fake_call_respond_error(call, 400, "The default rule cannot be removed.", "invalid", NULL);
    else
      respond_policy_op(compute, call, policy, "removeSecurityPolicyRule", apply_remove_rule,
                        priority);
  } else if (!cJSON_IsObject(call->body)) {
    respond_required(call, "resource");
  } else if (check_rule_match(call, call->body) == 0) {
    respond_policy_op(compute, call, policy, "patchSecurityPolicyRule", apply_patch_rule,
                      priority);
  }
}

/* global/securityPolicies/{policy}[/{verb}] (seg[4] is the policy). */
static void handle_policies(struct fake_compute *compute, struct fake_call *call,
                            const struct location *loc, char **seg, int n) {
  static const char *const verbs[] = {"getRule", "patchRule", "addRule", "removeRule"};
  int known_verb = 0;
  for (size_t i = 0; n == 6 && i < sizeof verbs / sizeof verbs[0]; i++)
    known_verb |= strcmp(seg[5], verbs[i]) == 0;
  if (n < 5 || n > 6 || (n == 6 && !known_verb)) {
    fake_call_respond_unknown_url(call);
    return;
  }
  int is_get = strcmp(call->method, "GET") == 0, is_patch = strcmp(call->method, "PATCH") == 0;
  if (n == 5 && !is_get && !is_patch) {
    respond_method_not_allowed(call, "GET, PATCH");
    return;
  }
  struct policy *policy = find_policy(compute, loc, seg[4]);
  if (!policy) {
    char *resource = fake_format("projects/%s/global/securityPolicies/%s", loc->project, seg[4]);
    respond_not_found(call, resource);
    free(resource);
  } else if (n == 6) {
    rule_verb(compute, call, policy, seg[5]);
  } else if (is_get) {
    fake_call_respond_json(call, 200, cJSON_Duplicate(policy->json, 1));
  } else {
    patch_policy(compute, call, policy);
  }
}

/* ---- aggregated list ---- */

#define MAX_SCOPES 64

static void add_no_results_warning(cJSON *items, const char *key) {
  cJSON *warning = cJSON_AddObjectToObject(cJSON_AddObjectToObject(items, key), "warning");
  cJSON_AddStringToObject(warning, "code", "NO_RESULTS_ON_PAGE");
  char *message = fake_format("There are no results for scope '%s' on this page.", key);
  cJSON_AddStringToObject(warning, "message", message);
  free(message);
  cJSON *data = cJSON_CreateObject();
  cJSON_AddStringToObject(data, "key", "scope");
  cJSON_AddStringToObject(data, "value", key);
  cJSON_AddItemToArray(cJSON_AddArrayToObject(warning, "data"), data);
}

/* aggregated/instanceGroupManagers: every zone and region of the project in scope-name
 * order; maxResults counts MIGs across scopes, and every scope with none on a page answers
 * Compute's NO_RESULTS_ON_PAGE warning. */
static void aggregated_migs(struct fake_compute *compute, struct fake_call *call,
                            const char *project) {
  long max_results, offset;
  if (parse_paging(call, &max_results, &offset) != 0) return;
  const struct location *scopes[MAX_SCOPES];
  char *keys[MAX_SCOPES];
  int n_scopes = 0;
  for (const struct location *loc = compute->locations; loc && n_scopes < MAX_SCOPES;
       loc = loc->next) {
    if (loc->kind == SCOPE_GLOBAL || strcmp(loc->project, project) != 0) continue;
    char *key = fake_format("%s/%s", scope_collection[loc->kind], loc->name);
    int at = n_scopes++;
    for (; at > 0 && strcmp(keys[at - 1], key) > 0; at--) {
      keys[at] = keys[at - 1];
      scopes[at] = scopes[at - 1];
    }
    keys[at] = key;
    scopes[at] = loc;
  }
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", "compute#instanceGroupManagerAggregatedList");
  char *id = fake_format("projects/%s/aggregated/instanceGroupManagers", project);
  cJSON_AddStringToObject(o, "id", id);
  free(id);
  cJSON *items = cJSON_AddObjectToObject(o, "items");
  long index = 0, listed = 0;
  int more = 0;
  for (int s = 0; s < n_scopes; s++) {
    cJSON *list = NULL;
    for (const struct mig *mig = compute->migs; mig && !more; mig = mig->next) {
      if (mig->loc != scopes[s] || index++ < offset) continue;
      if (listed == max_results) {
        more = 1;
        break;
      }
      if (!list)
        list = cJSON_AddArrayToObject(cJSON_AddObjectToObject(items, keys[s]),
                                      "instanceGroupManagers");
      cJSON_AddItemToArray(list, mig_json(mig));
      listed++;
    }
    if (!list) add_no_results_warning(items, keys[s]);
    free(keys[s]);
  }
  if (more) add_next_page_token(o, offset + listed);
  char *self_link = fake_format(SELF_LINK_BASE "projects/%s/aggregated/instanceGroupManagers",
                           project);
  cJSON_AddStringToObject(o, "selfLink", self_link);
  free(self_link);
  fake_call_respond_json(call, 200, o);
}

/* Splits path (after /compute/v1/) into at most MAX_PATH_SEGMENTS non-empty segments;
 * returns their number, or -1 for an empty segment or too many. */
static int split_path(char *path, char **seg) {
  int n = 0;
  for (char *p = path; *p;) {
    char *slash = strchr(p, '/');
    if (n == MAX_PATH_SEGMENTS || slash == p) return -1;
    seg[n++] = p;
    if (!slash) break;
    *slash = '\0';
    p = slash + 1;
    if (!*p) return -1;
  }
  return n;
}

static void respond_project_not_found(struct fake_call *call, const char *project) {
  char *resource = fake_format("projects/%s", project);
  respond_not_found(call, resource);
  free(resource);
}

/* /compute/v1/projects/{project}/global/{operations|securityPolicies}/...
 * /compute/v1/projects/{project}/aggregated/instanceGroupManagers */
static void handle_project_wide(struct fake_compute *compute, struct fake_call *call,
                                char **seg, int n) {
  if (strcmp(seg[2], "aggregated") == 0) {
    if (n != 4 || strcmp(seg[3], "instanceGroupManagers") != 0)
      fake_call_respond_unknown_url(call);
    else if (strcmp(call->method, "GET") != 0)
      respond_method_not_allowed(call, "GET");
    else if (!project_known(compute, seg[1]))
      respond_project_not_found(call, seg[1]);
    else
      aggregated_migs(compute, call, seg[1]);
    return;
  }
  if (n < 5 || (strcmp(seg[3], "operations") != 0 && strcmp(seg[3], "securityPolicies") != 0)) {
    fake_call_respond_unknown_url(call);
    return;
  }
  const struct location *loc = find_location(compute, seg[1], SCOPE_GLOBAL, "global");
  if (!loc)
    respond_project_not_found(call, seg[1]);
  else if (strcmp(seg[3], "operations") == 0)
    handle_ops(compute, call, loc, seg, n, 4);
  else
    handle_policies(compute, call, loc, seg, n);
}

/* /compute/v1/projects/{project}/{zones|regions}/{location}/{collection}[/{name}[/{verb}]],
 * and the project-wide collections above. */
void fake_compute_handle(struct fake_call *call) {
  struct fake_compute *compute = call->fake->compute;
  char *path = fake_strdup(call->path + strlen("/compute/v1/"));
  char *seg[MAX_PATH_SEGMENTS];
  int n = split_path(path, seg), kind = -1;
  if (n >= 4 && strcmp(seg[0], "projects") == 0 &&
      (strcmp(seg[2], "global") == 0 || strcmp(seg[2], "aggregated") == 0)) {
    handle_project_wide(compute, call, seg, n);
    free(path);
    return;
  }
  if (n >= 5 && strcmp(seg[0], "projects") == 0)
    for (int k = SCOPE_ZONE; k <= SCOPE_REGION; k++)
      if (strcmp(seg[2], scope_collection[k]) == 0) kind = k;
  if (kind < 0 || (strcmp(seg[4], mig_collection[kind]) != 0 &&
                   strcmp(seg[4], "operations") != 0)) {
    fake_call_respond_unknown_url(call);
  } else if (!project_known(compute, seg[1])) {
    char *resource = fake_format("projects/%s", seg[1]);
    respond_not_found(call, resource);
    free(resource);
  } else {
    const struct location *loc = find_location(compute, seg[1], (enum scope_kind)kind, seg[3]);
    if (!loc) {
      char *resource = fake_format("projects/%s/%s/%s", seg[1], seg[2], seg[3]);
      respond_not_found(call, resource);
      free(resource);
    } else if (strcmp(seg[4], "operations") != 0) {
      handle_migs(compute, call, loc, seg, n);
    } else {
      handle_ops(compute, call, loc, seg, n, 5);
    }
  }
  free(path);
}

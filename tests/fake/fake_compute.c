/* fake_compute.c: the Compute Engine v1 API as gcpr-fake serves it: a store of locations
 * (zones, regions), managed instance groups and operations; get/list/resize of MIGs; get and
 * wait of operations, which move PENDING -> RUNNING -> DONE on timers and apply their change
 * (or end in an injected error) at DONE. Shapes and messages follow Compute's REST reference. */
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

enum scope_kind { SCOPE_ZONE, SCOPE_REGION };
static const char *const scope_collection[] = {"zones", "regions"};
static const char *const scope_field[] = {"zone", "region"};

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
  struct event *timer;
  struct fake_waitlist waiters;
};

struct fake_compute {
  struct fake *fake;
  struct location *locations;
  struct mig *migs;
  struct op *ops;
};

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = fake_malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

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
  loc->self_link = format(SELF_LINK_BASE "projects/%s/%s/%s", project, scope_collection[kind],
                          name);
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
  mig->self_link = format("%s/instanceGroupManagers/%s", loc->self_link, name);
  mig->instance_template = format(SELF_LINK_BASE "projects/%s/global/instanceTemplates/%s",
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

struct fake_compute *fake_compute_create(struct fake *fake) {
  static const struct {
    const char *project;
    enum scope_kind kind;
    const char *name;
  } seed_locations[] = {
      {"demo-project", SCOPE_ZONE, "us-central1-a"},
      {"demo-project", SCOPE_REGION, "us-central1"},
  };
  static const struct {
    const char *project;
    enum scope_kind kind;
    const char *location, *name, *instance_template;
    long target_size;
  } seed_migs[] = {
      {"demo-project", SCOPE_ZONE, "us-central1-a", "td-central-ig", "td-template", 1},
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
    free(op);
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
  char *group = format("%s/instanceGroups/%s", loc->self_link, mig->name);
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

/* Makes an operation on a MIG, not yet started; a fault's op_error on the call makes it end
 * in that error. */
static struct op *op_new(struct fake_compute *compute, struct fake_call *call, struct mig *mig,
                         const char *type, void (*apply)(struct op *)) {
  struct op *op = fake_malloc(sizeof *op);
  memset(op, 0, sizeof *op);
  char hex13[14], hex8a[9], hex8b[9];
  fake_random_hex(hex13, 13);
  fake_random_hex(hex8a, 8);
  fake_random_hex(hex8b, 8);
  op->compute = compute;
  op->loc = mig->loc;
  op->insert_ms = op->start_ms = fake_now_ms();
  snprintf(op->name, sizeof op->name, "operation-%lld-%s-%s-%s", op->insert_ms, hex13, hex8a,
           hex8b);
  random_id(op->id);
  op->self_link = format("%s/operations/%s", mig->loc->self_link, op->name);
  op->type = type;
  op->target_link = fake_strdup(mig->self_link);
  op->target_id = mig->id;
  op->user = fake_strdup(call->principal ? call->principal : "");
  op->apply = apply;
  op->mig = mig;
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
  op->mig->resizing++;
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

static void list_migs(struct fake_compute *compute, struct fake_call *call,
                      const struct location *loc) {
  long max_results = MAX_RESULTS, offset = 0;
  const char *max_text = evhttp_find_header(&call->params, "maxResults");
  const char *token = evhttp_find_header(&call->params, "pageToken");
  if (max_text && parse_long(max_text, &max_results) != 0) {
    respond_invalid(call, "invalid", "Invalid value at '%s' (TYPE_UINT32), \"%s\"",
                    "max_results", max_text);
    return;
  }
  if (max_results < 0 || max_results > MAX_RESULTS) {
    respond_invalid(call, "invalid",
                    max_results < 0
                        ? "Invalid value for field '%s': '%s'. Must be greater than or equal to 0."
                        : "Invalid value for field '%s': '%s'. Must be less than or equal to 500.",
                    "maxResults", max_text);
    return;
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
      return;
    }
  }
  cJSON *o = cJSON_CreateObject(), *items = cJSON_CreateArray();
  cJSON_AddStringToObject(o, "kind", "compute#instanceGroupManagerList");
  char *id = format("projects/%s/%s/%s/instanceGroupManagers", loc->project,
                    scope_collection[loc->kind], loc->name);
  cJSON_AddStringToObject(o, "id", id);
  free(id);
  long index = 0, listed = 0;
  for (const struct mig *mig = compute->migs; mig; mig = mig->next) {
    if (mig->loc != loc || index++ < offset) continue;
    if (listed == max_results) {
      char raw[32], next[GCPR_B64URL_LEN(sizeof raw)];
      int n = snprintf(raw, sizeof raw, "o%ld", offset + listed);
      gcpr_b64url_encode((const unsigned char *)raw, (size_t)n, next);
      cJSON_AddStringToObject(o, "nextPageToken", next);
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
  char *self_link = format("%s/instanceGroupManagers", loc->self_link);
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
  struct op *op =
      op_new(compute, call, mig, "compute.instanceGroupManagers.resize", apply_resize);
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
    char *resource = format("projects/%s/%s/%s/instanceGroupManagers/%s", loc->project,
                            scope_collection[loc->kind], loc->name, seg[5]);
    respond_not_found(call, resource);
    free(resource);
  } else if (n == 6) {
    fake_call_respond_json(call, 200, mig_json(mig));
  } else {
    resize_mig(compute, call, mig);
  }
}

static void handle_ops(struct fake_compute *compute, struct fake_call *call,
                       const struct location *loc, char **seg, int n) {
  int wait = n == 7 && strcmp(seg[6], "wait") == 0;
  if (n < 6 || n > 7 || (n == 7 && !wait)) {
    fake_call_respond_unknown_url(call);
    return;
  }
  if (strcmp(call->method, wait ? "POST" : "GET") != 0) {
    respond_method_not_allowed(call, wait ? "POST" : "GET");
    return;
  }
  struct op *op = find_op(compute, loc, seg[5]);
  if (!op) {
    char *resource = format("projects/%s/%s/%s/operations/%s", loc->project,
                            scope_collection[loc->kind], loc->name, seg[5]);
    respond_not_found(call, resource);
    free(resource);
  } else if (wait && op->status != OP_DONE) {
    fake_call_hold(call, compute->fake->settings.wait_max_ms, &op->waiters, answer_op, op);
  } else {
    answer_op(call, op);
  }
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

/* /compute/v1/projects/{project}/{zones|regions}/{location}/{collection}[/{name}[/{verb}]] */
void fake_compute_handle(struct fake_call *call) {
  struct fake_compute *compute = call->fake->compute;
  char *path = fake_strdup(call->path + strlen("/compute/v1/"));
  char *seg[MAX_PATH_SEGMENTS];
  int n = split_path(path, seg), kind = -1;
  if (n >= 5 && strcmp(seg[0], "projects") == 0)
    for (int k = SCOPE_ZONE; k <= SCOPE_REGION; k++)
      if (strcmp(seg[2], scope_collection[k]) == 0) kind = k;
  if (kind < 0 || (strcmp(seg[4], "instanceGroupManagers") != 0 &&
                   strcmp(seg[4], "operations") != 0)) {
    fake_call_respond_unknown_url(call);
  } else if (!project_known(compute, seg[1])) {
    char *resource = format("projects/%s", seg[1]);
    respond_not_found(call, resource);
    free(resource);
  } else {
    const struct location *loc = find_location(compute, seg[1], (enum scope_kind)kind, seg[3]);
    if (!loc) {
      char *resource = format("projects/%s/%s/%s", seg[1], seg[2], seg[3]);
      respond_not_found(call, resource);
      free(resource);
    } else if (strcmp(seg[4], "instanceGroupManagers") == 0) {
      handle_migs(compute, call, loc, seg, n);
    } else {
      handle_ops(compute, call, loc, seg, n);
    }
  }
  free(path);
}

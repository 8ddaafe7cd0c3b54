/* fake_services.c: the Google APIs gcpr-fake serves beside Compute, each a small store with
 * Google's REST shapes: Cloud Build (triggers, running them, builds, cancelling), Dataflow
 * (classic and Flex template launches, jobs), Cloud SQL Admin (instance restart and its
 * sql#operation) and Cloud Run v2 (running a job, its google.longrunning.Operation). Their
 * work moves on the op delay fixed when it started and is judged whenever it is looked at
 * (no timers): a build QUEUED -> WORKING -> SUCCESS, a job QUEUED -> RUNNING -> DONE, an
 * operation PENDING -> RUNNING -> DONE. Faults' build_status, job_state and op_error change
 * how the work the matched request started ends. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#define MAX_SEGMENTS 10
#define BUILD_TYPE "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata"
#define EXECUTION_TYPE "type.googleapis.com/google.cloud.run.v2.Execution"
#define SQL_BASE "https://sqladmin.googleapis.com/v1/"

/* Work that started at start_ms and takes delay_ms: 0 before half of it, 1 before its end,
 * 2 after (a second full delay: 3, for Dataflow's RUNNING -> DONE). */
struct progress {
  long long start_ms;
  long delay_ms;
};

struct trigger {
  struct trigger *next;
  char *project, *name;
  char id[37];
  long long created_ms;
};

struct build {
  struct build *next;
  char id[37];
  char *project;
  const struct trigger *trigger;
  cJSON *source;        /* the RepoSource it built */
  cJSON *substitutions; /* or NULL */
  char *final_status;   /* SUCCESS unless a fault said otherwise */
  struct progress progress;
  long long cancelled_ms; /* 0: not cancelled */
};

struct job {
  struct job *next;
  char id[64];
  char *project, *location, *name;
  const char *type;
  char *final_state; /* NULL: RUNNING, then DONE */
  struct progress progress;
};

struct sql_instance {
  struct sql_instance *next;
  char *project, *name;
};

struct sql_op {
  struct sql_op *next;
  char name[40];
  char *project, *instance, *user;
  const char *type;
  char *error_code, *error_message;
  struct progress progress;
};

struct run_job {
  struct run_job *next;
  char *project, *location, *name;
};

struct run_op {
  struct run_op *next;
  char id[37];
  char *project, *location, *job, *execution;
  char *error_message; /* an injected op_error */
  struct progress progress;
};

struct fake_services {
  struct fake *fake;
  struct trigger *triggers;
  struct build *builds;
  struct job *jobs;
  struct sql_instance *sql_instances;
  struct sql_op *sql_ops;
  struct run_job *run_jobs;
  struct run_op *run_ops;
};

static void new_uuid(char out[37]) {
  unsigned char raw[16];
  RAND_bytes(raw, sizeof raw);
  raw[6] = (unsigned char)((raw[6] & 0x0f) | 0x40);
  raw[8] = (unsigned char)((raw[8] & 0x3f) | 0x80);
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7], raw[8], raw[9],
           raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]);
}

static void add_time(cJSON *obj, const char *key, long long ms) {
  char text[32];
  fake_format_time(ms, 0, text);
  cJSON_AddStringToObject(obj, key, text);
}

static struct progress progress_start(const struct fake *fake) {
  struct progress p = {fake_now_ms(), fake->settings.op_delay_ms};
  return p;
}

/* How far the work has come in half-delays: 0 and 1 for the first delay, 2 for the second,
 * 4 and more after two delays. */
static long progress_step(const struct progress *p) {
  long long elapsed = fake_now_ms() - p->start_ms;
  if (p->delay_ms <= 0) return 4;
  long long half = p->delay_ms / 2 > 0 ? p->delay_ms / 2 : 1;
  if (elapsed < half) return 0;
  if (elapsed < p->delay_ms) return 1;
  if (elapsed < 2LL * p->delay_ms) return 2;
  return 4;
}

/* The wall-clock time step is reached at (half of the delay, a delay, two delays). */
static long long progress_at(const struct progress *p, int halves) {
  return p->start_ms + (long long)p->delay_ms * halves / 2;
}

static int split(char *path, char **seg) {
  int n = 0;
  for (char *p = path; *p;) {
    char *slash = strchr(p, '/');
    if (n == MAX_SEGMENTS || slash == p) return -1;
    seg[n++] = p;
    if (!slash) break;
    *slash = '\0';
    p = slash + 1;
    if (!*p) return -1;
  }
  return n;
}

/* Cuts ":verb" off the last segment; returns the verb or NULL. */
static const char *cut_verb(char **seg, int n) {
  char *colon = n > 0 ? strchr(seg[n - 1], ':') : NULL;
  if (!colon) return NULL;
  *colon = '\0';
  return colon + 1;
}

static void respond_rpc(struct fake_call *call, int code, const char *status,
                        const char *message) {
  cJSON *body = cJSON_CreateObject(), *error = cJSON_AddObjectToObject(body, "error");
  cJSON_AddNumberToObject(error, "code", code);
  cJSON_AddStringToObject(error, "message", message);
  cJSON_AddStringToObject(error, "status", status);
  fake_call_respond_json(call, code, body);
}

static int method_is(struct fake_call *call, const char *method) {
  if (strcmp(call->method, method) == 0) return 1;
  evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", method);
  respond_rpc(call, 405, "UNIMPLEMENTED", "Method not allowed for this resource.");
  return 0;
}

static int is_terminal_build(const char *status) {
  static const char *const done[] = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT",
                                     "CANCELLED", "EXPIRED"};
  for (size_t i = 0; i < sizeof done / sizeof done[0]; i++)
    if (strcmp(status, done[i]) == 0) return 1;
  return 0;
}

/* ---- the store ---- */

struct fake_services *fake_services_create(struct fake *fake) {
  struct fake_services *s = fake_malloc(sizeof *s);
  memset(s, 0, sizeof *s);
  s->fake = fake;
  struct trigger *t = fake_malloc(sizeof *t);
  memset(t, 0, sizeof *t);
  t->project = fake_strdup(FAKE_PROJECT_ID);
  t->name = fake_strdup("deploy-to-dev");
  new_uuid(t->id);
  t->created_ms = fake_now_ms() - 86400000LL;
  s->triggers = t;
  struct sql_instance *i = fake_malloc(sizeof *i);
  i->next = NULL;
  i->project = fake_strdup(FAKE_PROJECT_ID);
  i->name = fake_strdup("demo-sql");
  s->sql_instances = i;
  struct run_job *j = fake_malloc(sizeof *j);
  j->next = NULL;
  j->project = fake_strdup(FAKE_PROJECT_ID);
  j->location = fake_strdup("us-central1");
  j->name = fake_strdup("nightly-job");
  s->run_jobs = j;
  return s;
}

void fake_services_free(struct fake_services *s) {
  if (!s) return;
  while (s->triggers) {
    struct trigger *t = s->triggers;
    s->triggers = t->next;
    free(t->project);
    free(t->name);
    free(t);
  }
  while (s->builds) {
    struct build *b = s->builds;
    s->builds = b->next;
    free(b->project);
    cJSON_Delete(b->source);
    cJSON_Delete(b->substitutions);
    free(b->final_status);
    free(b);
  }
  while (s->jobs) {
    struct job *j = s->jobs;
    s->jobs = j->next;
    free(j->project);
    free(j->location);
    free(j->name);
    free(j->final_state);
    free(j);
  }
  while (s->sql_instances) {
    struct sql_instance *i = s->sql_instances;
    s->sql_instances = i->next;
    free(i->project);
    free(i->name);
    free(i);
  }
  while (s->sql_ops) {
    struct sql_op *o = s->sql_ops;
    s->sql_ops = o->next;
    free(o->project);
    free(o->instance);
    free(o->user);
    free(o->error_code);
    free(o->error_message);
    free(o);
  }
  while (s->run_jobs) {
    struct run_job *j = s->run_jobs;
    s->run_jobs = j->next;
    free(j->project);
    free(j->location);
    free(j->name);
    free(j);
  }
  while (s->run_ops) {
    struct run_op *o = s->run_ops;
    s->run_ops = o->next;
    free(o->project);
    free(o->location);
    free(o->job);
    free(o->execution);
    free(o->error_message);
    free(o);
  }
  free(s);
}

/* ---- Cloud Build ---- */

static cJSON *trigger_json(const struct trigger *t) {
  cJSON *o = cJSON_CreateObject();
  char *resource = fake_format("projects/%s/locations/global/triggers/%s", t->project, t->id);
  cJSON_AddStringToObject(o, "id", t->id);
  cJSON_AddStringToObject(o, "name", t->name);
  cJSON_AddStringToObject(o, "resourceName", resource);
  free(resource);
  cJSON *github = cJSON_AddObjectToObject(o, "github");
  cJSON_AddStringToObject(github, "owner", "demo");
  cJSON_AddStringToObject(github, "name", "myrep");
  cJSON_AddStringToObject(cJSON_AddObjectToObject(github, "push"), "branch", "^master$");
  cJSON *tmpl = cJSON_AddObjectToObject(o, "triggerTemplate");
  cJSON_AddStringToObject(tmpl, "projectId", t->project);
  cJSON_AddStringToObject(tmpl, "repoName", "myrep");
  cJSON_AddStringToObject(tmpl, "branchName", "master");
  cJSON_AddStringToObject(o, "filename", "cloudbuild.yaml");
  add_time(o, "createTime", t->created_ms);
  cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "substitutions"), "_ENV", "staging");
  return o;
}

static const char *build_status(const struct build *b) {
  if (b->cancelled_ms) return "CANCELLED";
  switch (progress_step(&b->progress)) {
    case 0: return "QUEUED";
    case 1: return "WORKING";
    default: return b->final_status;
  }
}

static cJSON *build_json(const struct build *b) {
  const char *status = build_status(b);
  int started = progress_step(&b->progress) > 0 && (!b->cancelled_ms ||
                                                    b->cancelled_ms > progress_at(&b->progress, 1));
  cJSON *o = cJSON_CreateObject();
  char *name = fake_format("projects/%s/locations/global/builds/%s", FAKE_PROJECT_NUMBER, b->id);
  cJSON_AddStringToObject(o, "name", name);
  free(name);
  cJSON_AddStringToObject(o, "id", b->id);
  cJSON_AddStringToObject(o, "projectId", b->project);
  cJSON_AddStringToObject(o, "status", status);
  cJSON_AddItemToObject(cJSON_AddObjectToObject(o, "source"), "repoSource",
                        cJSON_Duplicate(b->source, 1));
  cJSON *step = cJSON_CreateObject();
  cJSON_AddStringToObject(step, "name", "gcr.io/cloud-builders/docker");
  cJSON *args = cJSON_AddArrayToObject(step, "args");
  cJSON_AddItemToArray(args, cJSON_CreateString("build"));
  cJSON_AddItemToArray(args, cJSON_CreateString("."));
  cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "steps"), step);
  add_time(o, "createTime", b->progress.start_ms);
  if (started) add_time(o, "startTime", progress_at(&b->progress, 1));
  if (is_terminal_build(status))
    add_time(o, "finishTime", b->cancelled_ms ? b->cancelled_ms : progress_at(&b->progress, 2));
  cJSON_AddStringToObject(o, "timeout", "600s");
  char *url = fake_format("https://console.cloud.google.com/cloud-build/builds/%s?project=%s", b->id,
                     FAKE_PROJECT_NUMBER);
  cJSON_AddStringToObject(o, "logUrl", url);
  free(url);
  char *bucket = fake_format("gs://%s.cloudbuild-logs.googleusercontent.com", FAKE_PROJECT_NUMBER);
  cJSON_AddStringToObject(o, "logsBucket", bucket);
  free(bucket);
  if (b->trigger) {
    cJSON_AddStringToObject(o, "buildTriggerId", b->trigger->id);
    char *tag = fake_format("trigger-%s", b->trigger->id);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "tags"), cJSON_CreateString(tag));
    free(tag);
  }
  if (b->substitutions)
    cJSON_AddItemToObject(o, "substitutions", cJSON_Duplicate(b->substitutions, 1));
  cJSON_AddStringToObject(o, "queueTtl", "3600s");
  cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "options"), "logging", "LEGACY");
  return o;
}

/* Cloud Build names a project by its ID or its number. */
static int same_project(const char *stored, const char *given) {
  return strcmp(stored, given) == 0 ||
         (strcmp(stored, FAKE_PROJECT_ID) == 0 && strcmp(given, FAKE_PROJECT_NUMBER) == 0);
}

static struct trigger *find_trigger(struct fake_services *s, const char *project,
                                    const char *name_or_id) {
  for (struct trigger *t = s->triggers; t; t = t->next)
    if (same_project(t->project, project) &&
        (strcmp(t->name, name_or_id) == 0 || strcmp(t->id, name_or_id) == 0))
      return t;
  return NULL;
}

static struct build *find_build(struct fake_services *s, const char *project, const char *id) {
  for (struct build *b = s->builds; b; b = b->next)
    if (same_project(b->project, project) && strcmp(b->id, id) == 0) return b;
  return NULL;
}

static void run_trigger(struct fake_services *s, struct fake_call *call, struct trigger *t) {
  const cJSON *body = call->body;
  const cJSON *nested = cJSON_GetObjectItemCaseSensitive(body, "source");
  if (cJSON_IsObject(nested)) body = nested; /* the regional form {projectId, triggerId, source} */
  if (body && !cJSON_IsObject(body)) {
    respond_rpc(call, 400, "INVALID_ARGUMENT", "Invalid JSON payload: expected a RepoSource.");
    return;
  }
  static const char *const revisions[] = {"branchName", "tagName", "commitSha"};
  int given = 0;
  for (size_t i = 0; i < 3; i++) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(body, revisions[i]);
    if (r && !cJSON_IsNull(r)) given++;
  }
  if (given > 1) {
    respond_rpc(call, 400, "INVALID_ARGUMENT",
                "invalid build source: only one of branch_name, tag_name or commit_sha may be "
                "set");
    return;
  }
  const cJSON *subs = cJSON_GetObjectItemCaseSensitive(body, "substitutions");
  if (subs && !cJSON_IsObject(subs) && !cJSON_IsNull(subs)) {
    respond_rpc(call, 400, "INVALID_ARGUMENT", "Invalid value at 'source.substitutions'");
    return;
  }
  struct build *b = fake_malloc(sizeof *b);
  memset(b, 0, sizeof *b);
  new_uuid(b->id);
  b->project = fake_strdup(t->project);
  b->trigger = t;
  b->progress = progress_start(s->fake);
  b->final_status = fake_strdup(call->fault && call->fault->build_status
                                    ? call->fault->build_status
                                    : "SUCCESS");
  b->source = cJSON_CreateObject();
  cJSON_AddStringToObject(b->source, "projectId", t->project);
  cJSON_AddStringToObject(b->source, "repoName", "myrep");
  int any = 0;
  for (size_t i = 0; i < 3; i++) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(body, revisions[i]);
    if (cJSON_IsString(r)) {
      cJSON_AddStringToObject(b->source, revisions[i], r->valuestring);
      any = 1;
    }
  }
  if (!any) cJSON_AddStringToObject(b->source, "branchName", "master");
  b->substitutions = cJSON_CreateObject();
  cJSON_AddStringToObject(b->substitutions, "_ENV", "staging");
  const cJSON *sub, *given_subs = cJSON_IsObject(subs) ? subs : NULL;
  cJSON_ArrayForEach(sub, given_subs) {
    cJSON_DeleteItemFromObjectCaseSensitive(b->substitutions, sub->string);
    cJSON_AddItemToObject(b->substitutions, sub->string, cJSON_Duplicate(sub, 1));
  }
  cJSON_AddStringToObject(b->substitutions, "REPO_NAME", "myrep");
  cJSON_AddStringToObject(b->substitutions, "TRIGGER_NAME", t->name);
  const cJSON *branch = cJSON_GetObjectItemCaseSensitive(b->source, "branchName");
  if (branch) cJSON_AddStringToObject(b->substitutions, "BRANCH_NAME", branch->valuestring);
  b->next = s->builds;
  s->builds = b;
  cJSON *op = cJSON_CreateObject();
  char *name = fake_format("operations/build/%s/%s", b->project, b->id);
  cJSON_AddStringToObject(op, "name", name);
  free(name);
  cJSON *metadata = cJSON_AddObjectToObject(op, "metadata");
  cJSON_AddStringToObject(metadata, "@type", BUILD_TYPE);
  cJSON_AddItemToObject(metadata, "build", build_json(b));
  fake_call_respond_json(call, 200, op);
}

/* projects/{p}[/locations/{l}]/{triggers|builds}/{id}[:verb], locations already cut. */
static void handle_cloudbuild(struct fake_services *s, struct fake_call *call, char **seg,
                              int n) {
  const char *verb = cut_verb(seg, n);
  const char *project = seg[1];
  if (strcmp(seg[2], "triggers") == 0 && n == 4) {
    struct trigger *t = find_trigger(s, project, seg[3]);
    if (verb && strcmp(verb, "run") != 0) {
      fake_call_respond_unknown_url(call);
    } else if (!method_is(call, verb ? "POST" : "GET")) {
    } else if (!t) {
      char *message = fake_format("trigger (%s, %s) not found", project, seg[3]);
      respond_rpc(call, 404, "NOT_FOUND", message);
      free(message);
    } else if (verb) {
      run_trigger(s, call, t);
    } else {
      fake_call_respond_json(call, 200, trigger_json(t));
    }
  } else if (strcmp(seg[2], "builds") == 0 && n == 4 && (!verb || strcmp(verb, "cancel") == 0)) {
    struct build *b = find_build(s, project, seg[3]);
    if (!method_is(call, verb ? "POST" : "GET")) {
    } else if (!b) {
      char *message = fake_format("build (%s, %s) not found", project, seg[3]);
      respond_rpc(call, 404, "NOT_FOUND", message);
      free(message);
    } else {
      if (verb && !is_terminal_build(build_status(b))) b->cancelled_ms = fake_now_ms();
      fake_call_respond_json(call, 200, build_json(b));
    }
  } else {
    fake_call_respond_unknown_url(call);
  }
}

/* ---- Cloud SQL Admin ---- */

static const char *sql_status(const struct sql_op *o) {
  static const char *const names[] = {"PENDING", "RUNNING"};
  long step = progress_step(&o->progress);
  return step < 2 ? names[step] : "DONE";
}

static cJSON *sql_op_json(const struct sql_op *o) {
  const char *status = sql_status(o);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "kind", "sql#operation");
  char *link = fake_format(SQL_BASE "projects/%s/instances/%s", o->project, o->instance);
  cJSON_AddStringToObject(j, "targetLink", link);
  free(link);
  cJSON_AddStringToObject(j, "status", status);
  cJSON_AddStringToObject(j, "user", o->user);
  add_time(j, "insertTime", o->progress.start_ms);
  if (strcmp(status, "PENDING") != 0) add_time(j, "startTime", progress_at(&o->progress, 1));
  if (strcmp(status, "DONE") == 0) {
    add_time(j, "endTime", progress_at(&o->progress, 2));
    if (o->error_code) {
      cJSON *error = cJSON_AddObjectToObject(j, "error");
      cJSON_AddStringToObject(error, "kind", "sql#operationErrors");
      cJSON *item = cJSON_CreateObject();
      cJSON_AddStringToObject(item, "kind", "sql#operationError");
      cJSON_AddStringToObject(item, "code", o->error_code);
      cJSON_AddStringToObject(item, "message", o->error_message);
      cJSON_AddItemToArray(cJSON_AddArrayToObject(error, "errors"), item);
    }
  }
  cJSON_AddStringToObject(j, "operationType", o->type);
  cJSON_AddStringToObject(j, "name", o->name);
  cJSON_AddStringToObject(j, "targetId", o->instance);
  link = fake_format(SQL_BASE "projects/%s/operations/%s", o->project, o->name);
  cJSON_AddStringToObject(j, "selfLink", link);
  free(link);
  cJSON_AddStringToObject(j, "targetProject", o->project);
  return j;
}

static struct sql_instance *find_sql_instance(struct fake_services *s, const char *project,
                                              const char *name) {
  for (struct sql_instance *i = s->sql_instances; i; i = i->next)
    if (strcmp(i->project, project) == 0 && strcmp(i->name, name) == 0) return i;
  return NULL;
}

static cJSON *sql_instance_json(const struct sql_instance *i) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", "sql#instance");
  cJSON_AddStringToObject(o, "state", "RUNNABLE");
  cJSON_AddStringToObject(o, "databaseVersion", "POSTGRES_15");
  cJSON_AddStringToObject(o, "name", i->name);
  cJSON_AddStringToObject(o, "project", i->project);
  cJSON_AddStringToObject(o, "region", "us-central1");
  cJSON_AddStringToObject(o, "gceZone", "us-central1-a");
  char *text = fake_format("%s:us-central1:%s", i->project, i->name);
  cJSON_AddStringToObject(o, "connectionName", text);
  free(text);
  text = fake_format(SQL_BASE "projects/%s/instances/%s", i->project, i->name);
  cJSON_AddStringToObject(o, "selfLink", text);
  free(text);
  cJSON_AddStringToObject(o, "instanceType", "CLOUD_SQL_INSTANCE");
  cJSON_AddStringToObject(o, "backendType", "SECOND_GEN");
  return o;
}

static void respond_sql_not_found(struct fake_call *call, const char *message,
                                  const char *reason) {
  fake_call_respond_error(call, 404, message, reason, NULL);
}

/* projects/{p}/instances/{i}[/restart], projects/{p}/operations/{name} */
static void handle_sql(struct fake_services *s, struct fake_call *call, char **seg, int n) {
  const char *project = seg[1];
  if (strcmp(seg[2], "operations") == 0) {
    if (n != 4) {
      fake_call_respond_unknown_url(call);
      return;
    }
    if (!method_is(call, "GET")) return;
    for (struct sql_op *o = s->sql_ops; o; o = o->next) {
      if (strcmp(o->project, project) == 0 && strcmp(o->name, seg[3]) == 0) {
        fake_call_respond_json(call, 200, sql_op_json(o));
        return;
      }
    }
    respond_sql_not_found(call, "The Cloud SQL operation does not exist.",
                          "operationDoesNotExist");
    return;
  }
  if (n < 4 || n > 5 || (n == 5 && strcmp(seg[4], "restart") != 0)) {
    fake_call_respond_unknown_url(call);
    return;
  }
  if (!method_is(call, n == 5 ? "POST" : "GET")) return;
  struct sql_instance *instance = find_sql_instance(s, project, seg[3]);
  if (!instance) {
    respond_sql_not_found(call, "The Cloud SQL instance does not exist.",
                          "instanceDoesNotExist");
    return;
  }
  if (n == 4) {
    fake_call_respond_json(call, 200, sql_instance_json(instance));
    return;
  }
  struct sql_op *o = fake_malloc(sizeof *o);
  memset(o, 0, sizeof *o);
  char uuid[37], hex[9];
  new_uuid(uuid);
  fake_random_hex(hex, 8);
  snprintf(o->name, sizeof o->name, "%.8s-%.4s-%.4s-%.4s-%s", uuid, uuid + 9, uuid + 14,
           uuid + 19, hex);
  o->project = fake_strdup(project);
  o->instance = fake_strdup(instance->name);
  o->user = fake_strdup(call->principal ? call->principal : "");
  o->type = "RESTART";
  o->progress = progress_start(s->fake);
  if (call->fault && call->fault->op_error_code) {
    o->error_code = fake_strdup(call->fault->op_error_code);
    o->error_message = fake_strdup(call->fault->op_error_message);
  }
  o->next = s->sql_ops;
  s->sql_ops = o;
  fake_call_respond_json(call, 200, sql_op_json(o));
}

/* /v1/projects/...: Cloud Build (triggers, builds, also under locations/{l}) and Cloud SQL
 * Admin (instances, operations); anything else is IAM Credentials'. */
void fake_services_v1(struct fake_call *call) {
  struct fake_services *s = call->fake->services;
  char *path = fake_strdup(call->path + strlen("/v1/"));
  char *seg[MAX_SEGMENTS];
  int n = split(path, seg);
  if (n >= 6 && strcmp(seg[2], "locations") == 0 &&
      (strcmp(seg[4], "triggers") == 0 || strcmp(seg[4], "builds") == 0)) {
    for (int i = 2; i + 2 < n; i++) seg[i] = seg[i + 2];
    n -= 2;
  }
  if (n >= 4 && strcmp(seg[1], "-") != 0 &&
      (strcmp(seg[2], "triggers") == 0 || strcmp(seg[2], "builds") == 0))
    handle_cloudbuild(s, call, seg, n);
  else if (n >= 4 && strcmp(seg[1], "-") != 0 &&
           (strcmp(seg[2], "instances") == 0 || strcmp(seg[2], "operations") == 0))
    handle_sql(s, call, seg, n);
  else
    fake_iam_handle(call);
  free(path);
}

/* ---- Dataflow ---- */

/* A job is QUEUED for one op delay, then RUNNING for JOB_RUN_DELAYS more (long enough for a
 * poller to see it running), then DONE; an injected job_state ends it at the first delay.
 * Returns 0 (queued), 2 (running) or 4 (ended), in half-delays like progress_step. */
#define JOB_RUN_DELAYS 10
static long job_step(const struct job *j) {
  long long elapsed = fake_now_ms() - j->progress.start_ms, delay = j->progress.delay_ms;
  if (elapsed < delay) return 0;
  if (j->final_state || elapsed >= delay * (1 + JOB_RUN_DELAYS)) return 4;
  return 2;
}

static const char *job_state(const struct job *j) {
  long step = job_step(j);
  if (step < 2) return "JOB_STATE_QUEUED";
  if (j->final_state) return j->final_state;
  return step < 4 ? "JOB_STATE_RUNNING" : "JOB_STATE_DONE";
}

static cJSON *job_json(const struct job *j) {
  const char *state = job_state(j);
  long step = job_step(j);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", j->id);
  cJSON_AddStringToObject(o, "projectId", j->project);
  cJSON_AddStringToObject(o, "name", j->name);
  cJSON_AddStringToObject(o, "type", j->type);
  cJSON_AddStringToObject(o, "currentState", state);
  add_time(o, "currentStateTime",
           step < 2 ? j->progress.start_ms
                    : progress_at(&j->progress, step < 4 || j->final_state
                                                    ? 2
                                                    : 2 * (1 + JOB_RUN_DELAYS)));
  add_time(o, "createTime", j->progress.start_ms);
  cJSON_AddStringToObject(o, "location", j->location);
  if (step >= 2) add_time(o, "startTime", progress_at(&j->progress, 2));
  cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "jobMetadata"), "sdkVersion", "2.60.0");
  return o;
}

static int is_terminal_job(const char *state) {
  return strcmp(state, "JOB_STATE_DONE") == 0 || strcmp(state, "JOB_STATE_FAILED") == 0 ||
         strcmp(state, "JOB_STATE_CANCELLED") == 0 || strcmp(state, "JOB_STATE_UPDATED") == 0 ||
         strcmp(state, "JOB_STATE_DRAINED") == 0;
}

/* Dataflow's job names: [a-z]([-a-z0-9]{0,1022}[a-z0-9])? */
static int valid_job_name(const char *name) {
  size_t len = strlen(name);
  if (len < 1 || len > 1024 || name[0] < 'a' || name[0] > 'z') return 0;
  for (size_t i = 1; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i + 1 < len)))
      return 0;
  }
  return 1;
}

static void launch_job(struct fake_services *s, struct fake_call *call, const char *project,
                       const char *location, const cJSON *job_name) {
  if (!cJSON_IsString(job_name) || !valid_job_name(job_name->valuestring)) {
    char *message = fake_format(
        "(%s): The job name '%s' is invalid. Job names must match the regular expression "
        "[a-z]([-a-z0-9]{0,1022}[a-z0-9])?",
        project, cJSON_IsString(job_name) ? job_name->valuestring : "");
    respond_rpc(call, 400, "INVALID_ARGUMENT", message);
    free(message);
    return;
  }
  for (struct job *j = s->jobs; j; j = j->next) {
    if (strcmp(j->project, project) == 0 && strcmp(j->location, location) == 0 &&
        strcmp(j->name, job_name->valuestring) == 0 && !is_terminal_job(job_state(j))) {
      char *message = fake_format("(%s): The workflow could not be created. Causes: (%s): There is "
                             "already an active job named %s with id: %s. If you want to "
                             "submit a second job, try again by setting a different name.",
                             project, project, j->name, j->id);
      respond_rpc(call, 409, "ALREADY_EXISTS", message);
      free(message);
      return;
    }
  }
  struct job *j = fake_malloc(sizeof *j);
  memset(j, 0, sizeof *j);
  char stamp[32], digits[20];
  fake_format_time(fake_now_ms(), 0, stamp); /* 2026-11-22T05:02:08.123Z */
  fake_random_digits(digits, 19);
  snprintf(j->id, sizeof j->id, "%.10s_%.2s_%.2s_%.2s-%s", stamp, stamp + 11, stamp + 14,
           stamp + 17, digits);
  j->project = fake_strdup(project);
  j->location = fake_strdup(location);
  j->name = fake_strdup(job_name->valuestring);
  j->type = "JOB_TYPE_BATCH";
  j->progress = progress_start(s->fake);
  if (call->fault && call->fault->job_state) j->final_state = fake_strdup(call->fault->job_state);
  j->next = s->jobs;
  s->jobs = j;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "job", job_json(j));
  fake_call_respond_json(call, 200, o);
}

/* /v1b3/projects/{p}/locations/{r}/{templates:launch | flexTemplates:launch | jobs/{id}} */
void fake_services_dataflow(struct fake_call *call) {
  struct fake_services *s = call->fake->services;
  char *path = fake_strdup(call->path + strlen("/v1b3/"));
  char *seg[MAX_SEGMENTS];
  int n = split(path, seg);
  const char *verb = cut_verb(seg, n);
  if (n < 5 || strcmp(seg[2], "locations") != 0) {
    fake_call_respond_unknown_url(call);
  } else if (n == 6 && !verb && strcmp(seg[4], "jobs") == 0) {
    struct job *found = NULL;
    for (struct job *j = s->jobs; j && !found; j = j->next)
      if (strcmp(j->project, seg[1]) == 0 && strcmp(j->location, seg[3]) == 0 &&
          strcmp(j->id, seg[5]) == 0)
        found = j;
    if (!method_is(call, "GET")) {
    } else if (found) {
      fake_call_respond_json(call, 200, job_json(found));
    } else {
      char *message = fake_format("(%s): Information about job %s could not be found in our "
                             "system. Please double check that the API being used is "
                             "projects.locations.jobs.get",
                             seg[1], seg[5]);
      respond_rpc(call, 404, "NOT_FOUND", message);
      free(message);
    }
  } else if (n == 5 && verb && strcmp(verb, "launch") == 0 &&
             strcmp(seg[4], "templates") == 0) {
    const char *gcs = evhttp_find_header(&call->params, "gcsPath");
    if (!method_is(call, "POST")) {
    } else if (!gcs || strncmp(gcs, "gs://", 5) != 0) {
      respond_rpc(call, 400, "INVALID_ARGUMENT",
                  "(gcsPath): The template's Cloud Storage path must be given as gs://bucket/path.");
    } else if (call->body && !cJSON_IsObject(call->body)) {
      respond_rpc(call, 400, "INVALID_ARGUMENT", "Invalid JSON payload: expected an object.");
    } else {
      launch_job(s, call, seg[1], seg[3], cJSON_GetObjectItemCaseSensitive(call->body, "jobName"));
    }
  } else if (n == 5 && verb && strcmp(verb, "launch") == 0 &&
             strcmp(seg[4], "flexTemplates") == 0) {
    const cJSON *param = cJSON_GetObjectItemCaseSensitive(call->body, "launchParameter");
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(param, "containerSpecGcsPath");
    if (!method_is(call, "POST")) {
    } else if (!cJSON_IsObject(param)) {
      respond_rpc(call, 400, "INVALID_ARGUMENT", "launch_parameter is required.");
    } else if (!cJSON_GetObjectItemCaseSensitive(param, "containerSpec") &&
               (!cJSON_IsString(spec) || strncmp(spec->valuestring, "gs://", 5) != 0)) {
      respond_rpc(call, 400, "INVALID_ARGUMENT",
                  "(containerSpecGcsPath): the container spec must be a gs:// path.");
    } else {
      launch_job(s, call, seg[1], seg[3], cJSON_GetObjectItemCaseSensitive(param, "jobName"));
    }
  } else {
    fake_call_respond_unknown_url(call);
  }
  free(path);
}

/* ---- Cloud Run v2 ---- */

static cJSON *execution_json(const struct run_op *o, int done) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "@type", EXECUTION_TYPE);
  cJSON_AddStringToObject(e, "name", o->execution);
  cJSON_AddStringToObject(e, "uid", o->id);
  cJSON_AddStringToObject(e, "job", o->job);
  add_time(e, "createTime", o->progress.start_ms);
  if (done) {
    add_time(e, "startTime", progress_at(&o->progress, 1));
    add_time(e, "completionTime", progress_at(&o->progress, 2));
  }
  cJSON_AddNumberToObject(e, "taskCount", 1);
  cJSON_AddNumberToObject(e, "parallelism", 1);
  cJSON_AddNumberToObject(e, "runningCount", 0);
  if (done) {
    cJSON_AddNumberToObject(e, o->error_message ? "failedCount" : "succeededCount", 1);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Completed");
    cJSON_AddStringToObject(c, "state",
                            o->error_message ? "CONDITION_FAILED" : "CONDITION_SUCCEEDED");
    add_time(c, "lastTransitionTime", progress_at(&o->progress, 2));
    cJSON_AddItemToArray(cJSON_AddArrayToObject(e, "conditions"), c);
  }
  char *log = fake_format("https://console.cloud.google.com/logs/viewer?project=%s", o->project);
  cJSON_AddStringToObject(e, "logUri", log);
  free(log);
  return e;
}

static cJSON *run_op_json(const struct run_op *o) {
  int done = progress_step(&o->progress) >= 2;
  cJSON *j = cJSON_CreateObject();
  char *name = fake_format("projects/%s/locations/%s/operations/%s", o->project, o->location, o->id);
  cJSON_AddStringToObject(j, "name", name);
  free(name);
  cJSON_AddItemToObject(j, "metadata", execution_json(o, done));
  cJSON_AddBoolToObject(j, "done", done);
  if (done && o->error_message) {
    cJSON *error = cJSON_AddObjectToObject(j, "error");
    cJSON_AddNumberToObject(error, "code", 13);
    cJSON_AddStringToObject(error, "message", o->error_message);
  } else if (done) {
    cJSON_AddItemToObject(j, "response", execution_json(o, 1));
  }
  return j;
}

/* /v2/projects/{p}/locations/{r}/{jobs/{j}:run | operations/{id}} */
void fake_services_run(struct fake_call *call) {
  struct fake_services *s = call->fake->services;
  char *path = fake_strdup(call->path + strlen("/v2/"));
  char *seg[MAX_SEGMENTS];
  int n = split(path, seg);
  const char *verb = cut_verb(seg, n);
  if (n != 6 || strcmp(seg[2], "locations") != 0) {
    fake_call_respond_unknown_url(call);
  } else if (!verb && strcmp(seg[4], "operations") == 0) {
    struct run_op *found = NULL;
    for (struct run_op *o = s->run_ops; o && !found; o = o->next)
      if (strcmp(o->project, seg[1]) == 0 && strcmp(o->location, seg[3]) == 0 &&
          strcmp(o->id, seg[5]) == 0)
        found = o;
    if (!method_is(call, "GET")) {
    } else if (found) {
      fake_call_respond_json(call, 200, run_op_json(found));
    } else {
      char *message = fake_format("Operation projects/%s/locations/%s/operations/%s not found.",
                             seg[1], seg[3], seg[5]);
      respond_rpc(call, 404, "NOT_FOUND", message);
      free(message);
    }
  } else if (verb && strcmp(verb, "run") == 0 && strcmp(seg[4], "jobs") == 0) {
    struct run_job *job = NULL;
    for (struct run_job *j = s->run_jobs; j && !job; j = j->next)
      if (strcmp(j->project, seg[1]) == 0 && strcmp(j->location, seg[3]) == 0 &&
          strcmp(j->name, seg[5]) == 0)
        job = j;
    if (!method_is(call, "POST")) {
    } else if (!job) {
      char *message = fake_format("Resource '%s' of kind 'JOB' in region '%s' in project '%s' does "
                             "not exist.",
                             seg[5], seg[3], seg[1]);
      respond_rpc(call, 404, "NOT_FOUND", message);
      free(message);
    } else {
      struct run_op *o = fake_malloc(sizeof *o);
      memset(o, 0, sizeof *o);
      new_uuid(o->id);
      char suffix[6];
      fake_random_hex(suffix, 5);
      o->project = fake_strdup(job->project);
      o->location = fake_strdup(job->location);
      o->job = fake_strdup(job->name);
      o->execution = fake_format("projects/%s/locations/%s/jobs/%s/executions/%s-%s", job->project,
                            job->location, job->name, job->name, suffix);
      o->progress = progress_start(s->fake);
      if (call->fault && call->fault->op_error_code)
        o->error_message = fake_strdup(call->fault->op_error_message);
      o->next = s->run_ops;
      s->run_ops = o;
      fake_call_respond_json(call, 200, run_op_json(o));
    }
  } else {
    fake_call_respond_unknown_url(call);
  }
  free(path);
}

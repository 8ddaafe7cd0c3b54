/* fake_control.c: injected faults (which requests they match, what they do) and the
 * /_fake/ control API that tests use to add faults, read stats and change settings.
 * Control calls need no auth and are not logged or counted. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#define MAX_CLOCK_SKEW_S (10L * 365 * 86400)

struct fault {
  struct fault *next;
  char *path_prefix;
  char *method; /* or NULL for any */
  long times;   /* uses left; -1 = always */
  struct fake_fault_effect effect;
};

struct fake_faults {
  struct fault *first, **last;
  long next_id;
};

struct fake_faults *fake_faults_create(void) {
  struct fake_faults *faults = fake_malloc(sizeof *faults);
  faults->first = NULL;
  faults->last = &faults->first;
  faults->next_id = 1;
  return faults;
}

static void effect_clear(struct fake_fault_effect *effect) {
  free(effect->retry_after);
  free(effect->body);
  cJSON_Delete(effect->headers);
  free(effect->op_error_code);
  free(effect->op_error_message);
  free(effect->build_status);
  free(effect->job_state);
}

static void faults_clear(struct fake_faults *faults) {
  struct fault *f = faults->first;
  while (f) {
    struct fault *next = f->next;
    free(f->path_prefix);
    free(f->method);
    effect_clear(&f->effect);
    free(f);
    f = next;
  }
  faults->first = NULL;
  faults->last = &faults->first;
}

void fake_faults_free(struct fake_faults *faults) {
  if (!faults) return;
  faults_clear(faults);
  free(faults);
}

void fake_fault_effect_free(struct fake_fault_effect *effect) {
  if (!effect) return;
  effect_clear(effect);
  free(effect);
}

struct fake_fault_effect *fake_faults_match(struct fake_faults *faults, const char *method,
                                            const char *path) {
  for (struct fault *f = faults->first; f; f = f->next) {
    if (f->times == 0 || strncmp(path, f->path_prefix, strlen(f->path_prefix)) != 0 ||
        (f->method && strcasecmp(f->method, method) != 0))
      continue;
    if (f->times > 0) f->times--;
    struct fake_fault_effect *copy = fake_malloc(sizeof *copy);
    *copy = f->effect;
    copy->retry_after = fake_strdup(f->effect.retry_after);
    copy->body = fake_strdup(f->effect.body);
    copy->headers = f->effect.headers ? cJSON_Duplicate(f->effect.headers, 1) : NULL;
    copy->op_error_code = fake_strdup(f->effect.op_error_code);
    copy->op_error_message = fake_strdup(f->effect.op_error_message);
    copy->build_status = fake_strdup(f->effect.build_status);
    copy->job_state = fake_strdup(f->effect.job_state);
    return copy;
  }
  return NULL;
}

static int json_long(const cJSON *item, long *out) {
  if (!cJSON_IsNumber(item) || item->valuedouble < -1e15 || item->valuedouble > 1e15 ||
      item->valuedouble != (double)(long)item->valuedouble)
    return -1;
  *out = (long)item->valuedouble;
  return 0;
}

/* Reads an optional integer member no smaller than min; returns an error text or NULL. */
static const char *optional_long(const cJSON *obj, const char *key, long min, long *out) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!item) return NULL;
  long v;
  if (json_long(item, &v) != 0 || v < min) return key;
  *out = v;
  return NULL;
}

static const char *optional_string(const cJSON *obj, const char *key, char **out) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!item) return NULL;
  if (!cJSON_IsString(item)) return key;
  *out = fake_strdup(item->valuestring);
  return NULL;
}

/* Parses one fault; returns the name of the first bad member, or NULL. */
static const char *fault_parse(const cJSON *spec, struct fault *f) {
  const char *bad = NULL;
  long status = 0;
  const cJSON *path = cJSON_GetObjectItemCaseSensitive(spec, "path");
  if (!cJSON_IsString(path) || path->valuestring[0] != '/') return "path";
  f->path_prefix = fake_strdup(path->valuestring);
  f->times = 1;
  const cJSON *retry_after = cJSON_GetObjectItemCaseSensitive(spec, "retry_after");
  long seconds;
  if (json_long(retry_after, &seconds) == 0) {
    char text[32];
    snprintf(text, sizeof text, "%ld", seconds);
    f->effect.retry_after = fake_strdup(text);
  } else if ((bad = optional_string(spec, "retry_after", &f->effect.retry_after))) {
    return bad;
  }
  if ((bad = optional_string(spec, "method", &f->method)) ||
      (bad = optional_long(spec, "status", 100, &status)) ||
      (bad = optional_long(spec, "times", -1, &f->times)) ||
      (bad = optional_long(spec, "delay_ms", 0, &f->effect.delay_ms)) ||
      (bad = optional_string(spec, "body", &f->effect.body)) ||
      (bad = optional_string(spec, "build_status", &f->effect.build_status)) ||
      (bad = optional_string(spec, "job_state", &f->effect.job_state)))
    return bad;
  if (status > 599) return "status";
  const cJSON *headers = cJSON_GetObjectItemCaseSensitive(spec, "headers");
  if (headers) {
    const cJSON *pair;
    if (!cJSON_IsArray(headers)) return "headers";
    cJSON_ArrayForEach(pair, headers) {
      if (cJSON_GetArraySize(pair) != 2 || !cJSON_IsString(cJSON_GetArrayItem(pair, 0)) ||
          !cJSON_IsString(cJSON_GetArrayItem(pair, 1)))
        return "headers";
    }
    f->effect.headers = cJSON_Duplicate(headers, 1);
  }
  if (f->times == 0) return "times";
  f->effect.status = (int)status;
  const cJSON *drop = cJSON_GetObjectItemCaseSensitive(spec, "drop");
  if (drop && !cJSON_IsBool(drop)) return "drop";
  f->effect.drop = cJSON_IsTrue(drop);
  const cJSON *gzip = cJSON_GetObjectItemCaseSensitive(spec, "gzip");
  if (gzip && !cJSON_IsBool(gzip)) return "gzip";
  f->effect.gzip = cJSON_IsTrue(gzip);
  const cJSON *op_error = cJSON_GetObjectItemCaseSensitive(spec, "op_error");
  if (!op_error) return NULL;
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(op_error, "code");
  if (!cJSON_IsObject(op_error) || !cJSON_IsString(code)) return "op_error";
  long http_status = 400;
  if ((bad = optional_string(op_error, "message", &f->effect.op_error_message)) ||
      (bad = optional_long(op_error, "http_status", 400, &http_status)) || http_status > 599)
    return "op_error";
  f->effect.op_error_code = fake_strdup(code->valuestring);
  f->effect.op_error_http_status = (int)http_status;
  if (!f->effect.op_error_message) f->effect.op_error_message = fake_strdup("");
  return NULL;
}

static cJSON *fault_json(const struct fault *f) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "id", (double)f->effect.id);
  cJSON_AddStringToObject(o, "path", f->path_prefix);
  if (f->method) cJSON_AddStringToObject(o, "method", f->method);
  if (f->effect.status) cJSON_AddNumberToObject(o, "status", f->effect.status);
  cJSON_AddNumberToObject(o, "times", (double)f->times);
  if (f->effect.retry_after) cJSON_AddStringToObject(o, "retry_after", f->effect.retry_after);
  if (f->effect.delay_ms) cJSON_AddNumberToObject(o, "delay_ms", (double)f->effect.delay_ms);
  if (f->effect.drop) cJSON_AddTrueToObject(o, "drop");
  if (f->effect.gzip) cJSON_AddTrueToObject(o, "gzip");
  if (f->effect.body) cJSON_AddStringToObject(o, "body", f->effect.body);
  if (f->effect.headers) cJSON_AddItemToObject(o, "headers", cJSON_Duplicate(f->effect.headers, 1));
  if (f->effect.build_status) cJSON_AddStringToObject(o, "build_status", f->effect.build_status);
  if (f->effect.job_state) cJSON_AddStringToObject(o, "job_state", f->effect.job_state);
  if (f->effect.op_error_code) {
    cJSON *e = cJSON_AddObjectToObject(o, "op_error");
    cJSON_AddStringToObject(e, "code", f->effect.op_error_code);
    cJSON_AddStringToObject(e, "message", f->effect.op_error_message);
    cJSON_AddNumberToObject(e, "http_status", f->effect.op_error_http_status);
  }
  return o;
}

static cJSON *error_json(const char *fmt, const char *what) {
  char text[200];
  snprintf(text, sizeof text, fmt, what);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "error", text);
  return o;
}

static cJSON *read_json_body(struct evhttp_request *req) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t len = evbuffer_get_length(in);
  if (len == 0) return cJSON_CreateObject();
  char *text = fake_malloc(len + 1);
  evbuffer_copyout(in, text, len);
  text[len] = '\0';
  cJSON *body = cJSON_ParseWithLength(text, len);
  free(text);
  return body;
}

static void faults_add(struct fake *fake, struct evhttp_request *req, const cJSON *spec) {
  struct fault *f = fake_malloc(sizeof *f);
  memset(f, 0, sizeof *f);
  const char *bad = fault_parse(spec, f);
  if (bad) {
    free(f->path_prefix);
    free(f->method);
    effect_clear(&f->effect);
    free(f);
    fake_reply_json(req, 400, error_json("invalid fault: bad or missing '%s'", bad));
    return;
  }
  struct fake_faults *faults = fake->faults;
  f->effect.id = faults->next_id++;
  *faults->last = f;
  faults->last = &f->next;
  cJSON *answer = cJSON_CreateObject();
  cJSON_AddNumberToObject(answer, "id", (double)f->effect.id);
  fake_reply_json(req, 200, answer);
}

static void faults_delete(struct fake *fake, struct evhttp_request *req, const cJSON *body) {
  (void)body;
  faults_clear(fake->faults);
  fake_reply_json(req, 200, cJSON_CreateObject());
}

static void faults_list(struct fake *fake, struct evhttp_request *req, const cJSON *body) {
  cJSON *o = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(o, "faults");
  (void)body;
  for (const struct fault *f = fake->faults->first; f; f = f->next)
    cJSON_AddItemToArray(list, fault_json(f));
  fake_reply_json(req, 200, o);
}

static void stats_reply(struct fake *fake, struct evhttp_request *req, const cJSON *body) {
  const struct fake_stats *stats = &fake->stats;
  cJSON *o = cJSON_CreateObject();
  (void)body;
  cJSON_AddNumberToObject(o, "requests", (double)stats->requests);
  cJSON_AddNumberToObject(o, "inflight", (double)stats->inflight);
  cJSON_AddNumberToObject(o, "max_inflight", (double)stats->max_inflight);
  cJSON_AddNumberToObject(o, "tokens_issued", (double)stats->tokens_issued);
  fake_reply_json(req, 200, o);
}

static void stats_reset(struct fake *fake, struct evhttp_request *req, const cJSON *body) {
  fake->stats.requests = 0;
  fake->stats.tokens_issued = 0;
  fake->stats.max_inflight = fake->stats.inflight;
  stats_reply(fake, req, body);
}

static void config_reply(struct fake *fake, struct evhttp_request *req, const cJSON *body) {
  const struct fake_settings *settings = &fake->settings;
  cJSON *o = cJSON_CreateObject();
  (void)body;
  cJSON_AddNumberToObject(o, "op_delay_ms", (double)settings->op_delay_ms);
  cJSON_AddNumberToObject(o, "wait_max_ms", (double)settings->wait_max_ms);
  cJSON_AddNumberToObject(o, "token_lifetime_s", (double)settings->token_lifetime_s);
  cJSON_AddNumberToObject(o, "id_token_lifetime_s", (double)settings->id_token_lifetime_s);
  cJSON_AddNumberToObject(o, "clock_skew_s", (double)settings->clock_skew_s);
  fake_reply_json(req, 200, o);
}

static void config_set(struct fake *fake, struct evhttp_request *req, const cJSON *spec) {
  struct fake_settings next = fake->settings;
  const char *bad;
  if ((bad = optional_long(spec, "op_delay_ms", 0, &next.op_delay_ms)) ||
      (bad = optional_long(spec, "wait_max_ms", 0, &next.wait_max_ms)) ||
      (bad = optional_long(spec, "token_lifetime_s", 1, &next.token_lifetime_s)) ||
      (bad = optional_long(spec, "id_token_lifetime_s", 1, &next.id_token_lifetime_s)) ||
      (bad = optional_long(spec, "clock_skew_s", -MAX_CLOCK_SKEW_S, &next.clock_skew_s)) ||
      (next.clock_skew_s > MAX_CLOCK_SKEW_S && (bad = "clock_skew_s"))) {
    fake_reply_json(req, 400, error_json("invalid config: bad '%s'", bad));
    return;
  }
  fake->settings = next;
  config_reply(fake, req, spec);
}

static const struct control_endpoint {
  const char *path;
  enum evhttp_cmd_type method;
  void (*handle)(struct fake *fake, struct evhttp_request *req, const cJSON *body);
} endpoints[] = {
    {"/_fake/faults", EVHTTP_REQ_POST, faults_add},
    {"/_fake/faults", EVHTTP_REQ_DELETE, faults_delete},
    {"/_fake/faults", EVHTTP_REQ_GET, faults_list},
    {"/_fake/stats", EVHTTP_REQ_GET, stats_reply},
    {"/_fake/reset-stats", EVHTTP_REQ_POST, stats_reset},
    {"/_fake/config", EVHTTP_REQ_GET, config_reply},
    {"/_fake/config", EVHTTP_REQ_POST, config_set},
};

void fake_control_handle(struct fake *fake, struct evhttp_request *req, const char *path) {
  enum evhttp_cmd_type method = evhttp_request_get_command(req);
  int path_known = 0;
  for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++) {
    if (strcmp(path, endpoints[i].path) != 0) continue;
    path_known = 1;
    if (endpoints[i].method != method) continue;
    cJSON *body = read_json_body(req);
    if (cJSON_IsObject(body))
      endpoints[i].handle(fake, req, body);
    else
      fake_reply_json(req, 400, error_json("%s", "the body must be a JSON object"));
    cJSON_Delete(body);
    return;
  }
  fake_reply_json(req, path_known ? 405 : 404,
                  error_json(path_known ? "method not allowed on %s" : "no control endpoint %s",
                             path));
}

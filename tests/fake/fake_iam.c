/* fake_iam.c: the fake's service accounts (each with a numeric unique id and, for signJwt,
 * a Google-managed key made by fake_keys.c) and the IAM Service Account Credentials API
 * (iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{account}:generateAccessToken,
 * :generateIdToken, :signJwt), plus each account's public key at
 * www.googleapis.com/service_accounts/v1/jwk/{email}. Any caller with a valid token and the
 * cloud-platform (or iam) scope may act as any known account except the one that is always
 * denied; errors follow the API's shape ({"error": {code, message, status, details}}). */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#define IAM_SCOPE "https://www.googleapis.com/auth/iam"
#define DELEGATE_PREFIX "projects/-/serviceAccounts/"
#define ACCOUNTS_PATH "/v1/projects/-/serviceAccounts/"
#define JWK_PATH "/service_accounts/v1/jwk/"
#define MAX_ACCESS_TOKEN_LIFETIME_S 3600
#define DEFAULT_ACCESS_TOKEN_LIFETIME_S 3600
#define MAX_SIGNED_JWT_LIFETIME_S (12L * 3600)

static const struct {
  const char *email;
  int denied; /* exists, but every call on it is refused */
} seed_accounts[] = {
    {FAKE_RUNNER_SA, 0},
    {FAKE_DEPLOYER_SA, 0},
    {"builder@" FAKE_PROJECT_ID ".iam.gserviceaccount.com", 0},
    {FAKE_COMPUTE_SA, 0},
    {"denied@" FAKE_PROJECT_ID ".iam.gserviceaccount.com", 1},
};
#define N_ACCOUNTS (sizeof seed_accounts / sizeof seed_accounts[0])

struct account {
  const char *email;
  int denied;
  char unique_id[22];
  char key_id[41];
  int key_slot; /* -1: none */
};

struct fake_iam {
  struct fake_keys *keys;
  struct account accounts[N_ACCOUNTS];
};

enum verb { GENERATE_ACCESS_TOKEN, GENERATE_ID_TOKEN, SIGN_JWT };

static const struct {
  const char *name;
  const char *permission;
  const char *method; /* the RPC, as quota and scope errors name it */
} verbs[] = {
    {"generateAccessToken", "iam.serviceAccounts.getAccessToken", "GenerateAccessToken"},
    {"generateIdToken", "iam.serviceAccounts.getOpenIdToken", "GenerateIdToken"},
    {"signJwt", "iam.serviceAccounts.signJwt", "SignJwt"},
};

struct fake_iam *fake_iam_create(struct fake_keys *keys) {
  struct fake_iam *iam = fake_malloc(sizeof *iam);
  memset(iam, 0, sizeof *iam);
  iam->keys = keys;
  for (size_t i = 0; i < N_ACCOUNTS; i++) {
    struct account *a = &iam->accounts[i];
    a->email = seed_accounts[i].email;
    a->denied = seed_accounts[i].denied;
    fake_random_digits(a->unique_id, 21);
    fake_random_hex(a->key_id, 40);
    a->key_slot = a->denied ? -1 : fake_keys_reserve(keys);
  }
  return iam;
}

void fake_iam_free(struct fake_iam *iam) {
  free(iam);
}

/* An account by email or unique id, as the API accepts either. */
static const struct account *find_account(const struct fake_iam *iam, const char *name) {
  for (size_t i = 0; i < N_ACCOUNTS; i++)
    if (strcmp(iam->accounts[i].email, name) == 0 ||
        strcmp(iam->accounts[i].unique_id, name) == 0)
      return &iam->accounts[i];
  return NULL;
}

const char *fake_iam_unique_id(const struct fake_iam *iam, const char *email) {
  const struct account *a = find_account(iam, email);
  return a ? a->unique_id : NULL;
}

/* {"error": {"code", "message", "status", "details": [ErrorInfo]}} as Google's newer APIs
 * answer; reason NULL leaves out the details. */
static void respond_rpc_error(struct fake_call *call, int code, const char *status,
                              const char *message, const char *reason, const char *domain,
                              const char *meta_key, const char *meta_value) {
  cJSON *root = cJSON_CreateObject();
  cJSON *error = cJSON_AddObjectToObject(root, "error");
  cJSON_AddNumberToObject(error, "code", code);
  cJSON_AddStringToObject(error, "message", message);
  cJSON_AddStringToObject(error, "status", status);
  if (reason) {
    cJSON *info = cJSON_CreateObject();
    cJSON_AddStringToObject(info, "@type", "type.googleapis.com/google.rpc.ErrorInfo");
    cJSON_AddStringToObject(info, "reason", reason);
    cJSON_AddStringToObject(info, "domain", domain);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(info, "metadata"), meta_key, meta_value);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(error, "details"), info);
  }
  fake_call_respond_json(call, code, root);
}

static void respond_denied(struct fake_call *call, enum verb verb) {
  char message[200];
  snprintf(message, sizeof message,
           "Permission '%s' denied on resource (or it may not exist).", verbs[verb].permission);
  respond_rpc_error(call, 403, "PERMISSION_DENIED", message, "IAM_PERMISSION_DENIED",
                    "iam.googleapis.com", "permission", verbs[verb].permission);
}

static void respond_invalid(struct fake_call *call, const char *message) {
  respond_rpc_error(call, 400, "INVALID_ARGUMENT", message, NULL, NULL, NULL, NULL);
}

/* Every delegate must be "projects/-/serviceAccounts/{known account}". Returns 0, or -1
 * having answered. */
static int check_delegates(struct fake_call *call, const cJSON *body, enum verb verb) {
  const cJSON *delegates = cJSON_GetObjectItemCaseSensitive(body, "delegates");
  const cJSON *item;
  if (!delegates || cJSON_IsNull(delegates)) return 0;
  if (!cJSON_IsArray(delegates)) {
    respond_invalid(call, "Invalid value at 'delegates', expected a list of strings.");
    return -1;
  }
  cJSON_ArrayForEach(item, delegates) {
    const char *name = cJSON_IsString(item) ? item->valuestring : NULL;
    if (!name || strncmp(name, DELEGATE_PREFIX, strlen(DELEGATE_PREFIX)) != 0) {
      char message[400];
      snprintf(message, sizeof message,
               "Invalid form of delegate: %.200s. The delegate must be of the form "
               "projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.",
               name ? name : "(not a string)");
      respond_invalid(call, message);
      return -1;
    }
    const struct account *a = find_account(call->fake->iam, name + strlen(DELEGATE_PREFIX));
    if (!a || a->denied) {
      respond_denied(call, verb);
      return -1;
    }
  }
  return 0;
}

/* A protobuf Duration in JSON: "3600s", "1.5s". Returns whole seconds or -1. */
static long parse_duration(const char *text) {
  char *end;
  if (!text || !isdigit((unsigned char)*text)) return -1;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || strcmp(end, "s") != 0 || v > 1e9) return -1;
  return (long)v;
}

static void generate_access_token(struct fake_call *call, const struct account *target) {
  const cJSON *scope = cJSON_GetObjectItemCaseSensitive(call->body, "scope");
  const cJSON *lifetime_item = cJSON_GetObjectItemCaseSensitive(call->body, "lifetime");
  const cJSON *item;
  long lifetime = DEFAULT_ACCESS_TOKEN_LIFETIME_S;
  if (!cJSON_IsArray(scope) || cJSON_GetArraySize(scope) == 0) {
    respond_invalid(call, "Scope required.");
    return;
  }
  size_t size = 1;
  cJSON_ArrayForEach(item, scope) {
    if (!cJSON_IsString(item) || !*item->valuestring) {
      respond_invalid(call, "Invalid value at 'scope', expected a list of non-empty strings.");
      return;
    }
    size += strlen(item->valuestring) + 1;
  }
  if (lifetime_item) {
    lifetime = cJSON_IsString(lifetime_item) ? parse_duration(lifetime_item->valuestring) : -1;
    if (lifetime <= 0) {
      respond_invalid(call, "Invalid value at 'lifetime' (type.googleapis.com/"
                            "google.protobuf.Duration): expected a duration such as \"3600s\".");
      return;
    }
    if (lifetime > MAX_ACCESS_TOKEN_LIFETIME_S) {
      respond_invalid(call, "The lifetime requested exceeds the maximum allowed lifetime of "
                            "3600s. To extend it, see "
                            "https://cloud.google.com/iam/help/credentials/lifetime");
      return;
    }
  }
  char *scopes = fake_malloc(size);
  scopes[0] = '\0';
  cJSON_ArrayForEach(item, scope) {
    if (scopes[0]) strcat(scopes, " ");
    strcat(scopes, item->valuestring);
  }
  /* The fake's token_lifetime_s caps every access token, so tests can make them short. */
  if (lifetime > call->fake->settings.token_lifetime_s)
    lifetime = call->fake->settings.token_lifetime_s;
  const char *token = fake_oauth_issue(call->fake, "ya29.c.", target->email, scopes, lifetime);
  free(scopes);
  char expire_time[32];
  time_t expires = (time_t)(fake_clock_s(call->fake) + lifetime);
  struct tm tm;
  gmtime_r(&expires, &tm);
  strftime(expire_time, sizeof expire_time, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cJSON *answer = cJSON_CreateObject();
  cJSON_AddStringToObject(answer, "accessToken", token);
  cJSON_AddStringToObject(answer, "expireTime", expire_time);
  fake_call_respond_json(call, 200, answer);
}

static void generate_id_token(struct fake_call *call, const struct account *target) {
  const cJSON *audience = cJSON_GetObjectItemCaseSensitive(call->body, "audience");
  const cJSON *include_email = cJSON_GetObjectItemCaseSensitive(call->body, "includeEmail");
  if (!cJSON_IsString(audience) || !*audience->valuestring) {
    respond_invalid(call, "Audience required.");
    return;
  }
  if (include_email && !cJSON_IsBool(include_email)) {
    respond_invalid(call, "Invalid value at 'include_email' (TYPE_BOOL).");
    return;
  }
  if (!fake_idtoken_ready(call->fake)) {
    fake_call_retry_later(call);
    return;
  }
  cJSON *claims = fake_idtoken_claims(audience->valuestring, target->unique_id,
                                      target->unique_id);
  if (cJSON_IsTrue(include_email)) {
    cJSON_AddStringToObject(claims, "email", target->email);
    cJSON_AddBoolToObject(claims, "email_verified", 1);
  }
  char *jwt = fake_idtoken_sign(call->fake, claims);
  cJSON *answer = cJSON_CreateObject();
  cJSON_AddStringToObject(answer, "token", jwt ? jwt : "");
  if (jwt) OPENSSL_cleanse(jwt, strlen(jwt));
  free(jwt);
  fake_call_respond_json(call, 200, answer);
}

static void sign_jwt(struct fake_call *call, const struct account *target) {
  const cJSON *payload = cJSON_GetObjectItemCaseSensitive(call->body, "payload");
  EVP_PKEY *key = fake_keys_get(call->fake->iam->keys, target->key_slot);
  if (!cJSON_IsString(payload) || !*payload->valuestring) {
    respond_invalid(call, "Payload required.");
    return;
  }
  cJSON *claims = cJSON_Parse(payload->valuestring);
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
  if (!cJSON_IsObject(claims)) {
    respond_invalid(call, "Invalid JWT payload: the payload must be a JSON object.");
  } else if (exp && (!cJSON_IsNumber(exp) ||
                     exp->valuedouble >
                         (double)(fake_clock_s(call->fake) + MAX_SIGNED_JWT_LIFETIME_S))) {
    respond_invalid(call, "Invalid JWT payload: the exp claim must be an integer timestamp no "
                          "more than 12 hours in the future.");
  } else if (!key) {
    fake_call_retry_later(call);
  } else {
    char *jwt = fake_jwt_sign(key, target->key_id, payload->valuestring);
    cJSON *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(answer, "keyId", target->key_id);
    cJSON_AddStringToObject(answer, "signedJwt", jwt ? jwt : "");
    if (jwt) OPENSSL_cleanse(jwt, strlen(jwt));
    free(jwt);
    fake_call_respond_json(call, 200, answer);
  }
  cJSON_Delete(claims);
}

/* POST /v1/projects/-/serviceAccounts/{email or unique id}:{verb} */
void fake_iam_handle(struct fake_call *call) {
  const char *rest = call->path + strlen(ACCOUNTS_PATH);
  const char *colon = strrchr(call->path, ':');
  int verb = -1;
  if (strncmp(call->path, ACCOUNTS_PATH, strlen(ACCOUNTS_PATH)) == 0 && colon && colon > rest)
    for (int v = GENERATE_ACCESS_TOKEN; v <= SIGN_JWT; v++)
      if (strcmp(colon + 1, verbs[v].name) == 0) verb = v;
  if (verb < 0 || strcmp(call->method, "POST") != 0) {
    fake_call_respond_unknown_url(call);
    return;
  }
  if (!fake_has_scope(call->scopes, FAKE_CLOUD_PLATFORM) &&
      !fake_has_scope(call->scopes, IAM_SCOPE)) {
    char method[120];
    snprintf(method, sizeof method, "google.iam.credentials.v1.IAMCredentials.%s",
             verbs[verb].method);
    respond_rpc_error(call, 403, "PERMISSION_DENIED",
                      "Request had insufficient authentication scopes.",
                      "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "googleapis.com", "method", method);
    return;
  }
  char *encoded = fake_malloc((size_t)(colon - rest) + 1);
  memcpy(encoded, rest, (size_t)(colon - rest));
  encoded[colon - rest] = '\0';
  char *name = evhttp_uridecode(encoded, 0, NULL);
  free(encoded);
  const struct account *target = name ? find_account(call->fake->iam, name) : NULL;
  cJSON *extra = fake_call_log_extra(call);
  cJSON_DeleteItemFromObjectCaseSensitive(extra, "impersonated"); /* a retry logs it again */
  cJSON_AddStringToObject(extra, "impersonated", target ? target->email : name ? name : "");
  free(name);
  if (call->body && !cJSON_IsObject(call->body)) {
    respond_invalid(call, "Invalid JSON payload received. The request body must be an object.");
  } else if (!target || target->denied) {
    respond_denied(call, (enum verb)verb);
  } else if (check_delegates(call, call->body, (enum verb)verb) == 0) {
    if (verb == GENERATE_ACCESS_TOKEN)
      generate_access_token(call, target);
    else if (verb == GENERATE_ID_TOKEN)
      generate_id_token(call, target);
    else
      sign_jwt(call, target);
  }
}

/* GET /service_accounts/v1/jwk/{email}: the public half of the account's signJwt key. */
void fake_iam_jwk(struct fake_call *call) {
  char *email = evhttp_uridecode(call->path + strlen(JWK_PATH), 0, NULL);
  const struct account *a = email ? find_account(call->fake->iam, email) : NULL;
  free(email);
  EVP_PKEY *key = a ? fake_keys_get(call->fake->iam->keys, a->key_slot) : NULL;
  if (!a || a->denied || strcmp(call->method, "GET") != 0) {
    fake_call_respond_unknown_url(call);
  } else if (!key) {
    fake_call_retry_later(call);
  } else {
    cJSON *body = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(body, "keys"), fake_jwk(key, a->key_id));
    fake_call_respond_json(call, 200, body);
  }
}

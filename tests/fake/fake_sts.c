/* fake_sts.c: workload identity federation as gcpr-fake plays both sides of it. The
 * external side: an OIDC issuer (its own RS256 key, from fake_keys.c) whose subject token is
 * written to DIR/subject-token.jwt and served at the metadata listener's /subject-token, and
 * the two external_account credential files that use it (external-file.json, with service
 * account impersonation; external-url.json, without). The Google side: the Security Token
 * Service (sts.googleapis.com/v1/token), which checks the subject token against the one
 * workload identity pool provider and issues a federated access token for
 * principal://iam.googleapis.com/.../subject/{sub}. Subject tokens never reach the log. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "jwt.h"

#define ISSUER "https://token.actions.example.com"
#define POOL_PATH                                                                          \
  "iam.googleapis.com/projects/" FAKE_PROJECT_NUMBER                                       \
  "/locations/global/workloadIdentityPools/gcpr-pool"
#define PROVIDER_AUDIENCE "//" POOL_PATH "/providers/gcpr-provider"
#define SUBJECT_AUDIENCE "https:" PROVIDER_AUDIENCE
#define PRINCIPAL_PREFIX "principal://" POOL_PATH "/subject/"
#define SUBJECT "repo:demo/gcpr:ref:refs/heads/main"
#define SUBJECT_LIFETIME_S 86400
#define TOKEN_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"
#define ACCESS_TOKEN_TYPE "urn:ietf:params:oauth:token-type:access_token"
#define JWT_TOKEN_TYPE "urn:ietf:params:oauth:token-type:jwt"
#define ID_TOKEN_TYPE "urn:ietf:params:oauth:token-type:id_token"
#define STS_TOKEN_URL "https://sts.googleapis.com/v1/token"

struct fake_sts {
  EVP_PKEY *issuer_key; /* owned by the key store */
  struct fake_keys *keys;
  int slot;
  char kid[41];
};

/* A subject token as a CI system's OIDC issuer would mint it, valid for a day from now. */
static char *mint_subject_token(const struct fake_sts *sts, long long now) {
  char jti[37];
  fake_random_hex(jti, 32);
  cJSON *claims = cJSON_CreateObject();
  cJSON_AddStringToObject(claims, "jti", jti);
  cJSON_AddStringToObject(claims, "sub", SUBJECT);
  cJSON_AddStringToObject(claims, "aud", SUBJECT_AUDIENCE);
  cJSON_AddStringToObject(claims, "ref", "refs/heads/main");
  cJSON_AddStringToObject(claims, "repository", "demo/gcpr");
  cJSON_AddStringToObject(claims, "repository_owner", "demo");
  cJSON_AddStringToObject(claims, "iss", ISSUER);
  cJSON_AddNumberToObject(claims, "nbf", (double)now);
  cJSON_AddNumberToObject(claims, "iat", (double)now);
  cJSON_AddNumberToObject(claims, "exp", (double)(now + SUBJECT_LIFETIME_S));
  char *claims_json = cJSON_PrintUnformatted(claims);
  cJSON_Delete(claims);
  char *jwt = claims_json ? fake_jwt_sign(sts->issuer_key, sts->kid, claims_json) : NULL;
  free(claims_json);
  return jwt;
}

/* external_account files in the layout gcloud iam workload-identity-pools create-cred-config
 * writes. */
static cJSON *external_account(cJSON *credential_source, int impersonate) {
  cJSON *doc = cJSON_CreateObject();
  cJSON_AddStringToObject(doc, "universe_domain", "googleapis.com");
  cJSON_AddStringToObject(doc, "type", "external_account");
  cJSON_AddStringToObject(doc, "audience", PROVIDER_AUDIENCE);
  cJSON_AddStringToObject(doc, "subject_token_type", JWT_TOKEN_TYPE);
  cJSON_AddStringToObject(doc, "token_url", STS_TOKEN_URL);
  cJSON_AddItemToObject(doc, "credential_source", credential_source);
  if (impersonate)
    cJSON_AddStringToObject(doc, "service_account_impersonation_url",
                            FAKE_IAM_CREDENTIALS_URL FAKE_DEPLOYER_SA ":generateAccessToken");
  return doc;
}

static int write_files(const char *dir, int metadata_port, const char *subject_token) {
  char path[PATH_MAX + 32], url[64];
  snprintf(path, sizeof path, "%s/subject-token.jwt", dir);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/subject-token", metadata_port);
  cJSON *file_source = cJSON_CreateObject();
  cJSON_AddStringToObject(file_source, "file", path);
  cJSON *url_source = cJSON_CreateObject();
  cJSON_AddStringToObject(url_source, "url", url);
  cJSON_AddStringToObject(cJSON_AddObjectToObject(url_source, "headers"), "Metadata", "true");
  cJSON *format = cJSON_AddObjectToObject(url_source, "format");
  cJSON_AddStringToObject(format, "type", "json");
  cJSON_AddStringToObject(format, "subject_token_field_name", "token");
  cJSON *from_file = external_account(file_source, 1), *from_url = external_account(url_source, 0);
  int rc = fake_write_file(dir, "subject-token.jwt", subject_token, strlen(subject_token), 0600);
  if (rc == 0) rc = fake_write_json_file(dir, "external-file.json", from_file, 0600);
  if (rc == 0) rc = fake_write_json_file(dir, "external-url.json", from_url, 0600);
  cJSON_Delete(from_file);
  cJSON_Delete(from_url);
  return rc;
}

struct fake_sts *fake_sts_create(struct fake_keys *keys) {
  struct fake_sts *sts = fake_malloc(sizeof *sts);
  memset(sts, 0, sizeof *sts);
  fake_random_hex(sts->kid, 40);
  sts->keys = keys;
  sts->slot = fake_keys_reserve(keys);
  return sts;
}

int fake_sts_write_files(struct fake_sts *sts, const char *dir, int metadata_port,
                         const char **err) {
  sts->issuer_key = fake_keys_wait(sts->keys, sts->slot);
  char *subject_token = mint_subject_token(sts, fake_now_ms() / 1000);
  int rc = subject_token ? write_files(dir, metadata_port, subject_token) : -1;
  if (subject_token) OPENSSL_cleanse(subject_token, strlen(subject_token));
  free(subject_token);
  *err = rc ? "cannot write subject-token.jwt, external-file.json and external-url.json" : NULL;
  return rc;
}

void fake_sts_free(struct fake_sts *sts) {
  free(sts);
}

static void sts_error(struct fake_call *call, const char *error, const char *description) {
  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "error", error);
  cJSON_AddStringToObject(body, "error_description", description);
  fake_call_respond_json(call, 400, body);
}

static const char *string_member(const cJSON *obj, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* The request's parameters, from a form or (as STS also accepts) a JSON object. */
struct exchange {
  struct evkeyvalq form;
  cJSON *json;
};

static const char *param(const struct exchange *x, const char *name) {
  return x->json ? string_member(x->json, name) : evhttp_find_header(&x->form, name);
}

/* Checks the subject token as the provider is configured (issuer, audience, expiry, and
 * google.subject = assertion.sub); answers and returns NULL, or returns its sub (malloc'd). */
static char *check_subject_token(struct fake_call *call, const char *token) {
  char *header_json = NULL, *claims_json = NULL, *sub = NULL;
  const char *err;
  if (gcpr_jwt_verify_rs256(token, call->fake->sts->issuer_key, &header_json, &claims_json,
                            &err) != 0) {
    sts_error(call, "invalid_grant",
              strcmp(err, "malformed JWT") == 0
                  ? "Invalid subject token: not a well-formed JWT."
                  : "Invalid subject token: the signature does not match any key of the "
                    "provider's issuer.");
    return NULL;
  }
  cJSON *claims = cJSON_Parse(claims_json);
  const char *iss = string_member(claims, "iss"), *aud = string_member(claims, "aud");
  const char *subject = string_member(claims, "sub");
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
  char description[700];
  if (!iss || strcmp(iss, ISSUER) != 0) {
    snprintf(description, sizeof description,
             "The issuer in ID Token %.200s does not match the expected ones: " ISSUER,
             iss ? iss : "(none)");
    sts_error(call, "invalid_grant", description);
  } else if (!aud || strcmp(aud, SUBJECT_AUDIENCE) != 0) {
    snprintf(description, sizeof description,
             "The audience in ID Token [%.200s] does not match the expected audience "
             SUBJECT_AUDIENCE ".",
             aud ? aud : "");
    sts_error(call, "invalid_grant", description);
  } else if (!cJSON_IsNumber(exp) || exp->valuedouble <= (double)fake_clock_s(call->fake)) {
    sts_error(call, "invalid_grant", "The subject token has expired.");
  } else if (!subject || !*subject) {
    sts_error(call, "invalid_grant",
              "The mapped attribute 'google.subject' must not be empty.");
  } else {
    sub = fake_strdup(subject);
  }
  cJSON_Delete(claims);
  free(header_json);
  free(claims_json);
  return sub;
}

static void exchange(struct fake_call *call, const struct exchange *x) {
  const char *grant_type = param(x, "grant_type"), *audience = param(x, "audience");
  const char *requested = param(x, "requested_token_type"), *scope = param(x, "scope");
  const char *token = param(x, "subject_token"), *token_type = param(x, "subject_token_type");
  fake_log_grant_type(call, grant_type);
  if (!grant_type || strcmp(grant_type, TOKEN_EXCHANGE) != 0) {
    sts_error(call, "unsupported_grant_type",
              "Invalid value for \"grant_type\". The only supported value is " TOKEN_EXCHANGE
              ".");
  } else if (!audience || strncmp(audience, "//iam.googleapis.com/projects/", 30) != 0) {
    sts_error(call, "invalid_request",
              "Invalid value for \"audience\". This value should be the full resource name of "
              "the Identity Provider. See "
              "https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the "
              "list of possible formats.");
  } else if (strcmp(audience, PROVIDER_AUDIENCE) != 0) {
    sts_error(call, "invalid_target",
              "The target service indicated by the \"audience\" parameters is invalid. This "
              "might either be because the pool or provider is disabled or deleted or because "
              "it doesn't exist.");
  } else if (!requested || strcmp(requested, ACCESS_TOKEN_TYPE) != 0) {
    sts_error(call, "invalid_request",
              "Invalid value for \"requested_token_type\". The only supported value is "
              ACCESS_TOKEN_TYPE ".");
  } else if (!token_type ||
             (strcmp(token_type, JWT_TOKEN_TYPE) != 0 && strcmp(token_type, ID_TOKEN_TYPE) != 0)) {
    sts_error(call, "invalid_request",
              "Invalid value for \"subject_token_type\". An OIDC provider accepts "
              JWT_TOKEN_TYPE " or " ID_TOKEN_TYPE ".");
  } else if (!token || !*token) {
    sts_error(call, "invalid_request", "Missing required parameter: subject_token.");
  } else {
    char *sub = check_subject_token(call, token);
    if (!sub) return;
    char *principal = fake_malloc(strlen(PRINCIPAL_PREFIX) + strlen(sub) + 1);
    strcpy(principal, PRINCIPAL_PREFIX);
    strcat(principal, sub);
    long lifetime = call->fake->settings.token_lifetime_s;
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "access_token",
                            fake_oauth_issue(call->fake, "ya29.d.", principal,
                                             scope && *scope ? scope : FAKE_CLOUD_PLATFORM,
                                             lifetime));
    cJSON_AddStringToObject(body, "issued_token_type", ACCESS_TOKEN_TYPE);
    cJSON_AddStringToObject(body, "token_type", "Bearer");
    cJSON_AddNumberToObject(body, "expires_in", (double)lifetime);
    free(principal);
    free(sub);
    fake_call_respond_json(call, 200, body);
  }
}

/* POST /v1/token (sts.googleapis.com), form-encoded or JSON. */
void fake_sts_token(struct fake_call *call) {
  const char *content_type =
      evhttp_find_header(evhttp_request_get_input_headers(call->req), "Content-Type");
  struct exchange x;
  evhttp_parse_query_str("", &x.form);
  x.json = NULL;
  if (strcmp(call->method, "POST") != 0) {
    evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", "POST");
    sts_error(call, "invalid_request", "The token endpoint only accepts POST.");
    return;
  }
  if (content_type && strncasecmp(content_type, "application/json", 16) == 0) {
    x.json = call->body_text ? cJSON_Parse(call->body_text) : NULL;
    if (!cJSON_IsObject(x.json)) {
      cJSON_Delete(x.json);
      sts_error(call, "invalid_request", "Invalid JSON payload received.");
      return;
    }
  } else {
    evhttp_parse_query_str(call->body_text ? call->body_text : "", &x.form);
  }
  exchange(call, &x);
  fake_form_clear(&x.form);
  const char *token = x.json ? string_member(x.json, "subject_token") : NULL;
  if (token) OPENSSL_cleanse((char *)token, strlen(token));
  cJSON_Delete(x.json);
}

/* GET /subject-token on the metadata listener: a URL-sourced subject token, behind the
 * "Metadata: true" header that such sources (Azure's IMDS among them) require. */
void fake_sts_subject_token(struct fake_call *call) {
  const char *metadata =
      evhttp_find_header(evhttp_request_get_input_headers(call->req), "Metadata");
  if (!metadata || strcasecmp(metadata, "true") != 0) {
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "error", "invalid_request");
    cJSON_AddStringToObject(body, "error_description", "Required metadata header not specified");
    fake_call_respond_json(call, 400, body);
    return;
  }
  char *jwt = mint_subject_token(call->fake->sts, fake_clock_s(call->fake));
  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "token", jwt ? jwt : "");
  if (jwt) OPENSSL_cleanse(jwt, strlen(jwt));
  free(jwt);
  fake_call_respond_json(call, 200, body);
}

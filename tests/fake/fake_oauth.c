/* fake_oauth.c: the fake's service-account key, its authorized user, Google's OAuth2 token
 * endpoint, and the table of every access token the fake issues (whichever module issues
 * it) so API calls can be authenticated. Writes DIR/sa-key.json (keeping only the key's
 * public half), authorized-user.json and impersonated.json at start. The token endpoint
 * checks JWT-bearer assertions as oauth2.googleapis.com/token does (access tokens, ID tokens
 * for a target_audience, domain-wide delegation with sub) and refresh-token grants for the
 * authorized user. Secrets never reach the log: it shows the grant type only. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "jwt.h"

#define PROJECT_ID FAKE_PROJECT_ID
#define CLIENT_EMAIL FAKE_RUNNER_SA
#define TOKEN_URI "https://oauth2.googleapis.com/token"
#define JWT_BEARER "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define REFRESH_TOKEN_GRANT "refresh_token"
#define USER_CLIENT_ID FAKE_USER_CLIENT_ID
/* What the authorized user consented to (gcloud auth application-default login). */
#define USER_SCOPES                                                                        \
  "openid https://www.googleapis.com/auth/userinfo.email " FAKE_CLOUD_PLATFORM            \
  " https://www.googleapis.com/auth/sqlservice.login"
#define DWD_DOMAIN "@example.com"
#define TOKEN_BUCKETS 1024
#define MAX_ASSERTION_LIFETIME_S 3600
#define MAX_CLOCK_SKEW_S 60

struct token {
  struct token *next;
  char *value;
  char *principal;
  char *scopes;
  long long expires_ms;
};

struct fake_oauth {
  EVP_PKEY *public_key;
  char key_id[41];
  char runner_client_id[32];
  char user_id[22];
  char client_secret[36];
  char refresh_token[110];
  struct token *buckets[TOKEN_BUCKETS];
};

static unsigned token_bucket(const char *value) {
  unsigned h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)value; *p; p++) h = (h ^ *p) * 16777619u;
  return h % TOKEN_BUCKETS;
}

static char *private_key_pem(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data, *pem = NULL;
  if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
    long len = BIO_get_mem_data(bio, &data);
    pem = fake_malloc((size_t)len + 1);
    memcpy(pem, data, (size_t)len);
    pem[len] = '\0';
    OPENSSL_cleanse(data, (size_t)len);
  }
  BIO_free(bio);
  return pem;
}

/* Writes sa-key.json in the exact shape (and layout) of a key downloaded from the Cloud
 * console: one flat object of strings, two-space indented. */
static int write_key_file(const char *dir, const char *key_id, const char *pem,
                          const char *client_id) {
  const char *const fields[][2] = {
      {"type", "service_account"},
      {"project_id", PROJECT_ID},
      {"private_key_id", key_id},
      {"private_key", pem},
      {"client_email", CLIENT_EMAIL},
      {"client_id", client_id},
      {"auth_uri", "https://accounts.google.com/o/oauth2/auth"},
      {"token_uri", TOKEN_URI},
      {"auth_provider_x509_cert_url", "https://www.googleapis.com/oauth2/v1/certs"},
      {"client_x509_cert_url", "https://www.googleapis.com/robot/v1/metadata/x509/"
                               "gcpr-runner%40" PROJECT_ID ".iam.gserviceaccount.com"},
      {"universe_domain", "googleapis.com"},
  };
  size_t n = sizeof fields / sizeof fields[0], size = 4, len = 0;
  char *values[sizeof fields / sizeof fields[0]];
  for (size_t i = 0; i < n; i++) {
    cJSON *value = cJSON_CreateString(fields[i][1]);
    values[i] = cJSON_PrintUnformatted(value);
    cJSON_Delete(value);
    size += strlen(fields[i][0]) + strlen(values[i]) + 8;
  }
  char *text = fake_malloc(size);
  text[len++] = '{';
  for (size_t i = 0; i < n; i++) {
    len += (size_t)sprintf(text + len, "\n  \"%s\": %s%s", fields[i][0], values[i],
                           i + 1 < n ? "," : "");
    OPENSSL_cleanse(values[i], strlen(values[i]));
    free(values[i]);
  }
  len += (size_t)sprintf(text + len, "\n}\n");
  int rc = fake_write_file(dir, "sa-key.json", text, len, 0600);
  OPENSSL_cleanse(text, len);
  free(text);
  return rc;
}

static EVP_PKEY *public_half(EVP_PKEY *key) {
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(key, &der);
  const unsigned char *p = der;
  EVP_PKEY *pub = len > 0 ? d2i_PUBKEY(NULL, &p, len) : NULL;
  OPENSSL_free(der);
  return pub;
}

/* The authorized user as gcloud writes it to application_default_credentials.json: sorted
 * keys. */
static cJSON *authorized_user_json(const struct fake_oauth *oauth) {
  cJSON *user = cJSON_CreateObject();
  cJSON_AddStringToObject(user, "account", "");
  cJSON_AddStringToObject(user, "client_id", USER_CLIENT_ID);
  cJSON_AddStringToObject(user, "client_secret", oauth->client_secret);
  cJSON_AddStringToObject(user, "quota_project_id", PROJECT_ID);
  cJSON_AddStringToObject(user, "refresh_token", oauth->refresh_token);
  cJSON_AddStringToObject(user, "type", "authorized_user");
  cJSON_AddStringToObject(user, "universe_domain", "googleapis.com");
  return user;
}

static void wipe_strings(cJSON *doc) {
  for (cJSON *item = doc->child; item; item = item->next) {
    if (cJSON_IsString(item)) OPENSSL_cleanse(item->valuestring, strlen(item->valuestring));
    if (cJSON_IsObject(item)) wipe_strings(item);
  }
}

static int write_user_files(const char *dir, const struct fake_oauth *oauth) {
  cJSON *user = authorized_user_json(oauth);
  int rc = fake_write_json_file(dir, "authorized-user.json", user, 0600);
  cJSON *impersonated = cJSON_CreateObject();
  cJSON_AddItemToObject(impersonated, "delegates", cJSON_CreateArray());
  cJSON_AddStringToObject(impersonated, "service_account_impersonation_url",
                          FAKE_IAM_CREDENTIALS_URL FAKE_DEPLOYER_SA ":generateAccessToken");
  cJSON_AddItemToObject(impersonated, "source_credentials", user);
  cJSON_AddStringToObject(impersonated, "type", "impersonated_service_account");
  if (rc == 0) rc = fake_write_json_file(dir, "impersonated.json", impersonated, 0600);
  wipe_strings(impersonated);
  cJSON_Delete(impersonated);
  return rc;
}

struct fake_oauth *fake_oauth_create(const char *dir, const char *runner_client_id,
                                     const char **err) {
  struct fake_oauth *oauth = fake_malloc(sizeof *oauth);
  memset(oauth, 0, sizeof *oauth);
  snprintf(oauth->runner_client_id, sizeof oauth->runner_client_id, "%s", runner_client_id);
  fake_random_digits(oauth->user_id, 21);
  strcpy(oauth->client_secret, "GOCSPX-");
  fake_random_b64url(oauth->client_secret + 7, 28);
  strcpy(oauth->refresh_token, "1//0g");
  fake_random_b64url(oauth->refresh_token + 5, 100);
  EVP_PKEY *key = EVP_RSA_gen(2048);
  char *pem = key ? private_key_pem(key) : NULL;
  *err = "cannot generate the service account key";
  if (pem) {
    fake_random_hex(oauth->key_id, 40);
    oauth->public_key = public_half(key);
    *err = "cannot write sa-key.json";
    if (oauth->public_key &&
        write_key_file(dir, oauth->key_id, pem, oauth->runner_client_id) == 0) {
      *err = "cannot write authorized-user.json and impersonated.json";
      if (write_user_files(dir, oauth) == 0) *err = NULL;
    }
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
  }
  EVP_PKEY_free(key);
  if (*err) {
    fake_oauth_free(oauth);
    return NULL;
  }
  return oauth;
}

void fake_oauth_free(struct fake_oauth *oauth) {
  if (!oauth) return;
  for (size_t i = 0; i < TOKEN_BUCKETS; i++) {
    struct token *t = oauth->buckets[i];
    while (t) {
      struct token *next = t->next;
      OPENSSL_cleanse(t->value, strlen(t->value));
      free(t->value);
      free(t->principal);
      free(t->scopes);
      free(t);
      t = next;
    }
  }
  EVP_PKEY_free(oauth->public_key);
  OPENSSL_cleanse(oauth, sizeof *oauth);
  free(oauth);
}

enum fake_auth fake_oauth_check(struct fake *fake, const char *authorization,
                                const char **principal, const char **scopes) {
  struct fake_oauth *oauth = fake->oauth;
  if (!authorization) return FAKE_AUTH_NONE;
  if (strncasecmp(authorization, "Bearer ", 7) != 0) return FAKE_AUTH_INVALID;
  const char *value = authorization + 7;
  while (*value == ' ') value++;
  for (struct token *t = oauth->buckets[token_bucket(value)]; t; t = t->next) {
    if (strcmp(t->value, value) != 0) continue;
    if (t->expires_ms <= fake_clock_ms(fake)) return FAKE_AUTH_EXPIRED;
    *principal = t->principal;
    *scopes = t->scopes;
    return FAKE_AUTH_VALID;
  }
  return FAKE_AUTH_INVALID;
}

static void oauth_error(struct fake_call *call, int status, const char *error,
                        const char *description) {
  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "error", error);
  cJSON_AddStringToObject(body, "error_description", description);
  fake_call_respond_json(call, status, body);
}

const char *fake_oauth_issue(struct fake *fake, const char *prefix, const char *principal,
                             const char *scopes, long lifetime_s) {
  struct fake_oauth *oauth = fake->oauth;
  unsigned char raw[64];
  char encoded[GCPR_B64URL_LEN(sizeof raw)];
  RAND_bytes(raw, sizeof raw);
  gcpr_b64url_encode(raw, sizeof raw, encoded);
  struct token *t = fake_malloc(sizeof *t);
  t->value = fake_malloc(strlen(prefix) + sizeof encoded);
  strcpy(t->value, prefix);
  strcat(t->value, encoded);
  OPENSSL_cleanse(encoded, sizeof encoded);
  OPENSSL_cleanse(raw, sizeof raw);
  t->principal = fake_strdup(principal);
  t->scopes = fake_strdup(scopes);
  t->expires_ms = fake_clock_ms(fake) + lifetime_s * 1000LL;
  unsigned bucket = token_bucket(t->value);
  t->next = oauth->buckets[bucket];
  oauth->buckets[bucket] = t;
  fake->stats.tokens_issued++;
  return t->value;
}

/* The token endpoint's answer for a service account's access token. */
static void respond_access_token(struct fake_call *call, const char *principal,
                                 const char *scopes) {
  long lifetime = call->fake->settings.token_lifetime_s;
  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "access_token",
                          fake_oauth_issue(call->fake, "ya29.c.", principal, scopes, lifetime));
  cJSON_AddNumberToObject(body, "expires_in", (double)lifetime);
  cJSON_AddStringToObject(body, "token_type", "Bearer");
  fake_call_respond_json(call, 200, body);
}

/* {"id_token": JWT} for a service account's JWT grant with a target_audience. */
static void respond_id_token(struct fake_call *call, const char *audience) {
  struct fake_oauth *oauth = call->fake->oauth;
  cJSON *claims =
      fake_idtoken_claims(audience, oauth->runner_client_id, oauth->runner_client_id);
  cJSON_AddStringToObject(claims, "email", CLIENT_EMAIL);
  cJSON_AddBoolToObject(claims, "email_verified", 1);
  char *jwt = fake_idtoken_sign(call->fake, claims);
  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "id_token", jwt ? jwt : "");
  if (jwt) OPENSSL_cleanse(jwt, strlen(jwt));
  free(jwt);
  fake_call_respond_json(call, 200, body);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n > m && strcasecmp(s + n - m, suffix) == 0;
}

static const char *string_member(const cJSON *obj, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

static int audience_ok(const char *aud, const char *host) {
  char own[300];
  if (!aud) return 0;
  if (strcmp(aud, TOKEN_URI) == 0) return 1;
  snprintf(own, sizeof own, "https://%s/token", host ? host : "");
  return host && strcmp(aud, own) == 0;
}

/* Checks a verified assertion's claims in the order Google reports failures, answering the
 * call either way: an ID token when the claims name a target_audience, else an access token
 * for the scopes, for the sub claim's user under domain-wide delegation. */
static void grant(struct fake_call *call, const cJSON *header, const cJSON *claims) {
  const char *kid = string_member(header, "kid"), *alg = string_member(header, "alg");
  const char *iss = string_member(claims, "iss"), *scope = string_member(claims, "scope");
  const char *target_audience = string_member(claims, "target_audience");
  const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
  const cJSON *iat = cJSON_GetObjectItemCaseSensitive(claims, "iat");
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
  double now = (double)fake_clock_s(call->fake);
  if (!kid || strcmp(kid, call->fake->oauth->key_id) != 0 || !alg || strcmp(alg, "RS256") != 0)
    oauth_error(call, 400, "invalid_grant", "Invalid JWT Signature.");
  else if (!iss || strcmp(iss, CLIENT_EMAIL) != 0)
    oauth_error(call, 400, "invalid_grant", "Invalid grant: account not found");
  else if (!audience_ok(string_member(claims, "aud"), call->host))
    oauth_error(call, 400, "invalid_grant",
                "Invalid JWT: Failed audience check. The right audience is " TOKEN_URI);
  else if (!cJSON_IsNumber(iat) || !cJSON_IsNumber(exp) ||
           iat->valuedouble > now + MAX_CLOCK_SKEW_S || exp->valuedouble <= now ||
           exp->valuedouble < iat->valuedouble ||
           exp->valuedouble - iat->valuedouble > MAX_ASSERTION_LIFETIME_S)
    oauth_error(call, 400, "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.");
  else if (target_audience && *target_audience && !fake_idtoken_ready(call->fake))
    fake_call_retry_later(call);
  else if (target_audience && *target_audience)
    respond_id_token(call, target_audience);
  else if (!scope || !*scope)
    oauth_error(call, 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
  else if (sub && (!cJSON_IsString(sub) || !ends_with(sub->valuestring, DWD_DOMAIN)))
    oauth_error(call, 401, "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.");
  else
    respond_access_token(call, sub ? sub->valuestring : iss, scope);
}

/* Google's answer when some asked scopes were never consented to:
 * "Some requested scopes were invalid. {valid=[a, b], invalid=[c]}". */
static void respond_invalid_scopes(struct fake_call *call, const char *scope) {
  char *copy = fake_strdup(scope), *save = NULL;
  size_t size = 2 * strlen(scope) + 80, valid_len = 0, invalid_len = 0;
  char *valid = fake_malloc(size), *invalid = fake_malloc(size);
  valid[0] = invalid[0] = '\0';
  for (char *word = strtok_r(copy, " ", &save); word; word = strtok_r(NULL, " ", &save)) {
    int ok = fake_has_scope(USER_SCOPES, word);
    char *list = ok ? valid : invalid;
    size_t *len = ok ? &valid_len : &invalid_len;
    *len += (size_t)snprintf(list + *len, size - *len, "%s%s", *len ? ", " : "", word);
  }
  char *description = fake_malloc(2 * size);
  snprintf(description, 2 * size, "Some requested scopes were invalid. {valid=[%s], invalid=[%s]}",
           valid, invalid);
  oauth_error(call, 400, "invalid_scope", description);
  free(description);
  free(valid);
  free(invalid);
  free(copy);
}

/* The refresh-token grant of the authorized user, as Google answers it: the client first
 * (401), then the token (400), then the scopes, which must be among those consented to. */
static void refresh(struct fake_call *call, struct evkeyvalq *form) {
  struct fake_oauth *oauth = call->fake->oauth;
  const char *client_id = evhttp_find_header(form, "client_id");
  const char *secret = evhttp_find_header(form, "client_secret");
  const char *token = evhttp_find_header(form, "refresh_token");
  const char *scope = evhttp_find_header(form, "scope");
  if (!scope || !*scope) scope = USER_SCOPES;
  int scopes_ok = 1;
  char *copy = fake_strdup(scope), *save = NULL;
  for (char *word = strtok_r(copy, " ", &save); word; word = strtok_r(NULL, " ", &save))
    scopes_ok &= fake_has_scope(USER_SCOPES, word);
  free(copy);
  if (!client_id || !*client_id) {
    oauth_error(call, 400, "invalid_request", "Could not determine client ID from request.");
  } else if (strcmp(client_id, USER_CLIENT_ID) != 0) {
    oauth_error(call, 401, "invalid_client", "The OAuth client was not found.");
  } else if (!secret || strlen(secret) != strlen(oauth->client_secret) ||
             CRYPTO_memcmp(secret, oauth->client_secret, strlen(secret)) != 0) {
    oauth_error(call, 401, "invalid_client", "Unauthorized");
  } else if (!token || !*token) {
    oauth_error(call, 400, "invalid_request", "Missing required parameter: refresh_token");
  } else if (strlen(token) != strlen(oauth->refresh_token) ||
             CRYPTO_memcmp(token, oauth->refresh_token, strlen(token)) != 0) {
    oauth_error(call, 400, "invalid_grant", "Bad Request");
  } else if (!scopes_ok) {
    respond_invalid_scopes(call, scope);
  } else if (!fake_idtoken_ready(call->fake)) {
    fake_call_retry_later(call);
  } else {
    long lifetime = call->fake->settings.token_lifetime_s;
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(
        body, "access_token",
        fake_oauth_issue(call->fake, "ya29.a0", FAKE_USER_EMAIL, scope, lifetime));
    cJSON_AddNumberToObject(body, "expires_in", (double)lifetime);
    cJSON_AddStringToObject(body, "scope", scope);
    cJSON_AddStringToObject(body, "token_type", "Bearer");
    /* The user consented to openid, so Google adds an ID token for the client. */
    cJSON *claims = fake_idtoken_claims(USER_CLIENT_ID, USER_CLIENT_ID, oauth->user_id);
    cJSON_AddStringToObject(claims, "email", FAKE_USER_EMAIL);
    cJSON_AddBoolToObject(claims, "email_verified", 1);
    char *jwt = fake_idtoken_sign(call->fake, claims);
    cJSON_AddStringToObject(body, "id_token", jwt ? jwt : "");
    if (jwt) OPENSSL_cleanse(jwt, strlen(jwt));
    free(jwt);
    fake_call_respond_json(call, 200, body);
  }
}

static void exchange_assertion(struct fake_call *call, const char *assertion) {
  char *header_json = NULL, *claims_json = NULL;
  const char *err = NULL;
  if (gcpr_jwt_verify_rs256(assertion, call->fake->oauth->public_key, &header_json,
                            &claims_json, &err) != 0) {
    if (strcmp(err, "malformed JWT") == 0)
      oauth_error(call, 400, "invalid_request", "Invalid assertion: not a well-formed JWT.");
    else
      oauth_error(call, 400, "invalid_grant", "Invalid JWT Signature.");
    return;
  }
  cJSON *header = cJSON_Parse(header_json), *claims = cJSON_Parse(claims_json);
  if (!cJSON_IsObject(header) || !cJSON_IsObject(claims))
    oauth_error(call, 400, "invalid_request", "Invalid assertion: not a well-formed JWT.");
  else
    grant(call, header, claims);
  cJSON_Delete(header);
  cJSON_Delete(claims);
  free(header_json);
  free(claims_json);
}

void fake_oauth_token_endpoint(struct fake_call *call) {
  if (strcmp(call->method, "POST") != 0) {
    evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", "POST");
    oauth_error(call, 405, "invalid_request", "The token endpoint only accepts POST.");
    return;
  }
  struct evkeyvalq form;
  evhttp_parse_query_str(call->body_text ? call->body_text : "", &form);
  const char *grant_type = evhttp_find_header(&form, "grant_type");
  const char *assertion = evhttp_find_header(&form, "assertion");
  /* The log shows the grant type only: the form also carries the assertion or secrets. */
  fake_log_grant_type(call, grant_type);
  if (grant_type && strcmp(grant_type, REFRESH_TOKEN_GRANT) == 0) {
    refresh(call, &form);
  } else if (!grant_type || strcmp(grant_type, JWT_BEARER) != 0) {
    char description[300];
    snprintf(description, sizeof description, "Invalid grant_type: %.200s",
             grant_type ? grant_type : "");
    oauth_error(call, 400, "unsupported_grant_type", description);
  } else if (!assertion || !*assertion) {
    oauth_error(call, 400, "invalid_request", "Missing required parameter: assertion");
  } else {
    exchange_assertion(call, assertion);
  }
  fake_form_clear(&form);
}

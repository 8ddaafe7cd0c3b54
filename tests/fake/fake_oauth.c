/* fake_oauth.c: the fake's one service account and Google's OAuth2 token endpoint. Writes
 * DIR/sa-key.json (a key in Google's format) at start, keeps only its public half, checks
 * JWT-bearer assertions against it as oauth2.googleapis.com/token does, and remembers the
 * access tokens it issues so API calls can be authenticated. */
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

#define PROJECT_ID "demo-project"
#define CLIENT_EMAIL "gcpr-runner@" PROJECT_ID ".iam.gserviceaccount.com"
#define TOKEN_URI "https://oauth2.googleapis.com/token"
#define JWT_BEARER "urn:ietf:params:oauth:grant-type:jwt-bearer"
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

static void random_digits(char *out, size_t n) {
  unsigned char raw[64];
  RAND_bytes(raw, (int)n);
  for (size_t i = 0; i < n; i++) out[i] = (char)('0' + raw[i] % 10);
  if (out[0] == '0') out[0] = '1';
  out[n] = '\0';
}

/* Writes sa-key.json in the exact shape (and layout) of a key downloaded from the Cloud
 * console: one flat object of strings, two-space indented. */
static int write_key_file(const char *dir, const char *key_id, const char *pem) {
  char client_id[22];
  random_digits(client_id, 21);
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

struct fake_oauth *fake_oauth_create(const char *dir, const char **err) {
  struct fake_oauth *oauth = fake_malloc(sizeof *oauth);
  memset(oauth, 0, sizeof *oauth);
  EVP_PKEY *key = EVP_RSA_gen(2048);
  char *pem = key ? private_key_pem(key) : NULL;
  *err = "cannot generate the service account key";
  if (pem) {
    fake_random_hex(oauth->key_id, 40);
    oauth->public_key = public_half(key);
    *err = "cannot write sa-key.json";
    if (oauth->public_key && write_key_file(dir, oauth->key_id, pem) == 0) *err = NULL;
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
  free(oauth);
}

enum fake_auth fake_oauth_check(struct fake_oauth *oauth, const char *authorization,
                                const char **principal, const char **scopes) {
  if (!authorization) return FAKE_AUTH_NONE;
  if (strncasecmp(authorization, "Bearer ", 7) != 0) return FAKE_AUTH_INVALID;
  const char *value = authorization + 7;
  while (*value == ' ') value++;
  for (struct token *t = oauth->buckets[token_bucket(value)]; t; t = t->next) {
    if (strcmp(t->value, value) != 0) continue;
    if (t->expires_ms <= fake_now_ms()) return FAKE_AUTH_EXPIRED;
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

static void issue_token(struct fake_call *call, const char *principal, const char *scopes) {
  struct fake *fake = call->fake;
  struct fake_oauth *oauth = fake->oauth;
  unsigned char raw[64];
  char encoded[GCPR_B64URL_LEN(sizeof raw)];
  RAND_bytes(raw, sizeof raw);
  gcpr_b64url_encode(raw, sizeof raw, encoded);
  struct token *t = fake_malloc(sizeof *t);
  t->value = fake_malloc(strlen("ya29.c.") + sizeof encoded);
  strcpy(t->value, "ya29.c.");
  strcat(t->value, encoded);
  OPENSSL_cleanse(encoded, sizeof encoded);
  t->principal = fake_strdup(principal);
  t->scopes = fake_strdup(scopes);
  long lifetime = fake->settings.token_lifetime_s;
  t->expires_ms = fake_now_ms() + lifetime * 1000LL;
  unsigned bucket = token_bucket(t->value);
  t->next = oauth->buckets[bucket];
  oauth->buckets[bucket] = t;
  fake->stats.tokens_issued++;

  cJSON *body = cJSON_CreateObject();
  cJSON_AddStringToObject(body, "access_token", t->value);
  cJSON_AddNumberToObject(body, "expires_in", (double)lifetime);
  cJSON_AddStringToObject(body, "token_type", "Bearer");
  fake_call_respond_json(call, 200, body);
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
 * call either way. */
static void grant(struct fake_call *call, const cJSON *header, const cJSON *claims) {
  const char *kid = string_member(header, "kid"), *alg = string_member(header, "alg");
  const char *iss = string_member(claims, "iss"), *scope = string_member(claims, "scope");
  const cJSON *iat = cJSON_GetObjectItemCaseSensitive(claims, "iat");
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
  double now = (double)(fake_now_ms() / 1000);
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
  else if (!scope || !*scope)
    oauth_error(call, 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
  else
    issue_token(call, iss, scope);
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
  /* The log shows the grant type only: the form also carries the assertion. */
  call->log_body = cJSON_CreateObject();
  if (grant_type)
    cJSON_AddStringToObject(call->log_body, "grant_type", grant_type);
  else
    cJSON_AddNullToObject(call->log_body, "grant_type");
  if (!grant_type || strcmp(grant_type, JWT_BEARER) != 0) {
    char description[300];
    snprintf(description, sizeof description, "Invalid grant_type: %.200s",
             grant_type ? grant_type : "");
    oauth_error(call, 400, "unsupported_grant_type", description);
  } else if (!assertion || !*assertion) {
    oauth_error(call, 400, "invalid_request", "Missing required parameter: assertion");
  } else {
    exchange_assertion(call, assertion);
  }
  evhttp_clear_headers(&form);
}

/* fake_idtoken.c: Google-signed ID tokens as gcpr-fake makes them: one fake "Google" RS256
 * signing key (made by fake_keys.c), the claims Google puts in every ID token, signing and
 * verifying them on the fake's clock, and the key's publication at
 * www.googleapis.com/oauth2/v3/certs (JWKS) and /oauth2/v1/certs (kid -> PEM certificate).
 * Also the two JWT/JWK helpers the other signing modules share. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "jwt.h"

#define CERTS_CACHE_CONTROL "public, max-age=19204, must-revalidate, no-transform"
#define CERT_VALID_S (14L * 24 * 3600)

struct fake_idtoken {
  struct fake_keys *keys;
  int slot;
  char kid[41];
  char *cert_pem; /* made on the first /oauth2/v1/certs */
};

struct fake_idtoken *fake_idtoken_create(struct fake_keys *keys) {
  struct fake_idtoken *idtoken = fake_malloc(sizeof *idtoken);
  memset(idtoken, 0, sizeof *idtoken);
  idtoken->keys = keys;
  idtoken->slot = fake_keys_reserve(keys);
  fake_random_hex(idtoken->kid, 40);
  return idtoken;
}

void fake_idtoken_free(struct fake_idtoken *idtoken) {
  if (!idtoken) return;
  free(idtoken->cert_pem);
  free(idtoken);
}

static EVP_PKEY *signing_key(const struct fake *fake) {
  return fake_keys_get(fake->idtoken->keys, fake->idtoken->slot);
}

int fake_idtoken_ready(const struct fake *fake) {
  return signing_key(fake) != NULL;
}

char *fake_jwt_sign(EVP_PKEY *key, const char *kid, const char *claims_json) {
  cJSON *header = cJSON_CreateObject();
  cJSON_AddStringToObject(header, "alg", "RS256");
  cJSON_AddStringToObject(header, "kid", kid);
  cJSON_AddStringToObject(header, "typ", "JWT");
  char *header_json = cJSON_PrintUnformatted(header);
  cJSON_Delete(header);
  const char *err;
  char *jwt = header_json ? gcpr_jwt_sign_rs256(key, header_json, claims_json, &err) : NULL;
  free(header_json);
  return jwt;
}

static void add_b64url_param(cJSON *obj, const char *name, EVP_PKEY *key, const char *param) {
  BIGNUM *bn = NULL;
  EVP_PKEY_get_bn_param(key, param, &bn);
  int len = bn ? BN_num_bytes(bn) : 0;
  unsigned char *raw = fake_malloc((size_t)len);
  char *text = fake_malloc(GCPR_B64URL_LEN((size_t)len));
  if (bn) BN_bn2bin(bn, raw);
  gcpr_b64url_encode(raw, (size_t)len, text);
  cJSON_AddStringToObject(obj, name, text);
  free(raw);
  free(text);
  BN_free(bn);
}

cJSON *fake_jwk(EVP_PKEY *key, const char *kid) {
  cJSON *jwk = cJSON_CreateObject();
  cJSON_AddStringToObject(jwk, "kty", "RSA");
  cJSON_AddStringToObject(jwk, "alg", "RS256");
  cJSON_AddStringToObject(jwk, "use", "sig");
  cJSON_AddStringToObject(jwk, "kid", kid);
  add_b64url_param(jwk, "n", key, OSSL_PKEY_PARAM_RSA_N);
  add_b64url_param(jwk, "e", key, OSSL_PKEY_PARAM_RSA_E);
  return jwk;
}

cJSON *fake_idtoken_claims(const char *aud, const char *azp, const char *sub) {
  cJSON *claims = cJSON_CreateObject();
  cJSON_AddStringToObject(claims, "iss", FAKE_GOOGLE_ISSUER);
  cJSON_AddStringToObject(claims, "azp", azp);
  cJSON_AddStringToObject(claims, "aud", aud);
  cJSON_AddStringToObject(claims, "sub", sub);
  return claims;
}

char *fake_idtoken_sign(struct fake *fake, cJSON *claims) {
  EVP_PKEY *key = signing_key(fake);
  long long now = fake_clock_s(fake);
  char *jwt = NULL;
  cJSON_AddNumberToObject(claims, "iat", (double)now);
  cJSON_AddNumberToObject(claims, "exp", (double)(now + fake->settings.id_token_lifetime_s));
  char *claims_json = key ? cJSON_PrintUnformatted(claims) : NULL;
  if (claims_json) jwt = fake_jwt_sign(key, fake->idtoken->kid, claims_json);
  free(claims_json);
  cJSON_Delete(claims);
  return jwt;
}

static const char *string_member(const cJSON *obj, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

enum fake_auth fake_idtoken_verify(struct fake *fake, const char *jwt, cJSON **claims) {
  EVP_PKEY *key = signing_key(fake);
  char *header_json = NULL, *claims_json = NULL;
  const char *err;
  *claims = NULL;
  if (!key || gcpr_jwt_verify_rs256(jwt, key, &header_json, &claims_json, &err) != 0)
    return FAKE_AUTH_INVALID;
  cJSON *header = cJSON_Parse(header_json), *parsed = cJSON_Parse(claims_json);
  free(header_json);
  free(claims_json);
  const char *kid = string_member(header, "kid"), *iss = string_member(parsed, "iss");
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(parsed, "exp");
  enum fake_auth auth = FAKE_AUTH_INVALID;
  /* Google writes either form of its issuer into ID tokens. */
  if (kid && strcmp(kid, fake->idtoken->kid) == 0 && iss &&
      (strcmp(iss, FAKE_GOOGLE_ISSUER) == 0 || strcmp(iss, "accounts.google.com") == 0) &&
      cJSON_IsNumber(exp))
    auth = exp->valuedouble > (double)fake_clock_s(fake) ? FAKE_AUTH_VALID : FAKE_AUTH_EXPIRED;
  cJSON_Delete(header);
  if (auth == FAKE_AUTH_INVALID)
    cJSON_Delete(parsed);
  else
    *claims = parsed;
  return auth;
}

/* A self-signed certificate for the signing key, as Google publishes at /oauth2/v1/certs. */
static char *certificate_pem(EVP_PKEY *key) {
  X509 *cert = X509_new();
  BIO *bio = BIO_new(BIO_s_mem());
  char *pem = NULL, *data;
  X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
  int ok = cert && bio && X509_set_version(cert, X509_VERSION_3) &&
           ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) &&
           X509_gmtime_adj(X509_getm_notBefore(cert), 0) &&
           X509_gmtime_adj(X509_getm_notAfter(cert), CERT_VALID_S) &&
           X509_set_pubkey(cert, key) &&
           X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                      (const unsigned char *)"accounts.google.com", -1, -1,
                                      0) &&
           X509_set_issuer_name(cert, name) && X509_sign(cert, key, EVP_sha256()) > 0 &&
           PEM_write_bio_X509(bio, cert);
  if (ok) {
    long len = BIO_get_mem_data(bio, &data);
    pem = fake_malloc((size_t)len + 1);
    memcpy(pem, data, (size_t)len);
    pem[len] = '\0';
  }
  BIO_free(bio);
  X509_free(cert);
  return pem;
}

/* GET /oauth2/v3/certs and /oauth2/v1/certs (www.googleapis.com): no auth. */
void fake_idtoken_certs(struct fake_call *call) {
  struct fake_idtoken *idtoken = call->fake->idtoken;
  EVP_PKEY *key = signing_key(call->fake);
  if (strcmp(call->method, "GET") != 0) {
    evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", "GET");
    fake_call_respond_error(call, 405, "Method Not Allowed", "methodNotAllowed",
                            "INVALID_ARGUMENT");
    return;
  }
  if (!key) {
    fake_call_retry_later(call);
    return;
  }
  cJSON *body = cJSON_CreateObject();
  if (strcmp(call->path, "/oauth2/v3/certs") == 0) {
    cJSON_AddItemToArray(cJSON_AddArrayToObject(body, "keys"), fake_jwk(key, idtoken->kid));
  } else {
    if (!idtoken->cert_pem) idtoken->cert_pem = certificate_pem(key);
    if (idtoken->cert_pem) cJSON_AddStringToObject(body, idtoken->kid, idtoken->cert_pem);
  }
  evhttp_add_header(evhttp_request_get_output_headers(call->req), "Cache-Control",
                    CERTS_CACHE_CONTROL);
  fake_call_respond_json(call, 200, body);
}

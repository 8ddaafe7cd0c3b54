/* jwt.c: base64url and RS256 JSON Web Tokens with OpenSSL. Mechanism only: which claims a
 * token carries and which ones are acceptable is decided by the callers. */
#define _POSIX_C_SOURCE 200809L
#include "jwt.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t gcpr_b64url_encode(const unsigned char *in, size_t n, char *out) {
  char *p = out;
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    *p++ = b64url_alphabet[v >> 18 & 63];
    *p++ = b64url_alphabet[v >> 12 & 63];
    *p++ = b64url_alphabet[v >> 6 & 63];
    *p++ = b64url_alphabet[v & 63];
  }
  if (i < n) {
    unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
    *p++ = b64url_alphabet[v >> 18 & 63];
    *p++ = b64url_alphabet[v >> 12 & 63];
    if (i + 1 < n) *p++ = b64url_alphabet[v >> 6 & 63];
  }
  *p = '\0';
  return (size_t)(p - out);
}

static int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

long gcpr_b64url_decode(const char *in, size_t n, unsigned char *out) {
  while (n > 0 && in[n - 1] == '=') n--;
  if (n % 4 == 1) return -1;
  unsigned acc = 0;
  int bits = 0;
  long len = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64url_value((unsigned char)in[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[len++] = (unsigned char)(acc >> bits & 0xff);
    }
  }
  return len;
}

static char *b64url_string(const unsigned char *in, size_t n) {
  char *out = malloc(GCPR_B64URL_LEN(n));
  if (out) gcpr_b64url_encode(in, n, out);
  return out;
}

char *gcpr_jwt_sign_rs256(EVP_PKEY *key, const char *header_json, const char *claims_json,
                          const char **err) {
  char *h = b64url_string((const unsigned char *)header_json, strlen(header_json));
  char *c = b64url_string((const unsigned char *)claims_json, strlen(claims_json));
  char *jwt = NULL, *signing_input = NULL;
  unsigned char *sig = NULL;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t siglen = 0;
  *err = "out of memory";
  if (!h || !c || !md) goto done;
  size_t hl = strlen(h), cl = strlen(c);
  signing_input = malloc(hl + 1 + cl + 1);
  if (!signing_input) goto done;
  memcpy(signing_input, h, hl);
  signing_input[hl] = '.';
  memcpy(signing_input + hl + 1, c, cl + 1);
  *err = "RS256 signing failed (is the key an RSA private key?)";
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) goto done;
  if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
      EVP_DigestSign(md, NULL, &siglen, (unsigned char *)signing_input, hl + 1 + cl) != 1)
    goto done;
  sig = malloc(siglen);
  if (!sig ||
      EVP_DigestSign(md, sig, &siglen, (unsigned char *)signing_input, hl + 1 + cl) != 1)
    goto done;
  jwt = malloc(hl + 1 + cl + 1 + GCPR_B64URL_LEN(siglen));
  if (!jwt) {
    *err = "out of memory";
    goto done;
  }
  memcpy(jwt, signing_input, hl + 1 + cl);
  jwt[hl + 1 + cl] = '.';
  gcpr_b64url_encode(sig, siglen, jwt + hl + 1 + cl + 1);
  *err = NULL;
done:
  EVP_MD_CTX_free(md);
  free(h);
  free(c);
  free(signing_input);
  free(sig);
  return jwt;
}

static char *decode_segment(const char *s, size_t n) {
  unsigned char *out = malloc(n + 1);
  if (!out) return NULL;
  long len = gcpr_b64url_decode(s, n, out);
  if (len < 0) {
    free(out);
    return NULL;
  }
  out[len] = '\0';
  return (char *)out;
}

int gcpr_jwt_verify_rs256(const char *jwt, EVP_PKEY *key, char **header_json,
                          char **claims_json, const char **err) {
  *header_json = *claims_json = NULL;
  const char *dot1 = strchr(jwt, '.');
  const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  if (!dot2 || strchr(dot2 + 1, '.')) {
    *err = "malformed JWT";
    return -1;
  }
  char *header = decode_segment(jwt, (size_t)(dot1 - jwt));
  char *claims = decode_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1));
  size_t sig_b64_len = strlen(dot2 + 1);
  unsigned char *sig = malloc(sig_b64_len + 1);
  long siglen = sig ? gcpr_b64url_decode(dot2 + 1, sig_b64_len, sig) : -1;
  EVP_MD_CTX *md = NULL;
  int rc = -1;
  *err = "malformed JWT";
  if (!header || !claims || siglen <= 0) goto done;
  /* alg is checked textually; the caller parses the header for kid. */
  *err = "unsupported alg (only RS256 is accepted)";
  if (!strstr(header, "\"RS256\"")) goto done;
  *err = "bad signature";
  md = EVP_MD_CTX_new();
  if (!md || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA ||
      EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
      EVP_DigestVerify(md, sig, (size_t)siglen, (const unsigned char *)jwt,
                       (size_t)(dot2 - jwt)) != 1)
    goto done;
  *header_json = header;
  *claims_json = claims;
  header = claims = NULL;
  *err = NULL;
  rc = 0;
done:
  EVP_MD_CTX_free(md);
  free(header);
  free(claims);
  free(sig);
  return rc;
}

EVP_PKEY *gcpr_pem_private_key(const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) return NULL;
  /* A passphrase callback returning 0 makes encrypted keys fail instead of prompting. */
  EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, "");
  BIO_free(bio);
  return key;
}

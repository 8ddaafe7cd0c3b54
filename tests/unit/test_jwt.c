/* Unit tests for jwt.c: base64url against RFC 4648 vectors, and RS256 sign/verify with a
 * key generated here, including tampering and the wrong key. */
#define _POSIX_C_SOURCE 200809L
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>

#include "check.h"
#include "jwt.h"

static void test_b64url(void) {
  static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    char out[32];
    unsigned char back[32];
    size_t n = strlen(plain[i]);
    gcpr_b64url_encode((const unsigned char *)plain[i], n, out);
    CHECK_STR(out, enc[i]);
    long m = gcpr_b64url_decode(enc[i], strlen(enc[i]), back);
    CHECK(m == (long)n && memcmp(back, plain[i], n) == 0);
  }
  /* URL-safe alphabet: 0xfb 0xff -> "-_8" (standard base64 would be "+/8="). */
  unsigned char bytes[] = {0xfb, 0xff};
  char out[8];
  gcpr_b64url_encode(bytes, 2, out);
  CHECK_STR(out, "-_8");
  unsigned char back[8];
  CHECK(gcpr_b64url_decode("-_8=", 4, back) == 2 && back[0] == 0xfb && back[1] == 0xff);
  CHECK(gcpr_b64url_decode("a+b/", 4, back) == -1);
  CHECK(gcpr_b64url_decode("abcde", 5, back) == -1);
}

static EVP_PKEY *new_rsa(void) { return EVP_RSA_gen(2048); }

static void test_sign_verify(void) {
  EVP_PKEY *key = new_rsa(), *other = new_rsa();
  const char *err = NULL;
  const char *header = "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}";
  const char *claims = "{\"iss\":\"a@b\",\"aud\":\"https://oauth2.googleapis.com/token\"}";
  char *jwt = gcpr_jwt_sign_rs256(key, header, claims, &err);
  CHECK(jwt != NULL && err == NULL);
  char *h = NULL, *c = NULL;
  CHECK(gcpr_jwt_verify_rs256(jwt, key, &h, &c, &err) == 0);
  CHECK_STR(h, header);
  CHECK_STR(c, claims);
  free(h);
  free(c);
  CHECK(gcpr_jwt_verify_rs256(jwt, other, &h, &c, &err) == -1);
  CHECK_STR(err, "bad signature");
  CHECK(h == NULL && c == NULL);
  /* A changed claim breaks the signature. */
  char *dot = strchr(jwt, '.');
  dot[2] = dot[2] == 'A' ? 'B' : 'A';
  CHECK(gcpr_jwt_verify_rs256(jwt, key, &h, &c, &err) == -1);
  CHECK(gcpr_jwt_verify_rs256("only.two", key, &h, &c, &err) == -1);
  CHECK_STR(err, "malformed JWT");
  free(jwt);
  /* alg none is refused even with an empty signature. */
  CHECK(gcpr_jwt_verify_rs256("eyJhbGciOiJub25lIn0.e30.", key, &h, &c, &err) == -1);
  EVP_PKEY_free(key);
  EVP_PKEY_free(other);
}

static void test_pem(void) {
  EVP_PKEY *key = new_rsa();
  BIO *bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
  char *pem;
  long n = BIO_get_mem_data(bio, &pem);
  EVP_PKEY *back = gcpr_pem_private_key(pem, (size_t)n);
  CHECK(back != NULL && EVP_PKEY_eq(key, back) == 1);
  CHECK(gcpr_pem_private_key("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", 60) == NULL);
  EVP_PKEY_free(back);
  EVP_PKEY_free(key);
  BIO_free(bio);
}

int main(void) {
  test_b64url();
  test_sign_verify();
  test_pem();
  return check_report("test_jwt");
}

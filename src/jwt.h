/* jwt.h: base64url and RS256 JSON Web Tokens (sign and verify) with OpenSSL.
 * Pure C, no Lua: shared by gcpr (assertions, later ID-token checks) and gcpr-fake. */
#ifndef GCPR_JWT_H
#define GCPR_JWT_H

#include <stddef.h>
#include <openssl/evp.h>

/* Encodes n bytes without padding into out, which must hold GCPR_B64URL_LEN(n) bytes
 * (NUL included). Returns the length written, NUL excluded. */
#define GCPR_B64URL_LEN(n) ((((n) + 2) / 3) * 4 + 1)
size_t gcpr_b64url_encode(const unsigned char *in, size_t n, char *out);

/* Decodes base64url (padding optional). out must hold n bytes. Returns the decoded length,
 * or -1 on a character outside the alphabet or an impossible length. */
long gcpr_b64url_decode(const char *in, size_t n, unsigned char *out);

/* Signs header.claims with RS256. header_json and claims_json are complete JSON objects.
 * Returns a malloc'd compact JWT, or NULL with *err set to a static message. */
char *gcpr_jwt_sign_rs256(EVP_PKEY *key, const char *header_json, const char *claims_json,
                          const char **err);

/* Splits a compact JWT and checks its RS256 signature against key. On success returns 0 and
 * sets *header_json and *claims_json to malloc'd NUL-terminated JSON texts (caller frees).
 * On failure returns -1 with *err set to a static message ("malformed JWT",
 * "unsupported alg", "bad signature"); claims are not checked here (iss, aud, exp are the
 * caller's policy). */
int gcpr_jwt_verify_rs256(const char *jwt, EVP_PKEY *key, char **header_json,
                          char **claims_json, const char **err);

/* Parses a PEM private key (PKCS#8 or traditional). Returns NULL on failure; never logs. */
EVP_PKEY *gcpr_pem_private_key(const char *pem, size_t len);

#endif

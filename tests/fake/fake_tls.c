/* fake_tls.c: gcpr-fake's TLS identity, made fresh at every start: a self-signed CA written
 * to DIR/ca.pem, a server certificate it signs for the Google host names the fake stands in
 * for (*.googleapis.com; *.run.app, *.a.run.app and *.appspot.com for fake_target.c), and the
 * SSL_CTX and per-connection bufferevents of the HTTPS listener. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* Each suffix is served as itself and as every host directly under it. */
static const char *const host_suffixes[] = {"googleapis.com", "run.app", "a.run.app",
                                            "appspot.com"};
static const char *const extra_names = "DNS:localhost,IP:127.0.0.1";

#define VALID_BEFORE_S (24L * 3600)
#define VALID_FOR_S (30L * 24 * 3600)

struct extension {
  int nid;
  const char *value;
};

static char *subject_alt_names(void) {
  size_t len = strlen(extra_names) + 1;
  for (size_t i = 0; i < sizeof host_suffixes / sizeof host_suffixes[0]; i++)
    len += 2 * strlen(host_suffixes[i]) + sizeof "DNS:*.,DNS:,";
  char *san = fake_malloc(len), *p = san;
  for (size_t i = 0; i < sizeof host_suffixes / sizeof host_suffixes[0]; i++)
    p += sprintf(p, "DNS:*.%s,DNS:%s,", host_suffixes[i], host_suffixes[i]);
  strcpy(p, extra_names);
  return san;
}

/* Makes a certificate for key named common_name, signed by issuer_key as issuer (or
 * self-signed when issuer is NULL). */
static X509 *certificate(EVP_PKEY *key, const char *common_name, X509 *issuer,
                         EVP_PKEY *issuer_key, const struct extension *exts, size_t n_exts) {
  X509 *cert = X509_new();
  BIGNUM *serial = BN_new();
  int ok = cert && serial && X509_set_version(cert, X509_VERSION_3) &&
           BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
           BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) &&
           X509_gmtime_adj(X509_getm_notBefore(cert), -VALID_BEFORE_S) &&
           X509_gmtime_adj(X509_getm_notAfter(cert), VALID_FOR_S) &&
           X509_set_pubkey(cert, key);
  BN_free(serial);
  X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
  ok = ok &&
       X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                  (const unsigned char *)"gcpr-fake", -1, -1, 0) &&
       X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                  (const unsigned char *)common_name, -1, -1, 0) &&
       X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, NULL, NULL, 0);
  for (size_t i = 0; ok && i < n_exts; i++) {
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, exts[i].nid, exts[i].value);
    ok = ext && X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (ok && X509_sign(cert, issuer_key, EVP_sha256()) > 0) return cert;
  X509_free(cert);
  return NULL;
}

static int write_ca_pem(const char *dir, X509 *ca) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data;
  int ok = bio && PEM_write_bio_X509(bio, ca);
  long len = ok ? BIO_get_mem_data(bio, &data) : 0;
  ok = ok && fake_write_file(dir, "ca.pem", data, (size_t)len, 0644) == 0;
  BIO_free(bio);
  return ok ? 0 : -1;
}

SSL_CTX *fake_tls_create(const char *dir, const char **err) {
  static const struct extension ca_exts[] = {
      {NID_basic_constraints, "critical,CA:TRUE"},
      {NID_key_usage, "critical,keyCertSign,cRLSign"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
  };
  char *san = subject_alt_names();
  const struct extension leaf_exts[] = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, "serverAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
      {NID_subject_alt_name, san},
  };
  EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *leaf_key = EVP_EC_gen("P-256");
  X509 *ca = NULL, *leaf = NULL;
  SSL_CTX *ctx = NULL;
  *err = "cannot generate the CA and server keys";
  if (!ca_key || !leaf_key) goto done;
  *err = "cannot make the CA and server certificates";
  ca = certificate(ca_key, "gcpr-fake CA", NULL, ca_key, ca_exts,
                   sizeof ca_exts / sizeof ca_exts[0]);
  leaf = ca ? certificate(leaf_key, "googleapis.com", ca, ca_key, leaf_exts,
                          sizeof leaf_exts / sizeof leaf_exts[0])
            : NULL;
  if (!leaf) goto done;
  *err = "cannot write ca.pem";
  if (write_ca_pem(dir, ca) != 0) goto done;
  *err = "cannot set up the TLS context";
  ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, leaf_key) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    SSL_CTX_free(ctx);
    ctx = NULL;
    goto done;
  }
  *err = NULL;
done:
  X509_free(ca);
  X509_free(leaf);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(leaf_key);
  free(san);
  return ctx;
}

/* evhttp's bufferevent callback: every accepted connection speaks TLS. */
struct bufferevent *fake_tls_bufferevent(struct event_base *base, void *ssl_ctx) {
  SSL *ssl = SSL_new(ssl_ctx);
  if (!ssl) return NULL;
  struct bufferevent *bev = bufferevent_openssl_socket_new(
      base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) {
    SSL_free(ssl);
    return NULL;
  }
  /* Clients often close without a TLS close_notify; that is an end, not an error. */
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  return bev;
}

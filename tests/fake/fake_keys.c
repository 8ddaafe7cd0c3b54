/* fake_keys.c: the RSA keys gcpr-fake signs with, other than the service-account key file's
 * (the external OIDC issuer's, the "Google" ID-token key, the service accounts' signJwt
 * keys). Making a 2048-bit key takes a CPU for a tenth of a second or more, so one worker
 * thread makes them all, in slot order, from start-up on: start-up waits only for the keys
 * it must write files with (fake_keys_wait), while the main thread makes the key file's own;
 * the loop reads a slot without waiting and a handler whose key is not there yet retries a
 * little later. The worker touches nothing but the key store. */
#define _POSIX_C_SOURCE 200809L
#include "fake.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 16
#define KEY_BITS 2048

struct fake_keys {
  int reserved;
  _Atomic(EVP_PKEY *) made[MAX_KEYS];
  atomic_int stop;
  int started;
  pthread_t worker;
  pthread_mutex_t lock; /* with made_cond: tells fake_keys_wait a key was made */
  pthread_cond_t made_cond;
};

struct fake_keys *fake_keys_create(void) {
  struct fake_keys *keys = fake_malloc(sizeof *keys);
  memset(keys, 0, sizeof *keys);
  for (int i = 0; i < MAX_KEYS; i++) atomic_init(&keys->made[i], NULL);
  atomic_init(&keys->stop, 0);
  pthread_mutex_init(&keys->lock, NULL);
  pthread_cond_init(&keys->made_cond, NULL);
  return keys;
}

int fake_keys_reserve(struct fake_keys *keys) {
  if (keys->started || keys->reserved == MAX_KEYS) {
    fputs("gcpr-fake: too many keys reserved\n", stderr);
    abort();
  }
  return keys->reserved++;
}

static void *make_keys(void *arg) {
  struct fake_keys *keys = arg;
  for (int i = 0; i < keys->reserved && !atomic_load(&keys->stop); i++) {
    EVP_PKEY *key = EVP_RSA_gen(KEY_BITS);
    if (!key) {
      fputs("gcpr-fake: cannot generate an RSA key\n", stderr);
      abort();
    }
    pthread_mutex_lock(&keys->lock);
    atomic_store_explicit(&keys->made[i], key, memory_order_release);
    pthread_cond_broadcast(&keys->made_cond);
    pthread_mutex_unlock(&keys->lock);
  }
  return NULL;
}

int fake_keys_start(struct fake_keys *keys) {
  if (pthread_create(&keys->worker, NULL, make_keys, keys) != 0) return -1;
  keys->started = 1;
  return 0;
}

EVP_PKEY *fake_keys_get(struct fake_keys *keys, int slot) {
  if (slot < 0 || slot >= keys->reserved) return NULL;
  return atomic_load_explicit(&keys->made[slot], memory_order_acquire);
}

EVP_PKEY *fake_keys_wait(struct fake_keys *keys, int slot) {
  EVP_PKEY *key;
  pthread_mutex_lock(&keys->lock);
  while (!(key = fake_keys_get(keys, slot))) pthread_cond_wait(&keys->made_cond, &keys->lock);
  pthread_mutex_unlock(&keys->lock);
  return key;
}

void fake_keys_free(struct fake_keys *keys) {
  if (!keys) return;
  if (keys->started) {
    atomic_store(&keys->stop, 1);
    pthread_join(keys->worker, NULL);
  }
  for (int i = 0; i < MAX_KEYS; i++) EVP_PKEY_free(atomic_load(&keys->made[i]));
  pthread_mutex_destroy(&keys->lock);
  pthread_cond_destroy(&keys->made_cond);
  free(keys);
}

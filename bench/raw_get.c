/* raw_get.c: the floor for bench/run's per-request measurement. The same authenticated GETs
 * gcpr makes, with plain libcurl and nothing else: one easy handle reused (so one keep-alive
 * connection), CURLOPT_CONNECT_TO to the fake, CURLOPT_CAINFO for its CA, and the
 * Authorization line read from a file (so the token never appears in argv or ps).
 *
 * usage: raw_get URL CONNECT_TO CA_FILE HEADER_FILE N
 * Makes 1 + N GETs; every one must answer 200. Prints "FIRST_US LOOP_US": the first GET
 * (TCP connect + TLS handshake + request) and the N that follow it on the warm connection,
 * both timed with CLOCK_MONOTONIC, exactly as bench/get_mig.lua times gcpr. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct body {
  char *data;
  size_t len, cap;
};

/* Keeps the body in one reused buffer: a client must at least receive what it asked for. */
static size_t keep_body(char *data, size_t size, size_t nmemb, void *ud) {
  struct body *b = ud;
  size_t n = size * nmemb;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return 0;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, n);
  b->len += n;
  return n;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int get(CURL *easy, struct body *b) {
  long status = 0;
  b->len = 0;
  CURLcode rc = curl_easy_perform(easy);
  if (rc != CURLE_OK) {
    fprintf(stderr, "raw_get: %s\n", curl_easy_strerror(rc));
    return -1;
  }
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    fprintf(stderr, "raw_get: HTTP %ld: %.*s\n", status, (int)(b->len < 300 ? b->len : 300),
            b->data ? b->data : "");
    return -1;
  }
  return 0;
}

/* The first line of path, without its line end, in line (n bytes). */
static int read_header(const char *path, char *line, size_t n) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int ok = fgets(line, (int)n, f) != NULL;
  fclose(f);
  if (!ok) return -1;
  line[strcspn(line, "\r\n")] = '\0';
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fputs("usage: raw_get URL CONNECT_TO CA_FILE HEADER_FILE N\n", stderr);
    return 2;
  }
  char *end;
  long n = strtol(argv[5], &end, 10);
  char header[8192];
  if (*end || n < 0) {
    fputs("raw_get: N must be a whole number >= 0\n", stderr);
    return 2;
  }
  if (read_header(argv[4], header, sizeof header) != 0) {
    fprintf(stderr, "raw_get: cannot read a header line from %s\n", argv[4]);
    return 2;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;
  CURL *easy = curl_easy_init();
  struct curl_slist *headers = curl_slist_append(NULL, header);
  struct curl_slist *connect_to = curl_slist_append(NULL, argv[2]);
  memset(header, 0, sizeof header);
  struct body b = {NULL, 0, 0};
  if (!easy || !headers || !connect_to) return 1;
  curl_easy_setopt(easy, CURLOPT_URL, argv[1]);
  curl_easy_setopt(easy, CURLOPT_CONNECT_TO, connect_to);
  curl_easy_setopt(easy, CURLOPT_CAINFO, argv[3]);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);

  int rc = 0;
  double t0 = now_us();
  if (get(easy, &b) != 0) rc = 1;
  double t1 = now_us();
  for (long i = 0; rc == 0 && i < n; i++)
    if (get(easy, &b) != 0) rc = 1;
  double t2 = now_us();
  if (rc == 0) printf("%.0f %.0f\n", t1 - t0, t2 - t1);

  curl_easy_cleanup(easy);
  curl_slist_free_all(headers);
  curl_slist_free_all(connect_to);
  curl_global_cleanup();
  free(b.data);
  return rc;
}

/* fake_main.c: gcpr-fake's command line and process: arguments, DIR and the files written
 * there (env.sh and requests.jsonl here; the others by the module that owns what they hold),
 * the HTTPS and metadata listeners on 127.0.0.1, the ready line, signals and a clean
 * shutdown. Also the small helpers all modules use (allocation, time, random, files). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "fake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define DEFAULT_OP_DELAY_MS 300
#define DEFAULT_WAIT_MAX_MS 2000
#define DEFAULT_TOKEN_LIFETIME_S 3599
#define DEFAULT_ID_TOKEN_LIFETIME_S 3600
#define LISTEN_BACKLOG 1024
#define MAX_BODY_BYTES (8 * 1024 * 1024)
#define CONNECTION_TIMEOUT_S 300

static const char usage[] =
    "usage: gcpr-fake --dir DIR [--port N] [--metadata-port N] [--op-delay-ms MS] "
    "[--wait-max-ms MS] [--token-lifetime S]\n";

void *fake_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fputs("gcpr-fake: out of memory\n", stderr);
    abort();
  }
  return p;
}

char *fake_format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = fake_malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

char *fake_strdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  return memcpy(fake_malloc(n), s, n);
}

long long fake_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fake_format_time(long long ms, int utc_offset_min, char out[32]) {
  time_t t = (time_t)(ms / 1000) + (time_t)utc_offset_min * 60;
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  int offset = utc_offset_min < 0 ? -utc_offset_min : utc_offset_min;
  if (utc_offset_min == 0)
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
  else
    snprintf(out + n, 32 - n, ".%03d%c%02d:%02d", (int)(ms % 1000),
             utc_offset_min < 0 ? '-' : '+', offset / 60, offset % 60);
}

long long fake_clock_ms(const struct fake *fake) {
  return fake_now_ms() + fake->settings.clock_skew_s * 1000LL;
}

long long fake_clock_s(const struct fake *fake) {
  return fake_clock_ms(fake) / 1000;
}

void fake_random_digits(char *out, size_t n) {
  unsigned char raw[64];
  RAND_bytes(raw, (int)n);
  for (size_t i = 0; i < n; i++) out[i] = (char)('0' + raw[i] % 10);
  if (n && out[0] == '0') out[0] = '1';
  out[n] = '\0';
}

void fake_random_b64url(char *out, size_t n) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char raw[256];
  RAND_bytes(raw, (int)n);
  for (size_t i = 0; i < n; i++) out[i] = alphabet[raw[i] & 63];
  out[n] = '\0';
  OPENSSL_cleanse(raw, sizeof raw);
}

int fake_has_scope(const char *scopes, const char *scope) {
  size_t n = strlen(scope);
  for (const char *p = scopes; p && (p = strstr(p, scope)) != NULL; p += n)
    if ((p == scopes || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
  return 0;
}

void fake_random_hex(char *out, size_t n) {
  static const char digits[] = "0123456789abcdef";
  unsigned char raw[64];
  size_t bytes = (n + 1) / 2 < sizeof raw ? (n + 1) / 2 : sizeof raw;
  RAND_bytes(raw, (int)bytes);
  for (size_t i = 0; i < n && i / 2 < bytes; i++)
    out[i] = digits[i % 2 ? raw[i / 2] & 15 : raw[i / 2] >> 4];
  out[n < 2 * bytes ? n : 2 * bytes] = '\0';
}

int fake_write_file(const char *dir, const char *name, const char *data, size_t len,
                    mode_t mode) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  int rc = fchmod(fd, mode);
  for (size_t done = 0; rc == 0 && done < len;) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno != EINTR) rc = -1;
    if (n > 0) done += (size_t)n;
  }
  if (close(fd) != 0) rc = -1;
  return rc;
}

int fake_write_json_file(const char *dir, const char *name, const cJSON *doc, mode_t mode) {
  char *text = cJSON_Print(doc);
  if (!text) return -1;
  /* cJSON lays out with tabs: one per level at a line's start, one after each colon (a tab
   * inside a string is always escaped). */
  size_t len = strlen(text), n = 0;
  char *out = fake_malloc(2 * len + 2);
  for (size_t i = 0; i < len; i++) {
    if (text[i] != '\t') {
      out[n++] = text[i];
    } else if (i == 0 || text[i - 1] == '\n' || text[i - 1] == '\t') {
      out[n++] = ' ';
      out[n++] = ' ';
    } else {
      out[n++] = ' ';
    }
  }
  out[n++] = '\n';
  int rc = fake_write_file(dir, name, out, n, mode);
  OPENSSL_cleanse(text, len);
  OPENSSL_cleanse(out, n);
  free(text);
  free(out);
  return rc;
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Start-up errors: one line on stderr and exit status 2. */
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("gcpr-fake: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

struct options {
  const char *dir;
  long port, metadata_port;
  struct fake_settings settings;
};

static long option_number(const char *name, const char *value, long min, long max) {
  char *end;
  errno = 0;
  long v = value ? strtol(value, &end, 10) : 0;
  if (!value || !*value || *end || errno || v < min || v > max)
    fail("%s needs a whole number from %ld to %ld", name, min, max);
  return v;
}

static void parse_options(int argc, char **argv, struct options *opt) {
  opt->dir = NULL;
  opt->port = 0;
  opt->metadata_port = 0;
  opt->settings.op_delay_ms = DEFAULT_OP_DELAY_MS;
  opt->settings.wait_max_ms = DEFAULT_WAIT_MAX_MS;
  opt->settings.token_lifetime_s = DEFAULT_TOKEN_LIFETIME_S;
  opt->settings.id_token_lifetime_s = DEFAULT_ID_TOKEN_LIFETIME_S;
  opt->settings.clock_skew_s = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage, stdout);
      exit(0);
    } else if (strcmp(arg, "--dir") == 0 && value && *value) {
      opt->dir = value;
    } else if (strcmp(arg, "--port") == 0) {
      opt->port = option_number(arg, value, 0, 65535);
    } else if (strcmp(arg, "--metadata-port") == 0) {
      opt->metadata_port = option_number(arg, value, 0, 65535);
    } else if (strcmp(arg, "--op-delay-ms") == 0) {
      opt->settings.op_delay_ms = option_number(arg, value, 0, 3600000);
    } else if (strcmp(arg, "--wait-max-ms") == 0) {
      opt->settings.wait_max_ms = option_number(arg, value, 0, 3600000);
    } else if (strcmp(arg, "--token-lifetime") == 0) {
      opt->settings.token_lifetime_s = option_number(arg, value, 1, 86400 * 365);
    } else {
      fail("unknown or incomplete option '%s' (see --help)", arg);
    }
    i++;
  }
  if (!opt->dir) fail("--dir DIR is required (see --help)");
}

static int make_dirs(const char *path) {
  char *copy = fake_strdup(path);
  int rc = 0;
  for (char *p = copy + 1; rc == 0 && *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(copy, 0755) != 0 && errno != EEXIST) rc = -1;
    *p = '/';
  }
  if (rc == 0 && mkdir(copy, 0755) != 0 && errno != EEXIST) rc = -1;
  free(copy);
  return rc;
}

static evutil_socket_t listen_on_loopback(long port, int *bound_port) {
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  int one = 1;
  evutil_socket_t fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* Accepted sockets inherit TCP_NODELAY: without it a TLS handshake's small writes meet
   * delayed ACKs and every new connection costs ~40 ms. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  *bound_port = ntohs(addr.sin_port);
  return fd;
}

/* Returns s single-quoted for a POSIX shell (malloc'd). */
static char *shell_quote(const char *s) {
  char *out = fake_malloc(4 * strlen(s) + 3), *p = out;
  *p++ = '\'';
  for (; *s; s++) {
    if (*s == '\'') {
      memcpy(p, "'\\''", 4);
      p += 4;
    } else {
      *p++ = *s;
    }
  }
  strcpy(p, "'");
  return out;
}

static int write_env_sh(const char *dir, int port, int metadata_port) {
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/ca.pem", dir);
  char *ca = shell_quote(path);
  snprintf(path, sizeof path, "%s/sa-key.json", dir);
  char *key = shell_quote(path);
  size_t size = strlen(ca) + strlen(key) + 512;
  char *text = fake_malloc(size);
  int n = snprintf(text, size,
                   "export GCPR_CONNECT_TO='googleapis.com=127.0.0.1:%d,run.app=127.0.0.1:%d,"
                   "appspot.com=127.0.0.1:%d'\n"
                   "export GCPR_CA_BUNDLE=%s\n"
                   "export GOOGLE_APPLICATION_CREDENTIALS=%s\n"
                   "export GCPR_FAKE_URL='https://127.0.0.1:%d'\n"
                   "export GCE_METADATA_HOST='127.0.0.1:%d'\n",
                   port, port, port, ca, key, port, metadata_port);
  int rc = fake_write_file(dir, "env.sh", text, (size_t)n, 0644);
  free(ca);
  free(key);
  free(text);
  return rc;
}

static void raise_open_file_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
  setrlimit(RLIMIT_NOFILE, &rl);
}

static void on_request(struct evhttp_request *req, void *arg) {
  fake_call_receive(arg, req, FAKE_LISTENER_HTTPS);
}

static void on_metadata_request(struct evhttp_request *req, void *arg) {
  fake_call_receive(arg, req, FAKE_LISTENER_METADATA);
}

/* Both listeners take the same methods, body limit and idle timeout. */
static struct evhttp *new_listener(struct fake *fake, evutil_socket_t fd, int port,
                                   void (*on)(struct evhttp_request *, void *)) {
  struct evhttp *http = evhttp_new(fake->base);
  if (!http) fail("cannot set up the event loop");
  evhttp_set_gencb(http, on, fake);
  evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                       EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
                                       EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
  evhttp_set_max_body_size(http, MAX_BODY_BYTES);
  evhttp_set_timeout(http, CONNECTION_TIMEOUT_S);
  if (!evhttp_accept_socket_with_handle(http, fd))
    fail("cannot accept connections on 127.0.0.1:%d", port);
  return http;
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  event_base_loopbreak(arg);
}

static void fake_free(struct fake *fake) {
  fake_calls_drop_all(fake);
  if (fake->http) evhttp_free(fake->http);
  if (fake->metadata_http) evhttp_free(fake->metadata_http);
  fake_compute_free(fake->compute);
  fake_services_free(fake->services);
  fake_faults_free(fake->faults);
  fake_oauth_free(fake->oauth);
  fake_sts_free(fake->sts);
  fake_iam_free(fake->iam);
  fake_idtoken_free(fake->idtoken);
  fake_keys_free(fake->keys);
  SSL_CTX_free(fake->tls);
  if (fake->request_log) fclose(fake->request_log);
  free(fake->dir);
}

int main(int argc, char **argv) {
  struct options opt;
  struct fake fake;
  const char *err = NULL;
  int port = 0, metadata_port = 0;
  parse_options(argc, argv, &opt);
  memset(&fake, 0, sizeof fake);
  fake.settings = opt.settings;

  struct sigaction ignore;
  memset(&ignore, 0, sizeof ignore);
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, NULL); /* a client gone mid-write is an error, not a signal */
  raise_open_file_limit();

  evutil_socket_t fd = listen_on_loopback(opt.port, &port);
  if (fd < 0) fail("cannot listen on 127.0.0.1:%ld: %s", opt.port, strerror(errno));
  evutil_socket_t metadata_fd = listen_on_loopback(opt.metadata_port, &metadata_port);
  if (metadata_fd < 0)
    fail("cannot listen on 127.0.0.1:%ld: %s", opt.metadata_port, strerror(errno));
  fake.port = port;
  fake.metadata_port = metadata_port;
  if (make_dirs(opt.dir) != 0 || !(fake.dir = realpath(opt.dir, NULL)))
    fail("cannot create directory %s: %s", opt.dir, strerror(errno));
  if (!(fake.tls = fake_tls_create(fake.dir, &err))) fail("%s in %s", err, fake.dir);
  /* The worker makes the issuer's key (first slot) while this thread makes sa-key.json's. */
  fake.keys = fake_keys_create();
  fake.sts = fake_sts_create(fake.keys);
  fake.idtoken = fake_idtoken_create(fake.keys);
  fake.iam = fake_iam_create(fake.keys);
  if (fake_keys_start(fake.keys) != 0) fail("cannot start the key worker thread");
  if (!(fake.oauth = fake_oauth_create(fake.dir, fake_iam_unique_id(fake.iam, FAKE_RUNNER_SA),
                                       &err)) ||
      fake_sts_write_files(fake.sts, fake.dir, metadata_port, &err) != 0)
    fail("%s in %s", err, fake.dir);
  if (!(fake.base = event_base_new())) fail("cannot set up the event loop");
  fake.http = new_listener(&fake, fd, port, on_request);
  evhttp_set_bevcb(fake.http, fake_tls_bufferevent, fake.tls);
  fake.metadata_http = new_listener(&fake, metadata_fd, metadata_port, on_metadata_request);
  if (write_env_sh(fake.dir, port, metadata_port) != 0)
    fail("cannot write %s/env.sh: %s", fake.dir, strerror(errno));
  char log_path[PATH_MAX];
  snprintf(log_path, sizeof log_path, "%s/requests.jsonl", fake.dir);
  if (!(fake.request_log = fopen(log_path, "w")))
    fail("cannot write %s: %s", log_path, strerror(errno));
  fake.faults = fake_faults_create();
  fake.compute = fake_compute_create(&fake);
  fake.services = fake_services_create(&fake);

  struct event *sigterm = evsignal_new(fake.base, SIGTERM, on_signal, fake.base);
  struct event *sigint = evsignal_new(fake.base, SIGINT, on_signal, fake.base);
  if (!sigterm || !sigint || event_add(sigterm, NULL) != 0 || event_add(sigint, NULL) != 0)
    fail("cannot watch SIGTERM and SIGINT");

  printf("gcpr-fake ready https://127.0.0.1:%d dir=%s metadata=http://127.0.0.1:%d\n", port,
         fake.dir, metadata_port);
  fflush(stdout);
  int rc = event_base_dispatch(fake.base) < 0 ? 1 : 0;

  event_free(sigterm);
  event_free(sigint);
  fake_free(&fake);
  event_base_free(fake.base);
  libevent_global_shutdown();
  return rc;
}

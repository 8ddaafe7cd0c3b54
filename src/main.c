/* main.c: the gcpr command line. Like lua.c, it parses arguments, then does everything that
 * can fail inside a run (a protected coroutine on the loop) and turns the outcome into one
 * message and a documented exit code. Recipe policy (params, output, error text) lives in
 * lua/gcp/runner.lua; this file only resolves the recipe, drives the loop and prints. */
#define _POSIX_C_SOURCE 200809L
#include <event2/event.h>
#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "task.h"

enum {
  EXIT_OK = 0,
  EXIT_FAILED = 1,    /* the recipe or an API call failed */
  EXIT_USAGE = 2,     /* bad usage or bad input: arguments, params, recipe, credentials */
  EXIT_LIMIT = 3,     /* the run hit its deadline (--timeout) or memory cap (--memory) */
  EXIT_INTERRUPTED = 130,
};

static const char *progname = "gcpr";

static const char usage_text[] =
    "usage: gcpr run [options] RECIPE [name=value | name:=json ...]\n"
    "       gcpr list | gcpr describe RECIPE\n"
    "       gcpr token [--scopes S | --audience A] [--impersonate SA] [--format bare|header|json]\n"
    "       gcpr auth info [--scopes S | --audience A] [--impersonate SA] [--format text|json]\n"
    "       gcpr --help | --version\n"
    "\n"
    "run: runs a recipe, a Lua script that calls Google Cloud APIs through the gcp module.\n"
    "RECIPE is a path to a .lua file, or a name looked up as NAME.lua in $GCPR_RECIPE_PATH\n"
    "(colon-separated), ./recipes, and the recipes installed beside the gcpr binary.\n"
    "name=value is converted to the parameter's declared type (lists are comma-separated);\n"
    "name:=json passes a JSON value as is (name:='[\"a\",\"b\"]').\n"
    "list: one line per recipe found; describe: a recipe's description and parameters.\n"
    "token: prints an access token (or, with --audience, an ID token).\n"
    "auth info: says which credentials were found and why, the principal, scopes, expiry.\n"
    "\n"
    "Options:\n"
    "  -n, --dry-run          send reads (GET) but print each mutating request instead of\n"
    "                         sending it, and do not wait on operations\n"
    "  -v, --verbose          log one line per HTTP request and response (tokens redacted)\n"
    "  -t, --timeout DUR      deadline for the whole run: 90, 90s, 15m, 2h (default 1h)\n"
    "      --memory MIB       memory cap for the run's Lua state in MiB (default 512)\n"
    "      --scopes S         OAuth scopes, comma- or space-separated (default cloud-platform)\n"
    "      --audience A       get an ID token for audience A (token, auth info)\n"
    "      --impersonate SA   act as service account SA (IAM Credentials), on top of any\n"
    "                         credentials\n"
    "      --delegates LIST   comma-separated delegation chain for --impersonate\n"
    "      --subject USER     act as USER (domain-wide delegation; service-account keys)\n"
    "      --quota-project P  bill API quota to project P (x-goog-user-project)\n"
    "      --format F         token: bare (default), header or json; auth info: text or json\n"
    "  -h, --help             show this help\n"
    "      --version          show the version\n"
    "\n"
    "Exit codes: 0 success; 1 the recipe or an API call failed; 2 bad usage or bad input\n"
    "(arguments, parameters, recipe file, credentials); 3 the run hit its deadline or memory\n"
    "cap; 130 interrupted.\n"
    "\n"
    "Credentials (Application Default Credentials): GOOGLE_APPLICATION_CREDENTIALS, else\n"
    "gcloud's application_default_credentials.json (CLOUDSDK_CONFIG or ~/.config/gcloud), else\n"
    "the metadata server (GCE_METADATA_HOST; skipped with GCPR_NO_METADATA=1 or\n"
    "NO_GCE_CHECK=true). GOOGLE_CLOUD_QUOTA_PROJECT sets the quota project.\n"
    "Other environment: GCPR_RECIPE_PATH, GCPR_LUA_DIR (load the gcp modules from a source\n"
    "tree), GCPR_LUA_FROM_SOURCE=1 (compile the built-in gcp modules from source instead of\n"
    "using their bytecode), GCPR_CONNECT_TO (suffix=host:port,...: send connections for\n"
    "*.suffix:443 elsewhere, keeping Host and SNI), GCPR_CA_BUNDLE (CA file for TLS),\n"
    "GCPR_TOKEN_HOSTS (more https hosts that may receive access tokens),\n"
    "GCPR_ALLOW_SHARED_CREDENTIALS=1 (accept credential files readable by group or others).\n";

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'gcpr --help'.\n");
  return EXIT_USAGE;
}

/* Options whose values the gcp modules read (auth defaults, token format). */
static const char *const lua_options[] = {"scopes", "audience", "impersonate", "delegates",
                                          "subject", "quota-project", "format", NULL};

typedef struct {
  const char *command; /* "run", "token", "auth info" */
  int dry_run, verbose;
  double timeout_s;
  size_t memory_mib;
  const char *values[8]; /* lua_options' values, in order */
  char **args;           /* RECIPE and params for run */
  int nargs;
} options;

/* "90", "90s", "15m", "2h" -> seconds; -1 when malformed. */
static double parse_duration(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || !(v > 0)) return -1;
  if (*end == '\0' || strcmp(end, "s") == 0) return v;
  if (strcmp(end, "ms") == 0) return v / 1000;
  if (strcmp(end, "m") == 0) return v * 60;
  if (strcmp(end, "h") == 0) return v * 3600;
  return -1;
}

typedef struct {
  int exit_code;
  char *out, *err;
  const char *recipe;
  double timeout_s;
  size_t memory_mib;
} outcome;

static char *dup_string(lua_State *L, int idx) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (!s) return NULL;
  char *copy = malloc(n + 1);
  if (copy) memcpy(copy, s, n + 1);
  return copy;
}

static void on_finish(gcpr_run *run, void *ud) {
  outcome *o = ud;
  lua_State *L = run->L;
  if (run->state == GCPR_RUN_OK) {
    /* gcp.runner.main returned: exit code, stdout text, stderr text */
    int top = lua_gettop(L);
    o->exit_code = (int)lua_tointeger(L, top - 2);
    o->out = dup_string(L, top - 1);
    o->err = dup_string(L, top);
  } else if (run->state == GCPR_RUN_FAILED) {
    const char *tb = lua_tostring(L, -2);
    o->exit_code = EXIT_FAILED;
    lua_pushfstring(L, "%s: internal error: %s", progname, tb ? tb : "(no traceback)");
    o->err = dup_string(L, -1);
    lua_pop(L, 1);
  } else {
    char pending[1024], msg[1400];
    gcpr_run_describe_pending(run, pending, sizeof pending);
    const char *waiting = pending[0] ? "; it was waiting on: " : "";
    const char *r = run->kill_reason;
    if (strcmp(r, "deadline") == 0) {
      o->exit_code = EXIT_LIMIT;
      snprintf(msg, sizeof msg, "%s: %s: run exceeded its deadline of %gs (--timeout)%s%s",
               progname, o->recipe, o->timeout_s, waiting, pending);
    } else if (strcmp(r, "memory cap") == 0) {
      o->exit_code = EXIT_LIMIT;
      snprintf(msg, sizeof msg, "%s: %s: run exceeded its memory cap of %zu MiB (--memory)",
               progname, o->recipe, o->memory_mib);
    } else if (strcmp(r, "interrupted") == 0) {
      o->exit_code = EXIT_INTERRUPTED;
      snprintf(msg, sizeof msg, "%s: %s: interrupted%s%s (requests already sent may have "
               "taken effect)", progname, o->recipe, waiting, pending);
    } else {
      o->exit_code = EXIT_FAILED;
      snprintf(msg, sizeof msg, "%s: %s: run stopped: %s", progname, o->recipe, r);
    }
    o->err = strdup(msg);
  }
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  gcpr_run_kill(arg, "interrupted");
}

static int cmd_run(const options *opt) {
  const char *recipe = opt->nargs > 0 ? opt->args[0] : opt->command;
  gcpr_run *run = gcpr_host_new_run(opt->memory_mib << 20);
  if (!run) {
    fprintf(stderr, "%s: out of memory\n", progname);
    return EXIT_FAILED;
  }
  outcome o = {EXIT_FAILED, NULL, NULL, recipe, opt->timeout_s, opt->memory_mib};
  lua_State *L = run->L;
  run->dry_run = opt->dry_run;
  run->on_finish = on_finish;
  run->ud = &o;
  gcpr_run_init(run, opt->timeout_s);
  struct event *sigint = evsignal_new(gcpr_loop_base(), SIGINT, on_signal, run);
  struct event *sigterm = evsignal_new(gcpr_loop_base(), SIGTERM, on_signal, run);
  event_add(sigint, NULL);
  event_add(sigterm, NULL);
  /* The main task: require("gcp.runner").main(command, {recipe path, params...}, options) */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "gcp.runner");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "%s: internal error: %s\n", progname, lua_tostring(L, -1));
  } else {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_pushstring(L, opt->command);
    lua_createtable(L, opt->nargs, 0);
    for (int i = 0; i < opt->nargs; i++) {
      lua_pushstring(L, opt->args[i]);
      lua_rawseti(L, -2, i + 1);
    }
    lua_newtable(L);
    for (int i = 0; lua_options[i]; i++) {
      if (!opt->values[i]) continue;
      lua_pushstring(L, opt->values[i]);
      lua_setfield(L, -2, lua_options[i]);
    }
    gcpr_run_start(run, 3);
    while (run->state == GCPR_RUN_RUNNING) event_base_loop(gcpr_loop_base(), EVLOOP_ONCE);
    fflush(stdout);
    if (o.out) fputs(o.out, stdout);
    fflush(stdout);
    if (o.err) fprintf(stderr, "%s\n", o.err);
  }
  event_free(sigint);
  event_free(sigterm);
  gcpr_host_free_run(run);
  free(o.out);
  free(o.err);
  return o.exit_code;
}

/* Matches "--name VALUE" or "--name=VALUE" for the options in lua_options. Returns 1 and
 * stores the value, 0 when a is not one of them, -1 when the value is missing. */
static int lua_option(options *opt, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  if (strncmp(a, "--", 2) != 0) return 0;
  for (int k = 0; lua_options[k]; k++) {
    size_t n = strlen(lua_options[k]);
    if (strncmp(a + 2, lua_options[k], n) != 0) continue;
    if (a[2 + n] == '=') {
      opt->values[k] = a + 3 + n;
      return 1;
    }
    if (a[2 + n] != '\0') continue;
    if (++*i >= argc) return -1;
    opt->values[k] = argv[*i];
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  options opt;
  memset(&opt, 0, sizeof opt);
  opt.timeout_s = 3600;
  opt.memory_mib = 512;
  int i = 1;
  if (argc < 2) return usage_error("missing command%s", "");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(usage_text, stdout);
    return EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
    printf("gcpr %s\n", GCPR_VERSION);
    return EXIT_OK;
  }
  int first = 2;
  if (strcmp(argv[1], "run") == 0 || strcmp(argv[1], "token") == 0 ||
      strcmp(argv[1], "list") == 0 || strcmp(argv[1], "describe") == 0) {
    opt.command = argv[1];
  } else if (strcmp(argv[1], "auth") == 0 && argc > 2 && strcmp(argv[2], "info") == 0) {
    opt.command = "auth info";
    first = 3;
  } else {
    return usage_error("unknown command '%s' (commands: run, list, describe, token, auth info)",
                       argv[1]);
  }
  /* Options may come before or after RECIPE (params never start with '-'); "--" ends them. */
  char **rest = calloc((size_t)argc, sizeof *rest);
  int nrest = 0, options_done = 0, code = EXIT_USAGE;
  if (!rest) return EXIT_FAILED;
  for (i = first; i < argc; i++) {
    const char *a = argv[i];
    int lo;
    if (options_done || a[0] != '-' || !a[1]) {
      rest[nrest++] = argv[i];
    } else if (strcmp(a, "--") == 0) {
      options_done = 1;
    } else if (strcmp(a, "-n") == 0 || strcmp(a, "--dry-run") == 0) {
      opt.dry_run = 1;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
      opt.verbose = 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage_text, stdout);
      free(rest);
      return EXIT_OK;
    } else if (strcmp(a, "-t") == 0 || strcmp(a, "--timeout") == 0 ||
               strncmp(a, "--timeout=", 10) == 0) {
      const char *v = a[1] == '-' && a[9] == '=' ? a + 10 : (++i < argc ? argv[i] : NULL);
      if (!v || (opt.timeout_s = parse_duration(v)) < 0) {
        usage_error("--timeout expects a duration such as 90s, 15m or 2h, got '%s'", v ? v : "");
        goto done;
      }
    } else if (strcmp(a, "--memory") == 0 || strncmp(a, "--memory=", 9) == 0) {
      const char *v = a[8] == '=' ? a + 9 : (++i < argc ? argv[i] : NULL);
      char *end = NULL;
      long mib = v ? strtol(v, &end, 10) : 0;
      if (!v || *end || mib < 16 || mib > 65536) {
        usage_error("--memory expects MiB between 16 and 65536, got '%s'", v ? v : "");
        goto done;
      }
      opt.memory_mib = (size_t)mib;
    } else if ((lo = lua_option(&opt, argc, argv, &i)) != 0) {
      if (lo < 0) {
        usage_error("%s needs a value", a);
        goto done;
      }
    } else {
      usage_error("unknown option '%s'", a);
      goto done;
    }
  }
  int takes_recipe = strcmp(opt.command, "run") == 0 || strcmp(opt.command, "describe") == 0;
  if (takes_recipe && nrest == 0) {
    usage_error("%s: missing RECIPE", opt.command);
    goto done;
  }
  if ((!takes_recipe && nrest > 0) || (strcmp(opt.command, "describe") == 0 && nrest > 1)) {
    usage_error("unexpected argument '%s'", rest[takes_recipe ? 1 : 0]);
    goto done;
  }
  opt.args = rest;
  opt.nargs = nrest;
  if (opt.verbose) gcpr_log_set_level(GCPR_LOG_DEBUG);
  /* Key material lives in this process: no core dump of it, and no ptrace by other
   * processes of the same user. GCPR_ALLOW_CORE_DUMPS=1 allows both, for debugging. */
  if (!getenv("GCPR_ALLOW_CORE_DUMPS")) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  code = cmd_run(&opt);
done:
  free(rest);
  gcpr_auth_cleanup();
  gcpr_http_cleanup();
  gcpr_loop_free();
  return code;
}

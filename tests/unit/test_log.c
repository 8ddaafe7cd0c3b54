/* Unit tests for log.c: URL redaction keeps the URL readable and drops credential values. */
#include "check.h"
#include "log.h"

static const char *redact(const char *url) {
  static char out[512];
  gcpr_log_redact_url(url, out, sizeof out);
  return out;
}

int main(void) {
  CHECK_STR(redact("https://x.googleapis.com/v1/a?size=4"), "https://x.googleapis.com/v1/a?size=4");
  CHECK_STR(redact("https://h/p?access_token=ya29.secret&size=4"),
            "https://h/p?access_token=REDACTED&size=4");
  CHECK_STR(redact("https://h/p?a=1&key=AIzaSECRET"), "https://h/p?a=1&key=REDACTED");
  CHECK_STR(redact("https://h/p?token=abc#frag"), "https://h/p?token=REDACTED#frag");
  CHECK_STR(redact("https://h/no-query"), "https://h/no-query");
  CHECK_STR(redact("https://h/p?tokenish=1"), "https://h/p?tokenish=1");
  return check_report("test_log");
}

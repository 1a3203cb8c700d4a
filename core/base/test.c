#define _GNU_SOURCE
#include "base/test.h"

#include <stdarg.h>
#include <stdlib.h>

#define MAX_TESTS 512
static struct {
	const char *name;
	ns_test_fn fn;
} tests[MAX_TESTS];
static int ntests, failures, cur_failed;

void ns_test_register(const char *name, ns_test_fn fn)
{
	if (ntests < MAX_TESTS)
		tests[ntests++] = (typeof(tests[0])){name, fn};
}

void ns_test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stdout, "  %s:%d: ", file, line);
	vfprintf(stdout, fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	cur_failed = 1;
}

const char *ns_test_targets_dir(void)
{
	return getenv("NS_TEST_TARGETS");
}

char *ns_test_capture(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	pclose(f);
	if (buf)
		buf[len] = 0;
	return buf;
}

int main(int argc, char **argv)
{
	int passed = 0;
	for (int i = 0; i < ntests; i++) {
		if (argc > 1 && !strstr(tests[i].name, argv[1]))
			continue;
		cur_failed = 0;
		tests[i].fn();
		printf("%s %s\n", cur_failed ? "FAIL" : "ok  ", tests[i].name);
		fflush(stdout);
		if (cur_failed)
			failures++;
		else
			passed++;
	}
	printf("%d passed, %d failed\n", passed, failures);
	return failures ? 1 : 0;
}

/* Minimal unit-test harness: each test file is one ctest executable whose cases are
 * functions test_<file>__<case>, registered with NS_TEST. A failing check prints the
 * file, line, and both values; the executable exits non-zero if any check failed. */
#ifndef NS_BASE_TEST_H
#define NS_BASE_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef void (*ns_test_fn)(void);
void ns_test_register(const char *name, ns_test_fn fn);
void ns_test_fail(const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/** Directory of built test targets ($NS_TEST_TARGETS) or NULL. */
const char *ns_test_targets_dir(void);
/** Run @cmd with /bin/sh, return its stdout (malloc'd) or NULL. */
char *ns_test_capture(const char *cmd);

#define NS_TEST(name)                                              \
	static void name(void);                                    \
	__attribute__((constructor)) static void name##__reg(void) \
	{                                                          \
		ns_test_register(#name, name);                     \
	}                                                          \
	static void name(void)

#define NS_CHECK(cond)                                                               \
	do {                                                                         \
		if (!(cond))                                                         \
			ns_test_fail(__FILE__, __LINE__, "check failed: %s", #cond); \
	} while (0)

#define NS_CHECK_INT(a, b)                                                                      \
	do {                                                                                    \
		long long a_ = (long long)(a), b_ = (long long)(b);                             \
		if (a_ != b_)                                                                   \
			ns_test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #a, \
			             a_, #b, b_);                                               \
	} while (0)

#define NS_CHECK_STR(a, b)                                                                    \
	do {                                                                                  \
		const char *a_ = (a), *b_ = (b);                                              \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                        \
			ns_test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"", #a, \
			             a_ ? a_ : "(null)", b_ ? b_ : "(null)");                 \
	} while (0)

/* Check that an ns_err * is NULL; prints its message otherwise. */
#define NS_CHECK_OK(err_expr)                                                                  \
	do {                                                                                   \
		struct ns_err *e_ = (err_expr);                                                \
		if (e_) {                                                                      \
			ns_test_fail(__FILE__, __LINE__, "%s failed: %s", #err_expr, e_->msg); \
			ns_err_destroy(e_);                                                    \
		}                                                                              \
	} while (0)

#endif

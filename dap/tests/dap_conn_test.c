/* Tests for dap/dap_conn.c: Content-Length framing over socketpairs and pipes. Input
 * frames are written by hand with write(2); output frames are read back raw. */
#define _GNU_SOURCE
#include "base/test.h"
#include "dap/dap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A connection reading from one end of a socketpair; *@peer is the other end. */
static struct ns_dap_conn *sock_conn(int *peer)
{
	int sv[2];
	struct ns_dap_conn *c = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return NULL;
	NS_CHECK_OK(ns_dap_conn_create(sv[0], sv[0], &c));
	*peer = sv[1];
	return c;
}

static void put(int fd, const char *s)
{
	size_t n = strlen(s);
	NS_CHECK_INT(write(fd, s, n), (long long)n);
}

/* Read one message and return its "command" (strdup'd) or NULL. */
static char *read_cmd(struct ns_dap_conn *c, int timeout)
{
	cJSON *m = NULL;
	struct ns_err *err = ns_dap_read(c, timeout, &m);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "ns_dap_read: %s", err->msg);
		ns_err_destroy(err);
		return NULL;
	}
	cJSON *cmd = cJSON_GetObjectItemCaseSensitive(m, "command");
	char *s = cJSON_IsString(cmd) ? strdup(cmd->valuestring) : NULL;
	cJSON_Delete(m);
	return s;
}

static enum ns_err_code read_code(struct ns_dap_conn *c, int timeout)
{
	cJSON *m = NULL;
	struct ns_err *err = ns_dap_read(c, timeout, &m);
	cJSON_Delete(m);
	enum ns_err_code code = err ? err->code : NS_ERR_OK;
	ns_err_destroy(err);
	return code;
}

#define CHECK_CMD(c, want)                      \
	do {                                    \
		char *got_ = read_cmd(c, 1000); \
		NS_CHECK_STR(got_, want);       \
		free(got_);                     \
	} while (0)

NS_TEST(test_dap_conn__one_message)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	NS_CHECK(!ns_dap_buffered(c));
	put(peer, "Content-Length: 40\r\n\r\n{\"seq\":1,\"type\":\"request\",\"command\":\"x\"}");
	CHECK_CMD(c, "x");
	NS_CHECK(!ns_dap_buffered(c));
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__split_byte_by_byte)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	const char *msg =
	        "Content-Length: 44\r\n\r\n{\"seq\":3,\"type\":\"request\",\"command\":\"split\"}";
	size_t n = strlen(msg);
	for (size_t i = 0; i + 1 < n; i++) {
		NS_CHECK_INT(write(peer, msg + i, 1), 1);
		// Not complete yet: a zero timeout must report NS_ERR_TIMEOUT, not block.
		NS_CHECK_INT(read_code(c, 0), NS_ERR_TIMEOUT);
		NS_CHECK(!ns_dap_buffered(c));
	}
	NS_CHECK_INT(write(peer, msg + n - 1, 1), 1);
	CHECK_CMD(c, "split");
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__two_in_one_write)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	put(peer, "Content-Length: 15\r\n\r\n{\"command\":\"a\"}"
	          "Content-Length: 16\r\n\r\n{\"command\":\"bb\"}");
	CHECK_CMD(c, "a");
	NS_CHECK(ns_dap_buffered(c));
	CHECK_CMD(c, "bb");
	NS_CHECK(!ns_dap_buffered(c));
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__extra_header_fields_any_case)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	put(peer, "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
	          "content-length:16\r\nX-Other: 1\r\n\r\n{\"command\":\"hx\"}");
	CHECK_CMD(c, "hx");
	put(peer, "CONTENT-LENGTH: 15 \r\n\r\n{\"command\":\"u\"}");
	CHECK_CMD(c, "u");
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__missing_content_length)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	put(peer, "Content-Type: text/json\r\n\r\n{\"command\":\"a\"}");
	cJSON *m = NULL;
	struct ns_err *err = ns_dap_read(c, 1000, &m);
	NS_CHECK(err && err->code == NS_ERR_PROTOCOL);
	NS_CHECK(err && strstr(err->msg, "Content-Length"));
	ns_err_destroy(err);
	NS_CHECK(m == NULL);
	// The stream cannot be resynchronised: later reads keep failing.
	NS_CHECK_INT(read_code(c, 0), NS_ERR_PROTOCOL);
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__bad_lengths)
{
	static const char *const bad[] = {
	        "Content-Length: 67108865\r\n\r\n",             // 64 MiB + 1
	        "Content-Length: 99999999999999999999\r\n\r\n", // overflows 64 bits
	        "Content-Length: -1\r\n\r\n",
	        "Content-Length: 12abc\r\n\r\n",
	        "Content-Length: \r\n\r\n",
	        "garbage without colon\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int peer;
		struct ns_dap_conn *c = sock_conn(&peer);
		put(peer, bad[i]);
		NS_CHECK_INT(read_code(c, 1000), NS_ERR_PROTOCOL);
		close(peer);
		ns_dap_conn_destroy(c);
	}
	// Exactly 64 MiB is allowed by the header (we only check the header is accepted:
	// the body never arrives, so the read times out instead of failing).
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	put(peer, "Content-Length: 67108864\r\n\r\n{");
	NS_CHECK_INT(read_code(c, 50), NS_ERR_TIMEOUT);
	close(peer);
	NS_CHECK_INT(read_code(c, 1000), NS_ERR_CLOSED);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__endless_header)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	char junk[9000];
	memset(junk, 'a', sizeof(junk));
	NS_CHECK_INT(write(peer, junk, sizeof(junk)), (long long)sizeof(junk));
	NS_CHECK_INT(read_code(c, 1000), NS_ERR_PROTOCOL);
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__body_not_json_then_next_reads)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	put(peer, "Content-Length: 9\r\n\r\n{\"seq\":1,"
	          "Content-Length: 2\r\n\r\n[]"
	          "Content-Length: 2\r\n\r\n42"
	          "Content-Length: 18\r\n\r\n{\"command\":\"next\"}");
	NS_CHECK_INT(read_code(c, 1000), NS_ERR_FORMAT);
	NS_CHECK_INT(read_code(c, 1000), NS_ERR_FORMAT); // [] is JSON but not an object
	NS_CHECK_INT(read_code(c, 1000), NS_ERR_FORMAT);
	CHECK_CMD(c, "next");
	close(peer);
	ns_dap_conn_destroy(c);
}

NS_TEST(test_dap_conn__eof_and_timeout)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	NS_CHECK_INT(read_code(c, 100), NS_ERR_TIMEOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	NS_CHECK(ms >= 90 && ms < 1000);
	put(peer, "Content-Length: 30\r\n\r\n{\"comm");
	close(peer);
	cJSON *m = NULL;
	struct ns_err *err = ns_dap_read(c, 1000, &m);
	NS_CHECK(err && err->code == NS_ERR_CLOSED);
	NS_CHECK(err && strstr(err->msg, "inside a message"));
	ns_err_destroy(err);
	NS_CHECK_INT(read_code(c, 1000), NS_ERR_CLOSED);
	ns_dap_conn_destroy(c);

	c = sock_conn(&peer);
	close(peer);
	NS_CHECK_INT(read_code(c, -1), NS_ERR_CLOSED);
	ns_dap_conn_destroy(c);
}

/* The exact bytes on the wire: header, then the compact JSON with seq 1, 2, ... */
NS_TEST(test_dap_conn__write_wire_format)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	cJSON *m = cJSON_Parse("{\"seq\":99,\"type\":\"event\",\"event\":\"initialized\"}");
	NS_CHECK_OK(ns_dap_write(c, m));
	NS_CHECK_OK(ns_dap_write(c, m));
	cJSON_Delete(m);
	m = cJSON_Parse("{\"type\":\"event\",\"event\":\"x\"}"); // no seq: added
	NS_CHECK_OK(ns_dap_write(c, m));
	cJSON_Delete(m);
	char buf[512];
	ssize_t n = read(peer, buf, sizeof(buf) - 1);
	NS_CHECK(n > 0);
	buf[n > 0 ? n : 0] = 0;
	// 46 and 36 = strlen of each body (counted with python len(): the keys keep their order).
	NS_CHECK_STR(
	        buf,
	        "Content-Length: 46\r\n\r\n{\"seq\":1,\"type\":\"event\",\"event\":\"initialized\"}"
	        "Content-Length: 46\r\n\r\n{\"seq\":2,\"type\":\"event\",\"event\":\"initialized\"}"
	        "Content-Length: 36\r\n\r\n{\"type\":\"event\",\"event\":\"x\",\"seq\":3}");
	// Not an object: rejected without writing.
	cJSON *arr = cJSON_CreateArray();
	struct ns_err *err = ns_dap_write(c, arr);
	NS_CHECK(err && err->code == NS_ERR_INVALID);
	ns_err_destroy(err);
	cJSON_Delete(arr);
	close(peer);
	ns_dap_conn_destroy(c);
}

struct big_writer {
	struct ns_dap_conn *c;
	cJSON *msg;
	struct ns_err *err;
};

static void *big_write(void *arg)
{
	struct big_writer *w = arg;
	w->err = ns_dap_write(w->c, w->msg);
	return NULL;
}

/* 1 MiB through pipes (64 KiB buffers): partial writes on one side, many reads on
 * the other. */
NS_TEST(test_dap_conn__one_mib_over_pipes)
{
	int p[2];
	NS_CHECK_INT(pipe(p), 0);
	int devnull = open("/dev/null", O_RDONLY);
	struct ns_dap_conn *w = NULL, *r = NULL;
	NS_CHECK_OK(ns_dap_conn_create(devnull, p[1], &w));
	NS_CHECK_OK(ns_dap_conn_create(p[0], dup(p[0]), &r)); // separate fds: both closed
	size_t len = 1 << 20;
	char *s = malloc(len + 1);
	for (size_t i = 0; i < len; i++)
		s[i] = (char)('a' + i % 26);
	s[len] = 0;
	cJSON *msg = cJSON_CreateObject();
	cJSON_AddStringToObject(msg, "command", "big");
	cJSON_AddStringToObject(msg, "data", s);
	struct big_writer bw = {w, msg, NULL};
	pthread_t th;
	pthread_create(&th, NULL, big_write, &bw);
	cJSON *got = NULL;
	NS_CHECK_OK(ns_dap_read(r, 5000, &got));
	pthread_join(th, NULL);
	NS_CHECK_OK(bw.err);
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(got, "data");
	NS_CHECK(cJSON_IsString(data) && strlen(data->valuestring) == len);
	NS_CHECK(cJSON_IsString(data) && memcmp(data->valuestring, s, len) == 0);
	NS_CHECK_INT(cJSON_GetObjectItemCaseSensitive(got, "seq")->valuedouble, 1);
	cJSON_Delete(got);
	cJSON_Delete(msg);
	free(s);
	ns_dap_conn_destroy(w);
	ns_dap_conn_destroy(r);
}

/* A raw 1 MiB frame written by hand, read over a socketpair. */
NS_TEST(test_dap_conn__one_mib_raw_frame)
{
	int peer;
	struct ns_dap_conn *c = sock_conn(&peer);
	size_t len = 1 << 20, pre = strlen("{\"command\":\"big\",\"d\":\""), body = pre + len + 2;
	char *frame = malloc(body + 64);
	int hl = sprintf(frame, "Content-Length: %zu\r\n\r\n{\"command\":\"big\",\"d\":\"", body);
	memset(frame + hl, 'z', len);
	memcpy(frame + hl + len, "\"}", 2);
	size_t total = (size_t)hl + len + 2;
	pid_t pid = fork();
	if (pid == 0) {
		size_t off = 0;
		while (off < total) {
			ssize_t n = write(peer, frame + off, total - off);
			if (n <= 0)
				_exit(1);
			off += (size_t)n;
		}
		_exit(0);
	}
	cJSON *m = NULL;
	NS_CHECK_OK(ns_dap_read(c, 5000, &m));
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(m, "d");
	NS_CHECK(cJSON_IsString(d) && strlen(d->valuestring) == len &&
	         d->valuestring[len - 1] == 'z');
	cJSON_Delete(m);
	int st = -1;
	waitpid(pid, &st, 0);
	NS_CHECK_INT(st, 0);
	free(frame);
	close(peer);
	ns_dap_conn_destroy(c);
}

/* Writing to a pipe whose reader is gone: NS_ERR_CLOSED, and the default SIGPIPE
 * disposition does not kill us. Same for a socket. */
NS_TEST(test_dap_conn__closed_peer_no_sigpipe)
{
	signal(SIGPIPE, SIG_DFL);
	int p[2];
	NS_CHECK_INT(pipe(p), 0);
	close(p[0]);
	struct ns_dap_conn *c = NULL;
	NS_CHECK_OK(ns_dap_conn_create(open("/dev/null", O_RDONLY), p[1], &c));
	cJSON *m = cJSON_CreateObject();
	struct ns_err *err = ns_dap_write(c, m);
	NS_CHECK(err && err->code == NS_ERR_CLOSED);
	ns_err_destroy(err);
	sigset_t pend;
	sigpending(&pend);
	NS_CHECK(!sigismember(&pend, SIGPIPE));
	ns_dap_conn_destroy(c);

	int peer;
	c = sock_conn(&peer);
	close(peer);
	err = ns_dap_write(c, m);
	NS_CHECK(err && err->code == NS_ERR_CLOSED);
	ns_err_destroy(err);
	ns_dap_conn_destroy(c);
	cJSON_Delete(m);
}

enum { WRITERS = 4, PER_WRITER = 300 };

static void *many_writes(void *arg)
{
	struct ns_dap_conn *c = arg;
	for (int i = 0; i < PER_WRITER; i++) {
		cJSON *m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "type", "event");
		cJSON_AddNumberToObject(m, "i", i);
		struct ns_err *err = ns_dap_write(c, m);
		cJSON_Delete(m);
		if (err) {
			ns_err_destroy(err);
			break;
		}
	}
	return NULL;
}

/* Concurrent writers: every frame arrives intact and seqs are 1..N in wire order. */
NS_TEST(test_dap_conn__concurrent_writers)
{
	int sv[2];
	NS_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct ns_dap_conn *w = NULL, *r = NULL;
	NS_CHECK_OK(ns_dap_conn_create(sv[0], sv[0], &w));
	NS_CHECK_OK(ns_dap_conn_create(sv[1], sv[1], &r));
	pthread_t th[WRITERS];
	for (int i = 0; i < WRITERS; i++)
		pthread_create(&th[i], NULL, many_writes, w);
	int bad = 0;
	for (int k = 1; k <= WRITERS * PER_WRITER; k++) {
		cJSON *m = NULL;
		struct ns_err *err = ns_dap_read(r, 5000, &m);
		if (err) {
			ns_test_fail(__FILE__, __LINE__, "read %d: %s", k, err->msg);
			ns_err_destroy(err);
			break;
		}
		if (ns_dap_get_int(m, "seq", -1) != k)
			bad++;
		cJSON_Delete(m);
	}
	NS_CHECK_INT(bad, 0);
	for (int i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);
	NS_CHECK(!ns_dap_buffered(r));
	ns_dap_conn_destroy(w);
	ns_dap_conn_destroy(r);
}

NS_TEST(test_dap_conn__create_rejects_bad_fd)
{
	struct ns_dap_conn *c = (void *)1;
	struct ns_err *err = ns_dap_conn_create(-1, 1, &c);
	NS_CHECK(err && err->code == NS_ERR_INVALID);
	NS_CHECK(c == (void *)1); // out untouched on failure
	ns_err_destroy(err);
	ns_dap_conn_destroy(NULL);
}

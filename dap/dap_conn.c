/* DAP base protocol framing: "Content-Length: N\r\n\r\n" + N bytes of JSON, over a
 * pair of fds (the DAP specification, "Base Protocol"). Reads are buffered and
 * bounded by poll() timeouts; writes are serialised by a mutex. */
#define _GNU_SOURCE
#include "dap/dap.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
	MAX_BODY = 64 << 20, /* 64 MiB */
	MAX_HEADER = 8192,   /* all header lines together */
	READ_CHUNK = 64 << 10,
};

struct ns_dap_conn {
	int rfd, wfd;
	bool wsock;  /* wfd is a socket: send(MSG_NOSIGNAL) */
	bool broken; /* a bad header was seen: the stream cannot be resynchronised */
	bool eof;
	char *buf; /* buffered input: bytes [start, len) are unconsumed */
	size_t start, len, cap;
	pthread_mutex_t wlock;
	long long seq; /* last seq written; guarded by wlock */
};

struct ns_err *ns_dap_conn_create(int rfd, int wfd, struct ns_dap_conn **out)
{
	if (rfd < 0 || wfd < 0)
		return ns_err_create(NS_ERR_INVALID, "dap: bad file descriptor");
	struct ns_dap_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return &ns_err_nomem;
	c->rfd = rfd;
	c->wfd = wfd;
	struct stat st;
	c->wsock = fstat(wfd, &st) == 0 && S_ISSOCK(st.st_mode);
	pthread_mutex_init(&c->wlock, NULL);
	*out = c;
	return NULL;
}

void ns_dap_conn_destroy(struct ns_dap_conn *c)
{
	if (!c)
		return;
	close(c->rfd);
	if (c->wfd != c->rfd)
		close(c->wfd);
	pthread_mutex_destroy(&c->wlock);
	free(c->buf);
	free(c);
}

int ns_dap_fd(const struct ns_dap_conn *c)
{
	return c->rfd;
}

/* ---- reading ---- */

enum frame_state { FRAME_PARTIAL, FRAME_READY, FRAME_BAD };

struct frame {
	size_t hdr_len; /* header bytes including the blank line */
	size_t body_len;
	char why[128]; /* FRAME_BAD: what was wrong */
};

static const char *find_crlfcrlf(const char *p, size_t n)
{
	for (size_t i = 0; i + 4 <= n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
			return p + i;
	return NULL;
}

/* Parse the header lines in [p, end): each is "Name: value"; only Content-Length
 * (any case) matters, the others (Content-Type) are accepted and ignored. */
static bool parse_header(const char *p, const char *end, struct frame *f)
{
	bool have_len = false;
	while (p < end) {
		const char *eol = p;
		while (eol < end && !(eol[0] == '\r' && eol + 1 < end && eol[1] == '\n'))
			eol++;
		const char *colon = memchr(p, ':', (size_t)(eol - p));
		static const char key[] = "Content-Length";
		if (colon && (size_t)(colon - p) == sizeof(key) - 1 &&
		    strncasecmp(p, key, sizeof(key) - 1) == 0) {
			const char *v = colon + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			unsigned long long n = 0;
			const char *d = v;
			while (d < eol && *d >= '0' && *d <= '9') {
				// Saturate: anything above MAX_BODY is rejected below.
				if (n <= MAX_BODY)
					n = n * 10 + (unsigned)(*d - '0');
				d++;
			}
			while (d < eol && (*d == ' ' || *d == '\t'))
				d++;
			if (d == v || d != eol) {
				snprintf(f->why, sizeof(f->why), "bad Content-Length value '%.*s'",
				         (int)((eol - v) < 40 ? (eol - v) : 40), v);
				return false;
			}
			if (n > MAX_BODY) {
				snprintf(f->why, sizeof(f->why),
				         "Content-Length too large (maximum %d bytes)", MAX_BODY);
				return false;
			}
			f->body_len = (size_t)n;
			have_len = true;
		} else if (!colon && eol > p) {
			snprintf(f->why, sizeof(f->why), "malformed header line '%.*s'",
			         (int)((eol - p) < 40 ? (eol - p) : 40), p);
			return false;
		}
		p = eol + 2;
	}
	if (!have_len) {
		snprintf(f->why, sizeof(f->why), "header without Content-Length");
		return false;
	}
	return true;
}

static enum frame_state check_frame(const struct ns_dap_conn *c, struct frame *f)
{
	const char *p = c->buf + c->start;
	size_t n = c->len - c->start;
	size_t scan = n < MAX_HEADER + 4 ? n : MAX_HEADER + 4;
	const char *end = n ? find_crlfcrlf(p, scan) : NULL;
	memset(f, 0, sizeof(*f));
	if (!end) {
		if (n >= MAX_HEADER + 4) {
			snprintf(f->why, sizeof(f->why), "no end of header within %d bytes",
			         MAX_HEADER);
			return FRAME_BAD;
		}
		return FRAME_PARTIAL;
	}
	// Parse up to and including the CRLF ending the last line.
	if (!parse_header(p, end + 2, f))
		return FRAME_BAD;
	f->hdr_len = (size_t)(end + 4 - p);
	return n - f->hdr_len >= f->body_len ? FRAME_READY : FRAME_PARTIAL;
}

bool ns_dap_buffered(const struct ns_dap_conn *c)
{
	struct frame f;
	if (c->broken)
		return true; // the next read reports it at once
	return check_frame(c, &f) != FRAME_PARTIAL;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Make room for at least @need unconsumed bytes plus a read chunk. */
static struct ns_err *reserve(struct ns_dap_conn *c, size_t need)
{
	// The unconsumed bytes are at most one partial frame, and once moved to the
	// front they stay there until the frame is complete: each byte moves once.
	if (c->start > 0) {
		memmove(c->buf, c->buf + c->start, c->len - c->start);
		c->len -= c->start;
		c->start = 0;
	}
	size_t want = (need > c->len ? need : c->len) + READ_CHUNK;
	if (want <= c->cap)
		return NULL;
	size_t cap = c->cap ? c->cap : READ_CHUNK;
	while (cap < want)
		cap *= 2;
	char *nb = realloc(c->buf, cap);
	if (!nb)
		return &ns_err_nomem;
	c->buf = nb;
	c->cap = cap;
	return NULL;
}

/* Read more input, waiting until @deadline (-1: forever). */
static struct ns_err *fill(struct ns_dap_conn *c, size_t need, long long deadline)
{
	struct ns_err *err = reserve(c, need);
	if (err)
		return err;
	for (;;) {
		int wait = -1;
		if (deadline >= 0) {
			long long left = deadline - now_ms();
			wait = left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
		}
		struct pollfd pfd = {.fd = c->rfd, .events = POLLIN};
		int r = poll(&pfd, 1, wait);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return ns_err_errno(errno, "dap: poll");
		}
		if (r == 0)
			return ns_err_create(NS_ERR_TIMEOUT,
			                     "dap: timed out waiting for a message");
		ssize_t n = read(c->rfd, c->buf + c->len, c->cap - c->len);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			if (errno == ECONNRESET) {
				c->eof = true;
				return ns_err_create(NS_ERR_CLOSED, "dap: connection reset");
			}
			return ns_err_errno(errno, "dap: read");
		}
		if (n == 0) {
			c->eof = true;
			if (c->len > c->start)
				return ns_err_create(NS_ERR_CLOSED,
				                     "dap: connection closed inside a message");
			return ns_err_create(NS_ERR_CLOSED, "dap: connection closed");
		}
		c->len += (size_t)n;
		return NULL;
	}
}

struct ns_err *ns_dap_read(struct ns_dap_conn *c, int timeout_ms, cJSON **out)
{
	if (c->broken)
		return ns_err_create(NS_ERR_PROTOCOL,
		                     "dap: connection unusable after a bad header");
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct frame f;
	for (;;) {
		enum frame_state st = check_frame(c, &f);
		if (st == FRAME_BAD) {
			c->broken = true;
			c->start = c->len = 0;
			return ns_err_create(NS_ERR_PROTOCOL, "dap: %s", f.why);
		}
		if (st == FRAME_READY)
			break;
		if (c->eof)
			return ns_err_create(NS_ERR_CLOSED,
			                     c->len > c->start
			                             ? "dap: connection closed inside a message"
			                             : "dap: connection closed");
		struct ns_err *err = fill(c, f.hdr_len ? f.hdr_len + f.body_len : 0, deadline);
		if (err)
			return err;
	}
	const char *body = c->buf + c->start + f.hdr_len;
	cJSON *msg = cJSON_ParseWithLength(body, f.body_len);
	c->start += f.hdr_len + f.body_len;
	if (c->start == c->len)
		c->start = c->len = 0;
	if (!msg)
		return ns_err_create(NS_ERR_FORMAT,
		                     "dap: message body (%zu bytes) is not valid JSON", f.body_len);
	if (!cJSON_IsObject(msg)) {
		cJSON_Delete(msg);
		return ns_err_create(NS_ERR_FORMAT, "dap: message body is not a JSON object");
	}
	*out = msg;
	return NULL;
}

/* ---- writing ---- */

/* Write to a non-socket fd without dying of SIGPIPE: block it in this thread, and
 * if our write raised it, consume it before unblocking (the usual recipe, e.g. in
 * OpenSSL's and curl's pipe code). */
static ssize_t write_nosigpipe(int fd, const char *p, size_t n)
{
	sigset_t pipeset, old, pending;
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	sigpending(&pending);
	bool was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeset, &old);
	ssize_t r = write(fd, p, n);
	int saved = errno;
	if (r < 0 && errno == EPIPE && !was_pending) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipeset, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return r;
}

static struct ns_err *write_all(struct ns_dap_conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t r =
		        c->wsock ? send(c->wfd, p, n, MSG_NOSIGNAL) : write_nosigpipe(c->wfd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd pfd = {.fd = c->wfd, .events = POLLOUT};
				if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
					return ns_err_errno(errno, "dap: poll");
				continue;
			}
			if (errno == EPIPE || errno == ECONNRESET)
				return ns_err_create(NS_ERR_CLOSED,
				                     "dap: peer closed the connection");
			return ns_err_errno(errno, "dap: write");
		}
		p += r;
		n -= (size_t)r;
	}
	return NULL;
}

struct ns_err *ns_dap_write(struct ns_dap_conn *c, cJSON *msg)
{
	if (!cJSON_IsObject(msg))
		return ns_err_create(NS_ERR_INVALID, "dap: message is not a JSON object");
	pthread_mutex_lock(&c->wlock);
	long long seq = c->seq + 1;
	cJSON *num = cJSON_CreateNumber((double)seq);
	struct ns_err *err = NULL;
	char *text = NULL, *frame = NULL;
	if (!num) {
		err = &ns_err_nomem;
		goto out;
	}
	if (cJSON_GetObjectItemCaseSensitive(msg, "seq"))
		cJSON_ReplaceItemInObjectCaseSensitive(msg, "seq", num);
	else
		cJSON_AddItemToObject(msg, "seq", num);
	text = cJSON_PrintUnformatted(msg);
	if (!text) {
		err = &ns_err_nomem;
		goto out;
	}
	// Header and body in one buffer: one write, one segment on a socket.
	size_t len = strlen(text);
	frame = malloc(len + 64);
	if (!frame) {
		err = &ns_err_nomem;
		goto out;
	}
	int hl = snprintf(frame, 64, "Content-Length: %zu\r\n\r\n", len);
	memcpy(frame + hl, text, len);
	err = write_all(c, frame, (size_t)hl + len);
	if (!err)
		c->seq = seq;
out:
	pthread_mutex_unlock(&c->wlock);
	cJSON_free(text);
	free(frame);
	return err;
}

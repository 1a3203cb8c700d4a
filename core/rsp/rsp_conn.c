/* RSP connection over a pair of fds. Input is parsed eagerly: every read is run
 * through the framing parser at once, packets and notifications go to a queue (so
 * ns_rsp_buffered() is exact), acks and naks to an ordered list ns_rsp_send() waits on.
 * In ack mode a good packet is acknowledged with '+' as soon as it is parsed and a bad
 * checksum is answered with '-' (GDB manual, "Overview"). */
#define _GNU_SOURCE
#include "rsp/rsp.h"
#include "base/clock.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"

enum {
	MAX_PACKET = 16 * 1024 * 1024, /* decoded payload; frames batches stay far below */
	OUT_KEEP = 1024 * 1024,        /* a send buffer up to this size is kept for the next */
	MAX_QUEUE = 4096,              /* packets held while the owner is busy */
	ACK_TIMEOUT_MS = 2000,
	MAX_RESENDS = 3,
};

struct qitem {
	struct qitem *next;
	bool notify, interrupt;
	size_t len;
	char data[];
};

struct ns_rsp_conn {
	int rfd, wfd;
	bool noack, eof;
	bool not_socket; /* wfd is a pipe or a tty: write(), not send() */
	struct ns_rsp_parser parser;
	struct qitem *head, *tail;
	size_t qlen;
	char acks[32]; /* '+'/'-' received, in order, not yet consumed by send */
	unsigned nacks;
	struct qitem *cur; /* the packet last returned by recv */
	struct ns_strbuf out; /* the packet being sent, framed (kept between sends) */
};

struct ns_err *ns_rsp_conn_create(int rfd, int wfd, struct ns_rsp_conn **out)
{
	struct ns_rsp_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return &ns_err_nomem;
	c->rfd = rfd;
	c->wfd = wfd;
	ns_rsp_parser_init(&c->parser, MAX_PACKET);
	*out = c;
	return NULL;
}

void ns_rsp_conn_destroy(struct ns_rsp_conn *c)
{
	if (!c)
		return;
	struct qitem *q = c->head;
	while (q) {
		struct qitem *n = q->next;
		free(q);
		q = n;
	}
	free(c->cur);
	ns_strbuf_deinit(&c->out);
	ns_rsp_parser_deinit(&c->parser);
	if (c->rfd >= 0)
		close(c->rfd);
	if (c->wfd >= 0 && c->wfd != c->rfd)
		close(c->wfd);
	free(c);
}

void ns_rsp_set_noack(struct ns_rsp_conn *c, bool noack)
{
	c->noack = noack;
}

bool ns_rsp_noack(const struct ns_rsp_conn *c)
{
	return c->noack;
}

int ns_rsp_fd(const struct ns_rsp_conn *c)
{
	return c->rfd;
}

bool ns_rsp_buffered(const struct ns_rsp_conn *c)
{
	return c->head != NULL;
}

static struct ns_err *write_all(struct ns_rsp_conn *c, const void *buf, size_t len)
{
	int fd = c->wfd;
	const char *p = buf;
	while (len > 0) {
		// MSG_NOSIGNAL: a closed socket peer is an error, not a SIGPIPE in a
		// library; pipes fall back to write() (remembered: one call per write).
		ssize_t n = -1;
		errno = ENOTSOCK;
		if (!c->not_socket)
			n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK) {
			c->not_socket = true;
			n = write(fd, p, len);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = {.fd = fd, .events = POLLOUT};
				poll(&pfd, 1, 1000);
				continue;
			}
			if (errno == EPIPE || errno == ECONNRESET)
				return ns_err_create(NS_ERR_CLOSED,
				                     "rsp: peer closed the connection");
			return ns_err_errno(errno, "rsp: write");
		}
		p += n;
		len -= (size_t)n;
	}
	return NULL;
}

static void enqueue(struct ns_rsp_conn *c, bool notify, bool interrupt, const char *data,
                    size_t len)
{
	if (c->qlen >= MAX_QUEUE) {
		ns_log(NS_LOG_WARN, "rsp: input queue full, packet dropped");
		return;
	}
	struct qitem *q = malloc(sizeof(*q) + len + 1);
	if (!q) {
		ns_log(NS_LOG_ERROR, "rsp: out of memory, packet dropped");
		return;
	}
	q->next = NULL;
	q->notify = notify;
	q->interrupt = interrupt;
	q->len = len;
	if (len)
		memcpy(q->data, data, len);
	q->data[len] = 0;
	if (c->tail)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->qlen++;
}

static void feed(struct ns_rsp_conn *c, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		size_t used;
		enum ns_rsp_event_kind ev = ns_rsp_parse(&c->parser, buf, len, &used);
		buf += used;
		len -= used;
		struct ns_strbuf *pl = &c->parser.payload;
		switch (ev) {
		case NS_RSP_EV_NONE:
			break;
		case NS_RSP_EV_PACKET:
			if (!c->noack)
				write_all(c, "+", 1); // a dead peer shows up as EOF
			enqueue(c, false, false, ns_strbuf_str(pl), pl->len);
			break;
		case NS_RSP_EV_NOTIFY:
			enqueue(c, true, false, ns_strbuf_str(pl), pl->len);
			break;
		case NS_RSP_EV_BAD_CSUM:
			if (!c->noack)
				write_all(c, "-", 1);
			ns_log(NS_LOG_WARN, "rsp: packet with a bad checksum");
			break;
		case NS_RSP_EV_ACK:
		case NS_RSP_EV_NAK:
			if (c->nacks < sizeof(c->acks))
				c->acks[c->nacks++] = ev == NS_RSP_EV_ACK ? '+' : '-';
			break;
		case NS_RSP_EV_INTERRUPT:
			enqueue(c, false, true, "", 0);
			break;
		case NS_RSP_EV_TOO_LONG:
			// Acknowledge so the peer does not resend it forever; it is lost.
			if (!c->noack)
				write_all(c, "+", 1);
			ns_log(NS_LOG_WARN, "rsp: packet longer than %zu bytes dropped",
			       c->parser.max_len);
			break;
		}
	}
}

/* Wait up to @timeout_ms (-1 forever) for input and feed it. NS_ERR_TIMEOUT if
 * nothing came, NS_ERR_CLOSED at EOF. */
static struct ns_err *pump(struct ns_rsp_conn *c, int timeout_ms)
{
	if (c->eof)
		return ns_err_create(NS_ERR_CLOSED, "rsp: connection closed");
	struct pollfd pfd = {.fd = c->rfd, .events = POLLIN};
	int r;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return ns_err_errno(errno, "rsp: poll");
	if (r == 0)
		return ns_err_create(NS_ERR_TIMEOUT, "rsp: timed out");
	uint8_t buf[65536];
	ssize_t n;
	do
		n = read(c->rfd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return NULL;
	if (n < 0 && errno != ECONNRESET)
		return ns_err_errno(errno, "rsp: read");
	if (n <= 0) {
		c->eof = true;
		return ns_err_create(NS_ERR_CLOSED, "rsp: connection closed");
	}
	feed(c, buf, (size_t)n);
	return NULL;
}

static int remaining(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - ns_mono_ms();
	return left < 0 ? 0 : (int)left;
}

static struct ns_err *send_framed(struct ns_rsp_conn *c, const void *payload, size_t len,
                                  bool notify)
{
	// One buffer for every send (frame batches are 64 KiB, framed up to twice that:
	// no allocation, and no fresh pages to fault in, per packet); a big one-off
	// (a memory read) does not stay.
	struct ns_strbuf *out = &c->out;
	ns_strbuf_recycle(out, OUT_KEEP);
	ns_rsp_frame(out, payload, len, notify);
	if (out->oom)
		return &ns_err_nomem;
	const struct ns_strbuf sb = *out;
	struct ns_err *err = NULL;
	if (notify || c->noack)
		return write_all(c, sb.buf, sb.len);
	// Acks that arrived before this packet was sent belong to nobody: drop them.
	c->nacks = 0;
	bool acked = false;
	int sent = 0;
	while (!acked && !err) {
		if (sent > MAX_RESENDS) {
			err = ns_err_create(NS_ERR_PROTOCOL, "rsp: packet rejected %d times", sent);
			break;
		}
		err = write_all(c, sb.buf, sb.len);
		sent++;
		int64_t deadline = ns_mono_ms() + ACK_TIMEOUT_MS;
		while (!err && c->nacks == 0)
			err = pump(c, remaining(deadline));
		if (err && err->code == NS_ERR_TIMEOUT) {
			ns_err_destroy(err);
			err = ns_err_create(NS_ERR_TIMEOUT, "rsp: no acknowledgement from peer");
		}
		if (err)
			break;
		// Consume one ack character, in arrival order: '-' means send again.
		acked = c->acks[0] == '+';
		memmove(c->acks, c->acks + 1, --c->nacks);
	}
	return err;
}

struct ns_err *ns_rsp_send(struct ns_rsp_conn *c, const void *payload, size_t len)
{
	return send_framed(c, payload, len, false);
}

struct ns_err *ns_rsp_send_str(struct ns_rsp_conn *c, const char *payload)
{
	return send_framed(c, payload, strlen(payload), false);
}

struct ns_err *ns_rsp_notify(struct ns_rsp_conn *c, const char *payload, size_t len)
{
	return send_framed(c, payload, len, true);
}

struct ns_err *ns_rsp_recv(struct ns_rsp_conn *c, int timeout_ms, struct ns_rsp_packet *out)
{
	int64_t deadline = timeout_ms < 0 ? -1 : ns_mono_ms() + timeout_ms;
	while (!c->head) {
		struct ns_err *err = pump(c, remaining(deadline));
		if (err)
			return err;
	}
	free(c->cur);
	c->cur = c->head;
	c->head = c->cur->next;
	if (!c->head)
		c->tail = NULL;
	c->qlen--;
	c->cur->next = NULL;
	out->notify = c->cur->notify;
	out->interrupt = c->cur->interrupt;
	out->data = c->cur->data;
	out->len = c->cur->len;
	return NULL;
}

struct ns_err *ns_rsp_request(struct ns_rsp_conn *c, const char *req, size_t req_len,
                              int timeout_ms,
                              void (*on_notify)(void *ctx, const char *data, size_t len), void *ctx,
                              struct ns_rsp_packet *reply)
{
	struct ns_err *err = ns_rsp_send(c, req, req_len);
	if (err)
		return err;
	int64_t deadline = timeout_ms < 0 ? -1 : ns_mono_ms() + timeout_ms;
	for (;;) {
		struct ns_rsp_packet pkt;
		err = ns_rsp_recv(c, remaining(deadline), &pkt);
		if (err)
			return err;
		if (pkt.interrupt)
			continue;
		if (pkt.notify) {
			if (on_notify)
				on_notify(ctx, pkt.data, pkt.len);
			continue;
		}
		*reply = pkt;
		return NULL;
	}
}

/* Connection tests: two conns over a socketpair, the server side in a thread. The
 * byte-level checks read the raw socket with plain read(), independent of the parser. */
#include "base/test.h"
#include "rsp/rsp.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct server {
	struct ns_rsp_conn *c;
	bool noack_switch;
	bool notify_first;
	int handled;
};

/* Echo server: replies "R:<request>" to every packet until "bye". */
static void *serve(void *arg)
{
	struct server *s = arg;
	for (;;) {
		struct ns_rsp_packet pkt;
		struct ns_err *err = ns_rsp_recv(s->c, 5000, &pkt);
		if (err) {
			ns_err_destroy(err);
			break;
		}
		if (pkt.interrupt || pkt.notify)
			continue;
		s->handled++;
		if (strcmp(pkt.data, "bye") == 0) {
			ns_err_destroy(ns_rsp_send_str(s->c, "OK"));
			break;
		}
		if (strcmp(pkt.data, "QStartNoAckMode") == 0) {
			ns_err_destroy(ns_rsp_send_str(s->c, "OK"));
			ns_rsp_set_noack(s->c, true);
			continue;
		}
		if (s->notify_first)
			ns_err_destroy(ns_rsp_notify(s->c, "NsFrames:3", 10));
		char reply[256];
		snprintf(reply, sizeof(reply), "R:%s", pkt.data);
		ns_err_destroy(ns_rsp_send_str(s->c, reply));
	}
	return NULL;
}

static void pair(struct ns_rsp_conn **a, struct ns_rsp_conn **b)
{
	int sv[2];
	NS_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	NS_CHECK_OK(ns_rsp_conn_create(sv[0], sv[0], a));
	NS_CHECK_OK(ns_rsp_conn_create(sv[1], sv[1], b));
}

struct notes {
	int n;
	char last[64];
};

static void on_notify(void *ctx, const char *data, size_t len)
{
	struct notes *nt = ctx;
	nt->n++;
	snprintf(nt->last, sizeof(nt->last), "%.*s", (int)len, data);
}

NS_TEST(test_rsp_conn__ack_mode_and_noack)
{
	struct ns_rsp_conn *cl, *sv;
	pair(&cl, &sv);
	struct server s = {.c = sv};
	pthread_t th;
	pthread_create(&th, NULL, serve, &s);

	struct ns_rsp_packet rep;
	NS_CHECK(!ns_rsp_noack(cl));
	NS_CHECK_OK(ns_rsp_request(cl, "qSupported", 10, 2000, NULL, NULL, &rep));
	NS_CHECK_STR(rep.data, "R:qSupported");
	NS_CHECK_OK(ns_rsp_request(cl, "QStartNoAckMode", 15, 2000, NULL, NULL, &rep));
	NS_CHECK_STR(rep.data, "OK");
	ns_rsp_set_noack(cl, true);
	// Binary payload survives both directions.
	const char bin[] = "m}$#*x";
	NS_CHECK_OK(ns_rsp_request(cl, bin, 6, 2000, NULL, NULL, &rep));
	NS_CHECK_STR(rep.data, "R:m}$#*x");
	NS_CHECK_OK(ns_rsp_request(cl, "bye", 3, 2000, NULL, NULL, &rep));
	NS_CHECK_STR(rep.data, "OK");
	pthread_join(th, NULL);
	NS_CHECK_INT(s.handled, 4);
	// The server hung up: EOF is NS_ERR_CLOSED.
	ns_rsp_conn_destroy(sv);
	struct ns_err *err = ns_rsp_recv(cl, 1000, &rep);
	NS_CHECK(err && err->code == NS_ERR_CLOSED);
	ns_err_destroy(err);
	ns_rsp_conn_destroy(cl);
}

NS_TEST(test_rsp_conn__raw_acks_and_resend)
{
	// A hand-driven peer: check the bytes on the wire in ack mode.
	int sv[2];
	NS_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	struct ns_rsp_conn *c;
	NS_CHECK_OK(ns_rsp_conn_create(sv[0], sv[0], &c));
	// Peer sends a bad packet then a good one: we must answer "-" then "+".
	NS_CHECK(write(sv[1], "$OK#00$OK#9a", 12) == 12);
	struct ns_rsp_packet pkt;
	NS_CHECK_OK(ns_rsp_recv(c, 1000, &pkt));
	NS_CHECK_STR(pkt.data, "OK");
	char buf[64] = {0};
	NS_CHECK_INT(read(sv[1], buf, sizeof(buf)), 2);
	NS_CHECK_STR(buf, "-+");
	// Peer naks our first transmission and acks the second: the packet is resent.
	NS_CHECK(write(sv[1], "-+", 2) == 2);
	NS_CHECK_OK(ns_rsp_send_str(c, "OK"));
	memset(buf, 0, sizeof(buf));
	size_t got = 0;
	while (got < 12) {
		ssize_t n = read(sv[1], buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	NS_CHECK_STR(buf, "$OK#9a$OK#9a");
	// No ack at all: a timeout error after the ack wait.
	struct ns_err *err = ns_rsp_send_str(c, "OK");
	NS_CHECK(err && err->code == NS_ERR_TIMEOUT);
	ns_err_destroy(err);
	// Notifications are never acknowledged nor wait for an ack.
	NS_CHECK(read(sv[1], buf, sizeof(buf)) == 6); // drain the unacked "$OK#9a"
	NS_CHECK_OK(ns_rsp_notify(c, "Stop:T05", 8));
	memset(buf, 0, sizeof(buf));
	NS_CHECK_INT(read(sv[1], buf, sizeof(buf)), 12);
	NS_CHECK_STR(buf, "%Stop:T05#99");
	// No-ack mode: nothing is written back for a received packet.
	ns_rsp_set_noack(c, true);
	NS_CHECK(write(sv[1], "$g#67", 5) == 5);
	NS_CHECK_OK(ns_rsp_recv(c, 1000, &pkt));
	NS_CHECK_STR(pkt.data, "g");
	NS_CHECK_OK(ns_rsp_send_str(c, "E01"));
	memset(buf, 0, sizeof(buf));
	NS_CHECK_INT(read(sv[1], buf, sizeof(buf)), 7);
	NS_CHECK_STR(buf, "$E01#a6");
	ns_rsp_conn_destroy(c);
	close(sv[1]);
}

NS_TEST(test_rsp_conn__notification_before_reply)
{
	struct ns_rsp_conn *cl, *sv;
	pair(&cl, &sv);
	struct server s = {.c = sv, .notify_first = true};
	pthread_t th;
	pthread_create(&th, NULL, serve, &s);
	struct notes nt = {0};
	struct ns_rsp_packet rep;
	NS_CHECK_OK(ns_rsp_request(cl, "qTStatus", 8, 2000, on_notify, &nt, &rep));
	NS_CHECK_STR(rep.data, "R:qTStatus");
	NS_CHECK_INT(nt.n, 1);
	NS_CHECK_STR(nt.last, "NsFrames:3");
	NS_CHECK_OK(ns_rsp_request(cl, "QStartNoAckMode", 15, 2000, on_notify, &nt, &rep));
	ns_rsp_set_noack(cl, true);
	NS_CHECK_OK(ns_rsp_request(cl, "qNsFrames", 9, 2000, on_notify, &nt, &rep));
	NS_CHECK_STR(rep.data, "R:qNsFrames");
	NS_CHECK_INT(nt.n, 2);
	// Without a callback the notification is dropped and the reply still arrives.
	NS_CHECK_OK(ns_rsp_request(cl, "x", 1, 2000, NULL, NULL, &rep));
	NS_CHECK_STR(rep.data, "R:x");
	NS_CHECK_OK(ns_rsp_request(cl, "bye", 3, 2000, NULL, NULL, &rep));
	pthread_join(th, NULL);
	ns_rsp_conn_destroy(sv);
	ns_rsp_conn_destroy(cl);
}

NS_TEST(test_rsp_conn__buffered_and_timeout)
{
	int sv[2];
	NS_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	struct ns_rsp_conn *c;
	NS_CHECK_OK(ns_rsp_conn_create(sv[0], sv[0], &c));
	ns_rsp_set_noack(c, true);
	struct ns_rsp_packet pkt;
	struct ns_err *err = ns_rsp_recv(c, 50, &pkt);
	NS_CHECK(err && err->code == NS_ERR_TIMEOUT);
	ns_err_destroy(err);
	// Two packets and an interrupt in one write: after the first recv the rest are
	// buffered, which poll() on the fd would not show.
	NS_CHECK(write(sv[1], "$g#67\x03$OK#9a", 12) == 12);
	NS_CHECK_OK(ns_rsp_recv(c, 1000, &pkt));
	NS_CHECK_STR(pkt.data, "g");
	NS_CHECK(ns_rsp_buffered(c));
	NS_CHECK_OK(ns_rsp_recv(c, 0, &pkt));
	NS_CHECK(pkt.interrupt);
	NS_CHECK_OK(ns_rsp_recv(c, 0, &pkt));
	NS_CHECK_STR(pkt.data, "OK");
	NS_CHECK(!ns_rsp_buffered(c));
	ns_rsp_conn_destroy(c);
	close(sv[1]);
}

/* bench_drain: the client half of nonstop-dap's frame path, for benchmarks that drive
 * nonstop-stub from a script (tests/bench/README.md). The script sets the connection up
 * (no-ack mode, NsFramePush+ and NsFrameBinary+ in qSupported, tracing started), then
 * hands it over: this program waits for the stub's %NsFrames push, fetches qNsFrames
 * until "OK", and reads every frame the way the adapter does before it formats one
 * (ns_rsp_frames_next, ns_frame_parse, every block). On SIGTERM or SIGINT it fetches
 * what is left, writes what it saw to OUT and exits, leaving the connection idle for
 * the script again.
 *
 *   bench_drain OUT [SAMPLES [CTL]] <stub-stdout >stub-stdin
 *
 * CTL: a file descriptor (a socket the script holds the other end of) on which the
 * script may send RSP requests while the frames flow, one per line (bench_server's
 * on/off run sends QTEnable/QTDisable this way); each reply comes back as one line, and
 * the frames are fetched right after it (a push that arrived while the request waited
 * for its reply is not lost).
 *
 * OUT: "frames N", "dropped N", "bad N" (frames that did not parse), "exit W../X.." if
 * the program's exit was reported, then "frame <hex>" for the first SAMPLES frames
 * (default 1000) so the script can check the captured values itself. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame/frame.h"
#include "rsp/rsp.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

struct tally {
	unsigned long long frames, dropped, bad, blocks;
	char exit_item[32];
	FILE *out;
	unsigned long samples;
};

static void on_frame(struct tally *t, const uint8_t *data, size_t len)
{
	struct ns_frame f;
	struct ns_err *err = ns_frame_parse(data, len, &f);
	if (err) {
		ns_err_destroy(err);
		t->bad++;
		return;
	}
	size_t it = 0;
	struct ns_frame_block b;
	const uint8_t *payload;
	while (ns_frame_next_block(&f, &it, &b, &payload))
		t->blocks++;
	t->frames++;
	if (t->samples) {
		t->samples--;
		fputs("frame ", t->out);
		for (size_t i = 0; i < len; i++)
			fprintf(t->out, "%02x", data[i]);
		fputc('\n', t->out);
	}
}

// qNsFrames until "OK"; false if the connection failed.
static bool fetch(struct ns_rsp_conn *c, struct tally *t)
{
	for (;;) {
		struct ns_rsp_packet rep;
		struct ns_err *err = ns_rsp_request(c, "qNsFrames", 9, 10000, NULL, NULL, &rep);
		if (err) {
			fprintf(stderr, "bench_drain: %s\n", err->msg);
			ns_err_destroy(err);
			return false;
		}
		if (rep.len == 2 && memcmp(rep.data, "OK", 2) == 0)
			return true;
		size_t pos = 0;
		bool more = true;
		while (more) {
			struct ns_rsp_frames_item item;
			err = ns_rsp_frames_next((uint8_t *)rep.data, rep.len, &pos, &item, &more);
			if (err) {
				fprintf(stderr, "bench_drain: %s\n", err->msg);
				ns_err_destroy(err);
				t->bad++;
				break;
			}
			if (!more)
				break;
			if (item.kind == 'F')
				on_frame(t, item.data, item.len);
			else if (item.kind == 'L')
				t->dropped += item.value;
			else if (item.kind == 'W' || item.kind == 'X')
				snprintf(t->exit_item, sizeof(t->exit_item), "%c%llx", item.kind,
				         (unsigned long long)item.value);
		}
	}
}

/* One request per line from @ctl, one reply line back. False once @ctl is closed or
 * broken (the frames go on being drained without it). */
static bool control(struct ns_rsp_conn *c, int ctl, struct tally *t, bool *ok)
{
	static char line[4096];
	static size_t have;
	ssize_t n = read(ctl, line + have, sizeof(line) - 1 - have);
	if (n <= 0)
		return n < 0 && (errno == EINTR || errno == EAGAIN);
	have += (size_t)n;
	char *nl;
	while ((nl = memchr(line, '\n', have))) {
		size_t len = (size_t)(nl - line);
		struct ns_rsp_packet rep;
		struct ns_err *err = ns_rsp_request(c, line, len, 10000, NULL, NULL, &rep);
		char out[512];
		// A reply (or error) longer than the line is cut to it, the newline kept.
		int m = err ? snprintf(out, sizeof(out), "E.%.400s\n", err->msg)
		            : snprintf(out, sizeof(out), "%.*s\n", (int)(rep.len < 400 ? rep.len : 400),
		                       rep.data);
		if (err) {
			*ok = err->code == NS_ERR_TIMEOUT;
			ns_err_destroy(err);
		}
		have -= len + 1;
		memmove(line, nl + 1, have);
		if (*ok)
			*ok = fetch(c, t);
		if (write(ctl, out, (size_t)m) != m)
			return false;
	}
	if (have == sizeof(line) - 1)
		have = 0; // a line longer than any request: dropped
	return true;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_drain OUT [SAMPLES] <stub-stdout >stub-stdin\n");
		return 2;
	}
	struct tally t = {.samples = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000};
	t.out = fopen(argv[1], "w");
	if (!t.out) {
		perror(argv[1]);
		return 2;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	struct ns_rsp_conn *c;
	struct ns_err *err = ns_rsp_conn_create(0, 1, &c);
	if (err) {
		fprintf(stderr, "bench_drain: %s\n", err->msg);
		return 2;
	}
	ns_rsp_set_noack(c, true);
	// A push the script's client read before the hand-over would never come again:
	// ask once at the start.
	int ctl = argc > 3 ? atoi(argv[3]) : -1;
	bool ok = fetch(c, &t);
	while (ok && !stop) {
		if (ctl >= 0 && !ns_rsp_buffered(c)) {
			struct pollfd pfd[2] = {{.fd = ns_rsp_fd(c), .events = POLLIN},
			                        {.fd = ctl, .events = POLLIN}};
			if (poll(pfd, 2, 50) <= 0)
				continue;
			if (pfd[1].revents) {
				if (!control(c, ctl, &t, &ok))
					ctl = -1;
				continue;
			}
		}
		struct ns_rsp_packet pkt;
		err = ns_rsp_recv(c, 50, &pkt);
		if (err) {
			ok = err->code == NS_ERR_TIMEOUT;
			if (!ok)
				fprintf(stderr, "bench_drain: %s\n", err->msg);
			ns_err_destroy(err);
			continue;
		}
		if (pkt.notify && pkt.len >= 8 && memcmp(pkt.data, "NsFrames", 8) == 0)
			ok = fetch(c, &t);
	}
	if (ok)
		ok = fetch(c, &t);
	fprintf(t.out, "frames %llu\ndropped %llu\nbad %llu\nblocks %llu\n", t.frames, t.dropped,
	        t.bad, t.blocks);
	if (t.exit_item[0])
		fprintf(t.out, "exit %s\n", t.exit_item);
	fclose(t.out);
	// No teardown: the script holds its own ends of the pipes and goes on with them.
	return ok ? 0 : 1;
}

/* nonstop-stub end to end against a fake agent (tests/fake_agent.c). Expected values
 * come from outside the stub: the ELF magic, readelf's build-id, realpath(3) of the
 * program, /proc, the exit code of the program, and stock gdb. */
#define _GNU_SOURCE
#include "base/test.h"
#include "rsp/rsp.h"
#include "stub/stub.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct stub {
	pid_t pid;
	struct ns_rsp_conn *c;
	int err_fd; /* read end of the stub's stderr */
	char *note; /* a notification that arrived during a request, not yet consumed */
};

static void keep_note(void *ctx, const char *data, size_t len)
{
	struct stub *st = ctx;
	free(st->note);
	st->note = strndup(data, len);
}

/* Start nonstop-stub --stdio with @extra options (NULL-terminated) and @prog. */
static bool start(struct stub *st, const char *const *extra, const char *const *prog)
{
	int in[2], out[2], er[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(er, O_CLOEXEC))
		return false;
	const char *argv[32];
	int n = 0;
	argv[n++] = NS_STUB_BIN;
	argv[n++] = "--stdio";
	argv[n++] = "--agent";
	argv[n++] = NS_STUB_FAKE_AGENT;
	for (; extra && *extra; extra++)
		argv[n++] = *extra;
	argv[n++] = "--";
	for (; *prog; prog++)
		argv[n++] = *prog;
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(er[1], 2);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(er[1]);
	st->pid = pid;
	st->err_fd = er[0];
	st->note = NULL;
	NS_CHECK_OK(ns_rsp_conn_create(out[0], in[1], &st->c));
	return st->c != NULL;
}

static int finish(struct stub *st)
{
	ns_rsp_conn_destroy(st->c);
	st->c = NULL;
	free(st->note);
	st->note = NULL;
	int status = -1;
	waitpid(st->pid, &status, 0);
	close(st->err_fd);
	return status;
}

/* Request; returns a malloc'd copy of the reply (NULL on error). */
static char *req(struct stub *st, const char *r)
{
	struct ns_rsp_packet rep;
	struct ns_err *err = ns_rsp_request(st->c, r, strlen(r), 5000, keep_note, st, &rep);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "%s: %s", r, err->msg);
		ns_err_destroy(err);
		return NULL;
	}
	char *s = malloc(rep.len + 1);
	memcpy(s, rep.data, rep.len);
	s[rep.len] = 0;
	return s;
}

static void check_req(struct stub *st, const char *r, const char *want, int line)
{
	char *got = req(st, r);
	if (!got || strcmp(got, want) != 0)
		ns_test_fail(__FILE__, line, "%s -> \"%s\", expected \"%s\"", r,
		             got ? got : "(null)", want);
	free(got);
}
#define CHECK_REQ(st, r, want) check_req(st, r, want, __LINE__)

static void setup(struct stub *st)
{
	char *sup = req(st, "qSupported:multiprocess+;NsFramePush+");
	NS_CHECK(sup && strstr(sup, "NsFramePush+") && strstr(sup, "PacketSize="));
	NS_CHECK(sup && strstr(sup, "QStartNoAckMode+"));
	free(sup);
	CHECK_REQ(st, "QStartNoAckMode", "OK");
	ns_rsp_set_noack(st->c, true);
	CHECK_REQ(st, "QNonStop:1", "OK");
	CHECK_REQ(st, "?", "OK");
}

/* Wait for a notification; returns its text (malloc'd) or NULL. */
static char *wait_notify(struct stub *st, int timeout_ms)
{
	if (st->note) {
		char *n = st->note;
		st->note = NULL;
		return n;
	}
	struct ns_rsp_packet pkt;
	struct ns_err *err = ns_rsp_recv(st->c, timeout_ms, &pkt);
	if (err) {
		ns_test_fail(__FILE__, __LINE__, "no notification: %s", err->msg);
		ns_err_destroy(err);
		return NULL;
	}
	NS_CHECK(pkt.notify);
	return strndup(pkt.data, pkt.len);
}

/* "p<pid>.<tid>" of the first thread of qfThreadInfo. */
static pid_t program_pid(struct stub *st)
{
	char *t = req(st, "qfThreadInfo");
	pid_t pid = 0;
	if (t && t[0] == 'm' && t[1] == 'p')
		pid = (pid_t)strtol(t + 2, NULL, 16);
	NS_CHECK(pid > 0);
	free(t);
	char *l = req(st, "qsThreadInfo");
	NS_CHECK(l && !strcmp(l, "l"));
	free(l);
	return pid;
}

NS_TEST(test_stub_test__session)
{
	struct stub st;
	const char *prog[] = {"/bin/sleep", "2", NULL};
	if (!start(&st, NULL, prog))
		return;
	setup(&st);
	pid_t pid = program_pid(&st);
	// The thread is the program: /proc says it is "sleep" and our stub's child.
	char path[64], comm[64] = {0};
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	FILE *f = fopen(path, "r");
	NS_CHECK(f && fgets(comm, sizeof(comm), f));
	if (f)
		fclose(f);
	NS_CHECK_STR(comm, "sleep\n");
	CHECK_REQ(&st, "qAttached", "0");

	// exec-file is the program's real path.
	char real[4096], want[4200];
	NS_CHECK(realpath("/bin/sleep", real) != NULL);
	snprintf(want, sizeof(want), "l%s", real);
	CHECK_REQ(&st, "qXfer:exec-file:read::0,1000", want);

	// Maps, read in small chunks: find the executable's first mapping and read the
	// ELF magic there with 'm'.
	char *maps = calloc(1, 1 << 20);
	size_t mlen = 0;
	for (int i = 0; i < 10000; i++) {
		char q[64];
		snprintf(q, sizeof(q), "qXfer:nonstop-maps:read::%zx,100", mlen);
		char *r = req(&st, q);
		if (!r)
			break;
		size_t n = strlen(r + 1);
		memcpy(maps + mlen, r + 1, n);
		mlen += n;
		bool last = r[0] == 'l';
		free(r);
		if (last)
			break;
	}
	unsigned long start_addr = 0;
	for (char *line = strtok(maps, "\n"); line; line = strtok(NULL, "\n")) {
		size_t ll = strlen(line), rl = strlen(real);
		if (ll > rl && !strcmp(line + ll - rl, real) && strstr(line, " 00000000 ")) {
			start_addr = strtoul(line, NULL, 16);
			break;
		}
	}
	free(maps);
	NS_CHECK(start_addr != 0);
	char q[64];
	snprintf(q, sizeof(q), "m%lx,4", start_addr);
	CHECK_REQ(&st, q, "7f454c46");
	CHECK_REQ(&st, "m0,4", "E01");

	// Build-id as readelf prints it.
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "readelf -n %s | sed -n 's/.*Build ID: //p'", real);
	char *bid = ns_test_capture(cmd);
	if (bid && *bid) {
		bid[strcspn(bid, "\n")] = 0;
		CHECK_REQ(&st, "qNsBuildId", bid);
	}
	free(bid);

	// A tracepoint: definition + action, then QTStart; the fake agent writes one frame.
	// tfree: the whole frame queue (NS_STUB_QUEUE_BYTES) is free; no hit has read
	// anything yet (ns_kreads, ns_pfaults), nothing was patched (ns_msigs).
	char status_want[200];
	snprintf(status_want, sizeof(status_want),
	         "T0;tnotrun:0;tframes:0;tcreated:0;tsize:0;tfree:%zx;circular:0;"
	         "disconn:0;ns_dropped:0;ns_tier:trap;ns_kreads:0;ns_pfaults:0;ns_msigs:0",
	         (size_t)NS_STUB_QUEUE_BYTES);
	CHECK_REQ(&st, "qTStatus", status_want);
	CHECK_REQ(&st, "QTinit", "OK");
	CHECK_REQ(&st, "QTDP:1:0000000000401136:E:0:0-", "OK");
	CHECK_REQ(&st, "QTDP:-1:0000000000401136:R0001ffff", "OK");
	// Bad bytecode (opcode 0x00 does not exist) is refused with a message.
	char *bad = req(&st, "QTDP:2:0000000000401140:E:0:0:X2,0027");
	NS_CHECK(bad && !strncmp(bad, "E.", 2));
	free(bad);
	CHECK_REQ(&st, "QTStart", "OK");
	char *n = wait_notify(&st, 3000);
	NS_CHECK_STR(n, "NsFrames:1");
	free(n);
	char *fr = req(&st, "qNsFrames");
	NS_CHECK(fr && fr[0] == 'F');
	if (fr && fr[0] == 'F') {
		size_t hl = strlen(fr + 1);
		uint8_t *b = calloc(1, hl / 2 + 1);
		NS_CHECK_INT(ns_hex_decode(fr + 1, hl, b), 0);
		uint32_t magic, tp_id;
		memcpy(&magic, b, 4);
		memcpy(&tp_id, b + 12, 4);
		NS_CHECK(magic == 0x5246534e); // "NSFR"
		NS_CHECK_INT(tp_id, 1);
		NS_CHECK(hl / 2 >= 8 && memcmp(b + hl / 2 - 8, "ABCDEFGH", 8) == 0);
		free(b);
	}
	free(fr);
	CHECK_REQ(&st, "qNsFrames", "OK");
	CHECK_REQ(&st, "qTP:1:401136", "V1:0");
	char *ts = req(&st, "qTStatus");
	NS_CHECK(ts && !strncmp(ts, "T1;tnotrun:0;tframes:0;tcreated:1;", 34));
	free(ts);
	// InstallInTrace: a tracepoint defined while running is installed at once; the
	// agent's refusal comes back as its message.
	CHECK_REQ(&st, "QTDP:3:0000000000000bad:E:0:0",
	          "E.tracepoint 3 at 0xbad: fake agent: "
	          "cannot patch 0xbad");
	CHECK_REQ(&st, "QTDisable:1:401136", "OK");
	CHECK_REQ(&st, "QTEnable:1:401136", "OK");
	n = wait_notify(&st, 3000); // the re-install produced another frame
	NS_CHECK_STR(n, "NsFrames:1");
	free(n);
	fr = req(&st, "qNsFrames");
	NS_CHECK(fr && fr[0] == 'F' && !strchr(fr, ';'));
	free(fr);
	CHECK_REQ(&st, "qNsFrames", "OK");
	CHECK_REQ(&st, "QTStop", "OK");
	CHECK_REQ(&st, "vCont?", "vCont;c;C;t");
	CHECK_REQ(&st, "qNoSuchPacket", "");

	// sleep 2 exits with 0: the last item is W0.
	n = wait_notify(&st, 5000);
	NS_CHECK_STR(n, "NsFrames:0");
	free(n);
	CHECK_REQ(&st, "qNsFrames", "W0");
	CHECK_REQ(&st, "qNsFrames", "OK");
	CHECK_REQ(&st, "D", "OK");
	int status = finish(&st);
	NS_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* After "NsFrameBinary+", frames come as "b<hex length>:<bytes>" items: the same frame
 * the fake agent wrote, byte for byte (laid out by hand here as in fake_agent.c). */
NS_TEST(test_stub_test__binary_frames)
{
	struct stub st;
	const char *prog[] = {"/bin/sleep", "2", NULL};
	if (!start(&st, NULL, prog))
		return;
	char *sup = req(&st, "qSupported:multiprocess+;NsFramePush+;NsFrameBinary+");
	NS_CHECK(sup && strstr(sup, "NsFrameBinary+"));
	free(sup);
	CHECK_REQ(&st, "QStartNoAckMode", "OK");
	ns_rsp_set_noack(st.c, true);
	CHECK_REQ(&st, "QNonStop:1", "OK");
	CHECK_REQ(&st, "QTinit", "OK");
	CHECK_REQ(&st, "QTDP:1:0000000000401136:E:0:0", "OK");
	CHECK_REQ(&st, "QTStart", "OK");
	// Each re-install writes another frame: 4 in all.
	for (int i = 0; i < 3; i++) {
		CHECK_REQ(&st, "QTDisable:1:401136", "OK");
		CHECK_REQ(&st, "QTEnable:1:401136", "OK");
	}
	enum { FRAME = 72 + 16 + 8 };
	int frames = 0;
	for (int tries = 0; tries < 200 && frames < 4; tries++) {
		struct ns_rsp_packet rep;
		struct ns_err *err = ns_rsp_request(st.c, "qNsFrames", 9, 5000, keep_note, &st, &rep);
		NS_CHECK_OK(err);
		if (err)
			break;
		if (rep.len == 2 && !memcmp(rep.data, "OK", 2)) {
			usleep(10000);
			continue;
		}
		NS_CHECK(rep.len > 4 && memcmp(rep.data, "b60:", 4) == 0);
		size_t pos = 0;
		bool more = true;
		while (more) {
			struct ns_rsp_frames_item it;
			NS_CHECK_OK(ns_rsp_frames_next((uint8_t *)rep.data, rep.len, &pos, &it, &more));
			if (!more)
				break;
			NS_CHECK(it.kind == 'F' && it.len == FRAME);
			if (it.kind != 'F' || it.len != FRAME)
				continue;
			uint32_t magic, size, tp_id, nblocks;
			memcpy(&magic, it.data, 4);
			memcpy(&size, it.data + 8, 4);
			memcpy(&tp_id, it.data + 12, 4);
			memcpy(&nblocks, it.data + 48, 4);
			NS_CHECK(magic == 0x5246534e && size == FRAME && tp_id == 1 && nblocks == 1);
			NS_CHECK(it.data[72] == 'M' && memcmp(it.data + 88, "ABCDEFGH", 8) == 0);
			frames++;
		}
	}
	NS_CHECK_INT(frames, 4);
	CHECK_REQ(&st, "qNsFrames", "OK");
	CHECK_REQ(&st, "D", "OK");
	finish(&st);
}

NS_TEST(test_stub_test__exit_signal_item)
{
	struct stub st;
	const char *prog[] = {"/bin/sh", "-c", "kill -TERM $$", NULL};
	if (!start(&st, NULL, prog))
		return;
	setup(&st);
	char *n = wait_notify(&st, 5000);
	NS_CHECK_STR(n, "NsFrames:0");
	free(n);
	CHECK_REQ(&st, "qNsFrames", "Xf"); // SIGTERM = 15
	CHECK_REQ(&st, "qNsFrames", "OK");
	ns_rsp_conn_destroy(st.c); // EOF: the stub exits
	st.c = NULL;
	int status = finish(&st);
	NS_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

NS_TEST(test_stub_test__eof_leaves_program_running)
{
	struct stub st;
	const char *prog[] = {"/bin/sleep", "30", NULL};
	if (!start(&st, NULL, prog))
		return;
	setup(&st);
	pid_t pid = program_pid(&st);
	int status = finish(&st); // closes the pipes: EOF
	NS_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	NS_CHECK(kill(pid, 0) == 0); // still running
	kill(pid, SIGKILL);
}

NS_TEST(test_stub_test__vkill)
{
	struct stub st;
	const char *prog[] = {"/bin/sleep", "30", NULL};
	if (!start(&st, NULL, prog))
		return;
	setup(&st);
	pid_t pid = program_pid(&st);
	char q[64];
	snprintf(q, sizeof(q), "vKill;%x", pid);
	CHECK_REQ(&st, q, "OK");
	int status = finish(&st);
	NS_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	// The stub reaped it: no such process any more.
	NS_CHECK(kill(pid, 0) != 0 && errno == ESRCH);
}

NS_TEST(test_stub_test__stdout_routing)
{
	// --stdio without --stdout-fd: the program's stdout goes to the stub's stderr,
	// never into the RSP channel.
	struct stub st;
	const char *prog[] = {"/bin/echo", "hello-from-program", NULL};
	if (!start(&st, NULL, prog))
		return;
	char *sup = req(&st, "qSupported");
	NS_CHECK(sup && !strncmp(sup, "PacketSize=", 11));
	free(sup);
	CHECK_REQ(&st, "D", "OK");
	char buf[256] = {0};
	size_t got = 0;
	ssize_t r;
	while (got < sizeof(buf) - 1 && (r = read(st.err_fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)r;
	NS_CHECK(strstr(buf, "hello-from-program\n") != NULL);
	finish(&st);

	// --stdout-fd: the program writes to the given fd.
	int p[2];
	NS_CHECK(pipe(p) == 0);
	char fdarg[16];
	snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
	const char *extra[] = {"--stdout-fd", fdarg, NULL};
	if (!start(&st, extra, prog))
		return;
	close(p[1]);
	memset(buf, 0, sizeof(buf));
	got = 0;
	while (got < sizeof(buf) - 1 && (r = read(p[0], buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)r;
	// EOF arrived, so the stub closed its own copy of the pipe after the fork.
	NS_CHECK_STR(buf, "hello-from-program\n");
	close(p[0]);
	ns_rsp_conn_destroy(st.c);
	st.c = NULL;
	finish(&st);
}

NS_TEST(test_stub_test__hold)
{
	// --hold: the program does not run until vCont;c.
	char tmp[] = "/tmp/ns-stub-hold-XXXXXX";
	int fd = mkstemp(tmp);
	NS_CHECK(fd >= 0);
	close(fd);
	unlink(tmp);
	char script[256];
	snprintf(script, sizeof(script), "echo ran > %s", tmp);
	const char *prog[] = {"/bin/sh", "-c", script, NULL};
	const char *extra[] = {"--hold", NULL};
	struct stub st;
	if (!start(&st, extra, prog))
		return;
	setup(&st);
	struct timespec ts = {0, 300 * 1000000};
	nanosleep(&ts, NULL);
	NS_CHECK(access(tmp, F_OK) != 0);
	CHECK_REQ(&st, "vCont;c", "OK");
	char *n = wait_notify(&st, 5000);
	NS_CHECK_STR(n, "NsFrames:0");
	free(n);
	CHECK_REQ(&st, "qNsFrames", "W0");
	NS_CHECK(access(tmp, F_OK) == 0);
	unlink(tmp);
	CHECK_REQ(&st, "D", "OK");
	finish(&st);
}

NS_TEST(test_stub_test__gdb_info_threads)
{
	char *gdb = ns_test_capture("command -v gdb");
	bool have = gdb && *gdb;
	free(gdb);
	if (!have) {
		printf("  gdb not installed: skipped\n");
		return;
	}
	char cmd[2048];
	snprintf(cmd, sizeof(cmd),
	         "gdb -nx -batch -ex 'set non-stop on' -ex 'target remote | %s --stdio "
	         "--agent %s -- /bin/sleep 1' -ex 'info threads' 2>&1",
	         NS_STUB_BIN, NS_STUB_FAKE_AGENT);
	char *out = ns_test_capture(cmd);
	NS_CHECK(out != NULL);
	if (!out)
		return;
	// gdb lists the program's one thread as running.
	if (!strstr(out, "(running)") || !strstr(out, "Thread "))
		ns_test_fail(__FILE__, __LINE__, "gdb output:\n%s", out);
	free(out);
}

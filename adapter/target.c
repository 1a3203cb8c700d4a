/* The adapter's side of the RSP connection to nonstop-stub. */
#define _GNU_SOURCE
#include "adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

enum { RSP_TIMEOUT_MS = 10000 };

static void on_notify(void *ctx, const char *data, size_t len)
{
	struct target *t = ctx;
	if (len >= 8 && strncmp(data, "NsFrames", 8) == 0)
		t->frames_pending = true;
}

struct ns_err *target_request(struct target *t, const char *req, struct ns_rsp_packet *reply)
{
	if (!t->rsp)
		return ns_err_create(NS_ERR_CLOSED, "not connected to nonstop-stub");
	struct ns_err *err =
	        ns_rsp_request(t->rsp, req, strlen(req), RSP_TIMEOUT_MS, on_notify, t, reply);
	if (err)
		return ns_err_wrap(err, "nonstop-stub request '%.20s'", req);
	return NULL;
}

static char *stub_path(void)
{
	const char *env = getenv("NONSTOP_STUB");
	if (env && *env)
		return strdup(env);
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return strdup("nonstop-stub");
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	char *p = NULL;
	if (asprintf(&p, "%s/nonstop-stub", self) < 0)
		return NULL;
	return p;
}

static struct ns_err *read_xfer(struct target *t, const char *object, char **out, size_t *outlen)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	uint64_t off = 0;
	for (int guard = 0; guard < 4096; guard++) {
		char req[128];
		snprintf(req, sizeof(req), "qXfer:%s:read::%llx,%x", object,
		         (unsigned long long)off, 0x3000);
		struct ns_rsp_packet rep;
		struct ns_err *err = target_request(t, req, &rep);
		if (err) {
			ns_strbuf_deinit(&sb);
			return err;
		}
		if (rep.len == 0 || (rep.data[0] != 'm' && rep.data[0] != 'l')) {
			ns_strbuf_deinit(&sb);
			return ns_err_create(NS_ERR_PROTOCOL, "qXfer:%s: unexpected reply '%.40s'",
			                     object, rep.data);
		}
		ns_strbuf_append(&sb, rep.data + 1, rep.len - 1);
		off += rep.len - 1;
		if (rep.data[0] == 'l')
			break;
	}
	if (sb.oom) {
		ns_strbuf_deinit(&sb);
		return &ns_err_nomem;
	}
	*outlen = sb.len;
	*out = ns_strbuf_steal(&sb);
	return NULL;
}

struct ns_err *target_load_map(struct target *t)
{
	char *text;
	size_t len;
	struct ns_err *err = read_xfer(t, "nonstop-maps", &text, &len);
	if (err)
		return err;
	if (t->map_loaded)
		ns_procmap_deinit(&t->map);
	err = ns_procmap_parse(text, &t->map);
	free(text);
	if (err)
		return err;
	t->map_loaded = true;
	return NULL;
}

static struct ns_err *handshake(struct target *t)
{
	struct ns_rsp_packet rep;
	// Frames come binary if the stub can (half the bytes, no hex either side).
	struct ns_err *err = target_request(t, "qSupported:NsFramePush+;NsFrameBinary+", &rep);
	if (err)
		return err;
	if (!strstr(rep.data, "NsFramePush+"))
		return ns_err_create(NS_ERR_PROTOCOL,
		                     "the stub does not push frames (not a nonstop-stub?)");
	if ((err = target_request(t, "QStartNoAckMode", &rep)))
		return err;
	if (strcmp(rep.data, "OK") == 0)
		ns_rsp_set_noack(t->rsp, true);
	if ((err = target_request(t, "QNonStop:1", &rep)))
		return err;
	if ((err = target_request(t, "QTinit", &rep)))
		return err;
	if ((err = target_request(t, "QTStart", &rep)))
		return err;
	if (strcmp(rep.data, "OK") != 0)
		return ns_err_create(NS_ERR_PROTOCOL, "QTStart failed: %s", rep.data);
	char *exe;
	size_t len;
	if ((err = read_xfer(t, "exec-file", &exe, &len)))
		return err;
	t->exe_path = exe;
	if ((err = target_request(t, "qNsBuildId", &rep)))
		return err;
	if (rep.len >= 2 && rep.data[0] != 'E' && rep.len / 2 <= sizeof(t->build_id) &&
	    ns_hex_decode(rep.data, rep.len, t->build_id) == 0)
		t->build_id_len = rep.len / 2;
	return target_load_map(t);
}

static void set_cloexec(int fd)
{
	fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
}

/* Start nonstop-stub with @argv (argv[0] = its path) on pipes: its stdin/stdout carry
 * RSP. @fd_out/@fd_err >= 0 become its fds 3 and 4 (the program's stdout/stderr);
 * @fd_stub_err >= 0 its own stderr. @cwd/@envp: NULL to inherit. Connects t->rsp. */
static struct ns_err *spawn_stub(struct target *t, char **argv, const char *cwd, char **envp,
                                 int fd_out, int fd_err, int fd_stub_err)
{
	int to_stub[2], from_stub[2];
	if (pipe2(to_stub, O_CLOEXEC))
		return ns_err_errno(errno, "pipe");
	if (pipe2(from_stub, O_CLOEXEC)) {
		struct ns_err *err = ns_err_errno(errno, "pipe");
		close(to_stub[0]);
		close(to_stub[1]);
		return err;
	}
	pid_t pid = fork();
	if (pid < 0) {
		struct ns_err *err = ns_err_errno(errno, "fork");
		close(to_stub[0]);
		close(to_stub[1]);
		close(from_stub[0]);
		close(from_stub[1]);
		return err;
	}
	if (pid == 0) {
		dup2(to_stub[0], 0);
		dup2(from_stub[1], 1);
		if (fd_out >= 0)
			dup2(fd_out, 3);
		if (fd_err >= 0)
			dup2(fd_err, 4);
		if (fd_stub_err >= 0)
			dup2(fd_stub_err, 2);
		if (cwd && *cwd && chdir(cwd) != 0) {
			dprintf(2, "nonstop-dap: cannot change to directory %s: %s\n", cwd,
			        strerror(errno));
			_exit(126);
		}
		if (envp)
			execve(argv[0], argv, envp);
		else
			execv(argv[0], argv);
		dprintf(2, "nonstop-dap: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(to_stub[0]);
	close(from_stub[1]);
	t->stub_pid = pid;
	struct ns_err *err = ns_rsp_conn_create(from_stub[0], to_stub[1], &t->rsp);
	if (err) {
		close(from_stub[0]);
		close(to_stub[1]);
	}
	return err;
}

struct ns_err *target_launch(struct target *t, const struct launch_args *la)
{
	int out[2], errp[2];
	if (pipe2(out, O_CLOEXEC))
		return ns_err_errno(errno, "pipe");
	if (pipe2(errp, O_CLOEXEC)) {
		struct ns_err *err = ns_err_errno(errno, "pipe");
		close(out[0]);
		close(out[1]);
		return err;
	}
	size_t argc = 0;
	while (la->argv[argc])
		argc++;
	char *stub = stub_path();
	char **argv = calloc(argc + 12, sizeof(char *));
	struct ns_err *err = NULL;
	if (!stub || !argv) {
		err = &ns_err_nomem;
	} else {
		size_t i = 0;
		char *fixed[] = {stub, "--stdio",     "--hold", "--stdout-fd",
		                 "3",  "--stderr-fd", "4",      "--"};
		for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
			argv[i++] = fixed[k];
		for (size_t k = 0; k < argc; k++)
			argv[i++] = la->argv[k];
		argv[i] = NULL;
		err = spawn_stub(t, argv, la->cwd, la->envp, out[1], errp[1], -1);
	}
	free(argv);
	free(stub);
	close(out[1]);
	close(errp[1]);
	t->out_fd = out[0];
	t->err_fd = errp[0];
	t->launched = true;
	if (!err)
		err = handshake(t);
	if (err)
		return ns_err_wrap(err, "starting %s under nonstop-stub", la->program);
	return NULL;
}

/* Everything the stub printed on stderr so far (it exits on failure), trimmed. */
static char *stub_stderr(struct target *t)
{
	struct ns_strbuf sb;
	ns_strbuf_init(&sb);
	for (int i = 0; i < 100 && t->stub_err_fd >= 0; i++) {
		struct pollfd p = {t->stub_err_fd, POLLIN, 0};
		if (poll(&p, 1, 50) <= 0)
			break;
		char buf[4096];
		ssize_t n = read(t->stub_err_fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		ns_strbuf_append(&sb, buf, (size_t)n);
	}
	while (sb.len && (sb.buf[sb.len - 1] == '\n' || sb.buf[sb.len - 1] == ' '))
		sb.buf[--sb.len] = 0;
	return ns_strbuf_steal(&sb);
}

struct ns_err *target_attach_pid(struct target *t, long pid)
{
	int errp[2];
	char *stub = stub_path();
	if (!stub)
		return &ns_err_nomem;
	if (pipe2(errp, O_CLOEXEC)) {
		free(stub);
		return ns_err_errno(errno, "pipe");
	}
	char pidstr[32];
	snprintf(pidstr, sizeof(pidstr), "%ld", pid);
	char *argv[] = {stub, "--stdio", "--attach", pidstr, NULL};
	struct ns_err *err = spawn_stub(t, argv, NULL, NULL, -1, -1, errp[1]);
	free(stub);
	close(errp[1]);
	t->stub_err_fd = errp[0];
	if (!err)
		err = handshake(t);
	if (err) {
		// The stub says why (permissions, no such process, already traced...).
		char *why = stub_stderr(t);
		if (why && *why) {
			ns_err_destroy(err);
			err = ns_err_create(NS_ERR_INVALID, "%s", why);
		} else {
			err = ns_err_wrap(err, "attaching to process %ld", pid);
		}
		free(why);
		return err;
	}
	return NULL;
}

struct ns_err *target_attach(struct target *t, const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host) || !colon[1])
		return ns_err_create(NS_ERR_INVALID, "attach target '%s' is not host:port",
		                     hostport);
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc)
		return ns_err_create(NS_ERR_INVALID, "cannot resolve %s: %s", hostport,
		                     gai_strerror(rc));
	int fd = -1, last = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		last = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ns_err_errno(last ? last : ECONNREFUSED, "cannot connect to %s", hostport);
	set_cloexec(fd);
	int fd2 = dup(fd);
	struct ns_err *err = ns_rsp_conn_create(fd, fd2, &t->rsp);
	if (err)
		return err;
	err = handshake(t);
	if (err)
		return ns_err_wrap(err, "attaching to %s", hostport);
	return NULL;
}

void target_close(struct target *t, bool kill_program)
{
	if (t->rsp) {
		struct ns_rsp_packet rep;
		if (kill_program && !t->exited)
			ns_rsp_send_str(t->rsp, "vKill;0");
		else
			target_request(t, "D", &rep);
		ns_rsp_conn_destroy(t->rsp);
		t->rsp = NULL;
	}
	if (t->stub_pid > 0) {
		// The stub exits on EOF; give it a moment, then make sure.
		for (int i = 0; i < 200; i++) {
			if (waitpid(t->stub_pid, NULL, WNOHANG) == t->stub_pid) {
				t->stub_pid = 0;
				break;
			}
			usleep(10000);
		}
		if (t->stub_pid > 0) {
			kill(t->stub_pid, SIGTERM);
			waitpid(t->stub_pid, NULL, 0);
			t->stub_pid = 0;
		}
	}
	if (t->out_fd >= 0)
		close(t->out_fd);
	if (t->err_fd >= 0)
		close(t->err_fd);
	if (t->stub_err_fd >= 0)
		close(t->stub_err_fd);
	t->out_fd = t->err_fd = t->stub_err_fd = -1;
	free(t->exe_path);
	t->exe_path = NULL;
	if (t->map_loaded)
		ns_procmap_deinit(&t->map);
	t->map_loaded = false;
}

size_t target_read_mem(struct target *t, uint64_t addr, void *dst, size_t len)
{
	size_t done = 0;
	while (done < len) {
		size_t chunk = len - done > 2048 ? 2048 : len - done;
		char req[64];
		snprintf(req, sizeof(req), "m%llx,%zx", (unsigned long long)(addr + done), chunk);
		struct ns_rsp_packet rep;
		struct ns_err *err = target_request(t, req, &rep);
		if (err) {
			ns_err_destroy(err);
			break;
		}
		if (rep.len == 0 || rep.data[0] == 'E' || rep.len % 2)
			break;
		size_t n = rep.len / 2;
		if (n > chunk || ns_hex_decode(rep.data, rep.len, (uint8_t *)dst + done))
			break;
		done += n;
		if (n < chunk)
			break;
	}
	return done;
}

struct ns_err *target_threads(struct target *t, long **tids, size_t *n)
{
	size_t cap = 16, cnt = 0;
	long *v = malloc(cap * sizeof(long));
	if (!v)
		return &ns_err_nomem;
	const char *q = "qfThreadInfo";
	for (int guard = 0; guard < 1000; guard++) {
		struct ns_rsp_packet rep;
		struct ns_err *err = target_request(t, q, &rep);
		if (err) {
			free(v);
			return err;
		}
		if (rep.data[0] != 'm')
			break;
		const char *p = rep.data + 1;
		while (*p) {
			// "p<pid>.<tid>" or "<tid>", hex.
			if (*p == 'p') {
				while (*p && *p != '.')
					p++;
				if (*p == '.')
					p++;
			}
			uint64_t tid;
			if (ns_rsp_parse_hex(&p, &tid) < 0)
				break;
			if (cnt == cap) {
				long *nv = realloc(v, cap * 2 * sizeof(long));
				if (!nv) {
					free(v);
					return &ns_err_nomem;
				}
				v = nv;
				cap *= 2;
			}
			v[cnt++] = (long)tid;
			if (*p == ',')
				p++;
			else
				break;
		}
		q = "qsThreadInfo";
	}
	*tids = v;
	*n = cnt;
	return NULL;
}

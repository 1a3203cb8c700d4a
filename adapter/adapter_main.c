/* nonstop-dap: the Debug Adapter Protocol server IDEs start (stdio), or a TCP server
 * with --port N (one session, for debugging the adapter itself). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adapter.h"
#include "base/log.h"

int session_run(struct session *s);
void session_deinit(struct session *s);

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	ns_log_set(ns_log_stderr, NULL, getenv("NONSTOP_DEBUG") ? NS_LOG_DEBUG : NS_LOG_WARN);
	int rfd = 0, wfd = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
			int port = atoi(argv[++i]);
			int ls = socket(AF_INET, SOCK_STREAM, 0);
			int one = 1;
			setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			struct sockaddr_in sa = {.sin_family = AF_INET,
			                         .sin_port = htons((uint16_t)port),
			                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
			if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1)) {
				perror("nonstop-dap: listen");
				return 1;
			}
			rfd = accept(ls, NULL, NULL);
			close(ls);
			if (rfd < 0) {
				perror("nonstop-dap: accept");
				return 1;
			}
			wfd = dup(rfd);
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("nonstop-dap 0.1\n");
			return 0;
		} else {
			fprintf(stderr, "usage: nonstop-dap [--port N]\n");
			return 2;
		}
	}
	// Keep our own stdout for DAP only: anything else that writes to fd 1 by
	// mistake would corrupt the protocol stream.
	if (wfd == 1) {
		wfd = dup(1);
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0) {
			dup2(devnull, 1);
			close(devnull);
		}
	}
	struct session s;
	memset(&s, 0, sizeof(s));
	s.tgt.out_fd = s.tgt.err_fd = s.tgt.stub_err_fd = -1;
	struct ns_err *err = ns_dap_conn_create(rfd, wfd, &s.dap);
	if (err) {
		fprintf(stderr, "nonstop-dap: %s\n", err->msg);
		return 1;
	}
	int rc = session_run(&s);
	session_deinit(&s);
	ns_dap_conn_destroy(s.dap);
	return rc;
}

/* A fake libnonstop-agent.so for the stub's tests: speaks the control protocol of
 * core/agent/agent.h (HELLO, REPLY status 0 to INSTALL/REMOVE/REMOVE_ALL, RESUME for
 * NONSTOP_AGENT_HOLD=1) and, for every INSTALL, writes one handmade frame into ring 0:
 * a header plus one 8-byte memory block "ABCDEFGH" at 0x1000. It patches nothing.
 * The frame bytes are laid out here by hand from frame.h, not with core/frame. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "frame/frame.h"

static int ctl = -1;
static struct ns_agent_shm *shm;
static atomic_int resumed;

static void reply(uint32_t req_id, int32_t status, const char *text)
{
	char buf[256];
	struct ns_agent_reply r = {.h = {.type = NS_AGENT_MSG_REPLY, .req_id = req_id},
	                           .status = status,
	                           .tier = NS_AGENT_TIER_TRAP};
	size_t tl = strlen(text) + 1;
	r.h.size = (uint32_t)(sizeof(r) + tl);
	memcpy(buf, &r, sizeof(r));
	memcpy(buf + sizeof(r), text, tl);
	send(ctl, buf, sizeof(r) + tl, MSG_NOSIGNAL);
}

/* One record in ring 0: u32 record length, u32 frame length, frame, pad to 8. */
static void write_frame(uint32_t tp_id, uint64_t addr)
{
	struct ns_agent_ring *r = ns_agent_shm_ring(shm, 0);
	uint8_t *data = ns_agent_ring_data(shm, r);
	uint8_t frame[sizeof(struct ns_frame_hdr) + sizeof(struct ns_frame_block) + 8];
	struct ns_frame_hdr h = {
	        .magic = NS_FRAME_MAGIC,
	        .version = NS_FRAME_VERSION,
	        .hdr_size = sizeof(struct ns_frame_hdr),
	        .size = sizeof(frame),
	        .tp_id = tp_id,
	        .addr = addr,
	        .tid = (uint64_t)gettid(),
	        .seq = 1,
	        .nblocks = 1,
	        .hit_count = 1,
	};
	struct ns_frame_block b = {.type = NS_FRAME_BLOCK_MEM, .len = 8, .addr = 0x1000};
	memcpy(frame, &h, sizeof(h));
	memcpy(frame + sizeof(h), &b, sizeof(b));
	memcpy(frame + sizeof(h) + sizeof(b), "ABCDEFGH", 8);
	uint32_t flen = sizeof(frame), rlen = (uint32_t)((8 + flen + 7) & ~7u);
	atomic_store(&r->owner, (uint32_t)gettid());
	ns_agent_ring_claimed(shm, 0);
	uint64_t head = atomic_load(&r->head);
	uint64_t off = head % shm->ring_bytes;
	memcpy(data + off, &rlen, 4);
	memcpy(data + off + 4, &flen, 4);
	memcpy(data + off + 8, frame, flen);
	atomic_fetch_add(&shm->hits, 1);
	atomic_store_explicit(&r->head, head + rlen, memory_order_release);
}

static void *control(void *arg)
{
	(void)arg;
	struct ns_agent_hello hello = {.h = {.type = NS_AGENT_MSG_HELLO, .size = sizeof(hello)},
	                               .version = NS_AGENT_PROTO_VERSION,
	                               .pid = (uint32_t)getpid()};
	send(ctl, &hello, sizeof(hello), MSG_NOSIGNAL);
	static uint8_t buf[1 << 16];
	for (;;) {
		ssize_t n = recv(ctl, buf, sizeof(buf), 0);
		if (n <= 0)
			return NULL;
		struct ns_agent_msg_hdr h;
		if ((size_t)n < sizeof(h))
			continue;
		memcpy(&h, buf, sizeof(h));
		switch (h.type) {
		case NS_AGENT_MSG_INSTALL: {
			struct ns_rsp_tracepoint tp;
			struct ns_err *err = ns_agent_decode_install(buf, (size_t)n, &tp);
			if (err) {
				reply(h.req_id, 22, err->msg);
				ns_err_destroy(err);
				break;
			}
			// A tracepoint at address 0xbad is refused, to test error replies.
			if (tp.addr == 0xbad) {
				reply(h.req_id, 14, "fake agent: cannot patch 0xbad");
			} else {
				write_frame(tp.num, tp.addr);
				reply(h.req_id, 0, "trap tier: fake");
			}
			ns_rsp_tp_deinit(&tp);
			break;
		}
		case NS_AGENT_MSG_REMOVE:
		case NS_AGENT_MSG_REMOVE_ALL:
			reply(h.req_id, 0, "");
			break;
		case NS_AGENT_MSG_RESUME:
			atomic_store(&resumed, 1);
			break;
		}
	}
}

__attribute__((constructor)) static void fake_agent_init(void)
{
	const char *fd = getenv(NS_AGENT_ENV_FD), *mfd = getenv(NS_AGENT_ENV_SHM);
	const char *hold = getenv(NS_AGENT_ENV_HOLD);
	if (!fd || !mfd)
		return;
	ctl = atoi(fd);
	int memfd = atoi(mfd);
	bool held = hold && !strcmp(hold, "1");
	unsetenv(NS_AGENT_ENV_FD);
	unsetenv(NS_AGENT_ENV_SHM);
	unsetenv(NS_AGENT_ENV_HOLD);
	unsetenv("LD_PRELOAD");
	struct stat st;
	if (fstat(memfd, &st) < 0)
		return;
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (m == MAP_FAILED)
		return;
	shm = m;
	pthread_t th;
	pthread_create(&th, NULL, control, NULL);
	while (held && !atomic_load(&resumed)) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

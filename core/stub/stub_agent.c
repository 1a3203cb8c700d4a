/* The stub's side of the agent protocol (core/agent/agent.h): the control socket
 * (request/reply by req_id) and draining the shared-memory rings into a bounded
 * frame queue. */
#define _GNU_SOURCE
#include "stub/stub.h"
#include "base/clock.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "frame/frame.h"

struct ns_err *ns_stub__agent_rings(struct ns_stub *s)
{
	s->shm_size = ns_agent_shm_size(NS_AGENT_NRINGS, NS_AGENT_RING_BYTES);
	s->memfd = memfd_create("nonstop-rings", MFD_CLOEXEC);
	if (s->memfd < 0)
		return ns_err_errno(errno, "memfd_create");
	if (ftruncate(s->memfd, (off_t)s->shm_size) < 0)
		return ns_err_errno(errno, "ftruncate rings");
	void *m = mmap(NULL, s->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, s->memfd, 0);
	if (m == MAP_FAILED)
		return ns_err_errno(errno, "mmap rings");
	s->shm = m;
	ns_agent_shm_init(s->shm, NS_AGENT_NRINGS, NS_AGENT_RING_BYTES);
	s->shm->warm_bytes = s->ring_warm;
	s->scratch = malloc(NS_AGENT_MAX_FRAME);
	if (!s->scratch)
		return &ns_err_nomem;
	return NULL;
}

struct ns_err *ns_stub__agent_prepare(struct ns_stub *s, int *child_fd)
{
	struct ns_err *err = ns_stub__agent_rings(s);
	if (err)
		return err;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return ns_err_errno(errno, "socketpair");
	s->ctl_fd = sv[0];
	*child_fd = sv[1];
	return NULL;
}

static void agent_gone(struct ns_stub *s)
{
	if (s->ctl_fd >= 0)
		close(s->ctl_fd);
	s->ctl_fd = -1;
	s->held = false;
}

/* One message into @buf; 0 if none is ready, -1 if the agent is gone. */
static ssize_t read_msg(struct ns_stub *s, void *buf, size_t cap)
{
	ssize_t n;
	do
		n = recv(s->ctl_fd, buf, cap, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n <= 0) {
		agent_gone(s);
		return -1;
	}
	return n;
}

static void handle_msg(struct ns_stub *s, const uint8_t *buf, size_t n)
{
	struct ns_agent_msg_hdr h;
	if (n < sizeof(h))
		return;
	memcpy(&h, buf, sizeof(h));
	if (h.type == NS_AGENT_MSG_HELLO && n >= sizeof(struct ns_agent_hello)) {
		struct ns_agent_hello hello;
		memcpy(&hello, buf, sizeof(hello));
		s->agent_hello = true;
		ns_log(NS_LOG_INFO, "agent: hello from pid %u, protocol %u", hello.pid,
		       hello.version);
	} else if (h.type == NS_AGENT_MSG_REPLY) {
		ns_log(NS_LOG_DEBUG, "agent: late reply %u ignored", h.req_id);
	}
}

void ns_stub__agent_input(struct ns_stub *s)
{
	uint8_t buf[4096];
	while (s->ctl_fd >= 0) {
		ssize_t n = read_msg(s, buf, sizeof(buf));
		if (n <= 0)
			return;
		handle_msg(s, buf, (size_t)n);
	}
}

/* Send @msg and wait for the REPLY with its req_id; the reply text goes to the error
 * when status != 0. */
static struct ns_err *request_tier(struct ns_stub *s, void *msg, size_t len, const char *what,
                                   uint32_t *tier, char *text_out, size_t text_cap)
{
	if (s->exited)
		return ns_err_create(NS_ERR_CLOSED, "%s: the program has exited", what);
	if (s->ctl_fd < 0)
		return ns_err_create(NS_ERR_CLOSED, "%s: the agent is not running in the program",
		                     what);
	struct ns_agent_msg_hdr *h = msg;
	h->req_id = ++s->next_req;
	h->size = (uint32_t)len;
	if (send(s->ctl_fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
		int e = errno;
		agent_gone(s);
		return ns_err_errno(e, "%s: sending to the agent", what);
	}
	int64_t deadline = ns_mono_ms() + NS_STUB_REPLY_TIMEOUT_MS;
	uint8_t buf[4096 + 1];
	for (;;) {
		int64_t left = deadline - ns_mono_ms();
		if (left <= 0)
			return ns_err_create(NS_ERR_TIMEOUT, "%s: the agent did not reply in %d s",
			                     what, NS_STUB_REPLY_TIMEOUT_MS / 1000);
		struct pollfd pfd = {.fd = s->ctl_fd, .events = POLLIN};
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		ssize_t n = read_msg(s, buf, sizeof(buf) - 1);
		if (n < 0)
			return ns_err_create(NS_ERR_CLOSED, "%s: the agent went away", what);
		if (n == 0)
			continue;
		struct ns_agent_reply rep;
		if ((size_t)n < sizeof(rep)) {
			handle_msg(s, buf, (size_t)n);
			continue;
		}
		memcpy(&rep, buf, sizeof(rep));
		if (rep.h.type != NS_AGENT_MSG_REPLY || rep.h.req_id != h->req_id) {
			handle_msg(s, buf, (size_t)n);
			continue;
		}
		buf[n] = 0;
		const char *text = (const char *)buf + sizeof(rep);
		if (rep.status != 0)
			return ns_err_create(NS_ERR_INVALID, "%s",
			                     *text ? text : "the agent refused");
		if (*text)
			ns_log(NS_LOG_INFO, "agent: %s", text);
		if (tier)
			*tier = rep.tier;
		if (text_out && text_cap)
			snprintf(text_out, text_cap, "%s", text);
		return NULL;
	}
}

static struct ns_err *request(struct ns_stub *s, void *msg, size_t len, const char *what)
{
	return request_tier(s, msg, len, what, NULL, NULL, 0);
}

struct ns_err *ns_stub__agent_install_tier(struct ns_stub *s, const struct ns_rsp_tracepoint *tp,
                                           uint32_t *tier, char *text, size_t cap)
{
	if (s->pt)
		return ns_stub__pt_install(s, tp);
	// The agent backs the next thread's ring before it patches the site: allocate
	// those pages here first, so the program's process only maps them.
	ns_stub__back_rings(s, UINT64_MAX);
	void *msg;
	size_t len;
	struct ns_err *err = ns_agent_encode_install(tp, 0, &msg, &len);
	if (err)
		return err;
	err = request_tier(s, msg, len, "install", tier, text, cap);
	free(msg);
	return err;
}

struct ns_err *ns_stub__agent_install(struct ns_stub *s, const struct ns_rsp_tracepoint *tp)
{
	return ns_stub__agent_install_tier(s, tp, NULL, NULL, 0);
}

struct ns_err *ns_stub__agent_remove(struct ns_stub *s, uint32_t num)
{
	if (s->pt)
		return ns_stub__pt_remove(s, num);
	struct {
		struct ns_agent_msg_hdr h;
		uint32_t id;
	} __attribute__((packed)) m = {.h.type = NS_AGENT_MSG_REMOVE, .id = num};
	return request(s, &m, sizeof(m), "remove");
}

struct ns_err *ns_stub__agent_remove_all(struct ns_stub *s)
{
	if (s->pt)
		return ns_stub__pt_remove_all(s);
	struct ns_agent_msg_hdr h = {.type = NS_AGENT_MSG_REMOVE_ALL};
	return request(s, &h, sizeof(h), "remove all");
}

void ns_stub__agent_resume(struct ns_stub *s)
{
	if (s->pt) {
		ns_stub__pt_resume(s);
		return;
	}
	if (!s->held || s->ctl_fd < 0)
		return;
	struct ns_agent_msg_hdr h = {
	        .type = NS_AGENT_MSG_RESUME, .size = sizeof(h), .req_id = ++s->next_req};
	if (send(s->ctl_fd, &h, sizeof(h), MSG_NOSIGNAL) != sizeof(h))
		agent_gone(s);
	s->held = false;
}

/* ---- frames ---- */

// Count a frame's hit for its tracepoint location; the count (0 if unknown).
static uint64_t count_hit(struct ns_stub *s, const uint8_t *f, size_t len)
{
	struct ns_frame_hdr hdr;
	uint64_t n = 0;
	if (len < sizeof(hdr))
		return 0;
	memcpy(&hdr, f, sizeof(hdr));
	if (hdr.magic != NS_FRAME_MAGIC)
		return 0;
	for (size_t i = 0; i < s->ntps; i++)
		if (s->tps[i].tp.num == hdr.tp_id && s->tps[i].tp.addr == hdr.addr)
			n = ++s->tps[i].hits;
	return n;
}

// A frame there is no memory to queue: counted as a hit and as a drop.
static void drop_frame(struct ns_stub *s, const uint8_t *f, size_t n)
{
	s->fcreated++;
	count_hit(s, f, n);
	s->drops_total++;
}

// Keep the frame of @n bytes at @f, where the last queue reserve() pointed.
static void keep_frame(struct ns_stub *s, uint8_t *f, size_t n)
{
	s->fcreated++;
	uint64_t count = count_hit(s, f, n);
	if (s->frames.bytes + n > NS_STUB_QUEUE_BYTES) {
		s->drops_total++;
		return;
	}
	// An inline record (jump pad) leaves hit_count 0: the count as frames arrive.
	uint64_t hc;
	size_t at = offsetof(struct ns_frame_hdr, hit_count);
	if (count && n >= sizeof(struct ns_frame_hdr) && (memcpy(&hc, f + at, 8), hc == 0))
		memcpy(f + at, &count, 8);
	ns_stub__queue_commit(&s->frames, n);
}

size_t ns_stub__drain(struct ns_stub *s)
{
	if (!s->shm)
		return 0;
	size_t got = 0;
	for (unsigned i = 0, live = ns_agent_rings_live(s->shm); i < live; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(s->shm, i);
		for (;;) {
			// Straight into the queue; without memory for it, popped and dropped.
			uint8_t *dst = ns_stub__queue_reserve(&s->frames, NS_AGENT_MAX_FRAME);
			long n = ns_agent_ring_pop(s->shm, r, dst ? dst : s->scratch,
			                           NS_AGENT_MAX_FRAME);
			if (n == 0)
				break;
			if (n < 0)
				continue; // counted in the ring's dropped
			got++;
			if (dst)
				keep_frame(s, dst, (size_t)n);
			else
				drop_frame(s, s->scratch, (size_t)n);
		}
	}
	return got;
}

void ns_stub__push_frame(struct ns_stub *s, const uint8_t *f, size_t n)
{
	uint8_t *dst = ns_stub__queue_reserve(&s->frames, n);
	if (!dst) {
		drop_frame(s, f, n);
		return;
	}
	memcpy(dst, f, n);
	keep_frame(s, dst, n);
}

uint64_t ns_stub__new_drops(struct ns_stub *s)
{
	if (s->shm) {
		for (unsigned i = 0, live = ns_agent_rings_live(s->shm); i < live; i++) {
			struct ns_agent_ring *r = ns_agent_shm_ring(s->shm, i);
			uint64_t d = atomic_load(&r->dropped);
			// A counter that went backwards was reset: count it from zero.
			uint64_t base = d >= s->ring_drops_seen[i] ? s->ring_drops_seen[i] : 0;
			s->drops_total += d - base;
			s->ring_drops_seen[i] = d;
		}
		uint64_t nr = atomic_load(&s->shm->dropped_no_ring);
		if (nr > s->no_ring_seen)
			s->drops_total += nr - s->no_ring_seen;
		s->no_ring_seen = nr;
	}
	return s->drops_total - s->drops_reported;
}

void ns_stub__trim_rings(struct ns_stub *s)
{
	if (!s->shm || s->exited)
		return;
	for (unsigned i = 0, live = ns_agent_rings_live(s->shm); i < live; i++)
		ns_agent_ring_trim(s->shm, ns_agent_shm_ring(s->shm, i));
}

void ns_stub__release_dead_rings(struct ns_stub *s)
{
	if (!s->shm || s->exited)
		return;
	for (unsigned i = 0, live = ns_agent_rings_live(s->shm); i < live; i++) {
		struct ns_agent_ring *r = ns_agent_shm_ring(s->shm, i);
		uint32_t owner = atomic_load_explicit(&r->owner, memory_order_acquire);
		if (owner == 0 || ns_stub__tid_alive(s, owner))
			continue;
		// The owner is dead, so nobody produces into this ring any more; only a
		// drained ring is released (frames still in it are popped first).
		uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
		if (head != r->read)
			continue;
		ns_agent_ring_reset(s->shm, r); // its pages back too
		atomic_store_explicit(&r->owner, 0, memory_order_release);
	}
}

void ns_stub__free_frames(struct ns_stub *s)
{
	ns_stub__queue_clear(&s->frames);
	ns_strbuf_deinit(&s->reply);
}

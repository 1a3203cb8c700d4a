/* Process maps: parse /proc/PID/maps text, look addresses up, compute load biases from
 * the mapped ELF files' program headers. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unwind/unwind_internal.h"

#define DELETED_SUFFIX " (deleted)"

static int cmp_entry(const void *a, const void *b)
{
	const struct ns_procmap_entry *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

// One line: "start-end perms offset major:minor inode [path]" (proc(5)). The path is
// everything after the inode's padding, spaces included.
static struct ns_err *parse_line(const char *line, size_t len, unsigned lineno,
                                 struct ns_procmap_entry *out)
{
	char buf[512];
	const char *p = line, *end = line + len;
	uint64_t start, stop, offset;
	char perms[8];
	unsigned long long inode;
	unsigned dmaj, dmin;
	int n = 0;

	// The fixed fields fit in a short prefix; copy it so sscanf stops at the line end.
	size_t pre = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
	memcpy(buf, line, pre);
	buf[pre] = '\0';
	if (sscanf(buf, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %x:%x %llu%n", &start, &stop,
	           perms, &offset, &dmaj, &dmin, &inode, &n) != 7 ||
	    n <= 0)
		return ns_err_create(NS_ERR_FORMAT, "maps line %u: malformed: \"%.*s\"", lineno,
		                     (int)(len > 80 ? 80 : len), line);
	if (stop < start || strlen(perms) != 4)
		return ns_err_create(NS_ERR_FORMAT, "maps line %u: bad range or permissions",
		                     lineno);
	p += n;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;

	memset(out, 0, sizeof(*out));
	out->start = start;
	out->end = stop;
	out->offset = offset;
	out->readable = perms[0] == 'r';
	out->writable = perms[1] == 'w';
	out->executable = perms[2] == 'x';
	if (p < end) {
		out->path = strndup(p, (size_t)(end - p));
		if (!out->path)
			return &ns_err_nomem;
		size_t pl = strlen(out->path), sl = strlen(DELETED_SUFFIX);
		out->deleted = pl > sl && strcmp(out->path + pl - sl, DELETED_SUFFIX) == 0;
	}
	return NULL;
}

struct ns_err *ns_procmap_parse(const char *text, struct ns_procmap *out)
{
	struct ns_procmap m = {0};
	size_t cap = 0;
	unsigned lineno = 0;
	const char *p = text;

	if (!text)
		return ns_err_create(NS_ERR_INVALID, "maps text is NULL");
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		lineno++;
		if (len > 0) {
			if (m.n == cap) {
				size_t ncap = cap ? cap * 2 : 64;
				void *v = realloc(m.v, ncap * sizeof(*m.v));
				if (!v) {
					ns_procmap_deinit(&m);
					return &ns_err_nomem;
				}
				m.v = v;
				cap = ncap;
			}
			struct ns_err *err = parse_line(p, len, lineno, &m.v[m.n]);
			if (err) {
				ns_procmap_deinit(&m);
				return err;
			}
			m.n++;
		}
		p += len;
		if (*p == '\n')
			p++;
	}
	// The kernel prints mappings in address order; sort anyway so find() can bisect
	// over handmade or concatenated text.
	if (m.n > 1)
		qsort(m.v, m.n, sizeof(*m.v), cmp_entry);
	*out = m;
	return NULL;
}

void ns_procmap_deinit(struct ns_procmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
	m->v = NULL;
	m->n = 0;
}

const struct ns_procmap_entry *ns_procmap_find(const struct ns_procmap *m, uint64_t addr)
{
	size_t lo = 0, hi = m ? m->n : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct ns_procmap_entry *e = &m->v[mid];
		if (addr < e->start)
			hi = mid;
		else if (addr >= e->end)
			lo = mid + 1;
		else
			return e;
	}
	return NULL;
}

static bool path_matches(const struct ns_procmap_entry *e, const char *path)
{
	if (!e->path)
		return false;
	if (strcmp(e->path, path) == 0)
		return true;
	// The file was replaced or removed after mapping: "<path> (deleted)".
	size_t pl = strlen(path);
	return e->deleted && strncmp(e->path, path, pl) == 0 &&
	       strcmp(e->path + pl, DELETED_SUFFIX) == 0;
}

const struct ns_procmap_entry *ns_unwind__first_mapping(const struct ns_procmap *m,
                                                        const char *path)
{
	if (!m || !path)
		return NULL;
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].offset == 0 && path_matches(&m->v[i], path))
			return &m->v[i];
	return NULL;
}

void ns_unwind__elf_deinit(struct ns_unwind__elf *e)
{
	if (!e)
		return;
	free(e->loads);
	memset(e, 0, sizeof(*e));
}

struct ns_err *ns_unwind__elf_read(int fd, const char *path, struct ns_unwind__elf *out)
{
	struct ns_unwind__elf e = {0};
	struct ns_err *err = NULL;
	size_t phnum = 0;
	Elf *elf;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return ns_err_create(NS_ERR_FORMAT, "libelf: %s", elf_errmsg(-1));
	elf = elf_begin(fd, ELF_C_READ, NULL);
	if (!elf)
		return ns_err_create(NS_ERR_FORMAT, "%s: %s", path, elf_errmsg(-1));
	if (elf_kind(elf) != ELF_K_ELF || gelf_getclass(elf) != ELFCLASS64) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: not a 64-bit ELF file", path);
		goto out;
	}
	if (elf_getphdrnum(elf, &phnum) != 0) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: program headers: %s", path, elf_errmsg(-1));
		goto out;
	}
	e.loads = calloc(phnum ? phnum : 1, sizeof(*e.loads));
	if (!e.loads) {
		err = &ns_err_nomem;
		goto out;
	}
	e.load_lo = UINT64_MAX;
	for (size_t i = 0; i < phnum; i++) {
		GElf_Phdr ph;
		if (!gelf_getphdr(elf, (int)i, &ph))
			continue;
		if (ph.p_type == PT_LOAD) {
			uint64_t page = ph.p_vaddr & ~(uint64_t)0xfff, hi;
			if (__builtin_add_overflow(ph.p_vaddr, ph.p_memsz, &hi))
				continue;
			if (page < e.load_lo)
				e.load_lo = page;
			if (hi > e.load_hi)
				e.load_hi = hi;
			e.loads[e.nloads++] = (struct ns_unwind__load){
			        .vaddr = ph.p_vaddr,
			        .memsz = ph.p_memsz,
			        .writable = (ph.p_flags & PF_W) != 0,
			};
		} else if (ph.p_type == PT_GNU_EH_FRAME) {
			e.has_eh_frame_hdr = true;
			e.eh_vaddr = ph.p_vaddr;
			e.eh_offset = ph.p_offset;
			e.eh_size = ph.p_filesz;
		}
	}
	if (e.nloads == 0) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: no PT_LOAD segment", path);
		goto out;
	}
	e.is_elf = true;
out:
	elf_end(elf);
	if (err) {
		ns_unwind__elf_deinit(&e);
		return err;
	}
	*out = e;
	return NULL;
}

// The offset-0 mapping holds the first PT_LOAD's page: its start is bias + that page.
// For a non-PIE executable (first PT_LOAD at 0x400000, mapped there) the bias is 0;
// for PIE executables and shared objects (first PT_LOAD at 0) it is the start itself.
uint64_t ns_unwind__bias_from(const struct ns_procmap_entry *first, const struct ns_unwind__elf *e)
{
	return first->start - (e && e->is_elf ? e->load_lo : 0);
}

int ns_procmap_load_bias(const struct ns_procmap *m, const char *path, uint64_t *bias)
{
	const struct ns_procmap_entry *first = ns_unwind__first_mapping(m, path);
	struct ns_unwind__elf e = {0};

	if (!first)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		struct ns_err *err = ns_unwind__elf_read(fd, path, &e);
		// Unreadable or not ELF: assume the usual PIE/DSO layout (first vaddr 0).
		ns_err_destroy(err);
		close(fd);
	}
	*bias = ns_unwind__bias_from(first, &e);
	ns_unwind__elf_deinit(&e);
	return 0;
}

/* View memory: what the variables and stack views may show. The frame's captured
 * bytes first, then bytes of file-backed mappings the program cannot have changed
 * (not writable, and not in a PF_W segment such as RELRO that the loader relocated),
 * read from the mapped file. Never live memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unwind/unwind_internal.h"

struct vm_file {
	char *path; /* as in the map, " (deleted)" included */
	int fd;     /* -1 if it could not be opened */
	bool elf_tried;
	struct ns_unwind__elf elf; /* is_elf false if not ELF */
	bool bias_known;
	uint64_t bias;
};

struct ns_viewmem {
	struct ns_procmap map;  /* deep copy */
	struct vm_file **files; /* each allocated once: pointers stay valid */
	size_t nfiles, cap;
};

static struct ns_err *copy_map(const struct ns_procmap *src, struct ns_procmap *dst)
{
	dst->n = 0;
	dst->v = calloc(src->n ? src->n : 1, sizeof(*dst->v));
	if (!dst->v)
		return &ns_err_nomem;
	for (size_t i = 0; i < src->n; i++) {
		dst->v[i] = src->v[i];
		dst->v[i].path = NULL;
		if (src->v[i].path && !(dst->v[i].path = strdup(src->v[i].path))) {
			ns_procmap_deinit(dst);
			return &ns_err_nomem;
		}
		dst->n++;
	}
	return NULL;
}

struct ns_err *ns_viewmem_create(const struct ns_procmap *map, struct ns_viewmem **out)
{
	struct ns_viewmem *vm;
	struct ns_err *err;

	if (!map)
		return ns_err_create(NS_ERR_INVALID, "viewmem: no process map");
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return &ns_err_nomem;
	err = copy_map(map, &vm->map);
	if (err) {
		free(vm);
		return err;
	}
	*out = vm;
	return NULL;
}

void ns_viewmem_destroy(struct ns_viewmem *vm)
{
	if (!vm)
		return;
	for (size_t i = 0; i < vm->nfiles; i++) {
		struct vm_file *f = vm->files[i];
		if (f->fd >= 0)
			close(f->fd);
		free(f->path);
		ns_unwind__elf_deinit(&f->elf);
		free(f);
	}
	free(vm->files);
	ns_procmap_deinit(&vm->map);
	free(vm);
}

const struct ns_procmap *ns_viewmem__map(const struct ns_viewmem *vm)
{
	return &vm->map;
}

// The cached file for a mapping's @path; NULL only on out-of-memory. A deleted file is
// not opened: whatever now has its name is not what the process mapped.
static struct vm_file *get_file(struct ns_viewmem *vm, const char *path, bool deleted)
{
	for (size_t i = 0; i < vm->nfiles; i++)
		if (strcmp(vm->files[i]->path, path) == 0)
			return vm->files[i];
	if (vm->nfiles == vm->cap) {
		size_t ncap = vm->cap ? vm->cap * 2 : 16;
		void *v = realloc(vm->files, ncap * sizeof(*vm->files));
		if (!v)
			return NULL;
		vm->files = v;
		vm->cap = ncap;
	}
	struct vm_file *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->path = strdup(path);
	if (!f->path) {
		free(f);
		return NULL;
	}
	f->fd = deleted ? -1 : open(path, O_RDONLY | O_CLOEXEC);
	vm->files[vm->nfiles++] = f;
	return f;
}

static const struct ns_unwind__elf *file_elf(struct vm_file *f)
{
	if (!f->elf_tried) {
		f->elf_tried = true;
		if (f->fd >= 0)
			ns_err_destroy(ns_unwind__elf_read(f->fd, f->path, &f->elf));
	}
	return f->elf.is_elf ? &f->elf : NULL;
}

const struct ns_unwind__elf *ns_viewmem__elf(struct ns_viewmem *vm, const char *path)
{
	const struct ns_procmap_entry *first = ns_unwind__first_mapping(&vm->map, path);
	struct vm_file *f = get_file(vm, path, first && first->deleted);
	return f ? file_elf(f) : NULL;
}

static bool file_bias(struct ns_viewmem *vm, struct vm_file *f, uint64_t *out)
{
	if (!f->bias_known) {
		const struct ns_procmap_entry *first = ns_unwind__first_mapping(&vm->map, f->path);
		if (!first)
			return false;
		f->bias = ns_unwind__bias_from(first, file_elf(f));
		f->bias_known = true;
	}
	*out = f->bias;
	return true;
}

int ns_viewmem__bias(struct ns_viewmem *vm, const char *path, uint64_t *out)
{
	const struct ns_procmap_entry *first = ns_unwind__first_mapping(&vm->map, path);
	if (!first)
		return -1;
	struct vm_file *f = get_file(vm, path, first->deleted);
	return f && file_bias(vm, f, out) ? 0 : -1;
}

// Whether @addr lies in a PT_LOAD segment with PF_W: the loader may have written it
// (relocations in RELRO, which is read-only again by now), so the file's bytes are
// not what the process has. Otherwise clamps @len to stop at the next such segment.
static bool in_written_segment(struct ns_viewmem *vm, struct vm_file *f, uint64_t addr, size_t *len)
{
	const struct ns_unwind__elf *e = file_elf(f);
	uint64_t bias;

	if (!e || !file_bias(vm, f, &bias))
		return false;
	for (size_t i = 0; i < e->nloads; i++) {
		const struct ns_unwind__load *l = &e->loads[i];
		if (!l->writable)
			continue;
		// The whole pages of the segment: relocation may touch any of them.
		uint64_t lo = bias + (l->vaddr & ~(uint64_t)0xfff);
		uint64_t hi = bias + ((l->vaddr + l->memsz + 0xfff) & ~(uint64_t)0xfff);
		if (addr >= lo && addr < hi)
			return true;
		if (addr < lo && lo - addr < *len)
			*len = (size_t)(lo - addr);
	}
	return false;
}

// Bytes at @addr from the file behind its mapping, if the process cannot have
// changed them.
static size_t read_file_backed(struct ns_viewmem *vm, uint64_t addr, uint8_t *dst, size_t len)
{
	const struct ns_procmap_entry *e = ns_procmap_find(&vm->map, addr);

	if (!e || !e->path || e->path[0] != '/' || e->writable || !e->readable)
		return 0;
	struct vm_file *f = get_file(vm, e->path, e->deleted);
	if (!f || f->fd < 0)
		return 0;
	if (e->end - addr < len)
		len = (size_t)(e->end - addr);
	if (in_written_segment(vm, f, addr, &len))
		return 0;
	uint64_t off = e->offset + (addr - e->start);
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(f->fd, dst + got, len - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

size_t ns_viewmem_read(struct ns_viewmem *vm, const struct ns_frame *frame, uint64_t addr,
                       void *dst, size_t len)
{
	uint8_t *out = dst;
	size_t done = 0;

	if (!vm || !dst)
		return 0;
	// Take the longest run from either source, then continue where it ended: a
	// captured block may be followed by file bytes and vice versa.
	while (done < len) {
		uint64_t a = addr + done;
		size_t want = len - done, n = 0;
		if (a < addr) // wrapped past the top of the address space
			break;
		if (UINT64_MAX - a < want - 1)
			want = (size_t)(UINT64_MAX - a) + 1;
		if (frame)
			n = ns_frame_read(frame, a, out + done, want);
		if (n == 0)
			n = read_file_backed(vm, a, out + done, want);
		if (n == 0)
			break;
		done += n;
	}
	return done;
}

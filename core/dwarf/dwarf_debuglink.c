/* core/dwarf: finding the DWARF of a stripped program in a separate debug file, by
 * GNU build-id or .gnu_debuglink (as gdb does), and refusing one from another build. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/strbuf.h"
#include "dwarf/dwarf_internal.h"

#define GLOBAL_DEBUG_DIR "/usr/lib/debug"

enum how { BY_BUILD_ID, BY_DEBUGLINK };

struct search {
	struct ns_dwarf *exe;
	const char *binary;
	struct ns_strbuf looked; /* "a, b, c" */
	struct ns_err *mismatch; /* the first refused candidate */
	const char *link;        /* .gnu_debuglink name, NULL if none */
	uint32_t link_crc;
	struct ns_dwarf *found;
};

/* CRC-32 as .gnu_debuglink uses it (IEEE 802.3, reflected, like zlib's crc32). */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	static uint32_t table[256];
	static bool ready;

	if (!ready) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
		ready = true;
	}
	crc = ~crc;
	while (n--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static struct ns_err *file_crc32(const char *path, uint32_t *out)
{
	uint8_t buf[65536];
	uint32_t crc = 0;
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return ns_err_errno(errno, "open %s", path);
	while ((got = read(fd, buf, sizeof(buf))) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return ns_err_errno(e, "read %s", path);
		}
		crc = crc32_update(crc, buf, (size_t)got);
	}
	close(fd);
	*out = crc;
	return NULL;
}

static bool has_debug_info(struct ns_dwarf *dw)
{
	const uint8_t *data;
	size_t size = 0;
	struct ns_err *err;

	if (!dw->dbg)
		return false;
	err = ns_dwarf__section(dw, ".debug_info", &data, &size);
	if (err) {
		ns_err_destroy(err);
		return false;
	}
	return size > 0;
}

/* The .gnu_debuglink section: a file name, NUL, padding to 4, CRC32 in the file's
 * byte order. */
static void read_debuglink(struct search *st)
{
	const uint8_t *data;
	size_t size = 0, nlen, crc_off;
	GElf_Ehdr eh;
	struct ns_err *err = ns_dwarf__section(st->exe, ".gnu_debuglink", &data, &size);
	const uint8_t *c;

	if (err) {
		ns_err_destroy(err);
		return;
	}
	nlen = strnlen((const char *)data, size);
	if (nlen == 0 || nlen >= size || memchr(data, '/', nlen))
		return;
	crc_off = (nlen + 1 + 3) & ~(size_t)3;
	if (crc_off + 4 > size || !gelf_getehdr(st->exe->elf, &eh))
		return;
	c = data + crc_off;
	if (eh.e_ident[EI_DATA] == ELFDATA2MSB)
		st->link_crc =
		        (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
	else
		st->link_crc =
		        (uint32_t)c[3] << 24 | (uint32_t)c[2] << 16 | (uint32_t)c[1] << 8 | c[0];
	st->link = ns_arena_strndup(&st->exe->arena, (const char *)data, nlen);
}

static void note_looked(struct search *st, const char *path, const char *why)
{
	if (ns_strbuf_str(&st->looked)[0])
		ns_strbuf_puts(&st->looked, ", ");
	ns_strbuf_puts(&st->looked, path);
	if (why)
		ns_strbuf_printf(&st->looked, " (%s)", why);
}

static void note_mismatch(struct search *st, struct ns_err *err)
{
	if (st->mismatch)
		ns_err_destroy(err);
	else
		st->mismatch = err;
}

static char *hex(const uint8_t *id, size_t n)
{
	struct ns_strbuf sb;

	ns_strbuf_init(&sb);
	ns_strbuf_hex(&sb, id, n);
	return ns_strbuf_steal(&sb);
}

/* Look at one candidate file; on a match st->found is set. */
static void try_file(struct search *st, const char *path, enum how how)
{
	struct stat a, b;
	struct ns_dwarf *c = NULL;
	struct ns_err *err;
	const uint8_t *pid, *cid;
	size_t plen, clen;

	if (st->found)
		return;
	if (stat(path, &a) != 0 || !S_ISREG(a.st_mode)) {
		note_looked(st, path, NULL);
		return;
	}
	// The binary itself (a debuglink naming its own file): already known useless.
	if (stat(st->binary, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return;
	err = ns_dwarf_open(path, &c);
	if (err) {
		note_looked(st, path, err->msg);
		ns_err_destroy(err);
		return;
	}
	if (!has_debug_info(c)) {
		note_looked(st, path, "no .debug_info");
		ns_dwarf_destroy(c);
		return;
	}
	plen = ns_dwarf_build_id(st->exe, &pid);
	clen = ns_dwarf_build_id(c, &cid);
	if (plen && clen) {
		if (plen != clen || memcmp(pid, cid, plen) != 0) {
			char *x = hex(cid, clen), *y = hex(pid, plen);
			note_mismatch(st, ns_err_create(NS_ERR_INVALID,
			                                "debug file %s has build-id %s but the "
			                                "program has build-id %s: refusing "
			                                "mismatched debug info",
			                                path, x ? x : "?", y ? y : "?"));
			free(x);
			free(y);
			ns_dwarf_destroy(c);
			return;
		}
	} else if (how == BY_BUILD_ID) {
		char *y = plen ? hex(pid, plen) : NULL;
		note_mismatch(st, ns_err_create(NS_ERR_INVALID,
		                                "debug file %s has no build-id but the program "
		                                "has build-id %s: refusing mismatched debug info",
		                                path, y ? y : "?"));
		free(y);
		ns_dwarf_destroy(c);
		return;
	} else {
		uint32_t crc = 0;
		err = file_crc32(path, &crc);
		if (err) {
			note_looked(st, path, err->msg);
			ns_err_destroy(err);
			ns_dwarf_destroy(c);
			return;
		}
		if (crc != st->link_crc) {
			note_mismatch(st, ns_err_create(NS_ERR_INVALID,
			                                "debug file %s has CRC 0x%08x but the "
			                                ".gnu_debuglink of %s expects 0x%08x (CRC "
			                                "mismatch): refusing mismatched debug info",
			                                path, crc, st->binary, st->link_crc));
			ns_dwarf_destroy(c);
			return;
		}
	}
	st->found = c;
}

static void try_join(struct search *st, enum how how, const char *a, const char *b, const char *c)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s%s%s", a, b, c);

	if (n > 0 && (size_t)n < sizeof(path))
		try_file(st, path, how);
}

static void by_build_id(struct search *st, const char *dir)
{
	const uint8_t *id;
	size_t n = ns_dwarf_build_id(st->exe, &id);
	char *h;

	if (n < 2 || !*dir)
		return;
	h = hex(id, n);
	if (!h)
		return;
	char sub[2 * 64 + 32];
	if (strlen(h) < sizeof(sub) - 32) {
		snprintf(sub, sizeof(sub), "/.build-id/%.2s/%s.debug", h, h + 2);
		try_join(st, BY_BUILD_ID, dir, sub, "");
	}
	free(h);
}

/* dirname of @path (without a trailing slash; "" for the root), malloc'd. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	return strndup(path, (size_t)(slash - path));
}

/* CFI of the program: its .eh_frame through its own Dwarf_Debug (the debug file's
 * .eh_frame is NOBITS); .debug_frame from the debug file as the fallback. */
static void load_cfi(struct ns_dwarf *dw)
{
	struct ns_dwarf *exe = dw->exe;
	Dwarf_Error de = NULL;

	dw->fde_loaded = true;
	if (exe->dbg && dwarf_get_fde_list_eh(exe->dbg, &dw->cie_data, &dw->cie_count,
	                                      &dw->fde_data, &dw->fde_count, &de) == DW_DLV_ERROR) {
		dwarf_dealloc_error(exe->dbg, de);
		dw->cie_data = NULL;
		dw->fde_data = NULL;
	}
	de = NULL;
	if (dwarf_get_fde_list(dw->dbg, &dw->dcie_data, &dw->dcie_count, &dw->dfde_data,
	                       &dw->dfde_count, &de) == DW_DLV_ERROR) {
		dwarf_dealloc_error(dw->dbg, de);
		dw->dcie_data = NULL;
		dw->dfde_data = NULL;
	}
}

struct ns_err *ns_dwarf_open_separate(const char *binary, const char *const *dirs, size_t ndirs,
                                      struct ns_dwarf **out)
{
	struct search st = {.binary = binary};
	struct ns_err *err;
	char *bdir;
	size_t i;

	if (!binary || (ndirs && !dirs))
		return ns_err_create(NS_ERR_INVALID, "ns_dwarf_open_separate: no binary");
	err = ns_dwarf_open(binary, &st.exe);
	if (err)
		return err;
	if (has_debug_info(st.exe)) {
		*out = st.exe;
		return NULL;
	}
	bdir = dir_of(binary);
	if (!bdir) {
		ns_dwarf_destroy(st.exe);
		return &ns_err_nomem;
	}
	ns_strbuf_init(&st.looked);
	note_looked(&st, binary, NULL);
	read_debuglink(&st);

	for (i = 0; i < ndirs; i++)
		if (dirs[i])
			by_build_id(&st, dirs[i]);
	by_build_id(&st, GLOBAL_DEBUG_DIR);
	if (st.link) {
		try_join(&st, BY_DEBUGLINK, bdir, "/", st.link);
		try_join(&st, BY_DEBUGLINK, bdir, "/.debug/", st.link);
		for (i = 0; i < ndirs; i++) {
			if (!dirs[i] || !*dirs[i])
				continue;
			try_join(&st, BY_DEBUGLINK, dirs[i], "/", st.link);
			char sub[PATH_MAX];
			if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", bdir, st.link) <
			    sizeof(sub))
				try_join(&st, BY_DEBUGLINK, dirs[i], bdir[0] == '/' ? "" : "/",
				         sub);
		}
		char sub[PATH_MAX];
		if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", bdir, st.link) < sizeof(sub))
			try_join(&st, BY_DEBUGLINK, GLOBAL_DEBUG_DIR, bdir[0] == '/' ? "" : "/",
			         sub);
	}
	free(bdir);

	if (st.found) {
		ns_err_destroy(st.mismatch);
		st.found->exe = st.exe;
		load_cfi(st.found);
		*out = st.found;
		err = NULL;
	} else if (st.mismatch) {
		ns_dwarf_destroy(st.exe);
		err = st.mismatch;
	} else {
		const uint8_t *id;
		bool none = !ns_dwarf_build_id(st.exe, &id) && !st.link;
		err = ns_err_create(NS_ERR_NOT_FOUND, "no debug info for %s (looked in: %s%s)",
		                    binary, ns_strbuf_str(&st.looked),
		                    none ? "; it has neither a build-id nor a .gnu_debuglink" : "");
		ns_dwarf_destroy(st.exe);
	}
	ns_strbuf_deinit(&st.looked);
	return err;
}

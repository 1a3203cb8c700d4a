/* core/dwarf: opening a file, ELF queries (libelf) and the shared libdwarf helpers. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwarf/dwarf_internal.h"

// libdwarf calls the handler only when a call was given no Dwarf_Error pointer;
// we always pass one, but a handler keeps libdwarf from abort()ing if we miss one.
static void quiet_handler(Dwarf_Error e, Dwarf_Ptr arg)
{
	(void)e;
	(void)arg;
}

struct ns_err *ns_dwarf__err(struct ns_dwarf *dw, Dwarf_Error e, const char *what)
{
	struct ns_err *err;

	if (!e)
		return ns_err_create(NS_ERR_FORMAT, "%s: %s: libdwarf error", dw->path, what);
	err = ns_err_create(NS_ERR_FORMAT, "%s: %s: %s", dw->path, what, dwarf_errmsg(e));
	// With a separate debug file the error may come from exe->dbg (CFI): freeing it
	// through the other Dwarf_Debug would free it twice. libdwarf frees what is left
	// at dwarf_finish, so keep it until then.
	if (!dw->exe)
		dwarf_dealloc_error(dw->dbg, e);
	return err;
}

void ns_dwarf__drop(struct ns_dwarf *dw, Dwarf_Error e)
{
	if (e && dw->dbg && !dw->exe) // see ns_dwarf__err
		dwarf_dealloc_error(dw->dbg, e);
}

/* Never returned to a caller: only compared against. */
struct ns_err ns_dwarf__stop = {.code = NS_ERR_OK, .msg = "stop walking DIE children"};

struct ns_err *ns_dwarf__for_each_child(struct ns_dwarf *dw, Dwarf_Die parent, const char *what,
                                        ns_dwarf__child_fn fn, void *ctx)
{
	Dwarf_Die child = NULL, next;
	Dwarf_Error de = NULL;
	struct ns_err *err = NULL;
	int rc = dwarf_child(parent, &child, &de);

	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, what);
	while (rc == DW_DLV_OK) {
		Dwarf_Half tag = 0;
		if (dwarf_tag(child, &tag, &de) != DW_DLV_OK)
			err = ns_dwarf__err(dw, de, "reading DIE tag");
		else
			err = fn(dw, child, tag, ctx);
		if (err)
			break;
		rc = dwarf_siblingof_b(dw->dbg, child, 1, &next, &de);
		dwarf_dealloc_die(child);
		child = rc == DW_DLV_OK ? next : NULL;
		if (rc == DW_DLV_ERROR)
			err = ns_dwarf__err(dw, de, "reading DIE sibling");
	}
	if (child)
		dwarf_dealloc_die(child);
	return err == NS_DWARF__STOP ? NULL : err;
}

struct ns_err *ns_dwarf__need_dwarf(struct ns_dwarf *dw)
{
	if (!dw->dbg)
		return ns_err_create(NS_ERR_NOT_FOUND, "no debug info in %s", dw->path);
	return NULL;
}

bool ns_dwarf__grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 16, bytes;
	void *np;

	if (need <= *cap)
		return true;
	while (ncap < need)
		if (__builtin_mul_overflow(ncap, 2, &ncap))
			return false;
	if (__builtin_mul_overflow(ncap, elem, &bytes))
		return false;
	np = realloc(*p, bytes);
	if (!np)
		return false;
	*p = np;
	*cap = ncap;
	return true;
}

/* ---- ELF ---- */

static void load_build_id(struct ns_dwarf *dw, Elf_Data *data)
{
	size_t off = 0, name_off, desc_off;
	GElf_Nhdr nh;

	while (data && off < data->d_size &&
	       (off = gelf_getnote(data, off, &nh, &name_off, &desc_off)) > 0) {
		if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
		    memcmp((const char *)data->d_buf + name_off, "GNU", 4) == 0 &&
		    nh.n_descsz > 0 && desc_off + nh.n_descsz <= data->d_size) {
			uint8_t *id = ns_arena_alloc(&dw->arena, nh.n_descsz);
			if (!id)
				return;
			memcpy(id, (const char *)data->d_buf + desc_off, nh.n_descsz);
			dw->build_id = id;
			dw->build_id_len = nh.n_descsz;
			return;
		}
	}
}

static struct ns_err *load_elf(struct ns_dwarf *dw)
{
	GElf_Ehdr eh;
	size_t n, i;
	Elf_Scn *scn = NULL;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return ns_err_create(NS_ERR_FORMAT, "libelf: %s", elf_errmsg(-1));
	dw->elf = elf_begin(dw->fd, ELF_C_READ_MMAP, NULL);
	if (!dw->elf || elf_kind(dw->elf) != ELF_K_ELF)
		return ns_err_create(NS_ERR_FORMAT, "%s: not an ELF file", dw->path);
	if (!gelf_getehdr(dw->elf, &eh))
		return ns_err_create(NS_ERR_FORMAT, "%s: bad ELF header: %s", dw->path,
		                     elf_errmsg(-1));
	dw->is_dyn = eh.e_type == ET_DYN;
	if (elf_getphdrnum(dw->elf, &n) != 0)
		return ns_err_create(NS_ERR_FORMAT, "%s: bad program headers: %s", dw->path,
		                     elf_errmsg(-1));
	dw->phdrs = ns_arena_calloc(&dw->arena, n ? n : 1, sizeof(*dw->phdrs));
	if (!dw->phdrs)
		return &ns_err_nomem;
	for (i = 0; i < n; i++) {
		GElf_Phdr ph;
		if (!gelf_getphdr(dw->elf, (int)i, &ph))
			return ns_err_create(NS_ERR_FORMAT, "%s: bad program header %zu", dw->path,
			                     i);
		dw->phdrs[dw->nphdrs++] = (struct ns_dwarf__phdr){
		        ph.p_type, ph.p_vaddr, ph.p_filesz, ph.p_memsz, ph.p_offset};
		if (ph.p_type == PT_NOTE && !dw->build_id && ph.p_offset < dw->file_size &&
		    ph.p_filesz <= dw->file_size - ph.p_offset)
			load_build_id(dw, elf_getdata_rawchunk(dw->elf, (int64_t)ph.p_offset,
			                                       ph.p_filesz, ELF_T_NHDR));
	}
	// A separate debug file keeps its notes as sections only.
	while (!dw->build_id && (scn = elf_nextscn(dw->elf, scn)) != NULL) {
		GElf_Shdr sh;
		if (gelf_getshdr(scn, &sh) && sh.sh_type == SHT_NOTE)
			load_build_id(dw, elf_getdata(scn, NULL));
	}
	return NULL;
}

struct ns_err *ns_dwarf_open(const char *path, struct ns_dwarf **out)
{
	struct ns_dwarf *dw;
	struct ns_err *err;
	struct stat st;
	Dwarf_Error de = NULL;
	int rc;

	dw = calloc(1, sizeof(*dw));
	if (!dw)
		return &ns_err_nomem;
	ns_arena_init(&dw->arena);
	dw->fd = -1;
	dw->void_type.kind = NS_DT_VOID;
	dw->void_type.name = "void";
	dw->path = strdup(path);
	if (!dw->path) {
		ns_dwarf_destroy(dw);
		return &ns_err_nomem;
	}
	dw->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (dw->fd < 0) {
		err = ns_err_errno(errno, "open %s", path);
		ns_dwarf_destroy(dw);
		return err;
	}
	if (fstat(dw->fd, &st) != 0) {
		err = ns_err_errno(errno, "stat %s", path);
		ns_dwarf_destroy(dw);
		return err;
	}
	dw->file_size = (uint64_t)st.st_size;
	err = load_elf(dw);
	if (err) {
		ns_dwarf_destroy(dw);
		return err;
	}
	rc = dwarf_init(dw->fd, DW_DLC_READ, quiet_handler, NULL, &dw->dbg, &de);
	if (rc == DW_DLV_ERROR) {
		err = ns_err_create(NS_ERR_FORMAT, "%s: bad DWARF: %s", path,
		                    de ? dwarf_errmsg(de) : "libdwarf error");
		// No Dwarf_Debug exists yet: libdwarf frees such an error given a NULL dbg.
		if (de)
			dwarf_dealloc(NULL, de, DW_DLA_ERROR);
		dw->dbg = NULL;
		ns_dwarf_destroy(dw);
		return err;
	}
	if (rc == DW_DLV_NO_ENTRY)
		dw->dbg = NULL;
	*out = dw;
	return NULL;
}

void ns_dwarf_destroy(struct ns_dwarf *dw)
{
	size_t i;

	if (!dw)
		return;
	if (dw->exe) {
		// .eh_frame lists come from the program's Dwarf_Debug.
		if ((dw->fde_data || dw->cie_data) && dw->exe->dbg)
			dwarf_fde_cie_list_dealloc(dw->exe->dbg, dw->cie_data, dw->cie_count,
			                           dw->fde_data, dw->fde_count);
		dw->fde_data = NULL;
		dw->cie_data = NULL;
	}
	if (dw->dbg) {
		Dwarf_Error de = NULL;
		if (dw->fde_data || dw->cie_data)
			dwarf_fde_cie_list_dealloc(dw->dbg, dw->cie_data, dw->cie_count,
			                           dw->fde_data, dw->fde_count);
		if (dw->dfde_data || dw->dcie_data)
			dwarf_fde_cie_list_dealloc(dw->dbg, dw->dcie_data, dw->dcie_count,
			                           dw->dfde_data, dw->dfde_count);
		dwarf_finish(dw->dbg, &de);
	}
	for (i = 0; i < dw->ncus; i++)
		free(dw->cus[i].rows);
	free(dw->cus);
	free(dw->syms);
	free(dw->tslots);
	free(dw->csites);
	free(dw->callees);
	if (dw->elf)
		elf_end(dw->elf);
	if (dw->fd >= 0)
		close(dw->fd);
	ns_arena_deinit(&dw->arena);
	free(dw->path);
	ns_dwarf_destroy(dw->exe);
	free(dw);
}

const char *ns_dwarf_debug_path(struct ns_dwarf *dw)
{
	return dw->path;
}

size_t ns_dwarf_build_id(struct ns_dwarf *dw, const uint8_t **out)
{
	if (dw->exe)
		return ns_dwarf_build_id(dw->exe, out);
	*out = dw->build_id;
	return dw->build_id_len;
}

bool ns_dwarf_is_dyn(struct ns_dwarf *dw)
{
	if (dw->exe)
		return ns_dwarf_is_dyn(dw->exe);
	return dw->is_dyn;
}

size_t ns_dwarf_read_vaddr(struct ns_dwarf *dw, uint64_t vaddr, void *dst, size_t len)
{
	size_t done = 0;

	if (dw->exe) // a debug file's PT_LOAD segments point at NOBITS sections
		return ns_dwarf_read_vaddr(dw->exe, vaddr, dst, len);
	while (done < len) {
		uint64_t a = vaddr + done, avail, want;
		const struct ns_dwarf__phdr *seg = NULL;
		ssize_t got;
		size_t i;

		for (i = 0; i < dw->nphdrs; i++) {
			const struct ns_dwarf__phdr *p = &dw->phdrs[i];
			if (p->type == PT_LOAD && a >= p->vaddr && a - p->vaddr < p->filesz) {
				seg = p;
				break;
			}
		}
		if (!seg)
			break;
		avail = seg->filesz - (a - seg->vaddr);
		want = len - done < avail ? len - done : avail;
		if (seg->offset + (a - seg->vaddr) >= dw->file_size)
			break;
		got = pread(dw->fd, (char *)dst + done, want,
		            (off_t)(seg->offset + (a - seg->vaddr)));
		if (got <= 0)
			break;
		done += (size_t)got;
	}
	return done;
}

struct ns_err *ns_dwarf_eh_frame_hdr(struct ns_dwarf *dw, uint64_t *vaddr, uint64_t *size)
{
	size_t i;

	if (dw->exe)
		return ns_dwarf_eh_frame_hdr(dw->exe, vaddr, size);
	for (i = 0; i < dw->nphdrs; i++) {
		if (dw->phdrs[i].type == PT_GNU_EH_FRAME) {
			*vaddr = dw->phdrs[i].vaddr;
			*size = dw->phdrs[i].memsz;
			return NULL;
		}
	}
	return ns_err_create(NS_ERR_NOT_FOUND, "no PT_GNU_EH_FRAME in %s", dw->path);
}

static int sym_cmp(const void *a, const void *b)
{
	const struct ns_dwarf__sym *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static void load_syms(struct ns_dwarf *dw)
{
	Elf_Scn *scn = NULL;
	size_t cap = 0;
	bool have_symtab = false;

	dw->syms_loaded = true;
	// Prefer .symtab; a stripped file still has .dynsym.
	for (int pass = 0; pass < 2 && !have_symtab; pass++) {
		scn = NULL;
		while ((scn = elf_nextscn(dw->elf, scn)) != NULL) {
			GElf_Shdr sh;
			Elf_Data *data;
			size_t n, i;

			if (!gelf_getshdr(scn, &sh))
				continue;
			if (sh.sh_type != (pass == 0 ? SHT_SYMTAB : SHT_DYNSYM))
				continue;
			data = elf_getdata(scn, NULL);
			if (!data || sh.sh_entsize == 0)
				continue;
			have_symtab = true;
			n = data->d_size / sh.sh_entsize;
			for (i = 0; i < n; i++) {
				GElf_Sym s;
				const char *name;
				if (!gelf_getsym(data, (int)i, &s))
					break;
				if (GELF_ST_TYPE(s.st_info) != STT_FUNC || s.st_value == 0 ||
				    s.st_shndx == SHN_UNDEF)
					continue;
				name = elf_strptr(dw->elf, sh.sh_link, s.st_name);
				if (!name || !*name)
					continue;
				if (!ns_dwarf__grow((void **)&dw->syms, &cap, dw->nsyms + 1,
				                    sizeof(*dw->syms)))
					return;
				dw->syms[dw->nsyms++] = (struct ns_dwarf__sym){
				        s.st_value, s.st_size, ns_arena_strdup(&dw->arena, name)};
			}
		}
	}
	if (dw->nsyms)
		qsort(dw->syms, dw->nsyms, sizeof(*dw->syms), sym_cmp);
}

const struct ns_dwarf__sym *ns_dwarf__sym_at(struct ns_dwarf *dw, uint64_t addr)
{
	size_t lo = 0, hi;

	if (!dw->syms_loaded)
		load_syms(dw);
	hi = dw->nsyms;
	while (lo < hi) { // first symbol with addr > @addr
		size_t mid = lo + (hi - lo) / 2;
		if (dw->syms[mid].addr <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo > 0) {
		const struct ns_dwarf__sym *s = &dw->syms[--lo];
		if (addr - s->addr < (s->size ? s->size : 1))
			return s->name ? s : NULL;
		if (s->addr != dw->syms[lo > 0 ? lo - 1 : 0].addr)
			break;
	}
	return NULL;
}

/* ---- DIE helpers ---- */

struct ns_err *ns_dwarf__offdie(struct ns_dwarf *dw, Dwarf_Off off, Dwarf_Die *out)
{
	Dwarf_Error de = NULL;
	int rc = dwarf_offdie_b(dw->dbg, off, 1, out, &de);

	if (rc == DW_DLV_OK)
		return NULL;
	if (rc == DW_DLV_ERROR)
		return ns_dwarf__err(dw, de, "reading DIE");
	return ns_err_create(NS_ERR_FORMAT, "%s: no DIE at offset 0x%llx", dw->path,
	                     (unsigned long long)off);
}

static bool get_attr(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, Dwarf_Attribute *a)
{
	Dwarf_Error de = NULL;
	int rc = dwarf_attr(die, at, a, &de);

	if (rc == DW_DLV_ERROR)
		ns_dwarf__drop(dw, de);
	return rc == DW_DLV_OK;
}

bool ns_dwarf__attr_udata(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t *out)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Unsigned u;
	Dwarf_Signed s;
	int rc;

	if (!get_attr(dw, die, at, &a))
		return false;
	rc = dwarf_formudata(a, &u, &de);
	if (rc == DW_DLV_OK) {
		*out = u;
	} else {
		ns_dwarf__drop(dw, de);
		de = NULL;
		rc = dwarf_formsdata(a, &s, &de);
		if (rc == DW_DLV_OK)
			*out = (uint64_t)s;
		else
			ns_dwarf__drop(dw, de);
	}
	dwarf_dealloc_attribute(a);
	return rc == DW_DLV_OK;
}

bool ns_dwarf__attr_sdata(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, int64_t *out)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Half form = 0;
	Dwarf_Unsigned u;
	Dwarf_Signed s;
	int rc;

	if (!get_attr(dw, die, at, &a))
		return false;
	if (dwarf_whatform(a, &form, &de) != DW_DLV_OK) {
		ns_dwarf__drop(dw, de);
		de = NULL;
	}
	// data1..data8 carry no sign: formsdata sign-extends them, which is what an
	// enumerator of a signed enum wants; udata stays unsigned.
	if (form == DW_FORM_udata) {
		rc = dwarf_formudata(a, &u, &de);
		s = (Dwarf_Signed)u;
	} else {
		rc = dwarf_formsdata(a, &s, &de);
	}
	if (rc == DW_DLV_OK)
		*out = s;
	else
		ns_dwarf__drop(dw, de);
	dwarf_dealloc_attribute(a);
	return rc == DW_DLV_OK;
}

bool ns_dwarf__attr_flag(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Bool b = 0;

	if (!get_attr(dw, die, at, &a))
		return false;
	if (dwarf_formflag(a, &b, &de) != DW_DLV_OK) {
		ns_dwarf__drop(dw, de);
		b = 0;
	}
	dwarf_dealloc_attribute(a);
	return b != 0;
}

bool ns_dwarf__attr_ref(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, Dwarf_Off *out)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Off off;
	int rc;

	if (!get_attr(dw, die, at, &a))
		return false;
	rc = dwarf_global_formref(a, &off, &de);
	if (rc == DW_DLV_OK)
		*out = off;
	else
		ns_dwarf__drop(dw, de);
	dwarf_dealloc_attribute(a);
	return rc == DW_DLV_OK;
}

// Follow DW_AT_abstract_origin, then DW_AT_specification: a concrete inlined or
// out-of-line instance keeps name, type and decl_line in the abstract DIE.
static bool origin_of(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Die *out)
{
	Dwarf_Off off;
	struct ns_err *err;

	if (!ns_dwarf__attr_ref(dw, die, DW_AT_abstract_origin, &off) &&
	    !ns_dwarf__attr_ref(dw, die, DW_AT_specification, &off))
		return false;
	err = ns_dwarf__offdie(dw, off, out);
	if (err) {
		ns_err_destroy(err);
		return false;
	}
	return true;
}

const char *ns_dwarf__die_name(struct ns_dwarf *dw, Dwarf_Die die)
{
	Dwarf_Die cur = die, next;
	const char *res = NULL;

	for (int hop = 0; hop < 4; hop++) {
		char *name = NULL;
		Dwarf_Error de = NULL;
		int rc = dwarf_diename(cur, &name, &de);
		if (rc == DW_DLV_ERROR)
			ns_dwarf__drop(dw, de);
		if (rc == DW_DLV_OK && name) {
			res = ns_arena_strdup(&dw->arena, name);
			break;
		}
		if (!origin_of(dw, cur, &next))
			break;
		if (cur != die)
			dwarf_dealloc_die(cur);
		cur = next;
	}
	if (cur != die)
		dwarf_dealloc_die(cur);
	return res;
}

/* Ask @get on @die, then along its DW_AT_abstract_origin / DW_AT_specification chain
 * (at most 4 hops), until it answers. */
static bool follow_origins(struct ns_dwarf *dw, Dwarf_Die die,
                           bool (*get)(struct ns_dwarf *dw, Dwarf_Die d, Dwarf_Half at, void *out),
                           Dwarf_Half at, void *out)
{
	Dwarf_Die cur = die, next;
	bool ok = false;

	for (int hop = 0; hop < 4; hop++) {
		ok = get(dw, cur, at, out);
		if (ok || !origin_of(dw, cur, &next))
			break;
		if (cur != die)
			dwarf_dealloc_die(cur);
		cur = next;
	}
	if (cur != die)
		dwarf_dealloc_die(cur);
	return ok;
}

static bool get_udata(struct ns_dwarf *dw, Dwarf_Die d, Dwarf_Half at, void *out)
{
	return ns_dwarf__attr_udata(dw, d, at, out);
}

static bool get_ref(struct ns_dwarf *dw, Dwarf_Die d, Dwarf_Half at, void *out)
{
	return ns_dwarf__attr_ref(dw, d, at, out);
}

bool ns_dwarf__attr_udata_o(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, uint64_t *out)
{
	return follow_origins(dw, die, get_udata, at, out);
}

bool ns_dwarf__attr_ref_o(struct ns_dwarf *dw, Dwarf_Die die, Dwarf_Half at, Dwarf_Off *out)
{
	return follow_origins(dw, die, get_ref, at, out);
}

bool ns_dwarf__ranges_contain(const struct ns_dwarf__range *r, size_t n, uint64_t pc)
{
	for (size_t i = 0; i < n; i++)
		if (pc >= r[i].lo && pc < r[i].hi)
			return true;
	return false;
}

static bool push_range(struct ns_dwarf *dw, struct ns_dwarf__range **v, size_t *n, size_t *cap,
                       uint64_t lo, uint64_t hi)
{
	(void)dw;
	if (hi <= lo)
		return true;
	if (!ns_dwarf__grow((void **)v, cap, *n + 1, sizeof(**v)))
		return false;
	(*v)[(*n)++] = (struct ns_dwarf__range){lo, hi};
	return true;
}

static struct ns_err *ranges_attr(struct ns_dwarf *dw, Dwarf_Die die, uint64_t cu_base,
                                  struct ns_dwarf__range **v, size_t *n, size_t *cap)
{
	Dwarf_Attribute a;
	Dwarf_Error de = NULL;
	Dwarf_Half form = 0, version = 0, offset_size = 0;
	Dwarf_Unsigned val = 0;
	struct ns_err *err = NULL;
	int rc;

	if (!get_attr(dw, die, DW_AT_ranges, &a))
		return NULL;
	if (dwarf_whatform(a, &form, &de) != DW_DLV_OK) {
		dwarf_dealloc_attribute(a);
		return ns_dwarf__err(dw, de, "DW_AT_ranges");
	}
	if (form == DW_FORM_rnglistx)
		rc = dwarf_formudata(a, &val, &de);
	else
		rc = dwarf_global_formref(a, &val, &de);
	if (rc != DW_DLV_OK) {
		dwarf_dealloc_attribute(a);
		return ns_dwarf__err(dw, de, "DW_AT_ranges");
	}
	if (dwarf_get_version_of_die(die, &version, &offset_size) != DW_DLV_OK)
		version = 4;
	if (version >= 5) {
		Dwarf_Rnglists_Head head = NULL;
		Dwarf_Unsigned count = 0, global_off = 0, i;

		rc = dwarf_rnglists_get_rle_head(a, form, val, &head, &count, &global_off, &de);
		if (rc == DW_DLV_ERROR)
			err = ns_dwarf__err(dw, de, "DW_AT_ranges (.debug_rnglists)");
		for (i = 0; rc == DW_DLV_OK && i < count && !err; i++) {
			unsigned entrylen = 0, code = 0;
			Dwarf_Unsigned raw1, raw2, c1 = 0, c2 = 0;
			Dwarf_Bool unavail = 0;
			if (dwarf_get_rnglists_entry_fields_a(head, i, &entrylen, &code, &raw1,
			                                      &raw2, &unavail, &c1, &c2,
			                                      &de) != DW_DLV_OK) {
				err = ns_dwarf__err(dw, de, "rnglist entry");
				break;
			}
			if (unavail)
				continue;
			if (code == DW_RLE_offset_pair || code == DW_RLE_start_end ||
			    code == DW_RLE_start_length || code == DW_RLE_startx_endx ||
			    code == DW_RLE_startx_length)
				if (!push_range(dw, v, n, cap, c1, c2))
					err = &ns_err_nomem;
		}
		if (head)
			dwarf_dealloc_rnglists_head(head);
	} else {
		Dwarf_Ranges *rl = NULL;
		Dwarf_Signed cnt = 0, i;
		Dwarf_Unsigned bytes = 0;
		Dwarf_Off real = 0;
		uint64_t base = cu_base;

		rc = dwarf_get_ranges_b(dw->dbg, val, die, &real, &rl, &cnt, &bytes, &de);
		if (rc == DW_DLV_ERROR)
			err = ns_dwarf__err(dw, de, "DW_AT_ranges (.debug_ranges)");
		for (i = 0; rc == DW_DLV_OK && i < cnt && !err; i++) {
			if (rl[i].dwr_type == DW_RANGES_ADDRESS_SELECTION)
				base = rl[i].dwr_addr2;
			else if (rl[i].dwr_type == DW_RANGES_ENTRY &&
			         !push_range(dw, v, n, cap, base + rl[i].dwr_addr1,
			                     base + rl[i].dwr_addr2))
				err = &ns_err_nomem;
		}
		if (rc == DW_DLV_OK)
			dwarf_ranges_dealloc(dw->dbg, rl, cnt);
	}
	dwarf_dealloc_attribute(a);
	return err;
}

struct ns_err *ns_dwarf__die_ranges(struct ns_dwarf *dw, Dwarf_Die die, uint64_t cu_base,
                                    struct ns_dwarf__range **out, size_t *n)
{
	struct ns_dwarf__range *v = NULL, *res;
	size_t nv = 0, cap = 0;
	Dwarf_Addr lo = 0, hi = 0;
	Dwarf_Half form = 0;
	enum Dwarf_Form_Class cls = DW_FORM_CLASS_UNKNOWN;
	Dwarf_Error de = NULL;
	struct ns_err *err = NULL;
	int rc;

	*out = NULL;
	*n = 0;
	rc = dwarf_lowpc(die, &lo, &de);
	if (rc == DW_DLV_ERROR) {
		ns_dwarf__drop(dw, de);
		de = NULL;
	}
	if (rc == DW_DLV_OK) {
		int rc2 = dwarf_highpc_b(die, &hi, &form, &cls, &de);
		if (rc2 == DW_DLV_ERROR) {
			ns_dwarf__drop(dw, de);
			de = NULL;
		}
		if (rc2 == DW_DLV_OK) {
			// DWARF 4+: a constant-class high_pc is the length.
			if (cls == DW_FORM_CLASS_CONSTANT)
				hi += lo;
			if (!push_range(dw, &v, &nv, &cap, lo, hi))
				err = &ns_err_nomem;
		}
	}
	if (!err && nv == 0)
		err = ranges_attr(dw, die, cu_base, &v, &nv, &cap);
	if (!err && nv) {
		res = ns_arena_calloc(&dw->arena, nv, sizeof(*res));
		if (!res) {
			err = &ns_err_nomem;
		} else {
			memcpy(res, v, nv * sizeof(*res));
			*out = res;
			*n = nv;
		}
	}
	free(v);
	return err;
}

/* ---- CU index ---- */

struct ns_err *ns_dwarf__load_cus(struct ns_dwarf *dw)
{
	size_t cap = 0;
	struct ns_err *err = ns_dwarf__need_dwarf(dw);

	if (err || dw->cus_loaded)
		return err;
	dw->cus_loaded = true;
	// One pass over the CU headers only (no DIE trees): libdwarf needs it to know
	// the CUs, and the CU DIE gives each CU's ranges for address lookups.
	for (;;) {
		Dwarf_Unsigned hlen = 0, abbrev = 0, typeoff = 0, next = 0;
		Dwarf_Half version = 0, asize = 0, lsize = 0, esize = 0, cutype = 0;
		Dwarf_Sig8 sig;
		Dwarf_Error de = NULL;
		Dwarf_Die cu_die = NULL;
		Dwarf_Off off = 0;
		Dwarf_Addr low = 0;
		struct ns_dwarf__cu *cu;
		int rc;

		rc = dwarf_next_cu_header_d(dw->dbg, 1, &hlen, &version, &abbrev, &asize, &lsize,
		                            &esize, &sig, &typeoff, &next, &cutype, &de);
		if (rc == DW_DLV_NO_ENTRY)
			break;
		if (rc == DW_DLV_ERROR)
			return ns_dwarf__err(dw, de, "reading CU header");
		rc = dwarf_siblingof_b(dw->dbg, NULL, 1, &cu_die, &de);
		if (rc == DW_DLV_ERROR)
			return ns_dwarf__err(dw, de, "reading CU DIE");
		if (rc != DW_DLV_OK)
			continue;
		if (!ns_dwarf__grow((void **)&dw->cus, &cap, dw->ncus + 1, sizeof(*dw->cus))) {
			dwarf_dealloc_die(cu_die);
			return &ns_err_nomem;
		}
		cu = &dw->cus[dw->ncus];
		memset(cu, 0, sizeof(*cu));
		if (dwarf_dieoffset(cu_die, &off, &de) != DW_DLV_OK) {
			dwarf_dealloc_die(cu_die);
			return ns_dwarf__err(dw, de, "CU DIE offset");
		}
		cu->die_off = off;
		cu->version = version;
		cu->name = ns_dwarf__die_name(dw, cu_die);
		if (dwarf_lowpc(cu_die, &low, &de) == DW_DLV_ERROR) {
			ns_dwarf__drop(dw, de);
			low = 0;
		}
		err = ns_dwarf__die_ranges(dw, cu_die, low, &cu->ranges, &cu->nranges);
		dwarf_dealloc_die(cu_die);
		if (err) {
			// Keep the CU without ranges: its lines and types still work.
			ns_err_destroy(err);
			err = NULL;
		}
		dw->ncus++;
	}
	return NULL;
}

struct ns_dwarf__cu *ns_dwarf__cu_at(struct ns_dwarf *dw, uint64_t pc)
{
	size_t i;

	for (i = 0; i < dw->ncus; i++)
		if (ns_dwarf__ranges_contain(dw->cus[i].ranges, dw->cus[i].nranges, pc))
			return &dw->cus[i];
	return NULL;
}

struct ns_err *ns_dwarf__section(struct ns_dwarf *dw, const char *name, const uint8_t **data,
                                 size_t *size)
{
	Elf_Scn *scn = NULL;
	size_t shstrndx;

	if (elf_getshdrstrndx(dw->elf, &shstrndx) != 0)
		return ns_err_create(NS_ERR_FORMAT, "%s: no section name table", dw->path);
	while ((scn = elf_nextscn(dw->elf, scn)) != NULL) {
		GElf_Shdr sh;
		const char *sn;
		Elf_Data *d;

		if (!gelf_getshdr(scn, &sh))
			continue;
		sn = elf_strptr(dw->elf, shstrndx, sh.sh_name);
		if (!sn || strcmp(sn, name) != 0)
			continue;
		if (sh.sh_type == SHT_NOBITS)
			break;
		// libdwarf's offsets refer to the uncompressed bytes.
		if ((sh.sh_flags & SHF_COMPRESSED) && elf_compress(scn, 0, 0) < 0)
			return ns_err_create(NS_ERR_UNSUPPORTED, "%s: cannot decompress %s: %s",
			                     dw->path, name, elf_errmsg(-1));
		d = elf_getdata(scn, NULL);
		if (!d || !d->d_buf)
			break;
		*data = d->d_buf;
		*size = d->d_size;
		return NULL;
	}
	return ns_err_create(NS_ERR_FORMAT, "%s: no section %s", dw->path, name);
}

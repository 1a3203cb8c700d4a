/* Compiler: expressions are compiled against hand-built DWARF types and locations that
 * describe real C objects of this test process, run with ns_ax_run over a fake
 * memory/register environment, and compared with the value the C compiler computes for
 * the very same expression text on the same objects. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ax/ax.h"
#include "base/test.h"
#include "expr/expr.h"

// The test expressions compare mixed signedness on purpose: that is what they test.
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Woverflow"

/* ---- The real C objects ---- */

enum kind { BOOK, FOOD, TOOL };

struct item {
	unsigned id;
	char sku[12];
	enum kind kind;
	union {
		double weight;
		int pages;
	} u;
	struct item *next;
};

struct shelf {
	const char *label;
	struct item *head;
	int count;
	short bins[3];
};

struct flags {
	unsigned a : 3;
	int b : 5;
	unsigned c : 20;
};

typedef unsigned long ulong_t;

static struct item items[4];
static struct shelf sh;
static struct flags bf;
static unsigned char uc = 200;
static unsigned long big = 0xfffffffffffffff0ul;
static const char label[] = "north";
static struct shelf sh2; /* label unreadable, head -> items[3] */
/* Locals of the fake frame (copies also live in the fake stack / registers). */
static struct item *it;
static struct shelf *s;
static unsigned qty = 7;
static long total = -12345;
static int w = -7;
static char c = -3;
static short neg = -5;
static struct item *rp; /* a pointer parameter in a register */

/* ---- Hand-built DWARF types (offsets as gcc lays the structs out) ---- */

static struct ns_dwarf_type T_int = {
        .kind = NS_DT_BASE, .name = "int", .size = 4, .is_signed = true};
static struct ns_dwarf_type T_uint = {.kind = NS_DT_BASE, .name = "unsigned int", .size = 4};
static struct ns_dwarf_type T_long = {
        .kind = NS_DT_BASE, .name = "long int", .size = 8, .is_signed = true};
static struct ns_dwarf_type T_ulong = {.kind = NS_DT_BASE, .name = "long unsigned int", .size = 8};
static struct ns_dwarf_type T_short = {
        .kind = NS_DT_BASE, .name = "short int", .size = 2, .is_signed = true};
static struct ns_dwarf_type T_char = {
        .kind = NS_DT_BASE, .name = "char", .size = 1, .is_signed = true, .is_char = true};
static struct ns_dwarf_type T_uchar = {
        .kind = NS_DT_BASE, .name = "unsigned char", .size = 1, .is_char = true};
static struct ns_dwarf_type T_double = {.kind = NS_DT_FLOAT, .name = "double", .size = 8};
static struct ns_dwarf_type T_ulong_t = {
        .kind = NS_DT_TYPEDEF, .name = "ulong_t", .target = &T_ulong};
static struct ns_dwarf_type T_cchar = {.kind = NS_DT_CONST, .target = &T_char};
static struct ns_dwarf_type T_cchar_ptr = {.kind = NS_DT_POINTER, .size = 8, .target = &T_cchar};
static struct ns_dwarf_type T_sku = {
        .kind = NS_DT_ARRAY, .size = 12, .target = &T_char, .count = 12, .count_known = true};
static struct ns_dwarf_type T_bins = {
        .kind = NS_DT_ARRAY, .size = 6, .target = &T_short, .count = 3, .count_known = true};
static struct ns_dwarf_enumerator kind_enums[] = {{"BOOK", 0}, {"FOOD", 1}, {"TOOL", 2}};
static struct ns_dwarf_type T_kind = {.kind = NS_DT_ENUM,
                                      .name = "kind",
                                      .size = 4,
                                      .target = &T_uint,
                                      .nenums = 3,
                                      .enums = kind_enums};
static struct ns_dwarf_member u_members[] = {{"weight", 0, 0, 0, &T_double},
                                             {"pages", 0, 0, 0, &T_int}};
static struct ns_dwarf_type T_u = {
        .kind = NS_DT_UNION, .size = 8, .nmembers = 2, .members = u_members};
static struct ns_dwarf_type T_item;
static struct ns_dwarf_type T_item_ptr = {.kind = NS_DT_POINTER, .size = 8, .target = &T_item};
static struct ns_dwarf_member item_members[] = {
        {"id", 0, 0, 0, &T_uint}, {"sku", 4, 0, 0, &T_sku},        {"kind", 16, 0, 0, &T_kind},
        {"u", 24, 0, 0, &T_u},    {"next", 32, 0, 0, &T_item_ptr},
};
static struct ns_dwarf_type T_item = {
        .kind = NS_DT_STRUCT, .name = "item", .size = 40, .nmembers = 5, .members = item_members};
static struct ns_dwarf_type T_items = {
        .kind = NS_DT_ARRAY, .size = 160, .target = &T_item, .count = 4, .count_known = true};
static struct ns_dwarf_member shelf_members[] = {
        {"label", 0, 0, 0, &T_cchar_ptr},
        {"head", 8, 0, 0, &T_item_ptr},
        {"count", 16, 0, 0, &T_int},
        {"bins", 20, 0, 0, &T_bins},
};
static struct ns_dwarf_type T_shelf = {
        .kind = NS_DT_STRUCT, .name = "shelf", .size = 32, .nmembers = 4, .members = shelf_members};
static struct ns_dwarf_type T_shelf_ptr = {.kind = NS_DT_POINTER, .size = 8, .target = &T_shelf};
static struct ns_dwarf_member flags_members[] = {
        {"a", 0, 3, 0, &T_uint},
        {"b", 0, 5, 3, &T_int},
        {"c", 0, 20, 8, &T_uint},
};
static struct ns_dwarf_type T_flags = {
        .kind = NS_DT_STRUCT, .name = "flags", .size = 4, .nmembers = 3, .members = flags_members};

NS_TEST(test_expr_compile__layout_matches_c)
{
	// The hand-written offsets above must be the C compiler's.
	NS_CHECK_INT(offsetof(struct item, sku), 4);
	NS_CHECK_INT(offsetof(struct item, kind), 16);
	NS_CHECK_INT(offsetof(struct item, u), 24);
	NS_CHECK_INT(offsetof(struct item, next), 32);
	NS_CHECK_INT(sizeof(struct item), 40);
	NS_CHECK_INT(offsetof(struct shelf, bins), 20);
	NS_CHECK_INT(sizeof(struct shelf), 32);
	NS_CHECK_INT(sizeof(struct flags), 4);
}

/* ---- Locations ---- */

enum { CFA_OFF = 128, RSP_OFF = 112 }; /* CFA = rsp + 16 */
static _Alignas(16) uint8_t stack[256];
static uint64_t regs[NS_AX_NREGS];

static size_t put_sleb(uint8_t *p, int64_t v)
{
	size_t n = 0;
	for (;;) {
		uint8_t b = v & 0x7f;
		v >>= 7;
		if ((v == 0 && !(b & 0x40)) || (v == -1 && (b & 0x40))) {
			p[n++] = b;
			return n;
		}
		p[n++] = b | 0x80;
	}
}

struct loc {
	uint8_t b[16];
	size_t n;
};

static struct loc fbreg(int64_t off)
{
	struct loc l = {{0x91}, 1};
	l.n += put_sleb(l.b + 1, off);
	return l;
}

static struct loc breg(unsigned r, int64_t off)
{
	struct loc l = {{(uint8_t)(0x70 + r)}, 1};
	l.n += put_sleb(l.b + 1, off);
	return l;
}

static const uint64_t LOAD_BIAS = 0x1000;

static struct loc addr_loc(const void *p)
{
	struct loc l = {{0x03}, 9};
	uint64_t a = (uint64_t)(uintptr_t)p - LOAD_BIAS;
	memcpy(l.b + 1, &a, 8);
	return l;
}

static const uint8_t frame_base_cfa[] = {0x9c}; /* DW_OP_call_frame_cfa */
static struct loc L_it, L_total, L_w, L_c, L_s, L_neg;
static const uint8_t L_qty[] = {0x51};                     /* DW_OP_reg1 (rdx) */
static const uint8_t L_rp[] = {0x55};                      /* DW_OP_reg5 (rdi) */
static const uint8_t L_entry[] = {0xa3, 0x01, 0x55, 0x9f}; /* entry_value(reg5); stack_value */
static struct ns_dwarf_var locals[16];
static struct ns_dwarf_scope scope_locals;
static struct ns_expr_scope scope;

struct global {
	const char *name;
	struct ns_dwarf_type *type;
	const void *addr;
	struct loc l;
};
static struct global globals[] = {
        {"items", &T_items, items, {{0}, 0}}, {"sh", &T_shelf, &sh, {{0}, 0}},
        {"bf", &T_flags, &bf, {{0}, 0}},      {"uc", &T_uchar, &uc, {{0}, 0}},
        {"big", &T_ulong, &big, {{0}, 0}},    {"gone", &T_int, NULL, {{0}, 0}},
        {"sh2", &T_shelf, &sh2, {{0}, 0}},
};

static struct ns_err *lookup_global(void *ctx, const char *name, struct ns_arena *arena,
                                    struct ns_dwarf_var *out)
{
	(void)ctx;
	(void)arena;
	for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++) {
		if (strcmp(globals[i].name, name) == 0) {
			*out = (struct ns_dwarf_var){.name = globals[i].name,
			                             .kind = NS_DWARF_GLOBAL,
			                             .type = globals[i].type,
			                             .loc = globals[i].l.b,
			                             .loc_len = globals[i].l.n};
			return NULL;
		}
	}
	return ns_err_create(NS_ERR_NOT_FOUND, "no global %s", name);
}

static struct ns_dwarf_type *lookup_type(void *ctx, const char *name)
{
	(void)ctx;
	if (strcmp(name, "struct item") == 0)
		return &T_item;
	if (strcmp(name, "struct shelf") == 0)
		return &T_shelf;
	if (strcmp(name, "enum kind") == 0)
		return &T_kind;
	if (strcmp(name, "ulong_t") == 0)
		return &T_ulong_t;
	return NULL;
}

static void add_local(size_t i, const char *name, struct ns_dwarf_type *type, const uint8_t *loc,
                      size_t len)
{
	locals[i] = (struct ns_dwarf_var){
	        .name = name, .kind = NS_DWARF_LOCAL, .type = type, .loc = loc, .loc_len = len};
}

static void put_stack(int64_t cfa_off, const void *val, size_t n)
{
	memcpy(stack + CFA_OFF + cfa_off, val, n);
}

static void setup(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	for (int k = 0; k < 4; k++) {
		items[k].id = 100 + (unsigned)k;
		snprintf(items[k].sku, sizeof items[k].sku, "SKU-0-%d", k);
		items[k].kind = (enum kind)(k % 3);
		if (items[k].kind == BOOK)
			items[k].u.pages = 120 + k;
		else
			items[k].u.weight = 0.25 * (k + 1);
		items[k].next = k < 3 ? &items[k + 1] : NULL;
	}
	sh = (struct shelf){label, &items[0], 3, {1, -2, 3}};
	sh2 = (struct shelf){(const char *)0x20, &items[3], 1, {0, 0, 0}};
	bf.a = 5;
	bf.b = -3;
	bf.c = 12345;
	it = &items[1];
	s = &sh;
	rp = &items[0];

	// Fake frame: CFA = rsp + 16; rbp = rsp.
	regs[7] = (uint64_t)(uintptr_t)(stack + RSP_OFF);
	regs[6] = regs[7];
	regs[3] = 0xdeadbeef00000000ull | qty; /* garbage above the 32-bit qty in rdx */
	regs[5] = (uint64_t)(uintptr_t)rp;
	L_it = fbreg(-40);
	put_stack(-40, &it, 8);
	L_total = fbreg(-48);
	put_stack(-48, &total, 8);
	L_w = fbreg(-68);
	put_stack(-68, &w, 4);
	L_c = fbreg(-69);
	put_stack(-69, &c, 1);
	L_s = breg(6, -48); /* rbp - 48 = CFA - 64 */
	put_stack(-64, &s, 8);
	L_neg = breg(6, -56); /* CFA - 72 */
	put_stack(-72, &neg, 2);
	size_t i = 0;
	add_local(i++, "it", &T_item_ptr, L_it.b, L_it.n);
	add_local(i++, "qty", &T_uint, L_qty, sizeof L_qty);
	add_local(i++, "total", &T_long, L_total.b, L_total.n);
	add_local(i++, "w", &T_int, L_w.b, L_w.n);
	add_local(i++, "c", &T_char, L_c.b, L_c.n);
	add_local(i++, "s", &T_shelf_ptr, L_s.b, L_s.n);
	add_local(i++, "neg", &T_short, L_neg.b, L_neg.n);
	add_local(i++, "rp", &T_item_ptr, L_rp, sizeof L_rp);
	add_local(i++, "entry", &T_int, L_entry, sizeof L_entry);
	add_local(i++, "optout", &T_int, NULL, 0);
	locals[i] = (struct ns_dwarf_var){
	        .name = "konst", .type = &T_int, .has_const = true, .const_value = -42};
	i++;
	scope_locals = (struct ns_dwarf_scope){.function = "restock",
	                                       .frame_base = frame_base_cfa,
	                                       .frame_base_len = 1,
	                                       .nvars = i,
	                                       .vars = locals};
	for (size_t g = 0; g < sizeof(globals) / sizeof(globals[0]); g++)
		if (globals[g].addr)
			globals[g].l = addr_loc(globals[g].addr);
	scope = (struct ns_expr_scope){.locals = &scope_locals,
	                               .lookup_global = lookup_global,
	                               .lookup_type = lookup_type,
	                               .load_bias = LOAD_BIAS,
	                               .cfa_known = true,
	                               .cfa_reg = 7,
	                               .cfa_offset = 16};
}

/* ---- Fake target: live memory regions, or only the bytes a collection traced ---- */

struct region {
	uint64_t addr;
	size_t len;
};

struct block {
	uint64_t addr;
	size_t len;
	uint8_t bytes[4096];
};

struct env {
	bool snapshot; /* read only from blocks */
	struct block *blocks;
	size_t nblocks, traced_bytes;
};

static struct region live_regions(size_t i)
{
	switch (i) {
	case 0:
		return (struct region){(uintptr_t)items, sizeof items};
	case 1:
		return (struct region){(uintptr_t)&sh, sizeof sh};
	case 2:
		return (struct region){(uintptr_t)&bf, sizeof bf};
	case 3:
		return (struct region){(uintptr_t)&uc, sizeof uc};
	case 4:
		return (struct region){(uintptr_t)&big, sizeof big};
	case 5:
		return (struct region){(uintptr_t)label, sizeof label};
	case 6:
		return (struct region){(uintptr_t)stack, sizeof stack};
	case 7:
		return (struct region){(uintptr_t)&sh2, sizeof sh2};
	default:
		return (struct region){0, 0};
	}
}

static bool live_readable(uint64_t addr, size_t len)
{
	for (size_t i = 0;; i++) {
		struct region r = live_regions(i);
		if (!r.len)
			return false;
		if (addr >= r.addr && addr - r.addr <= r.len && len <= r.len - (addr - r.addr))
			return true;
	}
}

static bool snap_read(struct env *e, void *dst, uint64_t addr, size_t len)
{
	// Byte by byte: a read may span blocks.
	for (size_t k = 0; k < len; k++) {
		bool found = false;
		for (size_t i = 0; i < e->nblocks && !found; i++) {
			struct block *b = &e->blocks[i];
			if (addr + k >= b->addr && addr + k < b->addr + b->len) {
				((uint8_t *)dst)[k] = b->bytes[addr + k - b->addr];
				found = true;
			}
		}
		if (!found)
			return false;
	}
	return true;
}

static int env_read_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	struct env *e = ctx;
	if (e->snapshot)
		return snap_read(e, dst, addr, len) ? 0 : -1;
	if (!live_readable(addr, len))
		return -1;
	memcpy(dst, (const void *)(uintptr_t)addr, len);
	return 0;
}

static int env_read_reg(void *ctx, unsigned regno, uint64_t *val)
{
	(void)ctx;
	if (regno >= NS_AX_NREGS)
		return -1;
	*val = regs[regno];
	return 0;
}

static int env_trace(void *ctx, uint64_t addr, size_t len, bool nul_stop)
{
	struct env *e = ctx;
	if (!e->blocks)
		return 0;
	// Like the agent: record the readable prefix only.
	size_t n = 0;
	while (n < len && n < 4096 && live_readable(addr + n, 1)) {
		n++;
		if (nul_stop && *(const uint8_t *)(uintptr_t)(addr + n - 1) == 0)
			break;
	}
	if (n == 0)
		return 0;
	if (e->nblocks == 64)
		return -1;
	struct block *b = &e->blocks[e->nblocks++];
	b->addr = addr;
	b->len = n;
	memcpy(b->bytes, (const void *)(uintptr_t)addr, n);
	e->traced_bytes += n;
	return 0;
}

static void run(const uint8_t *code, size_t len, struct env *e, struct ns_ax_result *res)
{
	struct ns_ax_env env = {.read_mem = env_read_mem,
	                        .read_reg = env_read_reg,
	                        .trace_mem = env_trace,
	                        .ctx = e};
	ns_ax_run(code, len, &env, res);
}

/* Compile @src plain, run it live, compare with @want; then compile it with COLLECT, run
 * it live recording the traced bytes, and re-run the plain program over only those. */
static void check_value(int line, const char *src, uint64_t want)
{
	struct ns_arena arena;
	struct ns_expr_prog p, pc;
	struct ns_ax_result r;
	struct env live = {0};
	ns_arena_init(&arena);
	setup();
	struct ns_err *err = ns_expr_compile(src, &scope, 0, &arena, &p);
	if (err) {
		ns_test_fail(__FILE__, line, "compile '%s': %s", src, err->msg);
		ns_err_destroy(err);
		goto out;
	}
	run(p.code, p.len, &live, &r);
	if (r.status != NS_AX_OK || r.value != want || p.kind != NS_EXPR_RVALUE) {
		ns_test_fail(__FILE__, line, "'%s': status %d kind %d value %#llx, want %#llx", src,
		             r.status, p.kind, (unsigned long long)r.value,
		             (unsigned long long)want);
		goto out;
	}
	if ((err = ns_expr_compile(src, &scope, NS_EXPR_COLLECT, &arena, &pc))) {
		ns_test_fail(__FILE__, line, "compile COLLECT '%s': %s", src, err->msg);
		ns_err_destroy(err);
		goto out;
	}
	struct env rec = {.blocks = calloc(64, sizeof(struct block))};
	run(pc.code, pc.len, &rec, &r);
	if (r.status != NS_AX_OK || r.value != want)
		ns_test_fail(__FILE__, line, "'%s' COLLECT: status %d value %#llx", src, r.status,
		             (unsigned long long)r.value);
	rec.snapshot = true;
	run(p.code, p.len, &rec, &r);
	if (r.status != NS_AX_OK || r.value != want)
		ns_test_fail(__FILE__, line,
		             "'%s' over the snapshot: status %d value %#llx (fault %#llx)", src,
		             r.status, (unsigned long long)r.value,
		             (unsigned long long)r.fault_addr);
	free(rec.blocks);
out:
	ns_arena_deinit(&arena);
}

/* The C compiler evaluates the same text on the same objects. */
#define EV(e) check_value(__LINE__, #e, (uint64_t)(e))

NS_TEST(test_expr_compile__members_and_pointers)
{
	setup();
	EV(it->id);
	EV(it->next->id);
	EV(it->next->next->id);
	EV(it->sku[2]);
	EV(it->sku[4] + 1);
	EV(*(it->sku + 4));
	EV(it->kind);
	EV(it->u.pages);
	EV(items[0].u.pages);
	EV(items[3].u.pages);
	EV((it + 1)->id);
	EV(&items[3] - it);
	EV(it - &items[3]);
	EV(&items[2] == it->next);
	EV(s->head->next == it);
	EV(s->bins[1]);
	EV(s->bins[2] * s->bins[1]);
	EV(sh.bins[0] + sh.count);
	EV(sh.head->sku[0]);
	EV(&sh.bins[2]);
	EV(&it->next);
	EV(*&it->id);
	EV(it->next[1].id);
	EV(2 [items].id);
	EV(items + 2);
	EV(s->label);
	EV(s->label[1]);
	EV(*s->label);
	EV(sizeof(struct item));
	EV(sizeof it->sku);
	EV(sizeof *s);
	EV(((struct item *)s->head)->id);
	EV((struct item *)0 == it);
	EV(!it);
	EV(it != 0);
	EV(rp->id);
	EV(rp->next->next->id);
}

NS_TEST(test_expr_compile__enums)
{
	setup();
	EV(it->kind == TOOL);
	EV(it->kind == FOOD);
	EV(it->next->kind == TOOL);
	EV(TOOL == it->next->kind);
	EV(TOOL - it->kind);
	EV(it->kind != BOOK && it->id > 100);
	EV(TOOL);
	EV(items[0].kind == BOOK ? items[0].u.pages : -1);
	EV(it->kind == FOOD ? it->id : 99);
}

NS_TEST(test_expr_compile__signedness)
{
	setup();
	EV((short)-1 < 0);
	EV((unsigned short)-1 < 0);
	EV((unsigned)-1 > 0);
	EV(1u < -1);
	EV(1L < -1);
	EV(1u + -2);
	EV(-7 / 2);
	EV(-7 % 3);
	EV(7 % -3);
	EV(-8 >> 1);
	EV((unsigned)-8 >> 1);
	EV(w / 2);
	EV(w % 4);
	EV(w >> 1);
	EV(-w);
	EV(~w);
	EV(~uc);
	EV(uc + c);
	EV(c);
	EV((unsigned char)c);
	EV(neg);
	EV(neg < qty);
	EV(neg < (int)qty);
	EV(qty);
	EV(qty * 3 - 25);
	EV((int)qty - 25);
	EV(total / 1000);
	EV(total % 7);
	EV(total < w);
	EV(big > 0);
	EV(big >> 60);
	EV((long)big >> 60);
	EV((int)big);
	EV((char)300);
	EV((unsigned char)-1 == 255);
	EV(0x7fffffff + 1u);
	EV(2147483647 + 1L);
	check_value(__LINE__, "1 << 31", (uint64_t)(int64_t)INT32_MIN); /* UB in C; gcc wraps */
	EV(1u << 31 >> 31);
	EV((ulong_t)w);
	EV(sizeof(ulong_t));
	EV(qty > 5 && total < 0);
	EV(qty > 50 || w == -7);
	EV(!qty);
	check_value(__LINE__, "konst", (uint64_t)-42);
	check_value(__LINE__, "(qty, total)", (uint64_t)total);
}

NS_TEST(test_expr_compile__bitfields)
{
	setup();
	EV(bf.a);
	EV(bf.b);
	EV(bf.c);
	EV(bf.b < 0);
	EV(bf.a + bf.b);
	EV(bf.c >> 4);
}

NS_TEST(test_expr_compile__short_circuit_skips_faults)
{
	setup();
	EV(0 && it->next->next->next->id);
	EV(1 || it->next->next->next->id);
	EV(it->next->next->next == 0 || it->next->next->next->id);
}

static void check_fault(int line, const char *src, uint64_t addr)
{
	struct ns_arena arena;
	struct ns_expr_prog p;
	struct ns_ax_result r;
	struct env live = {0};
	ns_arena_init(&arena);
	setup();
	NS_CHECK_OK(ns_expr_compile(src, &scope, 0, &arena, &p));
	run(p.code, p.len, &live, &r);
	if (r.status != NS_AX_FAULT || r.fault_addr != addr)
		ns_test_fail(__FILE__, line, "'%s': status %d fault %#llx, want fault at %#llx",
		             src, r.status, (unsigned long long)r.fault_addr,
		             (unsigned long long)addr);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_compile__null_link_faults)
{
	// items[1] -> [2] -> [3] -> NULL
	check_fault(__LINE__, "it->next->next->next->id", 0);
	check_fault(__LINE__, "it->next->next->next->kind", 16);
	check_fault(__LINE__, "it->next->next->next->next", 32);
	check_fault(__LINE__, "*(int *)8", 8);
}

static void check_error(int line, const char *src, enum ns_expr_flags flags, enum ns_err_code code,
                        int column, const char *msg)
{
	struct ns_arena arena;
	struct ns_expr_prog p;
	ns_arena_init(&arena);
	setup();
	struct ns_err *err = ns_expr_compile(src, &scope, flags, &arena, &p);
	if (!err) {
		ns_test_fail(__FILE__, line, "'%s' compiled without error", src);
	} else {
		if (err->code != code || (column >= 0 && err->column != column) ||
		    strcmp(err->msg, msg) != 0)
			ns_test_fail(__FILE__, line,
			             "'%s': got %s col %d \"%s\", want %s col %d \"%s\"", src,
			             ns_err_code_name(err->code), err->column, err->msg,
			             ns_err_code_name(code), column, msg);
		ns_err_destroy(err);
	}
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_compile__errors)
{
	check_error(__LINE__, "it->nosuchfield", 0, NS_ERR_TYPE, 5,
	            "no member 'nosuchfield' in struct item");
	check_error(__LINE__, "s->head->nosuch + 1", 0, NS_ERR_TYPE, 10,
	            "no member 'nosuch' in struct item");
	check_error(__LINE__, "nosuch", 0, NS_ERR_TYPE, 1, "no symbol 'nosuch' in current context");
	check_error(__LINE__, "qty + nosuch", 0, NS_ERR_TYPE, 7,
	            "no symbol 'nosuch' in current context");
	check_error(__LINE__, "it->", 0, NS_ERR_SYNTAX, 5, "expected member name at column 5");
	check_error(__LINE__, "it->u.weight * 2", 0, NS_ERR_TYPE, 7,
	            "floating-point arithmetic is not supported");
	check_error(__LINE__, "(double)qty", 0, NS_ERR_TYPE, 1,
	            "floating-point arithmetic is not supported");
	check_error(__LINE__, "&qty", 0, NS_ERR_TYPE, 1,
	            "cannot take the address of 'qty': it is not in memory");
	check_error(__LINE__, "&bf.a", 0, NS_ERR_TYPE, 1, "cannot take the address of a bit-field");
	check_error(__LINE__, "*qty", 0, NS_ERR_TYPE, 1,
	            "invalid type argument of unary '*' (have 'unsigned int')");
	check_error(__LINE__, "1 + sh", 0, NS_ERR_TYPE, 5,
	            "cannot use a value of type 'struct shelf' here");
	check_error(__LINE__, "it + it", 0, NS_ERR_TYPE, 4,
	            "invalid operands to binary + (have 'struct item *' and 'struct item *')");
	check_error(
	        __LINE__, "qty.id", 0, NS_ERR_TYPE, 5,
	        "request for member 'id' in something not a structure or union ('unsigned int')");
	check_error(__LINE__, "qty->id", 0, NS_ERR_TYPE, 6,
	            "invalid type argument of '->' (have 'unsigned int')");
	check_error(__LINE__, "(struct nosuch *)it", 0, NS_ERR_TYPE, 2,
	            "no type named 'struct nosuch' in current context");
	check_error(__LINE__, "(struct item)sh", 0, NS_ERR_TYPE, 1, "cannot cast to 'struct item'");
	check_error(__LINE__, "\"abc\" == s->label", 0, NS_ERR_UNSUPPORTED, 1,
	            "string literals are not supported in expressions");
	check_error(__LINE__, "sh", NS_EXPR_CONDITION, NS_ERR_TYPE, 1,
	            "used 'struct shelf' where a scalar is required");
	check_error(__LINE__, "it->u.weight", NS_EXPR_CONDITION, NS_ERR_TYPE, 7,
	            "floating-point arithmetic is not supported");
	check_error(__LINE__, "optout + 1", 0, NS_ERR_OPTIMIZED_OUT, -1,
	            "'optout' is optimized out here");
	check_error(__LINE__, "entry", 0, NS_ERR_OPTIMIZED_OUT, -1,
	            "'entry' is optimized out here: value only known at function entry");
	check_error(__LINE__, "*(void *)it", 0, NS_ERR_TYPE, 1, "dereferencing 'void *' pointer");
}

NS_TEST(test_expr_compile__frame_base_unknown)
{
	struct ns_arena arena;
	struct ns_expr_prog p;
	ns_arena_init(&arena);
	setup();
	struct ns_expr_scope nocfa = scope;
	nocfa.cfa_known = false;
	struct ns_err *err = ns_expr_compile("it->id", &nocfa, 0, &arena, &p);
	NS_CHECK(err && err->code == NS_ERR_OPTIMIZED_OUT);
	NS_CHECK(err && strstr(err->msg, "frame base unknown"));
	ns_err_destroy(err);
	// Registers and globals still work.
	NS_CHECK_OK(ns_expr_compile("qty + uc", &nocfa, 0, &arena, &p));
	ns_arena_deinit(&arena);
}

/* Whole-object results: LVALUE with the object's address; COLLECT records the object. */
static void check_lvalue(int line, const char *src, const void *addr, size_t size,
                         enum ns_dwarf_type_kind tk)
{
	struct ns_arena arena;
	struct ns_expr_prog p;
	struct ns_ax_result r;
	ns_arena_init(&arena);
	setup();
	struct ns_err *err = ns_expr_compile(src, &scope, NS_EXPR_COLLECT, &arena, &p);
	if (err) {
		ns_test_fail(__FILE__, line, "compile '%s': %s", src, err->msg);
		ns_err_destroy(err);
		ns_arena_deinit(&arena);
		return;
	}
	struct env rec = {.blocks = calloc(64, sizeof(struct block))};
	run(p.code, p.len, &rec, &r);
	NS_CHECK_INT(p.kind, NS_EXPR_LVALUE);
	NS_CHECK_INT(p.type->kind, tk);
	NS_CHECK_INT(r.status, NS_AX_OK);
	NS_CHECK_INT(r.value, (uintptr_t)addr);
	rec.snapshot = true;
	uint8_t buf[256];
	if (!snap_read(&rec, buf, (uintptr_t)addr, size) || memcmp(buf, addr, size) != 0)
		ns_test_fail(__FILE__, line, "'%s': the object's %zu bytes were not collected", src,
		             size);
	free(rec.blocks);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_compile__lvalue_results)
{
	check_lvalue(__LINE__, "*it", &items[1], sizeof(struct item), NS_DT_STRUCT);
	check_lvalue(__LINE__, "sh", &sh, sizeof sh, NS_DT_STRUCT);
	check_lvalue(__LINE__, "it->u", &items[1].u, 8, NS_DT_UNION);
	check_lvalue(__LINE__, "it->u.weight", &items[1].u.weight, 8, NS_DT_FLOAT);
	check_lvalue(__LINE__, "it->sku", items[1].sku, 12, NS_DT_ARRAY);
	check_lvalue(__LINE__, "s->bins", sh.bins, 6, NS_DT_ARRAY);
	check_lvalue(__LINE__, "items[2]", &items[2], sizeof(struct item), NS_DT_STRUCT);
	check_lvalue(__LINE__, "it->next->kind == TOOL ? *it->next : *it", &items[2],
	             sizeof(struct item), NS_DT_STRUCT);
}

NS_TEST(test_expr_compile__char_pointer_result_collects_string)
{
	struct ns_arena arena;
	struct ns_expr_prog p;
	struct ns_ax_result r;
	ns_arena_init(&arena);
	setup();
	NS_CHECK_OK(ns_expr_compile("s->label", &scope, NS_EXPR_COLLECT, &arena, &p));
	NS_CHECK_INT(p.kind, NS_EXPR_RVALUE);
	struct env rec = {.blocks = calloc(64, sizeof(struct block))};
	run(p.code, p.len, &rec, &r);
	NS_CHECK_INT(r.status, NS_AX_OK);
	NS_CHECK_INT(r.value, (uintptr_t)label);
	rec.snapshot = true;
	char buf[8];
	NS_CHECK(snap_read(&rec, buf, (uintptr_t)label, 6));
	NS_CHECK_STR(buf, "north");
	free(rec.blocks);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_compile__condition)
{
	struct ns_arena arena;
	struct ns_expr_prog p;
	struct ns_ax_result r;
	struct env live = {0};
	ns_arena_init(&arena);
	setup();
	static const struct {
		const char *src;
		uint64_t want;
	} cases[] = {
	        {"qty", 1},
	        {"w + 7", 0},
	        {"it->sku", 1},
	        {"big", 1},
	        {"it->kind == FOOD", 1},
	        {"(char)256", 0},
	        {"it->next->next->next", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		NS_CHECK_OK(ns_expr_compile(cases[i].src, &scope, NS_EXPR_CONDITION, &arena, &p));
		run(p.code, p.len, &live, &r);
		NS_CHECK_INT(r.status, NS_AX_OK);
		NS_CHECK_INT(r.value, cases[i].want);
		NS_CHECK_INT(p.kind, NS_EXPR_RVALUE);
	}
	ns_arena_deinit(&arena);
}

/* ---- ns_expr_compile_location ---- */

static void check_loc(int line, const uint8_t *loc, size_t len, const uint8_t *fb, size_t fblen,
                      enum ns_expr_value_kind want_kind, uint64_t want)
{
	struct ns_arena arena;
	uint8_t *code;
	size_t clen;
	enum ns_expr_value_kind kind;
	struct ns_ax_result r;
	struct env live = {0};
	ns_arena_init(&arena);
	setup();
	struct ns_err *err =
	        ns_expr_compile_location(loc, len, fb, fblen, &scope, &arena, &code, &clen, &kind);
	if (err) {
		ns_test_fail(__FILE__, line, "compile_location: %s", err->msg);
		ns_err_destroy(err);
	} else {
		run(code, clen, &live, &r);
		if (r.status != NS_AX_OK || kind != want_kind || r.value != want)
			ns_test_fail(__FILE__, line, "status %d kind %d value %#llx, want %d %#llx",
			             r.status, kind, (unsigned long long)r.value, want_kind,
			             (unsigned long long)want);
	}
	ns_arena_deinit(&arena);
}

static void check_loc_err(int line, const uint8_t *loc, size_t len, enum ns_err_code code,
                          const char *substr)
{
	struct ns_arena arena;
	uint8_t *out;
	size_t clen;
	enum ns_expr_value_kind kind;
	ns_arena_init(&arena);
	setup();
	struct ns_err *err = ns_expr_compile_location(loc, len, frame_base_cfa, 1, &scope, &arena,
	                                              &out, &clen, &kind);
	if (!err || err->code != code || !strstr(err->msg, substr))
		ns_test_fail(__FILE__, line, "got %s \"%s\", want %s \"...%s...\"",
		             err ? ns_err_code_name(err->code) : "success", err ? err->msg : "",
		             ns_err_code_name(code), substr);
	ns_err_destroy(err);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_compile__locations)
{
	setup();
	uint64_t cfa = (uintptr_t)stack + CFA_OFF;
	check_loc(__LINE__, L_it.b, L_it.n, frame_base_cfa, 1, NS_EXPR_LVALUE, cfa - 40);
	// gcc's encoding of DW_OP_fbreg -40 is 91 58.
	static const uint8_t fb40[] = {0x91, 0x58};
	check_loc(__LINE__, fb40, 2, frame_base_cfa, 1, NS_EXPR_LVALUE, cfa - 40);
	// Frame base DW_OP_breg6 16 (rbp + 16 = CFA here); fbreg -200 (two-byte SLEB b8 7e).
	static const uint8_t fb_rbp[] = {0x76, 0x10}, fb200[] = {0x91, 0xb8, 0x7e};
	check_loc(__LINE__, fb200, 3, fb_rbp, 2, NS_EXPR_LVALUE, regs[6] + 16 - 200);
	// Frame base DW_OP_reg6: the register's contents.
	static const uint8_t fb_reg6[] = {0x56};
	check_loc(__LINE__, fb40, 2, fb_reg6, 1, NS_EXPR_LVALUE, regs[6] - 40);
	check_loc(__LINE__, L_qty, 1, NULL, 0, NS_EXPR_RVALUE, regs[3]);
	check_loc(__LINE__, globals[3].l.b, 9, NULL, 0, NS_EXPR_LVALUE, (uintptr_t)&uc);
	// DW_OP_bregx 7 (rsp) 8; DW_OP_deref; DW_OP_plus_uconst 300
	uint8_t deref[] = {0x92, 0x07, 0x08, 0x06, 0x23, 0xac, 0x02};
	uint64_t slot;
	memcpy(&slot, (void *)(uintptr_t)(regs[7] + 8), 8);
	check_loc(__LINE__, deref, sizeof deref, NULL, 0, NS_EXPR_LVALUE, slot + 300);
	// lit5 lit3 minus stack_value
	static const uint8_t sv[] = {0x35, 0x33, 0x1c, 0x9f};
	check_loc(__LINE__, sv, sizeof sv, NULL, 0, NS_EXPR_RVALUE, 2);
	// consts -1000; const1s -1; mul; stack_value
	static const uint8_t sv2[] = {0x11, 0x98, 0x78, 0x09, 0xff, 0x1e, 0x9f};
	check_loc(__LINE__, sv2, sizeof sv2, NULL, 0, NS_EXPR_RVALUE, 1000);
	// const4u 0x80000000 lit1 shl stack_value; const2s -2 neg stack_value
	static const uint8_t sv3[] = {0x0c, 0, 0, 0, 0x80, 0x31, 0x24, 0x9f};
	check_loc(__LINE__, sv3, sizeof sv3, NULL, 0, NS_EXPR_RVALUE, 0x100000000ull);
	static const uint8_t sv4[] = {0x0b, 0xfe, 0xff, 0x1f, 0x9f};
	check_loc(__LINE__, sv4, sizeof sv4, NULL, 0, NS_EXPR_RVALUE, 2);
	// implicit_value 4 bytes
	static const uint8_t iv[] = {0x9e, 0x04, 0x78, 0x56, 0x34, 0x12};
	check_loc(__LINE__, iv, sizeof iv, NULL, 0, NS_EXPR_RVALUE, 0x12345678);
	// reg1 piece 4 (one piece covering an int)
	static const uint8_t rp4[] = {0x51, 0x93, 0x04};
	check_loc(__LINE__, rp4, sizeof rp4, NULL, 0, NS_EXPR_RVALUE, regs[3]);
	// fbreg -40 piece 8
	static const uint8_t fp8[] = {0x91, 0x58, 0x93, 0x08};
	check_loc(__LINE__, fp8, sizeof fp8, frame_base_cfa, 1, NS_EXPR_LVALUE, cfa - 40);

	static const uint8_t ev[] = {0xa3, 0x01, 0x55, 0x9f}, gev[] = {0xf3, 0x01, 0x55, 0x9f};
	check_loc_err(__LINE__, ev, sizeof ev, NS_ERR_OPTIMIZED_OUT, "function entry");
	check_loc_err(__LINE__, gev, sizeof gev, NS_ERR_OPTIMIZED_OUT, "function entry");
	static const uint8_t ip[] = {0xa0, 1, 0, 0, 0, 0}, xmm[] = {0x61};
	check_loc_err(__LINE__, ip, sizeof ip, NS_ERR_OPTIMIZED_OUT, "optimized out");
	check_loc_err(__LINE__, xmm, sizeof xmm, NS_ERR_OPTIMIZED_OUT, "register 17");
	static const uint8_t two_pieces[] = {0x50, 0x93, 0x04, 0x51, 0x93, 0x04};
	check_loc_err(__LINE__, two_pieces, sizeof two_pieces, NS_ERR_OPTIMIZED_OUT, "pieces");
	static const uint8_t trunc1[] = {0x91}, trunc2[] = {0x91, 0x80}, trunc3[] = {0x03, 1, 2, 3},
	                     trunc4[] = {0x9e, 0x08, 1};
	check_loc_err(__LINE__, trunc1, sizeof trunc1, NS_ERR_FORMAT, "truncated");
	check_loc_err(__LINE__, trunc2, sizeof trunc2, NS_ERR_FORMAT, "truncated");
	check_loc_err(__LINE__, trunc3, sizeof trunc3, NS_ERR_FORMAT, "truncated");
	check_loc_err(__LINE__, trunc4, sizeof trunc4, NS_ERR_OPTIMIZED_OUT, "implicit");
	static const uint8_t underflow[] = {0x22}, after_sv[] = {0x30, 0x9f, 0x30};
	check_loc_err(__LINE__, underflow, 1, NS_ERR_OPTIMIZED_OUT, "unsupported");
	check_loc_err(__LINE__, after_sv, sizeof after_sv, NS_ERR_OPTIMIZED_OUT, "unsupported");
	check_loc_err(__LINE__, NULL, 0, NS_ERR_OPTIMIZED_OUT, "optimized out");

	struct ns_arena arena;
	uint8_t *code;
	size_t clen;
	enum ns_expr_value_kind kind;
	ns_arena_init(&arena);
	struct ns_expr_scope nocfa = scope;
	nocfa.cfa_known = false;
	struct ns_err *err = ns_expr_compile_location(fb40, 2, frame_base_cfa, 1, &nocfa, &arena,
	                                              &code, &clen, &kind);
	NS_CHECK(err && err->code == NS_ERR_OPTIMIZED_OUT &&
	         strstr(err->msg, "frame base unknown"));
	ns_err_destroy(err);
	ns_arena_deinit(&arena);
}

/* ---- ns_expr_compile_collect_var ---- */

static struct ns_dwarf_var *var_named(const char *name, struct ns_dwarf_var *tmp)
{
	for (size_t i = 0; i < scope_locals.nvars; i++)
		if (strcmp(locals[i].name, name) == 0)
			return &locals[i];
	if (lookup_global(NULL, name, NULL, tmp) == NULL)
		return tmp;
	return NULL;
}

/* Collect @name, return the recorded blocks (caller frees) and the run's status. */
static struct env collect_var(int line, const char *name, unsigned depth, unsigned smax,
                              unsigned budget, enum ns_ax_status *status)
{
	struct ns_arena arena;
	struct ns_dwarf_var tmp;
	uint8_t *code;
	size_t len;
	struct ns_ax_result r;
	struct env rec = {.blocks = calloc(64, sizeof(struct block))};
	ns_arena_init(&arena);
	setup();
	struct ns_err *err = ns_expr_compile_collect_var(var_named(name, &tmp), &scope, depth, smax,
	                                                 budget, &arena, &code, &len);
	if (err) {
		ns_test_fail(__FILE__, line, "collect %s: %s", name, err->msg);
		ns_err_destroy(err);
		*status = NS_AX_BAD_OPCODE;
	} else {
		run(code, len, &rec, &r);
		*status = r.status;
	}
	rec.snapshot = true;
	ns_arena_deinit(&arena);
	return rec;
}

static bool has(struct env *e, const void *p, size_t n)
{
	uint8_t buf[256];
	return snap_read(e, buf, (uintptr_t)p, n) && memcmp(buf, p, n) == 0;
}

NS_TEST(test_expr_compile__collect_var_pointer_chain)
{
	enum ns_ax_status st;
	struct env e = collect_var(__LINE__, "it", 2, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, stack + CFA_OFF - 40, 8)); /* the pointer itself */
	NS_CHECK(has(&e, &items[1], sizeof(struct item)));
	NS_CHECK(has(&e, &items[2], sizeof(struct item)));
	NS_CHECK(!has(&e, &items[3], 1)); /* depth 2 stops here */
	NS_CHECK_INT(e.traced_bytes, 8 + 40 + 40);
	free(e.blocks);

	// Following to depth 5 reaches the NULL link of items[3] and skips it.
	e = collect_var(__LINE__, "it", 5, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, &items[3], sizeof(struct item)));
	NS_CHECK_INT(e.traced_bytes, 8 + 3 * 40);
	free(e.blocks);
}

NS_TEST(test_expr_compile__collect_var_struct_members_and_strings)
{
	enum ns_ax_status st;
	struct env e = collect_var(__LINE__, "sh", 1, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, &sh, sizeof sh));
	NS_CHECK(has(&e, label, sizeof label)); /* "north" and its NUL */
	NS_CHECK(has(&e, &items[0], sizeof(struct item)));
	NS_CHECK(!has(&e, &items[1], 1));
	NS_CHECK_INT(e.traced_bytes, 32 + 6 + 40);
	free(e.blocks);

	// string_max caps the string.
	e = collect_var(__LINE__, "sh", 1, 3, 4096, &st);
	NS_CHECK(has(&e, label, 3));
	NS_CHECK(!has(&e, label + 3, 1));
	free(e.blocks);

	// An array of structs holding pointers: each element's pointee.
	e = collect_var(__LINE__, "items", 1, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, items, sizeof items));
	free(e.blocks);
}

NS_TEST(test_expr_compile__collect_var_unreadable_and_null)
{
	enum ns_ax_status st;
	// sh2.label points to unreadable memory: nothing recorded for it, but the head
	// pointee (items[3]) is still collected and its NULL next is skipped.
	struct env e = collect_var(__LINE__, "sh2", 3, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, &sh2, sizeof sh2));
	NS_CHECK(has(&e, &items[3], sizeof(struct item)));
	NS_CHECK_INT(e.traced_bytes, 32 + 40);
	free(e.blocks);
}

NS_TEST(test_expr_compile__collect_var_registers_and_budget)
{
	enum ns_ax_status st;
	// A pointer in a register: the register needs no trace; its pointee does.
	struct env e = collect_var(__LINE__, "rp", 1, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, &items[0], sizeof(struct item)));
	NS_CHECK_INT(e.traced_bytes, 40);
	free(e.blocks);

	e = collect_var(__LINE__, "qty", 3, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK_INT(e.traced_bytes, 0);
	free(e.blocks);

	e = collect_var(__LINE__, "it", 3, 64, 50, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK(has(&e, stack + CFA_OFF - 40, 8));
	NS_CHECK(e.traced_bytes <= 50);
	NS_CHECK(has(&e, &items[1], 40));
	free(e.blocks);

	e = collect_var(__LINE__, "konst", 3, 64, 4096, &st);
	NS_CHECK_INT(st, NS_AX_OK);
	NS_CHECK_INT(e.traced_bytes, 0);
	free(e.blocks);

	struct ns_arena arena;
	uint8_t *code;
	size_t len;
	ns_arena_init(&arena);
	struct ns_err *err = ns_expr_compile_collect_var(var_named("optout", NULL), &scope, 1, 64,
	                                                 4096, &arena, &code, &len);
	NS_CHECK(err && err->code == NS_ERR_OPTIMIZED_OUT);
	NS_CHECK(err && strcmp(err->msg, "'optout' is optimized out here") == 0);
	ns_err_destroy(err);
	ns_arena_deinit(&arena);
}

NS_TEST(test_expr_compile__random_token_soup)
{
	// Random token sequences must compile or fail cleanly, never crash; whatever
	// compiles was verified by ns_ax_verify inside ns_expr_compile and runs.
	static const char *const toks[] = {
	        "it",     "qty",   "sh",   "s",  "items", "bf",     "TOOL",
	        "->",     ".",     "next", "id", "sku",   "u",      "weight",
	        "kind",   "[",     "]",    "(",  ")",     "*",      "&",
	        "-",      "!",     "~",    "+",  "/",     "%",      "<<",
	        ">>",     "<",     "==",   "&&", "||",    "?",      ":",
	        ",",      "0",     "1",    "7",  "'a'",   "(int)",  "(struct item *)",
	        "sizeof", "label", "bins", "c",  "neg",   "nosuch",
	};
	struct ns_arena arena;
	struct env live = {0};
	unsigned seed = 12345, ok = 0;
	setup();
	ns_arena_init(&arena);
	for (int i = 0; i < 3000; i++) {
		char src[256];
		size_t k = 0;
		int n = 1 + (int)((seed = seed * 1103515245 + 12345) >> 16) % 12;
		for (int j = 0; j < n; j++) {
			const char *t = toks[((seed = seed * 1103515245 + 12345) >> 16) %
			                     (sizeof toks / sizeof toks[0])];
			k += (size_t)snprintf(src + k, sizeof src - k, "%s ", t);
		}
		struct ns_expr_prog p;
		struct ns_ax_result r;
		struct ns_err *err =
		        ns_expr_compile(src, &scope, (enum ns_expr_flags)(i % 4), &arena, &p);
		if (!err) {
			ok++;
			run(p.code, p.len, &live, &r);
			NS_CHECK(p.type != NULL);
		} else {
			NS_CHECK(err->msg[0] != 0);
			ns_err_destroy(err);
		}
	}
	NS_CHECK(ok > 50);
	ns_arena_deinit(&arena);
}

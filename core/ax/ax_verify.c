/* core/ax verifier: abstract interpretation of the stack depth over every path.
 * A worklist of instruction offsets; each offset records the depth it is first reached
 * with, and reaching it again with another depth is an error (the stack shape at a join
 * must not depend on the path, as in the JVM verifier). Each byte is marked as an
 * instruction start or an immediate byte; a byte that is both means a jump lands inside
 * another instruction. Host or agent thread (allocates). */
#include <stdlib.h>

#include "ax/ax_internal.h"

enum {
	MARK_START = 1,
	MARK_IMM = 2,
};

struct verifier {
	const uint8_t *code;
	size_t len;
	uint8_t *depth; /* depth + 1 at each instruction start; 0: not reached yet */
	uint8_t *mark;
	uint32_t *work;
	size_t nwork;
};

// Queue the instruction at @to, reached from the instruction at @from with @d items,
// by a jump or by falling through.
static struct ns_err *reach(struct verifier *v, size_t from, uint64_t to, unsigned d, bool jump)
{
	if (to >= v->len) {
		if (!jump)
			return ns_err_create(NS_ERR_INVALID, "offset %zu: code ends without end",
			                     from);
		return ns_err_create(NS_ERR_INVALID,
		                     "offset %zu: jump target %llu is past the end (length %zu)",
		                     from, (unsigned long long)to, v->len);
	}
	if (v->mark[to] & MARK_IMM)
		return ns_err_create(NS_ERR_INVALID,
		                     "offset %zu: jump target %llu is inside an instruction", from,
		                     (unsigned long long)to);
	if (v->depth[to]) {
		if (v->depth[to] - 1u != d)
			return ns_err_create(
			        NS_ERR_INVALID,
			        "offset %llu: stack depth %u on one path, %u on another "
			        "(from offset %zu)",
			        (unsigned long long)to, v->depth[to] - 1u, d, from);
		return NULL;
	}
	v->depth[to] = (uint8_t)(d + 1);
	v->mark[to] |= MARK_START;
	v->work[v->nwork++] = (uint32_t)to;
	return NULL;
}

static char *lower_name(const char *name, char *buf, size_t cap)
{
	size_t i = 0;
	for (; name[i] && i + 1 < cap; i++)
		buf[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
	buf[i] = 0;
	return buf;
}

// Check the instruction at @pc and queue its successors.
static struct ns_err *step(struct verifier *v, size_t pc, unsigned *max_depth)
{
	uint8_t op = v->code[pc];
	const struct ns_ax__op_info *oi = &ns_ax__ops[op];
	unsigned d = v->depth[pc] - 1u;
	char name[16];

	if (op == NS_AX_FLOAT)
		return ns_err_create(NS_ERR_INVALID, "offset %zu: float is not supported", pc);
	if (op == 0x34)
		return ns_err_create(NS_ERR_INVALID, "offset %zu: printf is not supported", pc);
	if (!oi->name)
		return ns_err_create(NS_ERR_INVALID, "offset %zu: unknown opcode 0x%02x", pc, op);
	lower_name(oi->name, name, sizeof(name));
	if (v->len - pc - 1 < oi->imm)
		return ns_err_create(NS_ERR_INVALID,
		                     "offset %zu: %s needs %u immediate bytes, only %zu left", pc,
		                     name, oi->imm, v->len - pc - 1);
	for (size_t i = pc + 1; i < pc + 1 + oi->imm; i++) {
		if (v->mark[i] & MARK_START)
			return ns_err_create(NS_ERR_INVALID,
			                     "offset %zu: an instruction starts inside the "
			                     "immediate of %s at offset %zu",
			                     i, name, pc);
		v->mark[i] |= MARK_IMM;
	}
	uint64_t imm = ns_ax__imm(v->code + pc + 1, oi->imm);

	unsigned need = oi->pops;
	if (op == NS_AX_PICK)
		need = (unsigned)imm + 1; // pick n copies the item n below the top
	if (d < need)
		return ns_err_create(NS_ERR_INVALID,
		                     "offset %zu: stack underflow (%s needs %u items, depth %u)",
		                     pc, name, need, d);
	unsigned nd = d - oi->pops + oi->pushes;
	if (nd > NS_AX_MAX_STACK)
		return ns_err_create(NS_ERR_INVALID,
		                     "offset %zu: stack overflow (%s makes depth %u, limit %d)", pc,
		                     name, nd, NS_AX_MAX_STACK);
	if (nd > *max_depth)
		*max_depth = nd;
	if (op == NS_AX_REG && imm >= NS_AX_NREGS)
		return ns_err_create(NS_ERR_INVALID,
		                     "offset %zu: register %llu out of range (< %d)", pc,
		                     (unsigned long long)imm, NS_AX_NREGS);

	size_t next = pc + 1 + oi->imm;
	switch (op) {
	case NS_AX_END:
		return NULL;
	case NS_AX_GOTO:
		return reach(v, pc, imm, nd, true);
	case NS_AX_IF_GOTO: {
		struct ns_err *err = reach(v, pc, imm, nd, true);
		if (err)
			return err;
		return reach(v, pc, next, nd, false);
	}
	default:
		return reach(v, pc, next, nd, false);
	}
}

struct ns_err *ns_ax_verify(const uint8_t *code, size_t len, unsigned *max_depth_out)
{
	if (len == 0)
		return ns_err_create(NS_ERR_INVALID, "offset 0: empty program");
	if (len > UINT32_MAX)
		return ns_err_create(NS_ERR_INVALID, "program of %zu bytes is too long", len);

	struct verifier v = {.code = code, .len = len};
	v.depth = calloc(len, 1);
	v.mark = calloc(len, 1);
	v.work = malloc(len * sizeof(*v.work)); // each offset is queued at most once
	struct ns_err *err = NULL;
	unsigned max_depth = 0;
	if (!v.depth || !v.mark || !v.work) {
		err = &ns_err_nomem;
		goto out;
	}
	v.depth[0] = 1;
	v.mark[0] = MARK_START;
	v.work[v.nwork++] = 0;
	while (v.nwork && !err)
		err = step(&v, v.work[--v.nwork], &max_depth);
	if (!err && max_depth_out)
		*max_depth_out = max_depth;
out:
	free(v.depth);
	free(v.mark);
	free(v.work);
	return err;
}

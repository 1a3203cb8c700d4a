/* The program's modules: the executable and every shared object mapped in it, each
 * with its load bias and (opened on first use) its DWARF. Breakpoints resolve in every
 * module whose line tables know the file; scopes, frames and names use the module that
 * contains the pc. The list only grows: compiled breakpoints keep pointers into a
 * module's DWARF, so a module is never closed while the session lives. */
#define _GNU_SOURCE
#include "adapter.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

struct module {
	char *path;
	uint64_t bias, lo, hi;
	struct ns_dwarf *dw;
	bool tried;
};

static bool is_our_agent(const char *path)
{
	const char *b = strrchr(path, '/');
	return b && strcmp(b + 1, "libnonstop-agent.so") == 0;
}

static struct module *find_path(struct session *s, const char *path)
{
	for (size_t i = 0; i < s->nmods; i++)
		if (strcmp(s->mods[i].path, path) == 0)
			return &s->mods[i];
	return NULL;
}

static struct ns_err *add_module(struct session *s, const char *path, struct module **out)
{
	if (s->nmods == s->mods_cap) {
		size_t nc = s->mods_cap ? s->mods_cap * 2 : 16;
		struct module *nv = realloc(s->mods, nc * sizeof(*nv));
		if (!nv)
			return &ns_err_nomem;
		s->mods = nv;
		s->mods_cap = nc;
	}
	struct module *m = &s->mods[s->nmods];
	memset(m, 0, sizeof(*m));
	m->path = strdup(path);
	if (!m->path)
		return &ns_err_nomem;
	m->lo = UINT64_MAX;
	s->nmods++;
	*out = m;
	return NULL;
}

struct ns_err *modules_refresh(struct session *s)
{
	if (s->nmods == 0 && s->dw && s->program_path) {
		// The executable first, with the DWARF load_program() opened and checked.
		struct module *m;
		struct ns_err *err = add_module(s, s->program_path, &m);
		if (err)
			return err;
		m->dw = s->dw;
		m->tried = true;
		m->bias = s->load_bias;
	}
	for (size_t i = 0; i < s->tgt.map.n; i++) {
		const struct ns_procmap_entry *e = &s->tgt.map.v[i];
		if (!e->path || e->path[0] != '/' || e->deleted || is_our_agent(e->path))
			continue;
		char real[PATH_MAX];
		const char *p = realpath(e->path, real) ? real : e->path;
		struct module *m = find_path(s, p);
		if (!m) {
			uint64_t bias;
			if (ns_procmap_load_bias(&s->tgt.map, e->path, &bias) != 0)
				continue; // a data file mapped by the program, not an ELF module
			struct ns_err *err = add_module(s, p, &m);
			if (err)
				return err;
			m->bias = bias;
		}
		if (e->start < m->lo)
			m->lo = e->start;
		if (e->end > m->hi)
			m->hi = e->end;
	}
	ns_viewmem_destroy(s->vm);
	s->vm = NULL;
	return ns_viewmem_create(&s->tgt.map, &s->vm);
}

void modules_reload_map(struct session *s)
{
	if (!s->tgt.rsp || s->tgt.exited)
		return;
	struct ns_err *err = target_load_map(&s->tgt);
	if (!err)
		err = modules_refresh(s);
	if (err) {
		ns_log(NS_LOG_DEBUG, "reloading the process map: %s", err->msg);
		ns_err_destroy(err);
	}
}

struct ns_dwarf *module_dwarf(struct session *s, struct module *m)
{
	if (!m->tried) {
		m->tried = true;
		size_t ndirs = 0;
		while (s->debug_dirs && s->debug_dirs[ndirs])
			ndirs++;
		struct ns_err *err = ns_dwarf_open_separate(
		        m->path, (const char *const *)s->debug_dirs, ndirs, &m->dw);
		if (err) {
			ns_log(NS_LOG_DEBUG, "no debug info for %s: %s", m->path, err->msg);
			ns_err_destroy(err);
			m->dw = NULL;
		}
	}
	return m->dw;
}

struct module *module_for_pc(struct session *s, uint64_t pc)
{
	for (size_t i = 0; i < s->nmods; i++)
		if (pc >= s->mods[i].lo && pc < s->mods[i].hi)
			return &s->mods[i];
	return NULL;
}

size_t module_count(struct session *s)
{
	return s->nmods;
}

struct module *module_at(struct session *s, size_t i)
{
	return i < s->nmods ? &s->mods[i] : NULL;
}

uint64_t module_bias(const struct module *m)
{
	return m->bias;
}

const char *module_path(const struct module *m)
{
	return m->path;
}

void modules_free(struct session *s)
{
	for (size_t i = 0; i < s->nmods; i++) {
		if (s->mods[i].dw != s->dw)
			ns_dwarf_destroy(s->mods[i].dw);
		free(s->mods[i].path);
	}
	free(s->mods);
	s->mods = NULL;
	s->nmods = s->mods_cap = 0;
}

/* Helper of bench_coverage.py: would the jump-pad tier take these sites? Runs the same
 * checks as the agent (core/agent/agent_jump.c): ns_arch_pad_window over the function's
 * parts, then ns_arch_pad_emit for a pad 256 MiB away, on the bytes of an ELF file.
 *
 *   pad_coverage ELF < sites
 *
 * stdin, one request per line (addresses are the file's virtual addresses, hex):
 *   F <lo> <hi> [<lo> <hi>]...   the function that holds the following sites: its part
 *                                holding them first, then its other parts (.cold)
 *   S <addr>                     a site in that function
 * stdout, one line per site:
 *   <addr> ok <window length>
 *   <addr> no <reason>\t<detail>
 * Built by the benchmark against the build's libns_arch.a and capstone. */
#include "arch/arch.h"

#include <elf.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *image;
static size_t image_len;
static const Elf64_Phdr *phdrs;
static unsigned nphdrs;

/* File bytes of [addr, addr + len) if one PT_LOAD segment's file part holds them. */
static const uint8_t *at(uint64_t addr, size_t len)
{
	for (unsigned i = 0; i < nphdrs; i++) {
		const Elf64_Phdr *p = &phdrs[i];
		if (p->p_type != PT_LOAD || addr < p->p_vaddr || addr + len > p->p_vaddr + p->p_filesz)
			continue;
		uint64_t off = p->p_offset + (addr - p->p_vaddr);
		if (off + len > image_len)
			return NULL;
		return image + off;
	}
	return NULL;
}

static int read_file_mem(void *ctx, void *dst, uint64_t addr, size_t len)
{
	(void)ctx;
	const uint8_t *p = at(addr, len);
	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

static int load(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	image = malloc(n > 0 ? (size_t)n : 1);
	image_len = n > 0 ? (size_t)n : 0;
	if (!image || fread(image, 1, image_len, f) != image_len) {
		fclose(f);
		return -1;
	}
	fclose(f);
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
	if (image_len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64 ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > image_len)
		return -1;
	phdrs = (const Elf64_Phdr *)(image + eh->e_phoff);
	nphdrs = eh->e_phnum;
	return 0;
}

enum { MAX_PARTS = 8 };

int main(int argc, char **argv)
{
	if (argc != 2 || load(argv[1]) != 0) {
		fprintf(stderr, "usage: pad_coverage ELF < sites (a readable x86-64 ELF file)\n");
		return 2;
	}
	struct ns_arch_code_range parts[MAX_PARTS];
	size_t nparts = 0;
	char line[512];
	while (fgets(line, sizeof(line), stdin)) {
		if (line[0] == 'F') {
			nparts = 0;
			char *p = line + 1, *end;
			for (;;) {
				uint64_t lo = strtoull(p, &end, 16);
				if (end == p)
					break;
				p = end;
				uint64_t hi = strtoull(p, &end, 16);
				if (end == p || nparts == MAX_PARTS)
					break;
				p = end;
				const uint8_t *b = hi > lo ? at(lo, (size_t)(hi - lo)) : NULL;
				if (!b)
					continue;
				parts[nparts++] = (struct ns_arch_code_range){lo, hi, b};
			}
			continue;
		}
		if (line[0] != 'S')
			continue;
		uint64_t site = strtoull(line + 1, NULL, 16);
		if (nparts == 0 || site < parts[0].lo || site >= parts[0].hi) {
			printf("%" PRIx64 " no function bytes unknown\t\n", site);
			continue;
		}
		struct ns_arch_pad_func fn = {
		        .range = parts[0],
		        .more = nparts > 1 ? parts + 1 : NULL,
		        .nmore = nparts - 1,
		        .read_mem = read_file_mem,
		};
		struct ns_arch_pad_window w;
		struct ns_err *err = ns_arch_pad_window(&fn, site, &w);
		if (err) {
			printf("%" PRIx64 " no error: %s\t\n", site, err->msg);
			ns_err_destroy(err);
			continue;
		}
		if (!w.eligible) {
			printf("%" PRIx64 " no %s\t%s\n", site, w.reason, w.detail);
			continue;
		}
		struct ns_arch_pad_spec spec = {
		        .site = site,
		        .code = parts[0].bytes + (site - parts[0].lo),
		        .window_len = w.len,
		        .pad_addr = site + (256u << 20),
		        .collector = site + (257u << 20),
		        .ctx = 0x1000,
		        .flags = NS_ARCH_PAD_FLAGS_AUTO,
		};
		uint8_t buf[NS_ARCH_PAD_MAX_LEN];
		struct ns_arch_pad pad;
		if ((err = ns_arch_pad_emit(&spec, buf, sizeof(buf), &pad))) {
			printf("%" PRIx64 " no cannot build the pad\t%s\n", site, err->msg);
			ns_err_destroy(err);
			continue;
		}
		printf("%" PRIx64 " ok %u %u\n", site, w.len, w.ninsns);
	}
	return 0;
}

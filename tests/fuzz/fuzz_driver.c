/* Driver for the fuzz targets when they are not linked with libFuzzer: feeds each
 * target its seed inputs and a bounded number of deterministic mutations of them
 * (bit flips, byte sets, truncations, splices), so every ctest run, and the ASan+UBSan
 * run in CI, exercises the parsers on malformed input. With clang, the same targets
 * link against libFuzzer instead (NS_LIBFUZZER=ON). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern const char *const ns_fuzz_seeds[];
extern const size_t ns_fuzz_nseeds;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	long iterations = argc > 1 ? atol(argv[1]) : 20000;
	uint8_t buf[4096];
	long runs = 0;
	for (size_t i = 0; i < ns_fuzz_nseeds; i++) {
		LLVMFuzzerTestOneInput((const uint8_t *)ns_fuzz_seeds[i], strlen(ns_fuzz_seeds[i]));
		runs++;
	}
	for (long it = 0; it < iterations; it++) {
		const char *seed = ns_fuzz_seeds[next() % ns_fuzz_nseeds];
		size_t n = strlen(seed);
		if (n > sizeof(buf))
			n = sizeof(buf);
		memcpy(buf, seed, n);
		int edits = 1 + (int)(next() % 4);
		for (int e = 0; e < edits && n; e++) {
			size_t at = next() % n;
			switch (next() % 5) {
			case 0:
				buf[at] ^= (uint8_t)(1u << (next() % 8));
				break;
			case 1:
				buf[at] = (uint8_t)next();
				break;
			case 2:
				n = at; // truncate
				break;
			case 3: { // splice another seed in
				const char *o = ns_fuzz_seeds[next() % ns_fuzz_nseeds];
				size_t on = strlen(o), take = on ? next() % on : 0;
				if (at + take > sizeof(buf))
					take = sizeof(buf) - at;
				memcpy(buf + at, o, take);
				if (at + take > n)
					n = at + take;
				break;
			}
			default: // interesting bytes
				buf[at] = (uint8_t)"\0\xff$#}*%-+:;,\x7f\x80"[next() % 14];
			}
		}
		LLVMFuzzerTestOneInput(buf, n);
		runs++;
	}
	printf("%ld inputs, no crash\n1 passed, 0 failed\n", runs);
	return 0;
}

/* Fuzz target: trace-frame validation and reads, and the agent INSTALL decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "frame/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const char *const ns_fuzz_seeds[] = {
	"NSFR\x01\x00\x48\x00\x60\x00\x00\x00\x01\x00\x00\x00",
	"\x02\x00\x00\x00\x40\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00",
	"RMRMEEE",
};
const size_t ns_fuzz_nseeds = sizeof(ns_fuzz_seeds) / sizeof(ns_fuzz_seeds[0]);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	// Aligned copy, as frames arrive.
	uint8_t *copy = malloc(size + 8);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	struct ns_frame f;
	struct ns_err *err = ns_frame_parse(copy, size, &f);
	if (!err) {
		uint8_t buf[64];
		uint64_t v;
		ns_frame_reg(&f, NS_REG_RSP, &v);
		ns_frame_read(&f, 0, buf, sizeof(buf));
		size_t it = 0;
		struct ns_frame_block blk;
		const uint8_t *pl;
		while (ns_frame_next_block(&f, &it, &blk, &pl))
			;
	}
	ns_err_destroy(err);
	struct ns_rsp_tracepoint tp;
	memset(&tp, 0, sizeof(tp));
	err = ns_agent_decode_install(copy, size, &tp);
	if (!err)
		ns_rsp_tp_deinit(&tp);
	ns_err_destroy(err);
	free(copy);
	return 0;
}

/* Fuzz target: RSP framing and the QTDP packet parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rsp/rsp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const char *const ns_fuzz_seeds[] = {
	"$qSupported:multiprocess+;NsFramePush+#00+$m4000,10#8d",
	"$QTDP:1:0000555555554abc:E:0:0:X5,2601020304:H3,3e8:La-#00",
	"$QTDP:-1:0000555555554abc:R0001ffff#00%NsFrames:3#00",
	"$QTDP:-1:0000555555554abc:M7,ffffffffffffff80,4080#00",
	"$0* #00$a}]b#00\x03-+",
	"QTDP:2:401136:E:0:0-",
	"QTDP:-2:401136:X3,260007-",
	"b5:a;b:c;F00ff;L1f;b0:;W2a;Zx",
};
const size_t ns_fuzz_nseeds = sizeof(ns_fuzz_seeds) / sizeof(ns_fuzz_seeds[0]);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ns_rsp_parser p;
	ns_rsp_parser_init(&p, 4096);
	size_t off = 0;
	while (off < size) {
		size_t used = 0;
		ns_rsp_parse(&p, data + off, size - off, &used);
		if (used == 0)
			break;
		off += used;
	}
	ns_rsp_parser_deinit(&p);

	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	struct ns_rsp_tracepoint tp;
	memset(&tp, 0, sizeof(tp));
	bool more = false;
	// A definition packet first, then the input again as an action packet for it.
	if (!strncmp(s, "QTDP:", 5)) {
		struct ns_err *err = ns_rsp_tp_parse(s, &tp, &more);
		if (!err) {
			err = ns_rsp_tp_parse(s, &tp, &more);
			char **pk = NULL;
			size_t npk = 0;
			struct ns_err *e2 = ns_rsp_tp_encode(&tp, 512, &pk, &npk);
			if (!e2)
				ns_rsp_free_packets(pk, npk);
			ns_err_destroy(e2);
		}
		ns_err_destroy(err);
		ns_rsp_tp_deinit(&tp);
	}
	// The same bytes as a qNsFrames reply.
	size_t pos = 0;
	bool items = true;
	while (items && pos < size) {
		struct ns_rsp_frames_item it;
		struct ns_err *err = ns_rsp_frames_next((uint8_t *)s, size, &pos, &it, &items);
		if (err)
			items = false;
		else if (items && it.kind == 'F' && it.len && (it.data < (uint8_t *)s ||
		                                             it.data + it.len > (uint8_t *)s + size))
			abort();
		ns_err_destroy(err);
	}
	free(s);
	return 0;
}

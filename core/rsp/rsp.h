/* core/rsp: GDB Remote Serial Protocol (GDB manual, "Remote Protocol"): framing
 * ($payload#cs, +/- acks, no-ack mode, '}' escaping, run-length decoding,
 * %notifications) for both sides, and the codec of the packets nonstop uses,
 * tracepoint packets included (GDB manual, "Tracepoint Packets").
 *
 * nonstop extensions are described in docs/rsp-extensions.md. */
#ifndef NS_RSP_H
#define NS_RSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/strbuf.h"

/* ---- Framing parser: bytes in, events out. No I/O, for tests and both sides. ---- */

enum ns_rsp_event_kind {
	NS_RSP_EV_NONE,      /* need more bytes */
	NS_RSP_EV_PACKET,    /* $...#cs with a good checksum: payload in parser */
	NS_RSP_EV_NOTIFY,    /* %...#cs with a good checksum */
	NS_RSP_EV_BAD_CSUM,  /* $...#cs with a bad checksum: the receiver answers '-' */
	NS_RSP_EV_ACK,       /* '+' */
	NS_RSP_EV_NAK,       /* '-' */
	NS_RSP_EV_INTERRUPT, /* 0x03 */
	NS_RSP_EV_TOO_LONG,  /* a packet exceeded the maximum size; dropped */
};

struct ns_rsp_parser {
	int state;
	uint8_t csum, got_csum;
	int csum_digits;
	bool escape, is_notify;
	bool too_long;            /* the current packet outgrew max_len: dropped at its end */
	bool bad_digit;           /* a checksum character was not a hex digit */
	struct ns_strbuf payload; /* decoded payload of the last packet (escapes and RLE undone) */
	size_t max_len;
};

void ns_rsp_parser_init(struct ns_rsp_parser *p, size_t max_len);
void ns_rsp_parser_deinit(struct ns_rsp_parser *p);
/** Consume bytes from @data until one event completes; *@used says how many were
 * consumed. Garbage outside packets is skipped. */
enum ns_rsp_event_kind ns_rsp_parse(struct ns_rsp_parser *p, const uint8_t *data, size_t len,
                                    size_t *used);

/** Frame @payload as "$<escaped payload>#cs" ('%' if @notify) appended to @out.
 * Escapes '$', '#', '}' and '*' with '}' x^0x20 (binary-safe). */
void ns_rsp_frame(struct ns_strbuf *out, const void *payload, size_t len, bool notify);

/* ---- Connection: framing over a pair of fds (a pipe pair, a socket twice). ---- */

struct ns_rsp_conn;

/** Wrap @rfd/@wfd (owned: closed by destroy; may be equal). Starts in ack mode. */
struct ns_err *ns_rsp_conn_create(int rfd, int wfd, struct ns_rsp_conn **out);
void ns_rsp_conn_destroy(struct ns_rsp_conn *c);
/** After QStartNoAckMode is acknowledged, both sides stop sending/expecting acks. */
void ns_rsp_set_noack(struct ns_rsp_conn *c, bool noack);
bool ns_rsp_noack(const struct ns_rsp_conn *c);
/** fd to poll for input. */
int ns_rsp_fd(const struct ns_rsp_conn *c);
/** A complete packet is already buffered (poll would not show it). */
bool ns_rsp_buffered(const struct ns_rsp_conn *c);

/** Send one packet; in ack mode waits for '+' (up to 2 s, resending on '-', at most
 * 3 times). Packets that arrive while waiting are queued for ns_rsp_recv. */
struct ns_err *ns_rsp_send(struct ns_rsp_conn *c, const void *payload, size_t len);
struct ns_err *ns_rsp_send_str(struct ns_rsp_conn *c, const char *payload);
/** Send a %notification (never acknowledged). */
struct ns_err *ns_rsp_notify(struct ns_rsp_conn *c, const char *payload, size_t len);

struct ns_rsp_packet {
	bool notify;    /* arrived as %...# */
	bool interrupt; /* a bare 0x03 */
	char *data;     /* NUL-terminated payload; owned by the conn, valid until the next recv */
	size_t len;
};
/** Next packet or notification, waiting up to @timeout_ms (-1: forever). Acks good
 * packets ('+') and naks bad ones in ack mode. NS_ERR_TIMEOUT if none arrived,
 * NS_ERR_CLOSED on EOF. */
struct ns_err *ns_rsp_recv(struct ns_rsp_conn *c, int timeout_ms, struct ns_rsp_packet *out);

/** Client helper: send @req and wait up to @timeout_ms for the reply packet.
 * Notifications that arrive first are handed to @on_notify (may be NULL: dropped)
 * in order. The reply is valid until the next recv. */
struct ns_err *ns_rsp_request(struct ns_rsp_conn *c, const char *req, size_t req_len,
                              int timeout_ms,
                              void (*on_notify)(void *ctx, const char *data, size_t len), void *ctx,
                              struct ns_rsp_packet *reply);

/* ---- Tracepoint definitions (QTDP) ---- */

enum ns_rsp_action_kind {
	NS_RSP_ACT_REGS = 'R', /* R<mask>: registers (nonstop collects all of them) */
	NS_RSP_ACT_MEM = 'M',  /* M<basereg>,<offset>,<len>: basereg -1 = absolute */
	NS_RSP_ACT_EXPR = 'X', /* X<len>,<bytecode>: run, recording what trace ops mark */
};

struct ns_rsp_action {
	enum ns_rsp_action_kind kind;
	uint64_t regmask;
	int basereg;
	int64_t offset;
	uint64_t len;
	uint8_t *code; /* X: bytecode (malloc'd, owned by the tracepoint) */
	size_t code_len;
};

/* Hit conditions, evaluated in the target after the condition (nonstop extension
 * ":H<mode>,<n>" on the QTDP definition packet). */
enum ns_rsp_hit_mode {
	NS_RSP_HIT_ALWAYS = 0,
	NS_RSP_HIT_EQ = 1,  /* fire on the Nth passing hit only */
	NS_RSP_HIT_GE = 2,  /* fire from the Nth passing hit on */
	NS_RSP_HIT_MOD = 3, /* fire on every Nth passing hit */
};

struct ns_rsp_tracepoint {
	uint32_t num;
	uint64_t addr;
	bool enabled;
	uint64_t step, pass;
	uint8_t *cond; /* condition bytecode or NULL (malloc'd, owned) */
	size_t cond_len;
	enum ns_rsp_hit_mode hit_mode;
	uint64_t hit_n;
	uint64_t max_frames; /* ":L<n>" extension: stop collecting after n frames; 0 = no limit */
	/* ":R<lo>-<hi>[,<lo>-<hi>]..." extension: runtime address ranges [lo, hi) of the
	 * function containing addr (its body and any .cold parts), so the agent can check
	 * that no jump lands inside the bytes a jump pad would displace. nranges 0: unknown
	 * (the jump-pad tier is then not used). */
	size_t nranges;
	uint64_t ranges[2 * 8];
	struct ns_rsp_action *actions; /* malloc'd array, owned */
	size_t nactions;
};

void ns_rsp_tp_deinit(struct ns_rsp_tracepoint *tp);
/** Encode @tp as the QTDP packets GDB would send: the definition packet, then one
 * "QTDP:-n:addr:..." packet per action (each packet at most @max_packet bytes;
 * intermediate ones end in '-'). Returns a malloc'd array of malloc'd strings. */
struct ns_err *ns_rsp_tp_encode(const struct ns_rsp_tracepoint *tp, size_t max_packet,
                                char ***packets_out, size_t *npackets_out);
void ns_rsp_free_packets(char **packets, size_t n);
/** Parse one QTDP packet (payload without "$"/"#cs"). A definition packet
 * ("QTDP:n:...") initialises @tp; an action packet ("QTDP:-n:...") appends to @tp,
 * which must have the same number and address. *@more is set if '-' ends it. */
struct ns_err *ns_rsp_tp_parse(const char *pkt, struct ns_rsp_tracepoint *tp, bool *more);

/* ---- qNsFrames replies ---- */

/* A qNsFrames reply is items separated by ';': a trace frame as "F<hex>", or, once the
 * client has said "NsFrameBinary+" in qSupported, as "b<hex length>:<raw bytes>" (the
 * bytes escaped by the packet framing only: half the size and no hex work on either
 * side); "L<hex>" hits dropped since the last report; "W<hex>"/"X<hex>" the program's
 * exit code / terminating signal. */
struct ns_rsp_frames_item {
	char kind;           /* 'F' (a frame, either encoding), 'L', 'W', 'X', or 0: an item
	                        this reader does not know (skipped, for later extensions) */
	const uint8_t *data; /* 'F': the frame's bytes, inside the reply buffer */
	size_t len;
	uint64_t value; /* 'L', 'W', 'X' */
};
/** The item of the qNsFrames reply @reply (@len bytes) at *@pos, advancing *@pos past
 * it and its separator; *@more is false at the end (no item then). A hex frame is decoded in place (so @reply
 * is modified). Errors (NS_ERR_FORMAT, *@pos then at the end): a length that runs past
 * the reply, bad hex, a binary frame not followed by ';' or the end. */
struct ns_err *ns_rsp_frames_next(uint8_t *reply, size_t len, size_t *pos,
                                  struct ns_rsp_frames_item *out, bool *more);
/** Append frame @data (@len bytes) to a qNsFrames reply in @out as an item
 * (';'-separated from what @out holds), binary or hex. */
void ns_rsp_frames_put(struct ns_strbuf *out, const void *data, size_t len, bool binary);

/* ---- Small codec helpers ---- */

/** Parse hex number at *@p, advancing it; -1 if no digits. */
int ns_rsp_parse_hex(const char **p, uint64_t *out);
/** qXfer reply for @data at @offset/@len: "m<bytes>" or "l<bytes>", binary-escaped
 * by framing; appended to @out. */
void ns_rsp_xfer_reply(struct ns_strbuf *out, const void *data, size_t size, uint64_t offset,
                       uint64_t len);

#endif

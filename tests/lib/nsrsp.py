"""The RSP client the Python tests and benchmarks share: framing ($data#cs, checksums),
no-ack mode, request/reply with %NsFrames notifications set aside, qNsFrames draining,
QTDP encoding and the NSFR frame parser (core/frame/frame.h).

Import with the tests/lib directory on sys.path:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
    import nsrsp"""
import os
import select
import struct
import subprocess
import time

FRAME_MAGIC = 0x5246534e  # "NSFR"


def unescape(body):
    """A packet body with the framing's escapes undone ('}' then the byte ^ 0x20: only
    '#', '$', '}' and '*' are escaped, and every '}' in a packet starts an escape, so
    the pairs never overlap and '}' itself is restored last)."""
    return (body.replace(b'}\x03', b'#').replace(b'}\x04', b'$').replace(b'}\x0a', b'*')
            .replace(b'}\x5d', b'}'))


class Rsp:
    """A minimal RSP client over a stub's pipes (proc.stdin / proc.stdout; set .fd for a
    socket). Replies and notifications are str. Bytes-based and fast enough to drain a
    million frames (no per-byte Python loop unless a packet holds an escape)."""

    def __init__(self, proc):
        self.p = proc
        self.fd = proc.stdout.fileno()
        self.buf = b''
        self.ack = True
        self.notes = []

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.p.stdin.write(b'$' + data + b'#%02x' % (sum(data) & 0xff))
        self.p.stdin.flush()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError('no reply from the stub')
        r, _, _ = select.select([self.fd], [], [], left)
        if not r:
            raise TimeoutError('no reply from the stub')
        d = os.read(self.fd, 1 << 20)
        if not d:
            raise EOFError('stub closed the connection')
        self.buf += d

    def _packet(self, deadline):
        """The next packet as (kind '$' or '%', unescaped body bytes); acks '$' packets
        unless in no-ack mode; skips acks and anything else before a packet start."""
        while True:
            i = 0
            while i < len(self.buf) and self.buf[i] not in b'$%':
                i += 1
            self.buf = self.buf[i:]
            h = self.buf.find(b'#')
            if self.buf and h >= 0 and len(self.buf) >= h + 3:
                kind, body = self.buf[:1], self.buf[1:h]
                self.buf = self.buf[h + 3:]
                if kind == b'$' and self.ack:
                    self.p.stdin.write(b'+')
                    self.p.stdin.flush()
                if b'}' in body:
                    body = unescape(body)
                return kind.decode(), body
            self._fill(deadline)

    def _note(self, body):
        self.notes.append(body.decode())

    def _reply(self, body):
        return body.decode()

    def recv(self, timeout=10.0):
        """The next reply ('$' packet); notifications on the way go to .notes."""
        deadline = time.monotonic() + timeout
        while True:
            kind, body = self._packet(deadline)
            if kind == '%':
                self._note(body)
                continue
            return self._reply(body)

    def cmd(self, data, timeout=10.0):
        self.send(data)
        return self.recv(timeout)

    def wait_note(self, prefix, timeout=5.0):
        """The first notification starting with @prefix (already received or next)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, n in enumerate(self.notes):
                if n.startswith(prefix):
                    return self.notes.pop(i)
            kind, body = self._packet(deadline)
            if kind == '%':
                self._note(body)

    def handshake(self, binary=False):
        """qSupported (its reply is returned), no-ack mode, non-stop mode. @binary: ask
        for binary frames (qNsFrames replies are then bytes only RawRsp returns whole:
        read them with reply_items)."""
        r = self.cmd('qSupported:multiprocess+;NsFramePush+' + (';NsFrameBinary+' if binary
                                                                else ''))
        self.cmd('QStartNoAckMode')
        self.ack = False
        self.cmd('QNonStop:1')
        return r


class RawRsp(Rsp):
    """Rsp with bytes replies and notifications reduced to a flag (for benchmarks
    draining many frames the way nonstop-dap does: wait_push, then qNsFrames until OK)."""

    pushed = False

    def _note(self, body):
        self.pushed = True

    def wait_push(self, timeout):
        """True once the stub has pushed a notification (%NsFrames: frames are waiting),
        False after @timeout seconds without one."""
        deadline = time.monotonic() + timeout
        while not self.pushed:
            try:
                kind, _ = self._packet(deadline)
            except TimeoutError:
                return False
            self.pushed = self.pushed or kind == '%'
        self.pushed = False
        return True

    def _reply(self, body):
        return body


def stop_stub(proc, timeout=10):
    """Close the stub's RSP input (it removes its tracepoints and exits once the program
    has) and reap it, killing it after @timeout seconds."""
    try:
        proc.stdin.close()
    except BrokenPipeError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def x_act(code):
    """An agent expression as a QTDP 'X' field: X<len>,<hex>."""
    return 'X%x,%s' % (len(code), code.hex())


def qtdp_packets(num, addr, cond=None, ranges='', actions=()):
    """The QTDP packets defining tracepoint @num at @addr (enabled, no step, no pass count):
    the definition with the optional condition bytecode and ranges field, then one packet
    per action string, each but the last marked '-' (more to come)."""
    d = 'QTDP:%x:%x:E:0:0' % (num, addr)
    if cond:
        d += ':' + x_act(cond)
    pkts = [d + ranges + ('-' if actions else '')]
    for i, act in enumerate(actions):
        pkts.append('QTDP:-%x:%x:%s%s' % (num, addr, act, '-' if i + 1 < len(actions) else ''))
    return pkts


def define(rsp, num, addr, ranges, cond, actions):
    """Sends qtdp_packets(); None on success, else the first non-OK reply (as str)."""
    for pkt in qtdp_packets(num, addr, cond, ranges, actions):
        r = rsp.cmd(pkt)
        if r not in ('OK', b'OK'):
            return r.decode(errors='replace') if isinstance(r, bytes) else r
    return None


def parse_frame(b, strict=False):
    """An NSFR frame (bytes) as a dict: header fields, 'regs' (the R block's 26 registers
    or None), 'mem' [(addr, bytes)] and 'err' [(addr, (code, value))]. @strict: assert the
    magic."""
    (magic, ver, hsz, size, tp, addr, tid, tns, seq, nblk, status, fault,
     hits) = struct.unpack_from('<IHHIIQQQQIIQQ', b, 0)
    if strict:
        assert magic == FRAME_MAGIC, hex(magic)
    fr = {'magic': magic, 'tp': tp, 'addr': addr, 'tid': tid, 'seq': seq, 'status': status,
          'hits': hits, 'regs': None, 'mem': [], 'err': []}
    off = hsz
    for _ in range(nblk):
        typ, ln, baddr = struct.unpack_from('<B3xIQ', b, off)
        pay = b[off + 16:off + 16 + ln]
        if typ == ord('R'):
            fr['regs'] = struct.unpack_from('<26Q', pay)
        elif typ == ord('M'):
            fr['mem'].append((baddr, pay))
        elif typ == ord('E'):
            fr['err'].append((baddr, struct.unpack_from('<IxxxxQ', pay)))
        off += 16 + ((ln + 7) & ~7)
    return fr


def reply_items(body):
    """The items of a qNsFrames reply (bytes or str), either frame encoding: ('F', frame
    bytes), ('L' | 'W' | 'X', int), or (first character, the raw item) for any other."""
    if isinstance(body, str):
        body = body.encode()
    pos, n = 0, len(body)
    while pos < n:
        if body[pos] == 0x62:  # b<hex length>:<bytes>
            c = body.index(b':', pos)
            ln = int(body[pos + 1:c], 16)
            if c + 1 + ln > n or (c + 1 + ln < n and body[c + 1 + ln] != 0x3b):
                raise ValueError('bad binary frame item at %d' % pos)
            yield 'F', body[c + 1:c + 1 + ln]
            pos = c + 2 + ln
            continue
        e = body.find(b';', pos)
        e = n if e < 0 else e
        kind, item, pos = body[pos:pos + 1].decode(), body[pos + 1:e], e + 1
        if kind == 'F':
            yield kind, bytes.fromhex(item.decode())
        elif kind in ('L', 'W', 'X'):
            yield kind, int(item, 16)
        else:
            yield kind, item


def tally(body):
    """(frames, hits dropped, the exit item 'W..'/'X..' or None) of a qNsFrames reply
    (bytes), walking the items without decoding the frames (benchmarks' drain loops)."""
    frames = drops = 0
    ex = None
    pos, n = 0, len(body)
    while pos < n:
        k = body[pos]
        if k == 0x62:  # b<hex length>:<bytes>
            c = body.index(b':', pos)
            pos = c + 2 + int(body[pos + 1:c], 16)
            frames += 1
            continue
        e = body.find(b';', pos)
        e = n if e < 0 else e
        if k == 0x46:  # F<hex>
            frames += 1
        elif k == 0x4c:  # L
            drops += int(body[pos + 1:e], 16)
        elif k in (0x57, 0x58):  # W, X
            ex = body[pos:e].decode()
        pos = e + 1
    return frames, drops, ex


def split_frames(reply, strict=False):
    """A qNsFrames reply (str or bytes) as ([parsed frames], [other items as str: L.., W..,
    X..])."""
    frames, items = [], []
    for kind, v in reply_items(reply):
        if kind == 'F':
            frames.append(parse_frame(v, strict))
        elif kind in ('L', 'W', 'X'):
            items.append('%s%x' % (kind, v))
        else:
            items.append(kind + v.decode(errors='replace'))
    return frames, items


def drain_frames(rsp):
    """qNsFrames until the stub answers OK: ([parsed frames], [other items])."""
    frames, items = [], []
    while True:
        r = rsp.cmd('qNsFrames')
        if r == 'OK':
            return frames, items
        f, i = split_frames(r)
        frames += f
        items += i

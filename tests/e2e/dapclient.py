"""DAP client for nonstop's end-to-end tests: Content-Length framing over a subprocess's
stdio, every message recorded, every wait bounded."""
import json
import subprocess
import threading


class DAP:
    def __init__(self, argv, env=None, cwd=None):
        self.seq = 0
        self.messages, self.events, self.resp = [], [], {}
        self.cv = threading.Condition()
        self.closed = False
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=cwd)
        self.stderr = b''
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._err_reader, daemon=True).start()

    def _err_reader(self):
        self.stderr = self.proc.stderr.read()

    def _reader(self):
        r = self.proc.stdout
        try:
            while True:
                hdr = b''
                while not hdr.endswith(b'\r\n\r\n'):
                    c = r.read(1)
                    if not c:
                        return
                    hdr += c
                n = None
                for line in hdr.split(b'\r\n'):
                    if line.lower().startswith(b'content-length:'):
                        n = int(line.split(b':', 1)[1])
                m = json.loads(r.read(n))
                with self.cv:
                    self.messages.append(m)
                    if m.get('type') == 'response':
                        self.resp[m.get('request_seq')] = m
                    elif m.get('type') == 'event':
                        self.events.append(m)
                    self.cv.notify_all()
        finally:
            with self.cv:
                self.closed = True
                self.cv.notify_all()

    def send_raw(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError:
            pass

    def req(self, cmd, args=None, wait=True, timeout=60):
        self.seq += 1
        s = self.seq
        b = json.dumps({'seq': s, 'type': 'request', 'command': cmd,
                        'arguments': args or {}}).encode()
        self.send_raw(b'Content-Length: %d\r\n\r\n' % len(b) + b)
        if not wait:
            return s
        return self.wait_resp(s, timeout)

    def wait_resp(self, s, timeout=60):
        with self.cv:
            self.cv.wait_for(lambda: s in self.resp or self.closed, timeout=timeout)
            return self.resp.get(s)

    def body(self, cmd, args=None, timeout=60):
        r = self.req(cmd, args, timeout=timeout) or {}
        return r.get('body') or {}

    def wait_event(self, name, count=1, timeout=60, pred=None):
        def have():
            return [e for e in self.events
                    if e.get('event') == name and (pred is None or pred(e))]
        with self.cv:
            self.cv.wait_for(lambda: len(have()) >= count or self.closed, timeout=timeout)
            return have()

    def outputs(self, category=None):
        return [e['body'] for e in self.events if e.get('event') == 'output'
                and (category is None or e['body'].get('category') == category)]

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

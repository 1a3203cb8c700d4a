#!/usr/bin/env python3
"""A scripted stand-in for nonstop-dap that speaks DAP on stdin/stdout, for testing
dap-run. Every request it receives is appended as one JSON line to $FAKE_DAP_LOG.

$FAKE_DAP_MODE:
  run   (default) after configurationDone: program output, a logpoint line, a
        snapshot (stopped, reason "snapshot"); on continue: exited 3, terminated.
  hang  after configurationDone: one output line, then nothing until disconnect.
  die   exit right after answering initialize.
Breakpoints on lines >= 1000 come back unverified.
"""
import json
import os
import sys

inp = sys.stdin.buffer
out = sys.stdout.buffer
seq = 0
log = open(os.environ["FAKE_DAP_LOG"], "a") if os.environ.get("FAKE_DAP_LOG") else None
mode = os.environ.get("FAKE_DAP_MODE", "run")
source_path = "/nowhere/main.c"


def send(msg):
    global seq
    seq += 1
    msg["seq"] = seq
    data = json.dumps(msg).encode()
    out.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
    out.flush()


def read():
    length = None
    while True:
        line = inp.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    return json.loads(inp.read(length))


def respond(req, body=None, success=True, message=None):
    m = {"type": "response", "request_seq": req["seq"], "command": req["command"],
         "success": success}
    if body is not None:
        m["body"] = body
    if message:
        m["message"] = message
    send(m)


def event(name, body=None):
    m = {"type": "event", "event": name}
    if body is not None:
        m["body"] = body
    send(m)


def var(name, value, typ, ref=0):
    return {"name": name, "value": value, "type": typ, "variablesReference": ref}


VARIABLES = {
    101: [var("n", "42", "int"), var("p", "0x7ffd1234", "struct point *", 201)],
    201: [var("x", "1", "int"), var("y", "2", "int", 301)],
    301: [var("deep", "0", "int")],
    102: [var("argc", "1", "int")],
    900: [var("rip", "0x401000", "void *")],
}


def main():
    global source_path
    while True:
        req = read()
        if req is None:
            return
        if log:
            log.write(json.dumps(req) + "\n")
            log.flush()
        cmd = req.get("command")
        args = req.get("arguments") or {}
        if cmd == "initialize":
            respond(req, {"supportsConfigurationDoneRequest": True,
                          "supportsLogPoints": True,
                          "supportsConditionalBreakpoints": True})
            if mode == "die":
                return
        elif cmd in ("launch", "attach"):
            respond(req)
            event("initialized")
        elif cmd == "setBreakpoints":
            source_path = args["source"]["path"]
            bps = []
            for i, bp in enumerate(args.get("breakpoints", [])):
                line = bp["line"]
                b = {"id": len(bps) + 1, "verified": line < 1000, "line": line}
                if line >= 1000:
                    b["message"] = "line %d is past the end of %s" % (
                        line, os.path.basename(source_path))
                bps.append(b)
            respond(req, {"breakpoints": bps})
        elif cmd == "configurationDone":
            respond(req)
            event("output", {"category": "stdout", "output": "hello from program\n"})
            if mode == "hang":
                continue
            event("output", {"category": "stderr", "output": "warn\n"})
            event("output", {"category": "console", "output": "x = 42\n",
                             "source": {"path": source_path}, "line": 12})
            event("breakpoint", {"reason": "changed",
                                 "breakpoint": {"id": 1, "verified": True,
                                                "message": "condition error: no x"}})
            event("stopped", {"reason": "snapshot", "threadId": 1001,
                              "description": "snapshot at main.c:20",
                              "allThreadsStopped": False})
        elif cmd == "stackTrace":
            respond(req, {"stackFrames": [
                {"id": 1, "name": "compute", "line": 20, "column": 1,
                 "source": {"name": "main.c", "path": source_path}},
                {"id": 2, "name": "main", "line": 30, "column": 1,
                 "source": {"name": "main.c", "path": source_path}},
            ], "totalFrames": 2})
        elif cmd == "scopes":
            fid = args["frameId"]
            respond(req, {"scopes": [
                {"name": "Locals", "variablesReference": 100 + fid, "expensive": False},
                {"name": "Registers", "variablesReference": 900, "expensive": True},
            ]})
        elif cmd == "variables":
            respond(req, {"variables": VARIABLES.get(args["variablesReference"], [])})
        elif cmd == "continue":
            respond(req, {"allThreadsContinued": False})
            event("output", {"category": "stdout", "output": "bye\n"})
            event("exited", {"exitCode": 3})
            event("terminated")
        elif cmd == "disconnect":
            respond(req)
            return
        else:
            respond(req, success=False, message="unsupported " + str(cmd))


main()

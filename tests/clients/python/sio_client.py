#!/usr/bin/env python3
"""A scriptable python-socketio client for the end-to-end tests.

Usage: python3 sio_client.py '<plan JSON>'   (or the plan in $SIO_PLAN)

Same plan format and output as ../node/sio-client.mjs:
  {"url", "path", "auth", "query", "transports", "reconnection", "steps": [...]}
steps: {"emit", "data", "ack", "repeat"}, {"wait_ms"}, {"wait_for", "timeout_ms"},
       {"wait_stdin"}, {"disconnect"}, {"connect"}
output: one JSON line per event {"t": ms since start, "at": epoch ms, "event", "data"},
then "done".
Exit code 0, or 2 when a wait_for timed out.

python-socketio cannot emit an explicit null argument: "data": null emits
the event without an argument.
"""

import json
import os
import sys
import threading
import time
from urllib.parse import urlencode

import socketio

STARTED = time.monotonic()
OUT_LOCK = threading.Lock()
COND = threading.Condition()
RECEIVED = {}
CONSUMED = {}


def emit_line(event, data):
    t = round((time.monotonic() - STARTED) * 1000.0, 1)
    at = round(time.time() * 1000.0, 1)
    line = json.dumps({"t": t, "at": at, "event": event, "data": data})
    with OUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def record(event, data):
    emit_line(event, data)
    with COND:
        RECEIVED[event] = RECEIVED.get(event, 0) + 1
        COND.notify_all()


def take_one(names):
    for n in names:
        if RECEIVED.get(n, 0) > CONSUMED.get(n, 0):
            CONSUMED[n] = CONSUMED.get(n, 0) + 1
            return n
    return None


def wait_for(names, timeout_ms):
    deadline = time.monotonic() + timeout_ms / 1000.0
    with COND:
        while True:
            got = take_one(names)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            COND.wait(left)


def one_arg(args):
    return args[0] if len(args) == 1 else list(args)


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SIO_PLAN")
    plan = json.loads(raw) if raw else None
    if not plan or "url" not in plan:
        sys.stderr.write("usage: sio_client.py '<plan JSON>'\n")
        return 64

    debug = bool(os.environ.get("SIO_DEBUG"))
    sio = socketio.Client(
        reconnection=plan.get("reconnection", False), logger=debug, engineio_logger=debug
    )
    refused = {"seen": False}

    @sio.event
    def connect():
        record("connect", {"id": sio.sid, "transport": sio.transport()})

    @sio.event
    def connect_error(*args):
        data = one_arg(args) if args else None
        if isinstance(data, dict) and "message" in data:
            payload = {"message": data.get("message"), "data": data.get("data")}
        else:
            payload = {"message": data if isinstance(data, str) else json.dumps(data), "data": None}
        refused["seen"] = True
        record("connect_error", payload)

    @sio.event
    def disconnect(*args):
        reason = args[0] if args else None
        record("disconnect", {"reason": str(reason) if reason is not None else None})

    @sio.on("*")
    def any_event(event, *args):
        record(event, one_arg(args) if args else None)

    url = plan["url"]
    if plan.get("query"):
        url = url + ("&" if "?" in url else "?") + urlencode(plan["query"])
    kwargs = {"wait_timeout": 10}
    if plan.get("auth") is not None:
        kwargs["auth"] = plan["auth"]
    if plan.get("transports"):
        kwargs["transports"] = plan["transports"]
    if plan.get("path"):
        kwargs["socketio_path"] = plan["path"].strip("/")

    def do_connect():
        try:
            sio.connect(url, **kwargs)
        except socketio.exceptions.ConnectionError as e:
            if not refused["seen"]:
                record("connect_error", {"message": str(e), "data": None})

    do_connect()

    code = 0
    for step in plan.get("steps", []):
        if "emit" in step:
            event = step["emit"]
            for _ in range(step.get("repeat", 1)):
                args = (step["data"],) if step.get("data") is not None else ()
                callback = None
                if step.get("ack"):
                    def callback(*reply, _event=event):
                        record("ack:" + _event, one_arg(reply) if reply else None)
                try:
                    sio.emit(event, *args, callback=callback) if args else sio.emit(event, callback=callback)
                except socketio.exceptions.BadNamespaceError as e:
                    record("emit_failed", {"event": event, "error": str(e)})
        elif "wait_ms" in step:
            time.sleep(step["wait_ms"] / 1000.0)
        elif "wait_for" in step:
            names = step["wait_for"]
            names = names if isinstance(names, list) else [names]
            timeout = step.get("timeout_ms", 10000)
            if wait_for(names, timeout) is None:
                emit_line("wait_timeout", {"wait_for": names, "timeout_ms": timeout})
                code = 2
                break
        elif "wait_stdin" in step:
            sys.stdin.readline()
        elif "disconnect" in step:
            sio.disconnect()
        elif "connect" in step:
            do_connect()
        else:
            emit_line("bad_step", step)
            code = 64
            break

    try:
        sio.disconnect()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass
    emit_line("done", {"code": code})
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

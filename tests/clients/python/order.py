#!/usr/bin/env python3
"""Many python-socketio connections that each send back-to-back events and
write down the order of what comes back (for the order tests).

Usage: python3 order.py '{"url": "...", "token": "...", "clients": 50,
                          "settle_ms": 1000}'

The same script as tests/clients/node/order.mjs (see its header), with the
default transports (polling, then the upgrade to WebSocket). The order is
taken where packets come off the wire: python-socketio's sync client runs
each incoming message's handler in a thread of its own, so handlers may
run in another order than the server sent; the wire order is what the
gateway is responsible for.
"""

import json
import sys
import threading
import time

import socketio

DATA = {"quotes", "positions_update", "orders_update", "logs_update",
        "signals_update", "account_update"}
HEARTBEATS = range(1, 7)


def run(i, plan, out, out_lock):
    sio = socketio.Client(reconnection=False)
    sequence = []
    state = {"unsubscribed": False, "quotes_after": 0, "acks": 0}
    lock = threading.Lock()
    all_acked = threading.Event()
    connected = threading.Event()
    pending = {}  # ack id -> name, from what this client sent

    # Packets as they come off the wire, in order (see the module doc).
    original_receive = sio.eio._receive_packet

    def receive(pkt):
        data = pkt.data
        if pkt.packet_type == 4 and isinstance(data, str):
            record(data)
        original_receive(pkt)

    sio.eio._receive_packet = receive

    def record(text):
        with lock:
            if text.startswith("2"):
                try:
                    args = json.loads(text[1:])
                except ValueError:
                    return
                event = args[0] if args else None
                if event in DATA:
                    if state["unsubscribed"]:
                        state["quotes_after"] += 1
                    return
                if event == "unsubscribed":
                    state["unsubscribed"] = True
                if event == "heartbeat_ack":
                    payload = args[1] if len(args) > 1 else {}
                    sequence.append(f"heartbeat_ack:{payload.get('client_timestamp')}")
                else:
                    sequence.append(event)
                if event == "connected":
                    connected.set()
            elif text.startswith("3"):
                digits = ""
                for ch in text[1:]:
                    if not ch.isdigit():
                        break
                    digits += ch
                sequence.append(pending.get(int(digits), f"ack:{digits}") if digits else "ack:?")
                state["acks"] += 1
                if state["acks"] == 8:
                    all_acked.set()

    report = {"client": i}
    try:
        sio.connect(plan["url"], auth={"token": plan["token"]}, wait_timeout=10)
        if not connected.wait(10):
            raise RuntimeError("no connected greeting")
        # python-socketio numbers acks from 1 per client, in emit order.
        names = ["ack:subscribe", "ack:unsubscribe"] + [f"ack:heartbeat:{n}" for n in HEARTBEATS]
        with lock:
            for n, name in enumerate(names, start=1):
                pending[n] = name
        noop = lambda *args: None  # noqa: E731
        sio.emit("subscribe", {"channels": ["quotes"]}, callback=noop)
        sio.emit("unsubscribe", {"channels": ["quotes"]}, callback=noop)
        for n in HEARTBEATS:
            sio.emit("heartbeat", {"timestamp": n}, callback=noop)
        if not all_acked.wait(20):
            raise RuntimeError("not every ack came")
        time.sleep(plan.get("settle_ms", 1000) / 1000)
        with lock:
            report.update({
                "transport": sio.transport(),
                "sequence": list(sequence),
                "quotes_after_unsubscribed": state["quotes_after"],
            })
    except Exception as e:  # noqa: BLE001 - reported to the test
        with lock:
            report.update({"error": repr(e), "sequence": list(sequence)})
    finally:
        try:
            sio.disconnect()
        except Exception:  # noqa: BLE001
            pass
    with out_lock:
        out.write(json.dumps(report) + "\n")
        out.flush()


def main():
    plan = json.loads(sys.argv[1])
    out_lock = threading.Lock()
    threads = [threading.Thread(target=run, args=(i, plan, sys.stdout, out_lock))
               for i in range(plan.get("clients", 50))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.stdout.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

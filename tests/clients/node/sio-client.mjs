#!/usr/bin/env node
// A scriptable socket.io-client for the end-to-end tests.
//
// Usage: node sio-client.mjs '<plan JSON>'   (or the plan in $SIO_PLAN)
//
// The plan:
//   {
//     "url": "http://127.0.0.1:9090",      required
//     "path": "/socket.io/",                optional
//     "auth": {"token": "..."},             optional (handshake auth)
//     "query": {"token": "..."},            optional (query string)
//     "transports": ["websocket"],          optional
//     "reconnection": false,                optional (default false)
//     "resume": false,                      optional: behave like a dashboard
//                                           that resumes its session (below)
//     "steps": [ ... ]
//   }
// With "resume": true, every `connected` puts its `session` into the
// handshake auth (auth.session), so any later connection resumes it: the
// automatic reconnection after a transport failure (with "reconnection":
// true), a `connect` step, and the reconnection this client makes by itself
// after `disconnected {"reconnect": true}` from the server. A refusal with
// `UPSTREAM_UNAVAILABLE` (a draining replica) is retried after 200 ms.
// Steps, run in order:
//   {"emit": "subscribe", "data": {...}, "ack": true, "repeat": 1}
//        emit an event (without "data": no argument); with "ack": true the
//        acknowledgement is printed as the event "ack:<event>"
//   {"wait_ms": 200}
//   {"wait_for": "subscribed" | ["connect", "connect_error"], "timeout_ms": 5000}
//        wait for an occurrence of one of these events that no earlier
//        wait_for has consumed (so a reply that came early still counts)
//   {"wait_stdin": true}   wait for a line on stdin (or its end)
//   {"disconnect": true}
//   {"connect": true}      connect again after a disconnect
//
// Output: one JSON line per thing that happened,
//   {"t": <ms since start>, "at": <epoch ms>, "event": "...", "data": ...}
// including "connect" ({id, transport}), "connect_error" ({message, data}),
// "disconnect" ({reason}), "ack:<event>", "wait_timeout" and finally "done".
// Exit code 0, or 2 when a wait_for timed out (the plan stops there).

import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const started = performance.now();
const plan = JSON.parse(process.argv[2] ?? process.env.SIO_PLAN ?? "null");
if (!plan || !plan.url) {
  console.error("usage: node sio-client.mjs '<plan JSON>' (see the header)");
  process.exit(64);
}

function print(event, data) {
  const now = performance.now();
  const t = Math.round((now - started) * 10) / 10;
  const at = Math.round((performance.timeOrigin + now) * 10) / 10;
  process.stdout.write(JSON.stringify({ t, at, event, data: data === undefined ? null : data }) + "\n");
}

// Event bookkeeping for wait_for.
const received = new Map(); // name -> count
const consumed = new Map(); // name -> count
let wake = null;
function record(event, data) {
  print(event, data);
  received.set(event, (received.get(event) ?? 0) + 1);
  if (wake) wake();
}
function takeOne(names) {
  for (const n of names) {
    if ((received.get(n) ?? 0) > (consumed.get(n) ?? 0)) {
      consumed.set(n, (consumed.get(n) ?? 0) + 1);
      return n;
    }
  }
  return null;
}
async function waitFor(names, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const got = takeOne(names);
    if (got) return got;
    const left = deadline - performance.now();
    if (left <= 0) return null;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, left);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = null;
  }
}

// stdin lines, for wait_stdin.
let stdinLines = 0;
let stdinEnded = false;
let stdinWake = null;
const rl = createInterface({ input: process.stdin });
rl.on("line", () => {
  stdinLines += 1;
  if (stdinWake) stdinWake();
});
rl.on("close", () => {
  stdinEnded = true;
  if (stdinWake) stdinWake();
});
let stdinConsumed = 0;
async function waitStdin() {
  while (stdinLines <= stdinConsumed && !stdinEnded) {
    await new Promise((resolve) => (stdinWake = resolve));
    stdinWake = null;
  }
  if (stdinLines > stdinConsumed) stdinConsumed += 1;
}

const options = {
  reconnection: plan.reconnection ?? false,
  forceNew: true,
  timeout: 10000,
};
if (plan.path) options.path = plan.path;
if (plan.auth) options.auth = plan.auth;
if (plan.query) options.query = plan.query;
if (plan.transports) options.transports = plan.transports;

const socket = io(plan.url, options);
socket.on("connect", () => {
  record("connect", { id: socket.id, transport: socket.io.engine?.transport?.name ?? null });
});
socket.on("connect_error", (err) => {
  record("connect_error", { message: err?.message ?? String(err), data: err?.data ?? null });
});
socket.on("disconnect", (reason, description) => {
  record("disconnect", { reason, description: description?.message ?? description?.description ?? null });
});
socket.onAny((event, ...args) => {
  record(event, args.length === 1 ? args[0] : args);
});

// "resume": keep the session, and come back when told to or refused by a
// draining replica.
let toldToReconnect = false;
if (plan.resume) {
  socket.on("connected", (hello) => {
    if (hello?.session) socket.auth = { ...(socket.auth ?? {}), session: hello.session };
    toldToReconnect = false;
  });
  socket.on("disconnected", (bye) => {
    toldToReconnect = bye?.reconnect === true;
  });
  socket.on("disconnect", (reason) => {
    // The server closed the socket: socket.io-client does not come back by itself.
    if (reason === "io server disconnect" && toldToReconnect) setTimeout(() => socket.connect(), 100);
  });
  socket.on("connect_error", (err) => {
    if (err?.message === "UPSTREAM_UNAVAILABLE" && !socket.active) setTimeout(() => socket.connect(), 200);
  });
}

async function run() {
  for (const step of plan.steps ?? []) {
    if ("emit" in step) {
      const repeat = step.repeat ?? 1;
      for (let i = 0; i < repeat; i++) {
        const args = "data" in step ? [step.data] : [];
        if (step.ack) {
          socket.emit(step.emit, ...args, (...reply) => {
            record("ack:" + step.emit, reply.length === 1 ? reply[0] : reply);
          });
        } else {
          socket.emit(step.emit, ...args);
        }
      }
    } else if ("wait_ms" in step) {
      await new Promise((r) => setTimeout(r, step.wait_ms));
    } else if ("wait_for" in step) {
      const names = Array.isArray(step.wait_for) ? step.wait_for : [step.wait_for];
      const got = await waitFor(names, step.timeout_ms ?? 10000);
      if (!got) {
        print("wait_timeout", { wait_for: names, timeout_ms: step.timeout_ms ?? 10000 });
        return 2;
      }
    } else if ("wait_stdin" in step) {
      await waitStdin();
    } else if ("disconnect" in step) {
      socket.disconnect();
    } else if ("connect" in step) {
      socket.connect();
    } else {
      print("bad_step", step);
      return 64;
    }
  }
  return 0;
}

const code = await run();
socket.disconnect();
print("done", { code });
rl.close();
process.stdin.destroy();
process.stdout.write("", () => process.exit(code));

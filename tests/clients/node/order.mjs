#!/usr/bin/env node
// Many socket.io-client connections that each send back-to-back events
// and write down the order of what comes back (for the order tests).
//
// Usage: node order.mjs '{"url": "...", "token": "...", "clients": 50,
//                         "transports": ["websocket"] | null, "settle_ms": 1000}'
//
// Each client, once it has its `connected` greeting, emits at once (with
// acks): subscribe {channels: ["quotes"]}, unsubscribe {channels:
// ["quotes"]}, then heartbeat {timestamp: 1..6}. It writes down every
// event but the data events (`quotes`: only counted once `unsubscribed`
// has come), and each ack as `ack:<event>[:<n>]` when it arrives. When all
// eight acks are in it waits `settle_ms` more (quotes that still came then
// mean the client was left subscribed), then prints one line:
//   {"client": i, "transport": "...", "sequence": [...], "quotes_after_unsubscribed": n}
// and, once every client has reported, {"done": true}. A client that
// fails prints {"client": i, "error": "..."}.

import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2] ?? "null");
if (!plan || !plan.url || !plan.token) {
  console.error("usage: node order.mjs '<plan JSON>' (see the header)");
  process.exit(64);
}
const clients = plan.clients ?? 50;
const settleMs = plan.settle_ms ?? 1000;
const DATA = new Set(["quotes", "positions_update", "orders_update", "logs_update", "signals_update", "account_update"]);

function run(i) {
  return new Promise((resolve) => {
    const options = { auth: { token: plan.token }, reconnection: false, forceNew: true };
    if (plan.transports) options.transports = plan.transports;
    const socket = io(plan.url, options);
    const sequence = [];
    let unsubscribed = false;
    let quotesAfter = 0;
    let acks = 0;
    const finish = (report) => {
      socket.close();
      process.stdout.write(JSON.stringify({ client: i, ...report }) + "\n");
      resolve();
    };
    const timer = setTimeout(() => finish({ error: "timed out", sequence }), 20000);
    const acked = (name) => () => {
      sequence.push(name);
      if (++acks === 8) {
        setTimeout(() => {
          clearTimeout(timer);
          finish({
            transport: socket.io.engine?.transport?.name,
            sequence,
            quotes_after_unsubscribed: quotesAfter,
          });
        }, settleMs);
      }
    };
    socket.onAny((event, data) => {
      if (DATA.has(event)) {
        if (unsubscribed) quotesAfter++;
        return;
      }
      if (event === "unsubscribed") unsubscribed = true;
      sequence.push(event === "heartbeat_ack" ? `heartbeat_ack:${data?.client_timestamp}` : event);
      if (event === "connected") {
        socket.emit("subscribe", { channels: ["quotes"] }, acked("ack:subscribe"));
        socket.emit("unsubscribe", { channels: ["quotes"] }, acked("ack:unsubscribe"));
        for (let n = 1; n <= 6; n++) {
          socket.emit("heartbeat", { timestamp: n }, acked(`ack:heartbeat:${n}`));
        }
      }
    });
    socket.on("connect_error", (e) => {
      clearTimeout(timer);
      finish({ error: `connect_error: ${e.message}`, sequence });
    });
  });
}

await Promise.all(Array.from({ length: clients }, (_, i) => run(i)));
process.stdout.write(JSON.stringify({ done: true }) + "\n");
process.exit(0);

// The benchmark's reference peer: the gateway's quote job written the way a
// typical Node service would write it, with socket.io 4, jsonwebtoken and
// nats.js.
//
// - Auth: HS256 JWT from the handshake's auth.token (or ?token=), refused
//   with a connect_error whose message is the code (UNAUTHORIZED /
//   TOKEN_EXPIRED), like the gateway.
// - `connected` greeting on connection; `subscribe` {channels} joins one room
//   per account and channel and answers `subscribed` (and the ack, if any).
// - One core NATS subscription on <prefix>.*.> ; every message is
//   JSON.parse'd once and broadcast with io.to(room).emit(event, object).
//   socket.io encodes a broadcast once for all recipients, so this is the
//   idiomatic "parse once, fan out" Node design. No throttle, no per-client
//   queue limit (socket.io buffers in memory without bound), no JetStream.
//
// Environment: PORT (default 9100), HOST (127.0.0.1), JWT_SECRET (required),
// NATS_URL (nats://127.0.0.1:4222), SUBJECT_PREFIX (mt5), DEFAULT_ACCOUNT (demo).
// Prints {"listening": "<host>:<port>"} on stdout once it serves.

import { createServer } from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";
import { connect } from "nats";

const port = Number(process.env.PORT ?? 9100);
const host = process.env.HOST ?? "127.0.0.1";
const secret = process.env.JWT_SECRET;
const natsUrl = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const prefix = process.env.SUBJECT_PREFIX ?? "mt5";
const defaultAccount = process.env.DEFAULT_ACCOUNT ?? "demo";

if (!secret) {
  console.error("JWT_SECRET is required");
  process.exit(2);
}

const EVENTS = {
  quotes: "quotes",
  positions: "positions_update",
  orders: "orders_update",
  account: "account_update",
  logs: "logs_update",
  signals: "signals_update",
};

const httpServer = createServer();
const io = new Server(httpServer, {
  transports: ["polling", "websocket"],
  serveClient: false,
});

io.use((socket, next) => {
  const token = socket.handshake.auth?.token || socket.handshake.query?.token;
  try {
    const claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
    if (typeof claims.sub !== "string") throw new Error("no sub");
    socket.data.user = claims.sub;
    socket.data.account = claims.account ?? defaultAccount;
    socket.data.allowed = Array.isArray(claims.channels) ? new Set(claims.channels) : null;
    next();
  } catch (e) {
    next(new Error(e?.name === "TokenExpiredError" ? "TOKEN_EXPIRED" : "UNAUTHORIZED"));
  }
});

function channelsOf(data) {
  return Array.isArray(data?.channels) ? data.channels : null;
}

io.on("connection", (socket) => {
  const { account, allowed } = socket.data;
  socket.emit("connected", {
    message: "Connected to MT5 Trading Dashboard",
    server_time: new Date().toISOString(),
    session: socket.id,
  });

  socket.on("subscribe", (data, ack) => {
    const asked = channelsOf(data);
    if (!asked) {
      socket.emit("error", { error: "Invalid payload", details: "expected {channels: [...]}", code: "INVALID_PAYLOAD" });
      return;
    }
    const joined = [];
    for (const channel of asked) {
      if (!(channel in EVENTS)) {
        socket.emit("error", { error: "Unknown channel", details: String(channel), code: "UNKNOWN_CHANNEL" });
      } else if (allowed && !allowed.has(channel)) {
        socket.emit("error", { error: "Forbidden channel", details: channel, code: "FORBIDDEN_CHANNEL" });
      } else {
        socket.join(`${account}:${channel}`);
        joined.push(channel);
      }
    }
    socket.emit("subscribed", { channels: joined });
    if (typeof ack === "function") ack({ channels: joined });
  });

  socket.on("unsubscribe", (data, ack) => {
    const left = (channelsOf(data) ?? []).filter((c) => c in EVENTS);
    for (const channel of left) socket.leave(`${account}:${channel}`);
    socket.emit("unsubscribed", { channels: left });
    if (typeof ack === "function") ack({ channels: left });
  });

  socket.on("heartbeat", (data, ack) => {
    const reply = { timestamp: Date.now(), client_timestamp: data?.timestamp ?? null };
    socket.emit("heartbeat_ack", reply);
    if (typeof ack === "function") ack(reply);
  });
});

const nc = await connect({ servers: natsUrl, name: "mt5-bench-node-peer" });
const decoder = new TextDecoder();
const sub = nc.subscribe(`${prefix}.*.>`);

httpServer.listen(port, host, () => {
  console.log(JSON.stringify({ listening: `${host}:${httpServer.address().port}` }));
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, async () => {
    io.close();
    await nc.drain().catch(() => {});
    process.exit(0);
  });
}

// <prefix>.<account>.<channel>[.<symbol>]
for await (const msg of sub) {
  const parts = msg.subject.split(".");
  const account = parts[1];
  const channel = parts[2];
  const event = EVENTS[channel];
  if (!event) continue;
  let payload;
  try {
    payload = JSON.parse(decoder.decode(msg.data));
  } catch {
    continue;
  }
  io.to(`${account}:${channel}`).emit(event, payload);
}

#!/usr/bin/python3
"""A small tunnel agent for the gateway's integration tests (docs/tunnels.md).

It speaks the agent's side of the tunnel as TUNNEL_DESIGN fixes it: a WebSocket (RFC 6455,
subprotocol fastgateway-tunnel.v1) to the gateway's tunnel path, the handshake
(CHALLENGE -> AUTH <id> <proof> -> OK, proof = HMAC-SHA256(secret, "FGT/1\\n" hex(nonce)
"\\n" id)), then an HTTP/2 server (python3-h2) on the binary messages. Each request names its
service in the field fg-tunnel-service; the agent forwards it to that service's local
http:// address with http.client and answers with what came back (502 for an unknown service).
On "FGT/1 RECONNECT" it opens a new tunnel at once and closes the old one once its streams
are done. It reconnects after a lost tunnel with a short fixed delay (--reconnect-ms).

Usage:
  tunnel_agent.py --gateway ws://127.0.0.1:PORT/_fg/tunnel --id office --secret-file F \\
                  --service web=http://127.0.0.1:9000 [--service api=...] [--ca CA.pem]
                  [--heartbeat S] [--once] [--proof HEX] [--print-proof]
                  [--max-streams N]

Lines on stdout, for tests to wait on: "online N" (tunnel N authenticated), "refused CODE"
(the gateway closed the handshake), "proof HEX" (with --print-proof), "reconnect" (the gateway
asked), "closed N". --once: exit after the first tunnel ends or is refused (exit 3 when
refused). --proof HEX: send this proof instead of computing it (a replayed answer).
"""
import argparse
import asyncio
import concurrent.futures
import hashlib
import hmac
import os
import http.client
import ssl
import sys
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.settings
import websockets

SUBPROTOCOL = "fastgateway-tunnel.v1"


def say(*words):
    print(*words, flush=True)


def proof_for(secret, nonce_hex, agent_id):
    msg = ("FGT/1\n" + nonce_hex + "\n" + agent_id).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def forward(service_url, method, path, headers, body):
    """One request to a local HTTP/1.1 service; returns (status, [(name, value)], body)."""
    u = urllib.parse.urlsplit(service_url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for n, v in headers:
            conn.putheader(n, v)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body if body else None)
        r = conn.getresponse()
        data = r.read()
        hop = {"connection", "keep-alive", "transfer-encoding", "upgrade",
               "proxy-connection", "te", "content-length"}
        hs = [(n.lower(), v) for n, v in r.getheaders() if n.lower() not in hop]
        return r.status, hs, data
    finally:
        conn.close()


class Tunnel:
    """One tunnel connection: the WebSocket and the HTTP/2 server on it."""

    serial = 0

    def __init__(self, agent, ws):
        Tunnel.serial += 1
        self.n = Tunnel.serial
        self.agent = agent
        self.ws = ws
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.reqs = {}      # stream id -> [headers, bytearray body]
        self.pending = {}   # stream id -> bytearray still to send, with end flag
        self.tasks = set()
        self.draining = False   # RECONNECT heard
        self.successor = False  # the tunnel that replaces this one is online

    async def send(self):
        data = self.h2.data_to_send()
        if data:
            await self.ws.send(data)

    async def run(self):
        self.h2.initiate_connection()
        self.h2.update_settings({
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.agent.args.max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.h2.increment_flow_control_window(16 << 20)
        await self.send()
        async for msg in self.ws:
            if isinstance(msg, str):
                if msg.strip() == "FGT/1 RECONNECT":
                    say("reconnect")
                    self.draining = True
                    self.agent.spawn_tunnel(self)
                continue
            if os.environ.get("AGENT_DEBUG"): print("recv", len(msg), flush=True)
            for ev in self.h2.receive_data(msg):
                if os.environ.get("AGENT_DEBUG"): print(ev, flush=True)
                self.on_event(ev)
            await self.send()

    def maybe_finish(self):
        # the old tunnel goes once the new one is online and its own streams are done: until
        # then the gateway may still open streams on it
        if (self.draining and self.successor and not self.reqs and not self.pending
                and not self.tasks):
            asyncio.ensure_future(self.ws.close())

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            self.reqs[ev.stream_id] = [ev.headers, bytearray()]
        elif isinstance(ev, h2.events.DataReceived):
            r = self.reqs.get(ev.stream_id)
            if r is not None:
                r[1] += ev.data
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            # h2 reports a request's end once, as this event (even for a bodiless request)
            if ev.stream_id in self.reqs:
                self.start(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.reqs.pop(ev.stream_id, None)
            self.pending.pop(ev.stream_id, None)
            self.maybe_finish()
        elif isinstance(ev, h2.events.WindowUpdated):
            for sid in list(self.pending):
                self.flush(sid)

    def start(self, sid):
        t = asyncio.ensure_future(self.answer(sid))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def answer(self, sid):
        headers, body = self.reqs[sid]
        h = {}
        rest = []
        for n, v in headers:
            if n.startswith(":"):
                h[n] = v
            elif n == "fg-tunnel-service":
                h.setdefault("service", v)
            else:
                rest.append((n, v))
        if ":authority" in h:
            rest.insert(0, ("host", h[":authority"]))
        svc = self.agent.services.get(h.get("service", ""))
        if svc is None:
            status, hs, data = 502, [("content-type", "text/plain")], b"unknown service\n"
        else:
            loop = asyncio.get_running_loop()
            try:
                status, hs, data = await loop.run_in_executor(
                    None, forward, svc, h.get(":method", "GET"), h.get(":path", "/"), rest,
                    bytes(body))
            except OSError as e:
                status, hs, data = 502, [("content-type", "text/plain")], str(e).encode()
        self.reqs.pop(sid, None)
        try:
            out = [(":status", str(status))] + hs + [("content-length", str(len(data)))]
            self.h2.send_headers(sid, out, end_stream=not data)
            if data:
                self.pending[sid] = bytearray(data)
                self.flush(sid)
            await self.send()
        except Exception as e:  # the stream was reset meanwhile
            if os.environ.get("AGENT_DEBUG"):
                print("answer", repr(e), flush=True)
            self.pending.pop(sid, None)
        self.maybe_finish()

    def flush(self, sid):
        buf = self.pending.get(sid)
        if os.environ.get("AGENT_DEBUG"):
            print("flush", sid, buf is not None and len(buf), self.h2.local_flow_control_window(sid), flush=True)
        if buf is None:
            return
        try:
            while buf:
                n = min(len(buf), self.h2.local_flow_control_window(sid),
                        self.h2.max_outbound_frame_size)
                if n <= 0:
                    return
                self.h2.send_data(sid, bytes(buf[:n]))
                del buf[:n]
            self.h2.end_stream(sid)
        except Exception as e:
            if os.environ.get("AGENT_DEBUG"):
                print("flush", repr(e), flush=True)
        self.pending.pop(sid, None)
        asyncio.ensure_future(self.send())
        self.maybe_finish()


class Agent:
    def __init__(self, args):
        self.args = args
        self.secret = open(args.secret_file, "rb").read().strip()
        self.services = dict(s.split("=", 1) for s in args.service)
        self.live = set()
        self.done = asyncio.Event()
        self.exit_code = 0

    def ssl_context(self):
        if not self.args.gateway.startswith("wss://"):
            return None
        ctx = ssl.create_default_context(cafile=self.args.ca)
        if self.args.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def spawn_tunnel(self, old=None):
        asyncio.ensure_future(self.successor(old))

    async def successor(self, old):
        """The tunnel that replaces old (RECONNECT): dialed again until it is online, as long
        as old still serves."""
        while True:
            r = await self.one_tunnel(old)
            if r not in ("failed", "refused") or old not in self.live:
                return
            await asyncio.sleep(self.args.reconnect_ms / 1000)

    async def one_tunnel(self, old=None):
        """Dial, authenticate, serve; returns when the tunnel ends."""
        try:
            ws = await websockets.connect(
                self.args.gateway, subprotocols=[SUBPROTOCOL], ssl=self.ssl_context(),
                ping_interval=self.args.heartbeat, ping_timeout=self.args.heartbeat * 2,
                max_size=None, compression=None, open_timeout=10)
        except Exception as e:
            say("dial-failed", type(e).__name__, str(e)[:80].replace("\n", " "))
            return "failed"
        try:
            challenge = await ws.recv()
            nonce = challenge.split()[2]
            proof = self.args.proof or proof_for(self.secret, nonce, self.args.id)
            if self.args.print_proof:
                say("proof", proof)
            await ws.send("FGT/1 AUTH %s %s" % (self.args.id, proof))
            ok = await ws.recv()
            if not isinstance(ok, str) or not ok.startswith("FGT/1 OK"):
                raise RuntimeError("unexpected answer")
        except websockets.ConnectionClosed as e:
            say("refused", e.code)
            return "refused"
        t = Tunnel(self, ws)
        self.live.add(t)
        say("online", t.n)
        if old is not None:
            old.successor = True
            old.maybe_finish()
        try:
            await t.run()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.live.discard(t)
            say("closed", t.n)
        return "closed" if not t.draining else "moved"

    async def main(self):
        while True:
            r = await self.one_tunnel()
            if self.args.once:
                self.exit_code = 3 if r == "refused" else 0
                return
            if r == "moved":
                # the new tunnel was spawned on RECONNECT: wait until it ends in turn
                while self.live:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(self.args.reconnect_ms / 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--service", action="append", default=[])
    ap.add_argument("--ca")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--heartbeat", type=float, default=30)
    ap.add_argument("--reconnect-ms", type=int, default=200)
    ap.add_argument("--max-streams", type=int, default=1000)
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--proof")
    ap.add_argument("--print-proof", action="store_true")
    args = ap.parse_args()
    agent = None

    async def run():
        nonlocal agent
        # one thread per request in flight, up to the streams a tunnel carries
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=args.max_streams))
        agent = Agent(args)
        await agent.main()

    asyncio.run(run())
    sys.exit(agent.exit_code if agent else 1)


if __name__ == "__main__":
    main()

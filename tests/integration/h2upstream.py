"""An HTTP/2 destination for the tests, built on python3-h2 (threads, one per connection):
h2c by prior knowledge, or h2 over TLS with the ALPN protocols given (a TLS server that
offers only http/1.1 answers HTTP/1.1 requests, for the fallback). Paths:

  /echo      200, the request body back, trailers: x-echo-trailers (the request's trailer
             fields as "name=value;..."), and grpc-status: 0
  /info      200, JSON of the request's fields (pseudo-header fields included)
  /refuse    RST_STREAM REFUSED_STREAM the first time this server sees it, then as /info
  /die       a head and 1000 body bytes of a declared 100000, then the connection drops
  /slow      200 "slow" after 0.3 s
  /status/N  N with a small body
  other      200 "ok"

`connections` counts accepted connections; `requests` the streams answered."""
import json
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events

from peers import ThreadedServer, server_context


class H2Upstream(ThreadedServer):
    def __init__(self, tls=None, alpn=("h2",)):
        """tls: (certfile, keyfile) or None for h2c."""
        super().__init__()
        self.ctx = server_context(tls, alpn)
        self.url = ("https" if tls else "http") + "://127.0.0.1:%d" % self.port
        self.requests = 0
        self.refused = False
        self.alpn_seen = []
        self.closed = False
        self.start()

    def close(self):
        self.closed = True
        super().close()

    def _serve(self, s):
        try:
            if self.ctx:
                s = self.ctx.wrap_socket(s, server_side=True)
                proto = s.selected_alpn_protocol()
                self.alpn_seen.append(proto)
                if proto != "h2":
                    return self._serve_h1(s)
            self._serve_h2(s)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _serve_h1(self, s):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            body = b"h1 fallback"
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Proto: http/1.1\r\n\r\n"
                      % len(body) + body)

    def _serve_h2(self, s):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    validate_inbound_headers=True))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        streams = {}
        send_lock = threading.RLock()
        while True:
            data = s.recv(65536)
            if not data:
                return
            with send_lock:
                events = conn.receive_data(data)
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    streams[ev.stream_id] = {"headers": ev.headers, "body": b"", "trailers": []}
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id]["body"] += ev.data
                    with send_lock:
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    streams[ev.stream_id]["trailers"] = ev.headers
                elif isinstance(ev, h2.events.StreamEnded):
                    st = streams.pop(ev.stream_id)
                    if self._answer(s, conn, ev.stream_id, st, send_lock) == "die":
                        return
            # one writer at a time: frames of two threads must not interleave
            with send_lock:
                out = conn.data_to_send()
                if out:
                    s.sendall(out)

    def _answer(self, s, conn, sid, st, lock):
        hdrs = {k.decode(): v.decode() for k, v in st["headers"]}
        path = hdrs.get(":path", "/")
        with self.lock:
            self.requests += 1
        if path.startswith("/refuse") and not self.refused:
            self.refused = True
            with lock:
                conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return None
        if path.startswith("/info") or path.startswith("/refuse"):
            body = json.dumps([[k.decode(), v.decode()] for k, v in st["headers"]]).encode()
            return self._send(conn, sid, 200, body, lock)
        if path.startswith("/echo"):
            tr = ";".join("%s=%s" % (k.decode(), v.decode()) for k, v in st["trailers"])
            return self._send(conn, sid, 200, st["body"], lock,
                              trailers=[("x-echo-trailers", tr or "-"), ("grpc-status", "0")])
        if path.startswith("/die"):
            with lock:
                conn.send_headers(sid, [(":status", "200"), ("content-length", "100000")])
                conn.send_data(sid, b"x" * 1000)
                s.sendall(conn.data_to_send())
            time.sleep(0.2)
            s.shutdown(socket.SHUT_RDWR)
            return "die"
        if path.startswith("/slow"):
            def later():
                time.sleep(0.3)
                try:
                    self._send(conn, sid, 200, b"slow", lock)
                    with lock:
                        s.sendall(conn.data_to_send())
                except OSError:
                    pass
            threading.Thread(target=later, daemon=True).start()
            return None
        if hdrs.get(":method") == "HEAD":
            with lock:
                conn.send_headers(sid, [(":status", "200"), ("content-length", "2")],
                                  end_stream=True)
            return None
        if path.startswith("/status/"):
            return self._send(conn, sid, int(path[8:11]), b"status", lock)
        return self._send(conn, sid, 200, b"ok", lock)

    def _send(self, conn, sid, status, body, lock, trailers=None):
        with lock:
            conn.send_headers(sid, [(":status", str(status)), ("content-type", "text/plain")]
                              + ([] if trailers else [("content-length", str(len(body)))]))
            # respect the peer's flow-control window: send what fits, the rest when it opens
            pos = 0
            while pos < len(body):
                win = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if win <= 0:
                    break
                conn.send_data(sid, body[pos:pos + win])
                pos += win
            if pos < len(body):
                raise RuntimeError("body larger than the window in this test server")
            if trailers:
                conn.send_headers(sid, trailers, end_stream=True)
            else:
                conn.end_stream(sid)
        return None

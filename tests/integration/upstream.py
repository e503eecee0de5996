#!/usr/bin/python3
"""Echo upstream for the integration tests: a real HTTP/1.1 server in its own process.

Usage: upstream.py PORT [--tls CERT KEY [--client-ca CA]]

With --tls the server speaks HTTPS (Python ssl, TLS 1.2 and 1.3, session tickets on); with
--client-ca it demands a client certificate signed by CA (mutual TLS). /__tls answers JSON
{"handshakes", "resumed", "sni": [names in arrival order], "clientCerts": [subject CNs]}.

Every request is answered with a JSON document describing exactly what arrived:
    {"method", "path" (raw target path), "query" (raw, without '?'), "headers": [[name, value]...]
     in arrival order, "body" (text), "bodyLength", "bodySha256", "upstream": PORT}
Special paths (matched on the raw path):
    /slow?ms=N      wait N ms, then echo
    /hints          send 103 Early Hints (Link, and X-Hop named in Connection), then echo
    /status/N       answer status N with the echo body (no body for 1xx/204/304 and HEAD)
    /bytes/N        N bytes of 'x' with Content-Length
    /chunked/N      N bytes of 'x' in chunked encoding, 1 KiB chunks
    /reset          close the connection without answering (RST)
    /close          answer (echo), with Connection: close, then close
    /close-silently answer (echo) as if keeping the connection alive, then close it: a stale
                    keep-alive connection for the next request on it
    /stale          answer (echo) as if keeping the connection alive; when the next request
                    arrives on that connection, reset it without answering (the race of a
                    server closing an idle connection just as a client reuses it)
    /health         answer the status set by /__set?health=N (default 200) with the echo body
    /__count        JSON {path: requests} of every request so far (control paths excluded)
    /__set?delay=MS&health=N   from now on, delay every answer by MS and answer /health with N
The echo document also has "peer": "ADDR:PORT", the client end of the connection, so that a
test can tell whether two requests shared one connection.
Bodies are read as they arrive (Content-Length or chunked, with trailers); only the first
BODY_KEEP (64 KiB) bytes are kept for the "body" field, so a large upload costs neither memory
here nor a large answer.
Keep-alive follows RFC 9112 section 9.3: HTTP/1.1 persists unless "Connection: close",
HTTP/1.0 only with "Connection: keep-alive". Only the standard library is used.
"""
import hashlib
import json
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

BODY_KEEP = 64 * 1024
READ_TIMEOUT = 60.0
REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    206: "Partial Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Content Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Closed(Exception):
    pass


COUNTS = {}
CONTROL = {"delay": 0, "health": 200}
TLS_STATS = {"handshakes": 0, "resumed": 0, "sni": [], "clientCerts": [], "ciphers": []}
LOCK = threading.Lock()


class Conn:
    """Buffered reader over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def readline(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self.fill()

    def read_some(self, n):
        if not self.buf:
            self.fill()
        chunk, self.buf = self.buf[:n], self.buf[n:]
        return chunk


class Body:
    def __init__(self):
        self.length = 0
        self.kept = []
        self.kept_len = 0
        self.sha = hashlib.sha256()

    def add(self, data):
        self.length += len(data)
        self.sha.update(data)
        if self.kept_len < BODY_KEEP:
            part = data[: BODY_KEEP - self.kept_len]
            self.kept.append(part)
            self.kept_len += len(part)

    def text(self):
        return b"".join(self.kept).decode("utf-8", "replace")


def read_request(conn):
    """Returns (method, target, version, headers) or None on a clean close between requests."""
    try:
        line = conn.readline()
        while line in (b"\r\n", b"\n"):  # RFC 9112 section 2.2: ignore leading empty lines
            line = conn.readline()
    except Closed:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    method, target, version = parts
    headers = []
    while True:
        h = conn.readline()
        if h in (b"\r\n", b"\n"):
            break
        name, _, value = h.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append([name, value.strip(" \t")])
    return method, target, version, headers


def header(headers, name):
    name = name.lower()
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def read_body(conn, headers, body):
    te = header(headers, "transfer-encoding")
    if te is not None and "chunked" in te.lower():
        while True:
            size_line = conn.readline().decode("latin-1").strip()
            size = int(size_line.split(";")[0], 16)
            if size == 0:
                while conn.readline() not in (b"\r\n", b"\n"):  # trailers
                    pass
                return
            left = size
            while left > 0:
                chunk = conn.read_some(left)
                body.add(chunk)
                left -= len(chunk)
            conn.readline()
        return
    cl = header(headers, "content-length")
    left = int(cl) if cl else 0
    while left > 0:
        chunk = conn.read_some(min(left, 1 << 20))
        body.add(chunk)
        left -= len(chunk)


def send_all(sock, data):
    sock.sendall(data)


def response_head(status, headers):
    lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
    lines += ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def handle(sock, port):
    try:
        peer = "%s:%d" % sock.getpeername()[:2]
    except OSError:
        peer = ""
    conn = Conn(sock)
    sock.settimeout(READ_TIMEOUT)
    while True:
        req = read_request(conn)
        if req is None:
            return
        method, target, version, headers = req
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qs(query)
        conn_hdr = (header(headers, "connection") or "").lower()
        if version == "HTTP/1.0":
            keep = "keep-alive" in conn_hdr
        else:
            keep = "close" not in conn_hdr
        expect = (header(headers, "expect") or "").lower()
        if expect == "100-continue":
            send_all(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        body = Body()
        read_body(conn, headers, body)

        if path in ("/__count", "/__set", "/__tls"):
            if path == "/__set":
                for k in ("delay", "health"):
                    if k in params:
                        CONTROL[k] = int(params[k][0])
            with LOCK:
                doc = {"/__count": COUNTS, "/__set": CONTROL, "/__tls": TLS_STATS}[path]
                payload = (json.dumps(doc) + "\n").encode()
            send_all(sock, response_head(200, [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(payload)))]) + payload)
            if not keep:
                return
            continue
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
        if CONTROL["delay"]:
            time.sleep(CONTROL["delay"] / 1000.0)
        if path == "/reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if path == "/hints":
            send_all(sock, b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
                           b"X-Hop: 1\r\nConnection: X-Hop\r\n\r\n")
        if path == "/slow":
            time.sleep(int(params.get("ms", ["1000"])[0]) / 1000.0)
        if path == "/close":
            keep = False
        silent_close = path == "/close-silently"

        status = 200
        if path == "/health":
            status = CONTROL["health"]
        if path.startswith("/status/"):
            status = int(path[len("/status/"):])
        conn_out = "keep-alive" if keep else "close"
        base = [("Server", "fg-test-upstream"), ("X-Upstream", str(port)),
                ("Connection", conn_out)]
        head_only = method == "HEAD"

        if path.startswith("/bytes/"):
            n = int(path[len("/bytes/"):])
            send_all(sock, response_head(status, base + [
                ("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]))
            if not head_only:
                block = b"x" * 65536
                left = n
                while left > 0:
                    k = min(left, len(block))
                    send_all(sock, block[:k])
                    left -= k
        elif path.startswith("/chunked/"):
            n = int(path[len("/chunked/"):])
            send_all(sock, response_head(status, base + [
                ("Content-Type", "application/octet-stream"),
                ("Transfer-Encoding", "chunked")]))
            if not head_only:
                left = n
                while left > 0:
                    k = min(left, 1024)
                    send_all(sock, b"%x\r\n" % k + b"x" * k + b"\r\n")
                    left -= k
                send_all(sock, b"0\r\n\r\n")
        else:
            doc = {
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "body": body.text(),
                "bodyLength": body.length,
                "bodySha256": body.sha.hexdigest(),
                "upstream": port,
                "peer": peer,
            }
            payload = (json.dumps(doc) + "\n").encode()
            bodiless = status < 200 or status in (204, 304)
            hdrs = base + [("Content-Type", "application/json")]
            if not bodiless:
                hdrs.append(("Content-Length", str(len(payload))))
            # One write for head and body, as real servers do for small answers: a process
            # killed mid-answer (the failover tests) then never leaves a head without its body.
            send_all(sock, response_head(status, hdrs) +
                     (payload if not bodiless and not head_only else b""))
        if not keep or silent_close:
            return
        if path == "/stale":
            try:
                sock.recv(1)
            finally:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return


def tls_accept(sock, ctx):
    """The server side of a handshake; counts it (resumed or not, SNI, client certificate)."""
    sock.settimeout(10)
    ssock = ctx.wrap_socket(sock, server_side=True)
    cert = ssock.getpeercert()
    cn = ""
    for rdn in (cert or {}).get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
    with LOCK:
        TLS_STATS["handshakes"] += 1
        TLS_STATS["resumed"] += 1 if ssock.session_reused else 0
        TLS_STATS["ciphers"].append(ssock.cipher()[0])
        if cn:
            TLS_STATS["clientCerts"].append(cn)
    return ssock


def serve_conn(sock, port, ctx=None):
    try:
        if ctx is not None:
            sock = tls_accept(sock, ctx)
        handle(sock, port)
    except (Closed, OSError, ValueError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def tls_context(args):
    if "--tls" not in args:
        return None
    i = args.index("--tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args[i + 1], args[i + 2])
    if "--client-ca" in args:
        ctx.load_verify_locations(args[args.index("--client-ca") + 1])
        ctx.verify_mode = ssl.CERT_REQUIRED

    def on_sni(sslobj, name, _ctx):
        with LOCK:
            TLS_STATS["sni"].append(name)
    ctx.sni_callback = on_sni
    return ctx


def main():
    port = int(sys.argv[1])
    ctx = tls_context(sys.argv[2:])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    print("ready %d" % port, flush=True)
    while True:
        sock, _ = ls.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_conn, args=(sock, port, ctx), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass

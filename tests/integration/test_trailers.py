"""Trailer fields (RFC 9110 6.5) through the gateway over HTTP/1.1 both ways: a chunked request's
trailers reach the destination in its last chunk, a chunked response's trailers reach the client
in the last chunk, fields not allowed in trailers (RFC 9110 6.5.1) are dropped, and a response
framed by Content-Length carries none."""
import socket
import threading

from conftest import proxy_cfg, recv_until_close


def read_chunked_message(sock, first=b""):
    """Read from sock until a chunked body (after the head in `first`) is complete; returns
    all bytes (head, chunks and trailer section)."""
    buf = first
    sock.settimeout(5)
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            body = buf[head_end + 4:]
            if chunked_complete(body):
                return buf
        data = sock.recv(65536)
        if not data:
            return buf
        buf += data


def chunked_complete(body):
    i = 0
    while True:
        nl = body.find(b"\r\n", i)
        if nl < 0:
            return False
        size = int(body[i:nl].split(b";")[0], 16)
        i = nl + 2
        if size == 0:
            return body.find(b"\r\n\r\n", i - 2) >= 0
        if len(body) < i + size + 2:
            return False
        i += size + 2


def parse_trailers(body):
    """The trailer fields of a complete chunked body, as a list of (name, value)."""
    i = 0
    while True:
        nl = body.index(b"\r\n", i)
        size = int(body[i:nl].split(b";")[0], 16)
        i = nl + 2
        if size == 0:
            break
        i += size + 2
    end = body.index(b"\r\n\r\n", i - 2)
    section = body[i:end + 2]
    out = []
    for line in section.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            out.append((name.decode().lower(), value.strip().decode()))
    return out


def dechunk(body):
    out, i = b"", 0
    while True:
        nl = body.index(b"\r\n", i)
        size = int(body[i:nl].split(b";")[0], 16)
        i = nl + 2
        if size == 0:
            return out
        out += body[i:i + size]
        i += size + 2


def test_request_trailers_reach_the_destination(tmp_path, gateway_factory):
    seen = {}
    done = threading.Event()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def serve():
        s, _ = ls.accept()
        seen["msg"] = read_chunked_message(s)
        done.set()
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        s.close()

    threading.Thread(target=serve, daemon=True).start()

    class Up:
        url = "http://127.0.0.1:%d" % ls.getsockname()[1]

    gw = gateway_factory(proxy_cfg(tmp_path, Up))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    c.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\nX-Checksum: abc123\r\nContent-Type: evil/x\r\n"
              b"Grpc-Status: 0\r\n\r\n")
    resp = c.recv(65536)
    c.close()
    assert done.wait(5)
    assert resp.startswith(b"HTTP/1.1 200")
    msg = seen["msg"]
    head, _, body = msg.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert dechunk(body) == b"hello"
    tr = parse_trailers(body)
    assert ("x-checksum", "abc123") in tr
    assert ("grpc-status", "0") in tr
    assert all(n != "content-type" for n, _ in tr)  # RFC 9110 6.5.1: not allowed in trailers
    ls.close()


def test_response_trailers_reach_the_client(tmp_path, gateway_factory, scripted):
    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
                  b"3\r\nabc\r\n0\r\ngrpc-status: 7\r\ngrpc-message: denied here\r\n"
                  b"Set-Cookie: a=b\r\n\r\n")

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    c.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    msg = read_chunked_message(c)
    c.close()
    head, _, body = msg.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert dechunk(body) == b"abc"
    tr = parse_trailers(body)
    assert ("grpc-status", "7") in tr
    assert ("grpc-message", "denied here") in tr
    assert all(n != "set-cookie" for n, _ in tr)


def test_response_trailers_with_curl(tmp_path, gateway_factory, scripted):
    """A real client reads the relayed trailer section (curl shows trailers with -i)."""
    import subprocess

    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"4\r\nbody\r\n0\r\nX-Sum: 42\r\n\r\n")

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    out = subprocess.run(["curl", "-sS", "-i", "--raw", gw.url("/c")], capture_output=True,
                         timeout=10).stdout
    assert b"X-Sum: 42" in out


def test_trailers_kept_on_a_keep_alive_connection(tmp_path, gateway_factory, scripted):
    """The trailer section ends the message exactly: the next request on the same client
    connection is answered normally."""
    def script(s, head):
        while True:
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    for _ in range(3):
        c.sendall(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
        msg = read_chunked_message(c)
        head, _, body = msg.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert ("x-t", "1") in parse_trailers(body)
    c.close()


def test_content_length_response_has_no_trailers(tmp_path, gateway_factory, scripted):
    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    resp = recv_until_close(c)
    assert resp.startswith(b"HTTP/1.1 200")
    assert resp.endswith(b"\r\n\r\nhello")

"""Building blocks of the test peers (destinations and clients written in Python):

  self_signed_cert(dir)  a P-256 certificate for "localhost" made with the openssl CLI
  ca_signed_cert(dir)    a test CA and a certificate it signed for localhost and 127.0.0.1
  server_context(tls)    a TLS server context for a (certfile, keyfile), or None
  ThreadedServer         a listening socket on 127.0.0.1, one thread per accepted connection
  BioTLS                 TLS over a blocking socket through memory BIOs, so that the test
                         sees every record it sends leave in one sendall"""
import socket
import ssl
import subprocess
import threading


def self_signed_cert(directory):
    """(certfile, keyfile) of a new self-signed certificate for localhost in directory."""
    crt, key = str(directory / "s.crt"), str(directory / "s.key")
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", crt],
                   check=True, capture_output=True, timeout=60)
    return crt, key


def ca_signed_cert(directory, days=30):
    """{"ca", "crt", "key"}: the files of a new P-256 test CA and of a certificate it signed
    for localhost and 127.0.0.1, in directory (a Path), made with the openssl CLI."""
    def run(*args):
        subprocess.run(list(args), check=True, capture_output=True, timeout=60)

    d, days = directory, str(days)
    run("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:P-256", "-nodes", "-days", days, "-subj", "/CN=Test CA",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-subj", "/CN=localhost", "-keyout", str(d / "srv.key"), "-out",
        str(d / "srv.csr"))
    (d / "srv.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(d / "srv.csr"), "-CA", str(d / "ca.crt"),
        "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", days, "-sha256", "-extfile",
        str(d / "srv.ext"), "-out", str(d / "srv.crt"))
    return {"ca": str(d / "ca.crt"), "crt": str(d / "srv.crt"), "key": str(d / "srv.key")}

def server_context(tls, alpn):
    """A TLS server context with tls = (certfile, keyfile) offering the ALPN protocols alpn;
    None when tls is None (the peer speaks plain TCP)."""
    if not tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


class ThreadedServer:
    """A listening socket on 127.0.0.1 (self.ls, self.port). Once the subclass has set itself
    up it calls start(); from then on each accepted connection is counted (self.connections,
    under self.lock) and handed to self._serve(sock) in a thread of its own."""

    def __init__(self, backlog=128):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(backlog)
        self.port = self.ls.getsockname()[1]
        self.connections = 0
        self.lock = threading.Lock()

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.ls.close()

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, sock):
        raise NotImplementedError


class BioTLS:
    """TLS over a blocking socket through memory BIOs: each write() leaves in one sendall. The
    handshake is done when the constructor returns."""

    def __init__(self, sock, ctx, server_side):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side,
                                server_hostname=None if server_side else "localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.inc.write(data)

    def read(self):
        """Decrypted bytes; b"" at the peer's close_notify; EOFError when TCP ends first."""
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""

    def write(self, data, close_notify=False):
        self.obj.write(data)
        if close_notify:
            try:
                self.obj.unwrap()  # close_notify sent; it would wait for the peer's
            except ssl.SSLWantReadError:
                pass
        self._flush()

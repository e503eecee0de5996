"""A gRPC client for test_grpc.py, in its own process (grpcio crashes in a process that forked
after importing it, as the test process does to start gateways). Usage:

  grpc_client.py PORT CA_FILE

runs every call of the fg.test.Echo service (grpc_server.py) through localhost:PORT over TLS
and prints one JSON object with the outcome of each."""
import json
import sys

import grpc

SERVICE = "fg.test.Echo"


def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    ch = grpc.secure_channel("localhost:%d" % port, creds)
    m = lambda kind, name: getattr(ch, kind)("/%s/%s" % (SERVICE, name))  # noqa: E731
    out = {}
    out["unary"] = m("unary_unary", "Unary")(b"hello", timeout=10).decode()
    out["server_stream"] = [x.decode() for x in m("unary_stream", "ServerStream")(b"5",
                                                                                  timeout=10)]
    out["client_stream"] = m("stream_unary", "ClientStream")(iter([b"x", b"y", b"z"]),
                                                             timeout=10).decode()
    out["bidi"] = [x.decode() for x in m("stream_stream", "Bidi")(iter([b"1", b"2", b"3"]),
                                                                  timeout=10)]
    try:
        m("unary_unary", "Fail")(b"x", timeout=10)
        out["fail"] = None
    except grpc.RpcError as e:
        out["fail"] = {"code": e.code().name, "details": e.details(),
                       "trailing": dict(e.trailing_metadata() or ())}
    ch.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

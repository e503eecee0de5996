"""A gRPC server for test_grpc.py, in its own process (grpcio and fork() in one process do not
mix): generic handlers on raw bytes, insecure (h2c) on a loopback port it prints, until stdin
closes.

  fg.test.Echo/Unary         "echo:" + request
  fg.test.Echo/ServerStream  request = count n: "item-0" .. "item-(n-1)"
  fg.test.Echo/ClientStream  the requests joined with "+"
  fg.test.Echo/Bidi          "re:" + each request, as it comes
  fg.test.Echo/Fail          PERMISSION_DENIED "nope", trailing metadata x-detail"""
import sys
from concurrent import futures

import grpc

SERVICE = "fg.test.Echo"


def _unary(request, context):
    return b"echo:" + request


def _server_stream(request, context):
    for i in range(int(request.decode() or "3")):
        yield b"item-%d" % i


def _client_stream(request_iterator, context):
    return b"+".join(request_iterator)


def _bidi(request_iterator, context):
    for m in request_iterator:
        yield b"re:" + m


def _fail(request, context):
    context.set_trailing_metadata((("x-detail", "denied-by-test"),))
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "nope")


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()

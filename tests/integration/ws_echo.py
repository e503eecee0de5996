"""A WebSocket echo destination for the tests (python3-websockets): every message comes back
unchanged. It accepts the subprotocols "chat" and "superchat" (Sec-WebSocket-Protocol) and, on
the path /headers, first sends the request's header fields as a JSON text message.

usage: ws_echo.py PORT"""
import asyncio
import json
import sys

import websockets


async def handler(ws, path=None):
    path = path if path is not None else ws.path
    if path == "/headers":
        await ws.send(json.dumps({k.lower(): v for k, v in ws.request_headers.raw_items()}))
    try:
        async for msg in ws:
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass


async def main(port):
    async with websockets.serve(handler, "127.0.0.1", port, subprotocols=["chat", "superchat"],
                                max_size=None, ping_interval=None, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

#!/usr/bin/env python3
"""WebSocket peers for the relay test (Debian python3-websockets).

ws.py server PORT        echo server: each message back, prefixed "echo:"
                          (binary as it came); prints "ready"
ws.py client URL         connects, sends a text, a 300 KB binary and 50
                          small messages, checks every echo, closes
                          cleanly; prints "ok" and exits 0
"""
import asyncio
import os
import sys

import websockets


async def echo(ws, path=None):
    async for msg in ws:
        await ws.send(msg if isinstance(msg, bytes) else "echo:" + msg)


async def serve(port):
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


async def client(url):
    async with websockets.connect(url, max_size=None, open_timeout=10, compression=None) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 10) == "echo:hello"
        blob = os.urandom(300_000)
        await ws.send(blob)
        assert await asyncio.wait_for(ws.recv(), 10) == blob
        for i in range(50):
            await ws.send(f"m{i}")
        for i in range(50):
            assert await asyncio.wait_for(ws.recv(), 10) == f"echo:m{i}"
    print("ok", flush=True)


if sys.argv[1] == "server":
    asyncio.run(serve(int(sys.argv[2])))
else:
    asyncio.run(client(sys.argv[2]))

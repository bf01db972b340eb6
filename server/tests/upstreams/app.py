#!/usr/bin/env python3
"""An HTTP/1.1 upstream for the proxy tests (Python's http.server).

app.py PORT|unix:/path IDLE_TIMEOUT NAME

Every response is JSON describing the request as it arrived: method,
target, headers, the body's length and SHA-256, the client's port (the
same port twice means a reused connection) and NAME. Idle keep-alive
connections close after IDLE_TIMEOUT seconds. Bodies may be chunked.
"""
import hashlib
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

where, idle, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = idle

    def log_message(self, *args):
        pass

    def body(self):
        h = hashlib.sha256()
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                self.rfile.readline()
                h.update(data)
                n += len(data)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 65536))
                if not data:
                    break
                h.update(data)
                n += len(data)
                left -= len(data)
        return n, h.hexdigest()

    def answer(self):
        n, sha = self.body()
        port = self.client_address[1] if isinstance(self.client_address, tuple) else 0
        doc = {
            "name": name,
            "method": self.command,
            "target": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": n,
            "body_sha256": sha,
            "port": port,
        }
        out = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", name)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_TRACE = answer


if where.startswith("unix:"):
    path = where[5:]
    if os.path.exists(path):
        os.unlink(path)

    class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = UnixServer(path, Handler)
else:
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", int(where)), Handler)
print("ready", flush=True)
server.serve_forever()

#!/usr/bin/env python3
"""Opens N keep-alive connections to a server, sends one request on each,
reads the response, keeps them all open and idle, then prints the server's
thread count and RSS (from /proc). Bounded: N connections, one request each,
and it stops by itself.

usage: bench/idle_conns.py PORT PID [N]
"""
import resource, socket, sys, time

port, pid = int(sys.argv[1]), int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))

def status():
    d = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        d[k] = v.strip()
    return d["Threads"], d["VmRSS"]

print("before: threads %s, rss %s" % status())
socks = []
req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
    if len(socks) % 500 == 0:
        # Drain responses as we go so buffers do not pile up.
        for t in socks[-500:]:
            t.settimeout(10)
            t.recv(65536)
for t in socks[len(socks) - len(socks) % 500:]:
    t.settimeout(10)
    t.recv(65536)
time.sleep(2)
th, rss = status()
alive = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            continue
    except BlockingIOError:
        alive += 1
print(f"with {n} idle keep-alive connections ({alive} still open): threads {th}, rss {rss}")
for s in socks:
    s.close()

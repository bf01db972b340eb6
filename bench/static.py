#!/usr/bin/env python3
"""Static-file benchmark: tamada beside nginx and lighttpd, same machine,
same run, interleaved rounds; prints medians and ratios.

Files of 1 KiB, 100 KiB and 10 MiB are served with keep-alive by each
server on its own loopback port, loaded with wrk (bounded by -d seconds
per run). Needs nginx, lighttpd and wrk (apt-get install nginx lighttpd
wrk) and a release build (cargo build --release --workspace).

usage: bench/static.py [--rounds N] [--seconds S] [--connections C] [--logging]

--logging turns the logging plugin on for tamada (access log to a file) so
that the cost of logging can be measured as pairs (see bench/logging.py).
"""
import argparse, os, random, shutil, statistics, subprocess, sys, tempfile
from common import TAMADA, free_port, stop, wait_port, wrk

FILES = {"1k": 1024, "100k": 100 * 1024, "10m": 10 * 1024 * 1024}


def start_nginx(d, www, port):
    conf = os.path.join(d, "nginx.conf")
    open(conf, "w").write(f"""
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  types {{ application/octet-stream bin; }}
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp; fastcgi_temp_path {d}/nginx-tmp;
  uwsgi_temp_path {d}/nginx-tmp; scgi_temp_path {d}/nginx-tmp;
  server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
""")
    return subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)


def start_lighttpd(d, www, port):
    conf = os.path.join(d, "lighttpd.conf")
    open(conf, "w").write(f"""
server.document-root = "{www}"
server.bind = "127.0.0.1"
server.port = {port}
server.max-keep-alive-requests = 1000000
server.errorlog = "{d}/lighttpd-error.log"
mimetype.assign = (".bin" => "application/octet-stream")
""")
    return subprocess.Popen(["lighttpd", "-D", "-f", conf], stderr=subprocess.DEVNULL)


def start_tamada(d, www, port, logging):
    conf = os.path.join(d, "conf.d")
    os.makedirs(conf, exist_ok=True)
    logs = os.path.join(d, "logs")
    os.makedirs(logs, exist_ok=True)
    extra = f"log: {logs}\n" if logging else ""
    open(os.path.join(conf, "a.yaml"), "w").write(
        f"vhost: bench\nip: 127.0.0.1\nport: {port}\ndocument_root: {www}\n{extra}"
        "routes:\n  - path: /\n    handler: static\n"
    )
    open(os.path.join(conf, "server.yaml"), "w").write("log_level: warn\nidle_timeout: 60s\n")
    return subprocess.Popen([TAMADA, "-c", conf], stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--servers", default="tamada,nginx,lighttpd")
    ap.add_argument("--logging", action="store_true")
    a = ap.parse_args()
    for tool in ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install -y wrk nginx lighttpd")
    d = tempfile.mkdtemp(prefix="tamada-bench-")
    os.chmod(d, 0o755)  # nginx workers run as www-data
    www = os.path.join(d, "www")
    os.makedirs(www)
    for name, size in FILES.items():
        with open(os.path.join(www, f"{name}.bin"), "wb") as f:
            f.write(os.urandom(size))
    servers = {}
    starters = {"tamada": lambda p: start_tamada(d, www, p, a.logging),
                "nginx": lambda p: start_nginx(d, www, p),
                "lighttpd": lambda p: start_lighttpd(d, www, p)}
    procs = []
    try:
        for name in a.servers.split(","):
            if name != "tamada" and not shutil.which(name):
                print(f"skipping {name}: not installed", file=sys.stderr)
                continue
            port = free_port()
            proc = starters[name](port)
            procs.append(proc)
            wait_port(port, proc)
            servers[name] = port
        results = {(s, f): [] for s in servers for f in FILES}
        for r in range(a.rounds):
            for f in FILES:
                order = list(servers)
                random.shuffle(order)
                for s in order:
                    rps = wrk(f"http://127.0.0.1:{servers[s]}/{f}.bin", a.seconds, a.connections)
                    results[(s, f)].append(rps)
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        print(f"requests/s, median of {a.rounds} interleaved rounds ({a.seconds} s each, {a.connections} connections, keep-alive)")
        print(f"{'file':>6} " + " ".join(f"{s:>12}" for s in servers) + "".join(f"  tamada/{s}" for s in servers if s != "tamada"))
        for f in FILES:
            med = {s: statistics.median(results[(s, f)]) for s in servers}
            line = f"{f:>6} " + " ".join(f"{med[s]:>12.0f}" for s in servers)
            if "tamada" in servers:
                for s in servers:
                    if s != "tamada":
                        line += f"  {med['tamada'] / med[s]:>12.2f}"
            print(line)
    finally:
        stop(procs)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

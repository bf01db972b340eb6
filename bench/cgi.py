#!/usr/bin/env python3
"""CGI benchmark: a shell "hello" CGI with keep-alive, tamada's cgi plugin
beside lighttpd's mod_cgi, same machine, same run, interleaved rounds;
prints the medians and the ratio. Both servers pay the same exec of
/bin/sh, so the difference is spawning and I/O.

usage: bench/cgi.py [--rounds N] [--seconds S] [--connections C]
"""
import argparse, os, random, shutil, statistics, subprocess, sys, tempfile
from common import free_port, need, start_tamada, stop, wait_port, wrk

HELLO = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    a = ap.parse_args()
    need("wrk", "lighttpd")
    d = tempfile.mkdtemp(prefix="tamada-cgi-bench-")
    os.chmod(d, 0o755)
    cgi = os.path.join(d, "www", "cgi-bin")
    os.makedirs(cgi)
    script = os.path.join(cgi, "hello.sh")
    open(script, "w").write(HELLO)
    os.chmod(script, 0o755)
    procs = []
    try:
        tp = free_port()
        conf = os.path.join(d, "conf.d")
        os.makedirs(conf)
        open(os.path.join(conf, "a.yaml"), "w").write(
            f"vhost: bench\nip: 127.0.0.1\nport: {tp}\ndocument_root: {d}/www\ncgi_bin: {cgi}\n"
            "routes:\n  - path: /cgi-bin/\n    handler: cgi\n    options: { max_processes: 256 }\n"
        )
        open(os.path.join(conf, "server.yaml"), "w").write("log_level: warn\nidle_timeout: 60s\n")
        procs.append(start_tamada(conf, tp))
        lp = free_port()
        lconf = os.path.join(d, "lighttpd.conf")
        open(lconf, "w").write(f"""
server.modules = ("mod_cgi")
server.document-root = "{d}/www"
server.bind = "127.0.0.1"
server.port = {lp}
server.max-keep-alive-requests = 1000000
server.errorlog = "{d}/lighttpd-error.log"
cgi.assign = (".sh" => "")
""")
        lproc = subprocess.Popen(["lighttpd", "-D", "-f", lconf], stderr=subprocess.DEVNULL)
        procs.append(lproc)
        wait_port(lp, lproc)
        servers = {"tamada": tp, "lighttpd": lp}
        res = {s: [] for s in servers}
        for r in range(a.rounds):
            order = list(servers)
            random.shuffle(order)
            for s in order:
                res[s].append(wrk(f"http://127.0.0.1:{servers[s]}/cgi-bin/hello.sh", a.seconds, a.connections))
            print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{s} {res[s][-1]:.0f}" for s in servers), file=sys.stderr)
        med = {s: statistics.median(v) for s, v in res.items()}
        print(f"CGI hello.sh, requests/s, median of {a.rounds} interleaved rounds ({a.seconds} s, {a.connections} connections, keep-alive)")
        print(f"tamada {med['tamada']:.0f}  lighttpd {med['lighttpd']:.0f}  tamada/lighttpd {med['tamada'] / med['lighttpd']:.2f}")
    finally:
        stop(procs)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

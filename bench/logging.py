#!/usr/bin/env python3
"""The cost of the logging plugin on the 1 KiB static benchmark: two
tamada servers side by side, one with an access log and one without,
measured as N interleaved on/off pairs; prints the median of the per-pair
ratios (on/off) and its interquartile range.

usage: bench/logging.py [--pairs N] [--seconds S] [--connections C]
"""
import argparse, os, random, shutil, statistics, sys, tempfile
from common import free_port, need, start_tamada, stop, wrk


def server(d, name, logs):
    port = free_port()
    conf = os.path.join(d, name)
    os.makedirs(conf)
    extra = f"log: {logs}\n" if logs else ""
    open(os.path.join(conf, "a.yaml"), "w").write(
        f"vhost: bench\nip: 127.0.0.1\nport: {port}\ndocument_root: {d}/www\n{extra}"
        "routes:\n  - path: /\n    handler: static\n"
    )
    open(os.path.join(conf, "server.yaml"), "w").write("log_level: warn\nidle_timeout: 60s\n")
    return conf, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    a = ap.parse_args()
    need("wrk")
    d = tempfile.mkdtemp(prefix="tamada-log-bench-")
    os.makedirs(os.path.join(d, "www"))
    os.makedirs(os.path.join(d, "logs"))
    open(os.path.join(d, "www", "1k.bin"), "wb").write(os.urandom(1024))
    procs = []
    try:
        off_conf, off_port = server(d, "off", None)
        on_conf, on_port = server(d, "on", os.path.join(d, "logs"))
        procs.append(start_tamada(off_conf, off_port))
        procs.append(start_tamada(on_conf, on_port))
        ratios = []
        for i in range(a.pairs):
            order = [("off", off_port), ("on", on_port)]
            random.shuffle(order)
            r = {}
            for name, port in order:
                r[name] = wrk(f"http://127.0.0.1:{port}/1k.bin", a.seconds, a.connections)
            ratios.append(r["on"] / r["off"])
            print(f"pair {i + 1}: off {r['off']:.0f} on {r['on']:.0f} ratio {ratios[-1]:.3f}", file=sys.stderr)
        q = statistics.quantiles(ratios, n=4)
        lines = sum(1 for _ in open(os.path.join(d, "logs", "access.log")))
        print(f"logging on/off, 1 KiB static, {a.pairs} interleaved pairs of {a.seconds} s: "
              f"median ratio {statistics.median(ratios):.3f}, IQR {q[0]:.3f}-{q[2]:.3f} ({lines} access lines written)")
    finally:
        stop(procs)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The HTTP/2 benchmark: tamada beside nginx and h2o (Debian's packages)
over TLS with ALPN h2, all with the same ECDSA P-256 certificate and their
access logs on, interleaved rounds on one machine, medians of requests/s
and of each server's CPU time per request (utime+stime of its process
tree, from /proc).

    python3 bench/h2.py [--rounds 3] [--seconds 4] [--only 1,2,3] [--no-install]
    python3 bench/run.py --h2 ...     (the same)

Scenarios (h2load -t1, runs of at most 900 requests per connection
repeated for the time: nginx's shipped configuration ends a connection
after 1000 requests and h2load does not reconnect after a GOAWAY):
1. 1 KiB, 50 connections, 10 streams each (-c50 -m10);
2. 100 KiB, the same;
3. 10 MiB over 4 streams of one connection (-c1 -m4).

nginx runs Debian's shipped nginx.conf with `listen ... ssl http2`,
`ssl_certificate` and `ssl_protocols TLSv1.2 TLSv1.3`; h2o its shipped
defaults with the certificate (it offers h2 by ALPN by default), tamada
its defaults (h2 by ALPN on every TLS socket).
"""
import argparse, datetime, os, re, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
import tls  # noqa: E402
from run import ROOT, cpu, describe, free_port, layout, sh, stop, wait_port  # noqa: E402

SERVERS = ["tamada", "nginx", "h2o"]
SCENARIOS = [
    ("1 KiB, 50 conns x 10 streams", "/1k.bin", 50, 10),
    ("100 KiB, 50 conns x 10 streams", "/100k.bin", 50, 10),
    ("10 MiB, 1 conn x 4 streams", "/10m.bin", 1, 4),
]


def start_nginx(d, www, logs, port, cert, key):
    server = (f"server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {cert}; "
              f"ssl_certificate_key {key}; root {www}; }}")
    extra = "  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_prefer_server_ciphers on;\n"
    return run.start_nginx(d, www, logs, port, server, extra)


def h2load_once(args, seconds):
    out = sh(f"timeout {seconds + 30} h2load -t1 {args}").stdout
    t = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    n = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    proto = re.search(r"Application protocol: (\S+)", out)
    if not (t and n):
        raise SystemExit(f"h2load output not understood:\n{out}")
    if not proto or proto.group(1) != "h2":
        raise SystemExit(f"not HTTP/2:\n{out}")
    codes = re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out)
    bad = int(codes.group(1)) + int(codes.group(2)) if codes else 0
    secs = float(t.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}.get(t.group(2), 1)
    return int(n.group(2)), secs, int(n.group(3)), bad


def h2load(url, conns, streams, seconds):
    """Requests done, requests/s, failed, 4xx/5xx. Runs of at most 900
    requests per connection, repeated for `seconds`: nginx's shipped
    configuration ends a connection after 1000 requests (GOAWAY), and
    h2load does not reconnect, so one long run would measure nginx's
    connections running out rather than nginx."""
    done = failed = bad = 0
    spent = 0.0
    per_run = conns * 900
    while spent < seconds:
        n, secs, f, b = h2load_once(f"-c{conns} -m{streams} -n {per_run} {url}", seconds)
        done, spent, failed, bad = done + n, spent + secs, failed + f, bad + b
    return done, done / spent, failed, bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--only", help="comma-separated scenario numbers (1-3)")
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args()
    tls.install(a)
    scenarios = SCENARIOS
    if a.only:
        pick = {int(x) for x in a.only.split(",")}
        scenarios = [s for i, s in enumerate(SCENARIOS, 1) if i in pick]
    d = tempfile.mkdtemp(prefix="tamada-h2-bench-")
    os.chmod(d, 0o755)
    www, _cgi, logs = layout(d)
    cert, key = tls.certificate(d)
    procs, ports = {}, {}
    starters = {"tamada": tls.start_tamada, "nginx": start_nginx, "h2o": tls.start_h2o}
    try:
        for name in SERVERS:
            port = free_port()
            p = starters[name](d, www, logs, port, cert, key)
            wait_port(port, p)
            procs[name], ports[name] = p, port
        for name, port in ports.items():
            r = sh(f"curl -sk --http2 -o /dev/null -w '%{{http_version}} %{{http_code}}' "
                   f"https://127.0.0.1:{port}/1k.bin").stdout
            if r != "2 200":
                raise SystemExit(f"{name} answers '{r}' over HTTPS, not HTTP/2 200")
        res = {}
        for r in range(a.rounds):
            for name, path, conns, streams in scenarios:
                order = SERVERS[r % len(SERVERS):] + SERVERS[:r % len(SERVERS)]
                for s in order:
                    c0 = cpu(procs[s].pid)
                    ok, rps, failed, bad = h2load(f"https://127.0.0.1:{ports[s]}{path}", conns, streams,
                                                  a.seconds)
                    c1 = cpu(procs[s].pid)
                    if failed or bad:
                        raise SystemExit(f"{s}: {failed} failed, {bad} 4xx/5xx on {name}")
                    res.setdefault((name, s), []).append((rps, (c1 - c0) / max(ok, 1) * 1e6))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        stop(procs, d)
    report(res, scenarios, a)


def report(res, scenarios, a):
    r = sh("h2o --version")
    h2o = (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "h2o"
    lines = [f"# tamada HTTP/2 benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}", "",
             describe() + "; " + h2o, "",
             f"Medians of {a.rounds} interleaved rounds, {a.seconds} s each (h2load -t1, runs of 900"
             " requests per connection, as nginx ends a connection after 1000); requests/s and"
             " server CPU µs per request (ms for 10 MiB). TLS 1.3, ALPN h2, the same ECDSA P-256"
             " certificate, access logs on.", "",
             "| scenario | tamada | nginx | h2o | tamada / nginx | tamada CPU / nginx | tamada / h2o | tamada CPU / h2o |",
             "|---|---|---|---|---|---|---|---|"]
    med = {k: (statistics.median(x for x, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    for name, *_ in scenarios:
        def cell(s):
            rps, c = med[(name, s)]
            r = f"{rps / 1000:.1f}k/s" if rps >= 1000 else f"{rps:.0f}/s"
            return f"{r}, {c:.1f} µs" if c < 1000 else f"{r}, {c / 1000:.2f} ms"
        t, n, h = med[(name, "tamada")], med[(name, "nginx")], med[(name, "h2o")]
        lines.append(f"| {name} | {cell('tamada')} | {cell('nginx')} | {cell('h2o')} "
                     f"| {t[0] / n[0]:.2f}x | {t[1] / n[1]:.2f}x | {t[0] / h[0]:.2f}x | {t[1] / h[1]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"h2-{datetime.datetime.now():%Y-%m-%d-%H%M}.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Compression on the fly and from a cache: tamada's `compress` filter beside
nginx (`gzip on`, the same level) and Caddy (`encode gzip zstd`), on the
same machine, in the same run, interleaved rounds; medians of requests/s,
of the server's CPU time per request and the bytes of one answer.

    python3 bench/compress.py [--rounds 3] [--seconds 4] [--no-install]

Files (made here, deterministic): a 100 KiB HTML page and a 100 KiB JSON
document, text that compresses as real pages do (about 6:1 with gzip).
Scenarios:
  1. HTML with gzip        tamada, nginx, Caddy
  2. JSON with gzip        tamada, nginx, Caddy
  3. HTML with zstd        tamada, Caddy (Debian's nginx has no zstd)
  4. HTML gzip, no compressing: tamada's compressed-file cache beside
     nginx's `gzip_static on` serving page.html.gz made at the same level
  5. the same file uncompressed (`Accept-Encoding: identity`): what
     serving a 100 KiB file costs each
  6. page.html.gz asked for by name, a plain 22 KiB file: what serving
     the cached entry's bytes costs without any compression logic
Every server logs its accesses; load is wrk -t1 -c50 with the
Accept-Encoding of the scenario. Results go to bench/results/.
"""
import argparse, datetime, gzip, json, os, random, shutil, statistics, subprocess, sys
import tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the helpers of the main benchmark)

LEVEL = 5  # tamada's default gzip level (docs/plugins/compress.md)
SIZE = 100 * 1024

WORDS = ("server request response header module plugin file route vhost cache "
         "connection socket stream body status client proxy upstream worker event loop "
         "thread pool config error access log time size limit path query value name "
         "the a of to and in is for with on as by at from that this be are").split()


def html_page(rng):
    out = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<title>Benchmark page</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>\n"]
    n = 0
    while sum(map(len, out)) < SIZE:
        n += 1
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        out.append(f"<section id=\"s{n}\" class=\"card\"><h2><a href=\"/docs/{rng.choice(WORDS)}/{n}\">"
                   f"{rng.choice(WORDS).title()} {n}</a></h2>\n<p>{words}.</p>\n"
                   f"<ul><li class=\"item\">{rng.randint(0, 99999)}</li><li class=\"item\">{rng.choice(WORDS)}</li></ul></section>\n")
    return "".join(out)[:SIZE].encode()


def json_doc(rng):
    items = []
    while len(json.dumps(items)) < SIZE + 1000:
        items.append({"id": len(items) + 1, "name": f"{rng.choice(WORDS)}-{rng.choice(WORDS)}",
                      "status": rng.choice(["active", "pending", "closed"]),
                      "score": round(rng.random() * 100, 2), "tags": rng.sample(WORDS, 3),
                      "created": f"2026-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}T{rng.randint(0, 23):02}:00:00Z",
                      "owner": {"id": rng.randint(1, 500), "login": rng.choice(WORDS)}})
    return json.dumps(items, indent=1)[:SIZE].encode()


def tree_(d):
    www = os.path.join(d, "www")
    logs = os.path.join(d, "logs")
    for p in (www, logs):
        os.makedirs(p)
        os.chmod(p, 0o755)
    os.chmod(d, 0o755)
    rng = random.Random(7)
    page = html_page(rng)
    for name, data in (("page.html", page), ("api.json", json_doc(rng)),
                       ("static/page.html", page)):
        p = os.path.join(www, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.chmod(os.path.dirname(p), 0o755)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)
    # nginx's gzip_static file, at the same level.
    gz = os.path.join(www, "static", "page.html.gz")
    with open(gz, "wb") as f:
        f.write(gzip.compress(page, LEVEL))
    os.chmod(gz, 0o644)
    return www, logs


def start_tamada(d, www, logs, port, binary):
    conf = os.path.join(d, f"conf.d-{port}")
    os.makedirs(conf)
    os.makedirs(os.path.join(logs, f"tamada-{port}"))
    cache = os.path.join(d, f"cache-{port}")
    with open(os.path.join(conf, "bench.yaml"), "w") as f:
        f.write(f"""vhost: bench
ip: 127.0.0.1
port: {port}
document_root: {www}
log: {logs}/tamada-{port}
filters:
  - handler: compress
routes:
  - path: /static/
    handler: static
    filters:
      - handler: compress
        options: {{ cache: {{ dir: {cache} }} }}
  - path: /
    handler: static
""")
    with open(os.path.join(conf, "server.yaml"), "w") as f:
        user = "user: nobody\n" if os.geteuid() == 0 else ""
        f.write("log_level: warn\n" + user)
    return subprocess.Popen([binary, "-c", conf], stderr=subprocess.DEVNULL)


def start_caddy(d, www, logs, port):
    conf = os.path.join(d, "Caddyfile")
    with open(conf, "w") as f:
        f.write(f"""{{
  admin off
  auto_https off
  storage file_system {d}/caddy-data
}}
http://127.0.0.1:{port} {{
  root * {www}
  encode gzip zstd
  file_server
  log {{
    output file {logs}/caddy-access.log
  }}
}}
""")
    env = {**os.environ, "HOME": d, "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d}
    return subprocess.Popen(["caddy", "run", "--config", conf, "--adapter", "caddyfile"],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)


SCENARIOS = [
    ("100 KiB HTML, gzip", "/page.html", "gzip", ["tamada", "nginx", "caddy"]),
    ("100 KiB JSON, gzip", "/api.json", "gzip", ["tamada", "nginx", "caddy"]),
    ("100 KiB HTML, zstd", "/page.html", "zstd", ["tamada", "caddy"]),
    ("100 KiB HTML, gzip, cached / gzip_static", "/static/page.html", "gzip", ["tamada", "nginx"]),
    ("100 KiB HTML, not compressed (the baseline)", "/static/page.html", "identity", ["tamada", "nginx"]),
    ("the 22 KiB .gz file itself, plain (baseline of 4)", "/static/page.html.gz", "identity", ["tamada", "nginx"]),
]


def body_bytes(url, coding):
    out = subprocess.run(["curl", "-s", "-H", f"Accept-Encoding: {coding}", "-o", "-", "-D", "/dev/stderr", url],
                         capture_output=True)
    head = out.stderr.decode(errors="replace").lower()
    if " 200" not in head.split("\r\n", 1)[0]:
        raise SystemExit(f"{url}: not a 200:\n{head}")
    if coding != "identity" and f"content-encoding: {coding}" not in head:
        raise SystemExit(f"{url}: not {coding}:\n{head}")
    return len(out.stdout)


def load(url, coding, seconds):
    out = run.sh(f"timeout {seconds + 30} wrk -t1 -c50 -d{seconds}s -H 'Accept-Encoding: {coding}' {url}").stdout
    import re
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not (m and n):
        raise SystemExit(f"wrk output not understood:\n{out}")
    return int(n.group(1)), float(m.group(1)), int(bad.group(1)) if bad else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args()
    if not a.no_install:
        run.install()
        if not shutil.which("caddy"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "caddy"], check=True)
    binary = os.environ.get("TAMADA_BIN") or run.TAMADA
    d = tempfile.mkdtemp(prefix="tamada-compress-")
    www, logs = tree_(d)
    ports = {s: run.free_port() for s in ("tamada", "nginx", "caddy")}
    nginx_server = (f"server {{ listen 127.0.0.1:{ports['nginx']}; root {www}; "
                    f"location /static/ {{ gzip_static on; }} }}")
    nginx_http = (f"  gzip_comp_level {LEVEL};\n  gzip_types text/plain text/css application/json "
                  f"application/javascript text/xml application/xml;\n  gzip_min_length 256;\n")
    procs = {
        "tamada": start_tamada(d, www, logs, ports["tamada"], binary),
        "nginx": run.start_nginx(d, www, logs, ports["nginx"], nginx_server, nginx_http),
        "caddy": start_caddy(d, www, logs, ports["caddy"]),
    }
    res = {}
    sizes = {}
    try:
        for s, p in procs.items():
            run.wait_port(ports[s], p)
        time.sleep(0.5)
        for name, path, coding, servers in SCENARIOS:
            for s in servers:
                url = f"http://127.0.0.1:{ports[s]}{path}"
                sizes[(name, s)] = body_bytes(url, coding)
                body_bytes(url, coding)  # (a cache's second answer)
        for r in range(a.rounds):
            for name, path, coding, servers in SCENARIOS:
                order = servers if r % 2 == 0 else list(reversed(servers))
                for s in order:
                    pid = procs[s].pid
                    c0 = run.cpu(pid)
                    n, rps, bad = load(f"http://127.0.0.1:{ports[s]}{path}", coding, a.seconds)
                    c1 = run.cpu(pid)
                    if bad:
                        raise SystemExit(f"{s} {name}: {bad} bad responses")
                    res.setdefault((name, s), []).append((rps, (c1 - c0) / max(n, 1) * 1e6))
                    print(f"round {r + 1} {name:45} {s:7} {rps:9.0f} req/s {(c1 - c0) / max(n, 1) * 1e6:6.1f} us/req",
                          file=sys.stderr)
    finally:
        run.stop(procs, d)
    lines = [f"# Compression: tamada beside nginx and Caddy ({datetime.datetime.now():%Y-%m-%d %H:%M})", "",
             run.describe(), "",
             f"{a.rounds} interleaved rounds of {a.seconds} s, wrk -t1 -c50; medians. gzip level {LEVEL} for "
             "tamada and nginx (the default of `compress`; nginx `gzip_comp_level 5`), zstd level 3 "
             "(tamada's default); Caddy 2.6 `encode gzip zstd` with its defaults. Bytes: one answer's body.", "",
             "| scenario | server | req/s | CPU µs/req | bytes | req/s vs tamada | CPU vs tamada | bytes vs tamada |",
             "|---|---|---|---|---|---|---|---|"]
    for name, path, coding, servers in SCENARIOS:
        t_rps = statistics.median(x[0] for x in res[(name, "tamada")])
        t_cpu = statistics.median(x[1] for x in res[(name, "tamada")])
        for s in servers:
            rps = statistics.median(x[0] for x in res[(name, s)])
            c = statistics.median(x[1] for x in res[(name, s)])
            b = sizes[(name, s)]
            lines.append(f"| {name} | {s} | {rps:,.0f} | {c:.1f} | {b:,} | {t_rps / rps:.2f}x | "
                         f"{t_cpu / c:.2f}x | {sizes[(name, 'tamada')] / b:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(run.ROOT, "bench", "results", f"compress-{datetime.datetime.now():%Y-%m-%d-%H%M}.md")
    with open(out, "w") as f:
        f.write(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

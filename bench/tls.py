#!/usr/bin/env python3
"""The HTTPS benchmark: tamada beside nginx, h2o and Caddy (Debian's
packages), all with the same ECDSA P-256 certificate and their access logs
on, interleaved rounds on one machine, medians of requests/s and of each
server's CPU time per request (utime+stime of its process tree, from /proc).

    python3 bench/tls.py [--rounds 3] [--seconds 4] [--only 1,2,3,4] [--no-install]

Scenarios:
1. 1 KiB over TLS with keep-alive (wrk -t1 -c50);
2. a new TLS connection per request, as wrk makes them: wrk keeps its TLS
   session across reconnects (SSL_clear keeps it), so nearly every
   handshake is resumed (tamada's JSON access log counts how many);
3. the same with every connection forced to a full handshake
   (bench/noresume.c preloaded into wrk drops the session after
   SSL_clear); the client's own work caps everyone near the same rate on
   two cores, so the server's CPU per handshake is the figure;
4. 10 MiB over TLS (wrk -t1 -c4).

nginx runs Debian's shipped nginx.conf with `listen ... ssl`,
`ssl_certificate` and `ssl_protocols TLSv1.2 TLSv1.3` added (1.22 leaves
1.3 off); h2o and Caddy their shipped defaults with the certificate.
"""
import argparse, datetime, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import ROOT, TAMADA, cpu, describe, free_port, layout, sh, stop, wait_port  # noqa: E402

import re  # noqa: E402

SERVERS = ["tamada", "nginx", "h2o", "caddy"]
SCENARIOS = [
    ("1 KiB, keep-alive, 50 conns", "/1k.bin", 50, ""),
    ("new connection per request (resumed)", "/1k.bin", 50, "close"),
    ("new connection per request, full handshakes", "/1k.bin", 50, "full"),
    ("10 MiB, 4 conns", "/10m.bin", 4, ""),
]
NORESUME = os.path.join(ROOT, "target", "bench", "noresume.so")


def install(a):
    need = {"nginx": "nginx-light", "wrk": "wrk", "h2o": "h2o", "caddy": "caddy", "openssl": "openssl",
            "htpasswd": "apache2-utils"}
    missing = [pkg for cmd, pkg in need.items() if not shutil.which(cmd)]
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"install first: sudo apt-get install -y {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not a.no_install:
        print("building tamada (release)", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=ROOT, check=True)
    os.makedirs(os.path.dirname(NORESUME), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", NORESUME,
                    os.path.join(ROOT, "bench", "noresume.c"), "-ldl"], check=True)


def certificate(d):
    """One ECDSA P-256 certificate for everyone, readable by their workers."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = sh(f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
           f"-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
           f"-keyout {key} -out {cert}")
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    os.chmod(key, 0o644)
    return cert, key


def start_tamada(d, www, logs, port, cert, key):
    conf = os.path.join(d, "tamada-conf.d")
    os.makedirs(conf)
    os.makedirs(os.path.join(logs, "tamada"))
    with open(os.path.join(conf, "bench.yaml"), "w") as f:
        f.write(f"""vhost: localhost
ip: 127.0.0.1
tls_port: {port}
tls: {{ cert: {cert}, key: {key} }}
document_root: {www}
log: {logs}/tamada
loggers:
  - handler: logging
    options: {{ format: json }}
routes:
  - path: /
    handler: static
""")
    with open(os.path.join(conf, "server.yaml"), "w") as f:
        user = "user: nobody\n" if os.geteuid() == 0 else ""
        f.write("log_level: warn\n" + user)
    return subprocess.Popen([TAMADA, "-c", conf], stderr=subprocess.DEVNULL)


def start_nginx(d, www, logs, port, cert, key):
    server = (f"server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; "
              f"ssl_certificate_key {key}; root {www}; }}")
    extra = "  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_prefer_server_ciphers on;\n"
    return run.start_nginx(d, www, logs, port, server, extra)


def start_h2o(d, www, logs, port, cert, key):
    conf = os.path.join(d, "h2o.conf")
    user = "user: nobody\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""{user}access-log: {logs}/h2o-access.log
error-log: {logs}/h2o-error.log
listen:
  host: 127.0.0.1
  port: {port}
  ssl:
    certificate-file: {cert}
    key-file: {key}
hosts:
  default:
    paths:
      /:
        file.dir: {www}
""")
    return subprocess.Popen(["h2o", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_caddy(d, www, logs, port, cert, key):
    conf = os.path.join(d, "Caddyfile")
    with open(conf, "w") as f:
        f.write(f"""{{
  admin off
  auto_https disable_redirects
  storage file_system {d}/caddy-data
}}
https://127.0.0.1:{port}, https://localhost:{port} {{
  tls {cert} {key}
  root * {www}
  file_server
  log {{
    output file {logs}/caddy-access.log
  }}
}}
""")
    env = {**os.environ, "HOME": d, "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d}
    return subprocess.Popen(["caddy", "run", "--config", conf, "--adapter", "caddyfile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def wrk(url, conns, seconds, mode):
    hdr = ' -H "Connection: close"' if mode in ("close", "full") else ""
    pre = f"LD_PRELOAD={NORESUME} " if mode == "full" else ""
    out = sh(f"{pre}timeout {seconds + 30} wrk -t1 -c{conns} -d{seconds}s{hdr} {url}").stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not (m and n):
        raise SystemExit(f"wrk output not understood:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return int(n.group(1)), float(m.group(1)), int(bad.group(1)) if bad else 0, errs.group(1) if errs else ""


def resumed_share(logs):
    """The share of tamada's logged HTTPS requests whose session was resumed."""
    total = resumed = 0
    path = os.path.join(logs, "tamada", "access.log")
    try:
        for line in open(path):
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("tls_resumed") is not None:
                total += 1
                resumed += bool(v["tls_resumed"])
    except OSError:
        return None
    return (resumed, total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--only", help="comma-separated scenario numbers (1-4)")
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args()
    install(a)
    scenarios = SCENARIOS
    if a.only:
        pick = {int(x) for x in a.only.split(",")}
        scenarios = [s for i, s in enumerate(SCENARIOS, 1) if i in pick]
    d = tempfile.mkdtemp(prefix="tamada-tls-bench-")
    os.chmod(d, 0o755)
    www, _cgi, logs = layout(d)
    cert, key = certificate(d)
    procs, ports = {}, {}
    starters = {"tamada": start_tamada, "nginx": start_nginx, "h2o": start_h2o, "caddy": start_caddy}
    resumption = {}
    try:
        for name in SERVERS:
            port = free_port()
            p = starters[name](d, www, logs, port, cert, key)
            wait_port(port, p)
            procs[name], ports[name] = p, port
        for name, port in ports.items():
            r = sh(f"curl -sk -o /dev/null -w '%{{http_code}}' https://127.0.0.1:{port}/1k.bin").stdout
            if r != "200":
                raise SystemExit(f"{name} answers {r} over HTTPS, not 200")
        res = {}
        for r in range(a.rounds):
            for name, path, conns, mode in scenarios:
                order = SERVERS[r % len(SERVERS):] + SERVERS[:r % len(SERVERS)]
                for s in order:
                    before = resumed_share(logs) if s == "tamada" else None
                    c0 = cpu(procs[s].pid)
                    n, rps, bad, errs = wrk(f"https://127.0.0.1:{ports[s]}{path}", conns, a.seconds, mode)
                    c1 = cpu(procs[s].pid)
                    if bad:
                        raise SystemExit(f"{s}: {bad} error responses on {name}")
                    res.setdefault((name, s), []).append((rps, (c1 - c0) / max(n, 1) * 1e6, errs))
                    if s == "tamada" and before:
                        time.sleep(0.3)
                        after = resumed_share(logs)
                        if after:
                            acc = resumption.setdefault(name, [0, 0])
                            acc[0] += after[0] - before[0]
                            acc[1] += after[1] - before[1]
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        stop(procs, d)
    report(res, scenarios, resumption, a)


def report(res, scenarios, resumption, a):
    vers = []
    for cmd in ("h2o --version", "caddy version"):
        r = sh(cmd)
        vers.append((r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else cmd)
    lines = [f"# tamada HTTPS benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}", "",
             describe() + "; " + "; ".join(vers), "",
             f"Medians of {a.rounds} interleaved rounds, {a.seconds} s each; requests/s and server CPU"
             " µs per request (ms for 10 MiB). Same ECDSA P-256 certificate, access logs on.", "",
             "| scenario | tamada | nginx | h2o | Caddy | tamada / faster of nginx, h2o | tamada CPU / h2o | tamada CPU / nginx |",
             "|---|---|---|---|---|---|---|---|"]
    med = {k: (statistics.median(x for x, _, _ in v), statistics.median(c for _, c, _ in v)) for k, v in res.items()}
    for name, *_ in scenarios:
        def cell(s):
            if (name, s) not in med:
                return "—"
            rps, c = med[(name, s)]
            r = f"{rps / 1000:.1f}k/s" if rps >= 1000 else f"{rps:.0f}/s"
            return f"{r}, {c:.1f} µs" if c < 1000 else f"{r}, {c / 1000:.2f} ms"
        t = med[(name, "tamada")]
        best = max(("nginx", "h2o"), key=lambda s: med[(name, s)][0])
        lines.append(f"| {name} | {cell('tamada')} | {cell('nginx')} | {cell('h2o')} | {cell('caddy')} "
                     f"| {t[0] / med[(name, best)][0]:.2f}x {best} | {t[1] / med[(name, 'h2o')][1]:.2f}x "
                     f"| {t[1] / med[(name, 'nginx')][1]:.2f}x |")
    errs = sorted({f"{s}: {e}" for (n, s), v in res.items() for _, _, e in v if e})
    if errs:
        lines += ["", "wrk socket errors: " + "; ".join(errs)]
    for name, (r, t) in resumption.items():
        if t:
            lines.append(f"- {name}: tamada's access log shows {r} of {t} requests on resumed sessions ({100 * r / t:.0f}%).")
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"tls-{datetime.datetime.now():%Y-%m-%d-%H%M}.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The benchmark: tamada beside nginx and lighttpd (and a ceiling), on the
same machine, in the same run, interleaved rounds; prints medians of
requests/s and of the server's CPU time per request, with tamada's ratio to
the faster peer, and writes the table to bench/results/.

One command on a fresh machine (as root it installs what is missing):

    python3 bench/run.py [--rounds 3] [--seconds 4] [--only SCENARIO,...]

Every server runs with its shipped defaults and an access log, on its own
loopback port, serving the same tree (readable by nginx's unprivileged
workers): 1 KiB, 100 KiB and 10 MiB files, a missing path, and a shell CGI
script. "CPU" is the server's utime+stime per request (all its processes,
reaped CGI children included), read from /proc before and after each run:
far steadier than requests/s on a noisy machine. Load: wrk -t1 and
h2load --h1 -t1, bounded by --seconds per run.

`--h2` runs the HTTP/2 scenarios instead (bench/h2.py: h2load over TLS
beside nginx and h2o).
`--compress` runs the compression scenarios instead (bench/compress.py:
100 KiB HTML and JSON with gzip beside nginx and Caddy, zstd beside Caddy,
the compressed-file cache beside nginx's gzip_static).

The ceiling is bench/ceiling.c: one thread, epoll, a fixed 1 KiB answer, no
files, no logs. "tamada 1 loop" is tamada with `loops: 1` (per-core
efficiency against single-process lighttpd); "tamada no-op" answers a fixed
1 KiB page from the placeholder plugin (what the plugin boundary costs).
"""
import argparse, datetime, os, platform, re, resource, shutil, signal, socket
import statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TAMADA_BIN runs another build (a saved one, to compare before and after).
TAMADA = os.environ.get("TAMADA_BIN") or os.path.join(ROOT, "target", "release", "tamada")
# TAMADA_BASE adds that build as "tamada base" beside "tamada" in every
# scenario of the same run: before and after a change, interleaved.
BASE = os.environ.get("TAMADA_BASE")
CEILING = os.path.join(ROOT, "target", "bench", "ceiling")
TICK = os.sysconf("SC_CLK_TCK")

# name, path, load, connections, servers
SCENARIOS = [
    ("1 KiB, 50 conns", "/1k.bin", "wrk", 50, ["tamada", "tamada 1 loop", "nginx", "lighttpd", "ceiling"]),
    ("100 KiB, 50 conns", "/100k.bin", "wrk", 50, ["tamada", "tamada 1 loop", "nginx", "lighttpd"]),
    ("10 MiB, 4 conns", "/10m.bin", "wrk", 4, ["tamada", "tamada 1 loop", "nginx", "lighttpd"]),
    ("404, 50 conns", "/missing.bin", "wrk", 50, ["tamada", "tamada 1 loop", "nginx", "lighttpd"]),
    ("1 KiB pipelined x16", "/1k.bin", "h2load", 50, ["tamada", "tamada 1 loop", "nginx", "lighttpd", "ceiling"]),
    ("new connection per request", "/1k.bin", "wrk-close", 50, ["tamada", "tamada 1 loop", "nginx", "lighttpd"]),
    ("shell CGI hello, 20 conns", "/cgi-bin/hello.sh", "wrk", 20, ["tamada", "tamada 1 loop", "lighttpd"]),
    ("no-op plugin, 1 KiB, 50 conns", "/noop", "wrk", 50, ["tamada no-op"]),
    ("1 KiB behind auth_basic (bcrypt -C 10), 50 conns", "/auth/1k.bin", "wrk-auth", 50, ["tamada", "nginx"]),
    ("1 KiB behind limit (rate above the load), 50 conns", "/lim/1k.bin", "wrk", 50, ["tamada"]),
]
# The bench user's password for auth_basic scenarios (htpasswd -B -C 10).
AUTH = ("bench", "bench-password")
PEERS = ("nginx", "lighttpd")
if BASE:
    # (a build from before the access rules would serve their files open)
    SCENARIOS = [(n, p, k, c, s + ["tamada base"] if "tamada" in s and "behind" not in n else s)
                 for n, p, k, c, s in SCENARIOS]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)


def install():
    """Installs the peers and load tools when missing (root only)."""
    need = {"nginx": "nginx-light", "lighttpd": "lighttpd", "wrk": "wrk", "h2load": "nghttp2-client", "gcc": "gcc",
            "htpasswd": "apache2-utils"}
    missing = [pkg for cmd, pkg in need.items() if not shutil.which(cmd)]
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"install first: sudo apt-get install -y {' '.join(missing)}")
        print(f"installing {' '.join(missing)}", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    print("building tamada (release) and the ceiling", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=ROOT, check=True)
    os.makedirs(os.path.dirname(CEILING), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", CEILING, os.path.join(ROOT, "bench", "ceiling.c")], check=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def layout(d):
    """The tree every server serves, readable by nginx's `nobody` workers."""
    os.chmod(d, 0o755)
    www = os.path.join(d, "www")
    cgi = os.path.join(d, "cgi-bin")
    logs = os.path.join(d, "logs")
    for p in (www, cgi, logs):
        os.makedirs(p)
        os.chmod(p, 0o755)
    for name, size in (("1k", 1024), ("100k", 100 * 1024), ("10m", 10 * 1024 * 1024)):
        p = os.path.join(www, f"{name}.bin")
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(p, 0o644)
    # The same 1 KiB file behind an access rule (auth_basic, limit).
    with open(os.path.join(www, "1k.bin"), "rb") as f:
        one_k = f.read()
    for sub in ("auth", "lim"):
        os.makedirs(os.path.join(www, sub))
        os.chmod(os.path.join(www, sub), 0o755)
        with open(os.path.join(www, sub, "1k.bin"), "wb") as f:
            f.write(one_k)
        os.chmod(os.path.join(www, sub, "1k.bin"), 0o644)
    users = os.path.join(d, "users.htpasswd")
    subprocess.run(["htpasswd", "-c", "-b", "-B", "-C", "10", users, *AUTH], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(users, 0o644)
    script = os.path.join(cgi, "hello.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n")
    os.chmod(script, 0o755)
    return www, cgi, logs


def start_tamada(d, www, cgi, logs, port, loops, binary=None):
    conf = os.path.join(d, f"conf.d-{port}")
    os.makedirs(conf)
    access = "" if binary else f"""access:
  - path: /auth/
    handler: auth_basic
    options: {{ file: {d}/users.htpasswd }}
  - path: /lim/
    handler: limit
    options: {{ rate: 1000000/s, burst: 10000, nodelay: true }}
"""
    with open(os.path.join(conf, "bench.yaml"), "w") as f:
        f.write(f"""vhost: bench
ip: 127.0.0.1
port: {port}
document_root: {www}
cgi_bin: {cgi}
log: {logs}/tamada-{port}
{access}routes:
  - path: /cgi-bin/
    handler: cgi
  - path: /noop
    handler: placeholder
    options: {{ content_type: application/octet-stream, body: "{'x' * 1024}" }}
  - path: /
    handler: static
""")
    os.makedirs(os.path.join(logs, f"tamada-{port}"))
    with open(os.path.join(conf, "server.yaml"), "w") as f:
        # As root, serve (and run the CGI script) as nobody, as a service would.
        user = "user: nobody\n" if os.geteuid() == 0 else ""
        f.write("log_level: warn\n" + user + (f"loops: {loops}\n" if loops else ""))
    return subprocess.Popen([binary or TAMADA, "-c", conf], stderr=subprocess.DEVNULL)


def start_nginx(d, www, logs, port, server=None, http_extra=""):
    """Debian's shipped nginx.conf, with the paths and the port of this run
    (`server` replaces the plain server block, `http_extra` adds lines)."""
    conf = os.path.join(d, "nginx.conf")
    tmp = os.path.join(d, "nginx-tmp")
    os.makedirs(tmp)
    server = server or (f"server {{ listen 127.0.0.1:{port}; root {www}; "
                        f"location /auth/ {{ auth_basic bench; auth_basic_user_file {d}/users.htpasswd; }} }}")
    with open(conf, "w") as f:
        f.write(f"""worker_processes auto;
pid {d}/nginx.pid;
error_log {logs}/nginx-error.log;
events {{ worker_connections 768; }}
http {{
  sendfile on;
  tcp_nopush on;
  types_hash_max_size 2048;
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
{http_extra}  access_log {logs}/nginx-access.log;
  gzip on;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  {server}
}}
""")
    return subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)


def stop(procs, d):
    """SIGTERM every server of the run, then the temporary tree goes."""
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(d, ignore_errors=True)


def start_lighttpd(d, www, cgi, logs, port):
    """Debian's shipped modules, with mod_accesslog and mod_cgi added."""
    conf = os.path.join(d, "lighttpd.conf")
    with open(conf, "w") as f:
        # mod_cgi before mod_staticfile, as Debian's conf-enabled/10-cgi.conf
        # loads it: the static module must come last.
        f.write(f"""server.modules = ("mod_indexfile", "mod_access", "mod_alias", "mod_redirect",
  "mod_accesslog", "mod_cgi", "mod_dirlisting", "mod_staticfile")
server.document-root = "{www}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{logs}/lighttpd-error.log"
accesslog.filename = "{logs}/lighttpd-access.log"
index-file.names = ( "index.php", "index.html" )
alias.url = ( "/cgi-bin/" => "{cgi}/" )
cgi.assign = ( ".sh" => "" )
include_shell "/usr/share/lighttpd/create-mime.conf.pl"
""")
    return subprocess.Popen(["lighttpd", "-D", "-f", conf], stderr=subprocess.DEVNULL)


def tree(pid):
    """The process and its children (nginx's workers, CGI children)."""
    pids = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(p))
            except (OSError, IndexError):
                pass
    return pids


def cpu(pid):
    """utime+stime of the process tree, reaped children included, seconds."""
    total = 0
    for p in tree(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return total / TICK


def load(kind, url, conns, seconds):
    """Runs the load; returns (requests done, requests/s, bad responses)."""
    if kind == "h2load":
        # A bounded count, not -D: with -D, h2load 1.52 never stops when a
        # server closes a pipelining connection (nginx and lighttpd do so
        # after 1,000 requests by default); those pipelined requests count
        # as failed, and requests/s counts the ones that succeeded.
        n_req = 120_000 * seconds
        out = sh(f"timeout {seconds * 10 + 30} h2load --h1 -t1 -c{conns} -m16 -n {n_req} {url}").stdout
        t = re.search(r"finished in ([\d.]+)(m?s),", out)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        codes = re.search(r"status codes: (\d+) 2xx", out)
        if not (t and done and codes):
            raise SystemExit(f"h2load output not understood:\n{out}")
        secs = float(t.group(1)) / (1000 if t.group(2) == "ms" else 1)
        ok = int(codes.group(1))
        return ok, ok / secs, int(done.group(1)) - ok
    hdr = ' -H "Connection: close"' if kind == "wrk-close" else ""
    if kind == "wrk-auth":
        import base64
        hdr = f' -H "Authorization: Basic {base64.b64encode(":".join(AUTH).encode()).decode()}"'
    out = sh(f"timeout {seconds + 30} wrk -t1 -c{conns} -d{seconds}s{hdr} {url}").stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not (m and n):
        raise SystemExit(f"wrk output not understood:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(n.group(1)), float(m.group(1)), int(bad.group(1)) if bad else 0


def idle_conns(port, pid, n=10000):
    """RSS per idle keep-alive connection and threads, with `n` of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))

    def status():
        d = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
        return int(d["Threads"]), int(d["VmRSS"].split()[0])

    th0, rss0 = status()
    socks = []
    req = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
        if len(socks) % 500 == 0:
            for t in socks[-500:]:
                t.settimeout(10)
                t.recv(65536)
    for t in socks[len(socks) - len(socks) % 500:]:
        t.settimeout(10)
        t.recv(65536)
    time.sleep(1)
    th1, rss1 = status()
    for s in socks:
        s.close()
    return th0, th1, rss0, rss1


def describe():
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    vers = []
    for cmd in ("nginx -v", "lighttpd -v", "wrk -v", "h2load --version", f"{TAMADA} -V"):
        r = sh(cmd)
        vers.append((r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else cmd)
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu_model}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, Linux {platform.release()}\n"
            + "; ".join(vers))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--only", help="comma-separated scenario numbers (1-8)")
    ap.add_argument("--no-idle", action="store_true", help="skip the 10,000 idle connections")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--compress", action="store_true",
                    help="run only the compression scenarios (bench/compress.py): gzip and zstd "
                         "on the fly beside nginx and Caddy, the compressed-file cache beside gzip_static")
    ap.add_argument("--h2", action="store_true",
                    help="run only the HTTP/2 scenarios (bench/h2.py): h2load over TLS beside nginx and h2o")
    a = ap.parse_args()
    if a.h2:
        import h2
        sys.argv = [sys.argv[0], "--rounds", str(a.rounds), "--seconds", str(a.seconds)] + (
            ["--no-install"] if a.no_install else [])
        h2.main()
        return
    if a.compress:
        import compress
        sys.argv = [sys.argv[0], "--rounds", str(a.rounds), "--seconds", str(a.seconds)] + (
            ["--no-install"] if a.no_install else [])
        compress.main()
        return
    if not a.no_install:
        install()
    scenarios = SCENARIOS
    if a.only:
        pick = {int(x) for x in a.only.split(",")}
        scenarios = [s for i, s in enumerate(SCENARIOS, 1) if i in pick]
    d = tempfile.mkdtemp(prefix="tamada-bench-")
    www, cgi, logs = layout(d)
    wanted = {s for sc in scenarios for s in sc[4]}
    procs, ports = {}, {}
    try:
        for name in ["tamada", "tamada base", "tamada 1 loop", "tamada no-op", "nginx", "lighttpd", "ceiling"]:
            if name not in wanted and not (name == "tamada" and not a.no_idle):
                continue
            port = free_port()
            if name == "tamada" or name == "tamada no-op":
                p = start_tamada(d, www, cgi, logs, port, 0)
            elif name == "tamada base":
                p = start_tamada(d, www, cgi, logs, port, 0, BASE)
            elif name == "tamada 1 loop":
                p = start_tamada(d, www, cgi, logs, port, 1)
            elif name == "nginx":
                p = start_nginx(d, www, logs, port)
            elif name == "lighttpd":
                p = start_lighttpd(d, www, cgi, logs, port)
            else:
                p = subprocess.Popen([CEILING, str(port)])
            wait_port(port, p)
            procs[name], ports[name] = p, port
        # Each server must answer 200 (a tree nginx's workers cannot read
        # gives fast 403s and wrong numbers).
        for name, port in ports.items():
            path = "/noop" if name == "tamada no-op" else "/1k.bin"
            r = sh(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}{path}").stdout
            if r != "200":
                raise SystemExit(f"{name} answers {r} for {path}, not 200")
            if any(name in sc[4] and "CGI" in sc[0] for sc in scenarios):
                body = sh(f"curl -s http://127.0.0.1:{port}/cgi-bin/hello.sh").stdout
                if body != "hello\n":
                    raise SystemExit(f"{name} does not run the CGI script: {body[:80]!r}")
        res = {}
        for r in range(a.rounds):
            for sc in scenarios:
                name, path, kind, conns, servers = sc
                order = servers[r % len(servers):] + servers[:r % len(servers)]
                for s in order:
                    pid = procs[s].pid
                    c0 = cpu(pid)
                    n, rps, bad = load(kind, f"http://127.0.0.1:{ports[s]}{path}", conns, a.seconds)
                    c1 = cpu(pid)
                    if bad and "404" not in name:
                        raise SystemExit(f"{s}: {bad} error responses on {name}")
                    res.setdefault((name, s), []).append((rps, (c1 - c0) / max(n, 1) * 1e6))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        idle = None
        if not a.no_idle:
            idle = idle_conns(ports["tamada"], procs["tamada"].pid)
    finally:
        stop(procs, d)
    report(res, scenarios, idle, a)


def report(res, scenarios, idle, a):
    lines = [f"# tamada benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}", "", describe(), "",
             f"Medians of {a.rounds} interleaved rounds, {a.seconds} s each; requests/s and server CPU"
             " µs per request. Ratio: tamada's requests/s over the faster peer's (CPU ratio: the"
             " peer's CPU per request over tamada's; above 1 is better for tamada).", "",
             "| scenario | tamada | tamada 1 loop | nginx | lighttpd | tamada / faster peer | CPU ratio (vs most efficient peer) |",
             "|---|---|---|---|---|---|---|"]
    med = {k: (statistics.median(x for x, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    ceiling = med.get(("1 KiB, 50 conns", "ceiling"))
    for sc in scenarios:
        name, servers = sc[0], sc[4]
        def cell(s):
            if (name, s) not in med:
                return "—"
            rps, c = med[(name, s)]
            r = f"{rps / 1000:.1f}k/s" if rps >= 1000 else f"{rps:.0f}/s"
            return f"{r}, {c:.1f} µs" if c < 1000 else f"{r}, {c / 1000:.2f} ms"
        peers = [s for s in servers if s in PEERS]
        main = "tamada no-op" if "tamada no-op" in servers else "tamada"
        ratio = cpu_ratio = "—"
        if peers:
            best = max(peers, key=lambda s: med[(name, s)][0])
            lean = min(peers, key=lambda s: med[(name, s)][1])
            ratio = f"{med[(name, main)][0] / med[(name, best)][0]:.2f}x {best}"
            cpu_ratio = f"{med[(name, lean)][1] / med[(name, main)][1]:.2f}x {lean}"
        first = cell(main) if main != "tamada no-op" else f"no-op: {cell(main)}"
        lines.append(f"| {name} | {first} | {cell('tamada 1 loop')} | {cell('nginx')} | {cell('lighttpd')} | {ratio} | {cpu_ratio} |")
    if ceiling:
        lines += ["", f"Ceiling (bench/ceiling.c, 1 KiB): {ceiling[0] / 1000:.1f}k/s, {ceiling[1]:.1f} µs per request."]
        for s in ("tamada", "tamada 1 loop", "nginx", "lighttpd"):
            if ("1 KiB, 50 conns", s) in med:
                m = med[("1 KiB, 50 conns", s)]
                lines.append(f"- {s}: {m[0] / ceiling[0]:.2f} of the ceiling's requests/s, {m[1] / ceiling[1]:.2f}x its CPU per request")
        if ("1 KiB pipelined x16", "ceiling") in med:
            c = med[("1 KiB pipelined x16", "ceiling")]
            lines.append(f"- pipelined x16 ceiling: {c[0] / 1000:.1f}k/s, {c[1]:.1f} µs")
    open_file = med.get(("1 KiB, 50 conns", "tamada"))
    rules = [sc[0] for sc in scenarios if "behind" in sc[0] and (sc[0], "tamada") in med]
    if open_file and rules:
        lines += ["", "What an access rule costs (tamada, against the open 1 KiB file of the same run):"]
        for name in rules:
            m = med[(name, "tamada")]
            lines.append(f"- {name}: {m[1] / open_file[1]:.2f}x the CPU per request, {m[0] / open_file[0]:.2f}x the requests/s")
    if BASE:
        lines += ["", f"tamada against tamada base ({BASE}), same run:"]
        for sc in scenarios:
            t, b = med.get((sc[0], "tamada")), med.get((sc[0], "tamada base"))
            if t and b:
                lines.append(f"- {sc[0]}: {t[0] / b[0]:.2f}x its requests/s, {t[1] / b[1]:.2f}x its CPU per request")
    if idle:
        th0, th1, rss0, rss1 = idle
        lines += ["", f"10,000 idle keep-alive connections: threads {th0} -> {th1}, RSS {rss0} -> {rss1} KiB"
                  f" ({(rss1 - rss0) * 1024 / 10000:.0f} bytes per connection)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{datetime.datetime.now():%Y-%m-%d-%H%M}.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The gateway benchmark: tamada's `proxy` beside nginx's `proxy_pass`
(upstream keep-alive on both) to one upstream serving a 1 KiB file, and
tamada's `fastcgi` beside nginx's `fastcgi_pass` (nginx's shipped
default: a connection per request; with `fastcgi_keep_conn on` and an
upstream `keepalive 8` it managed 300-700 requests/s here) to one php-fpm
pool (`pm = static`, 4 children) running a hello-world page. Same machine, same run,
interleaved rounds, medians of requests/s and of the front server's CPU
time per request (utime+stime of its process tree, from /proc: the
upstream and php-fpm are not counted). Then 1,000 slow clients download a
large proxied file at once through tamada with its default pool: every
one of them must keep receiving bytes.

    python3 bench/gateway.py [--rounds 3] [--seconds 5] [--no-install]

The upstream is nginx (`worker_processes 1`, no access log) so that both
fronts face the same one; both fronts log every request.
"""
import argparse, datetime, os, platform, selectors, shutil, socket
import statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, TAMADA, cpu, free_port, load, sh, stop, wait_port  # noqa: E402

HELLO = "<?php echo 'hello from php';\n"


def install():
    need = {"nginx": "nginx-light", "wrk": "wrk"}
    missing = [pkg for cmd, pkg in need.items() if not shutil.which(cmd)]
    if not any(n.startswith("php-fpm") for n in os.listdir("/usr/sbin")):
        missing.append("php-fpm")
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"install first: sudo apt-get install -y {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    print("building tamada (release)", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=ROOT, check=True)


def nginx(d, name, port, body):
    conf = os.path.join(d, f"{name}.conf")
    tmp = os.path.join(d, f"{name}-tmp")
    os.makedirs(tmp)
    with open(conf, "w") as f:
        f.write(f"""{body[0]}
pid {d}/{name}.pid;
error_log {d}/logs/{name}-error.log;
events {{ worker_connections 2048; }}
http {{
  sendfile on;
  tcp_nopush on;
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log {body[1]};
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
{body[2]}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p


def tamada(d, port, route):
    conf = os.path.join(d, f"conf.d-{port}")
    os.makedirs(conf)
    logs = os.path.join(d, "logs", f"tamada-{port}")
    os.makedirs(logs)
    os.chmod(logs, 0o777)
    with open(os.path.join(conf, "gw.yaml"), "w") as f:
        f.write(f"vhost: gw\nip: 127.0.0.1\nport: {port}\ndocument_root: {d}/www\nlog: {logs}\nroutes:\n{route}")
    with open(os.path.join(conf, "server.yaml"), "w") as f:
        f.write("log_level: warn\n" + ("user: nobody\n" if os.geteuid() == 0 else ""))
    p = subprocess.Popen([TAMADA, "-c", conf], stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p


def fpm(d, sock):
    conf = os.path.join(d, "fpm.conf")
    user = "user = nobody\ngroup = nogroup\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"[global]\npid = {d}/fpm.pid\nerror_log = {d}/logs/fpm.log\ndaemonize = no\n"
                f"[bench]\n{user}listen = {sock}\nlisten.mode = 0666\npm = static\npm.max_children = 4\n")
    binary = "/usr/sbin/" + max(n for n in os.listdir("/usr/sbin") if n.startswith("php-fpm"))
    p = subprocess.Popen([binary, "-F", "-R", "-y", conf], stderr=subprocess.DEVNULL)
    end = time.time() + 10
    while not os.path.exists(sock):
        if time.time() > end:
            raise SystemExit("php-fpm did not start")
        time.sleep(0.05)
    return p


def slow_clients(port, n=1000, seconds=10):
    """n connections each GET /big.bin and read 4 KiB every 200 ms: how
    many bytes each got, after `seconds`."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: gw\r\n\r\n")
        s.setblocking(False)
        socks.append(s)
    got = [0] * n
    end = time.time() + seconds
    while time.time() < end:
        for i, s in enumerate(socks):
            try:
                b = s.recv(4096)
                got[i] += len(b)
            except BlockingIOError:
                pass
        time.sleep(0.2)
    for s in socks:
        s.close()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args()
    if not a.no_install:
        install()
    d = tempfile.mkdtemp(prefix="tamada-gw-")
    os.chmod(d, 0o755)
    for sub in ("www", "logs"):
        os.makedirs(os.path.join(d, sub))
        os.chmod(os.path.join(d, sub), 0o777)
    with open(os.path.join(d, "www", "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(d, "www", "big.bin"), "wb") as f:
        f.write(os.urandom(64 * 1024 * 1024))
    with open(os.path.join(d, "www", "hello.php"), "w") as f:
        f.write(HELLO)
    for name in os.listdir(os.path.join(d, "www")):
        os.chmod(os.path.join(d, "www", name), 0o644)
    sock = os.path.join(d, "php.sock")
    procs = {}
    try:
        up = free_port()
        procs["upstream"] = nginx(d, "upstream", up, ("worker_processes 1;", "off",
                                  f"  server {{ listen 127.0.0.1:{up}; root {d}/www; }}"))
        procs["php-fpm"] = fpm(d, sock)
        ports = {}
        ports["tamada proxy"] = free_port()
        procs["tamada proxy"] = tamada(d, ports["tamada proxy"],
                                       f"  - path: /\n    handler: proxy\n    options: {{ upstreams: [\"127.0.0.1:{up}\"] }}\n")
        ports["nginx proxy"] = free_port()
        procs["nginx proxy"] = nginx(d, "nginx-proxy", ports["nginx proxy"], (
            "worker_processes auto;", f"{d}/logs/nginx-proxy-access.log",
            f"  upstream up {{ server 127.0.0.1:{up}; keepalive 32; }}\n"
            f"  server {{ listen 127.0.0.1:{ports['nginx proxy']}; location / {{ proxy_pass http://up; "
            "proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"))
        ports["tamada fastcgi"] = free_port()
        procs["tamada fastcgi"] = tamada(d, ports["tamada fastcgi"],
                                         f"  - path: /\n    handler: fastcgi\n    options: {{ address: \"unix:{sock}\" }}\n")
        ports["nginx fastcgi"] = free_port()
        procs["nginx fastcgi"] = nginx(d, "nginx-fastcgi", ports["nginx fastcgi"], (
            "worker_processes auto;", f"{d}/logs/nginx-fastcgi-access.log",
            f"  server {{ listen 127.0.0.1:{ports['nginx fastcgi']}; root {d}/www; "
            "location ~ \\.php$ { include /etc/nginx/fastcgi_params; "
            "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; "
            f"fastcgi_pass unix:{sock}; }} }}"))
        scen = [("proxy, 1 KiB, 50 conns", "/1k.bin", 50, ["tamada proxy", "nginx proxy"]),
                ("fastcgi, PHP hello, 20 conns", "/hello.php", 20, ["tamada fastcgi", "nginx fastcgi"])]
        for name, path, _, servers in scen:
            for s in servers:
                code = sh(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{ports[s]}{path}").stdout
                if code != "200":
                    raise SystemExit(f"{s} answers {code} for {path}")
                if "php" in path and sh(f"curl -s http://127.0.0.1:{ports[s]}{path}").stdout != "hello from php":
                    raise SystemExit(f"{s} does not run PHP")
        res = {}
        for r in range(a.rounds):
            for name, path, conns, servers in scen:
                order = servers[r % 2:] + servers[:r % 2]
                for s in order:
                    pid = procs[s].pid
                    c0 = cpu(pid)
                    n, rps, bad = load("wrk", f"http://127.0.0.1:{ports[s]}{path}", conns, a.seconds)
                    c1 = cpu(pid)
                    if bad:
                        raise SystemExit(f"{s}: {bad} error responses on {name}")
                    res.setdefault((name, s), []).append((rps, (c1 - c0) / max(n, 1) * 1e6))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        got = slow_clients(ports["tamada proxy"])
    finally:
        stop(procs, d)
    lines = [f"# Gateway benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}", "",
             f"{platform.node()}, {os.cpu_count()} CPUs; {a.rounds} interleaved rounds of {a.seconds} s, wrk -t1; medians.", "",
             "| scenario | tamada | nginx | tamada / nginx (req/s) | CPU per request tamada / nginx |",
             "|---|---|---|---|---|"]
    for name, _, _, servers in scen:
        t = res[(name, servers[0])]
        g = res[(name, servers[1])]
        tr, tc = statistics.median(x[0] for x in t), statistics.median(x[1] for x in t)
        gr, gc = statistics.median(x[0] for x in g), statistics.median(x[1] for x in g)
        lines.append(f"| {name} | {tr:,.0f}/s, {tc:.0f} µs | {gr:,.0f}/s, {gc:.0f} µs | {tr / gr:.2f}x | {tc / max(gc, 1e-9):.2f}x |")
    stalled = sum(1 for x in got if x == 0)
    lines += ["", f"1,000 slow clients on a 64 MiB proxied file through tamada (default pool), 10 s at 4 KiB per 200 ms each: "
              f"{len(got) - stalled} received bytes, {stalled} none; median {statistics.median(got) / 1024:.0f} KiB, "
              f"least {min(got) / 1024:.0f} KiB."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(ROOT, "bench", "results", f"gateway-{datetime.datetime.now():%Y-%m-%d-%H%M}.md")
    with open(out, "w") as f:
        f.write(text)
    if stalled:
        raise SystemExit(f"{stalled} slow clients got nothing")


if __name__ == "__main__":
    main()

"""Shared helpers for the benchmarks: ports, starting servers, wrk."""
import os, re, shutil, signal, socket, subprocess, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAMADA = os.path.join(ROOT, "target", "release", "tamada")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout=15):
    t = time.time() + timeout
    while time.time() < t:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def need(*tools):
    for t in tools:
        if not shutil.which(t):
            raise SystemExit(f"{t} is needed: apt-get install -y wrk nginx lighttpd")
    if not os.path.exists(TAMADA):
        raise SystemExit("build first: cargo build --release --workspace")


def start_tamada(conf_dir, port):
    p = subprocess.Popen([TAMADA, "-c", conf_dir], stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p


def wrk(url, seconds, conns, threads=2):
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", url], capture_output=True, text=True
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"wrk output not understood:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"{url}: {bad.group(1)} error responses")
    return float(m.group(1))


def stop(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()

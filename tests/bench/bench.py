"""The imapmux benchmark: imapmux, HAProxy (TCP mode, terminating TLS, no
IMAP logic) and a direct connection in front of the same real Dovecot, with a
real Redis behind imapmux, all on loopback, driven by imapbench (C, libuv +
BoringSSL) in one run.

    python3 tests/bench/bench.py [--runs 3] [--short] [--json FILE]

Figures (medians over runs, with min..max):
  - CPU time of the proxy process (user + system, /proc/PID/stat) per
    handshake, per login churn session and per GB fetched;
  - memory (PSS from /proc/PID/smaps_rollup, RSS) per idle connection,
    before login and logged in and IDLE;
  - NOOP round trip p50/p99, login time (LOGIN to tagged OK), as ratios
    against the direct connection.
CPU per operation holds even when the load generator is the bottleneck.
--short runs every scenario with tiny counts: it checks the benchmark
works, not its figures (tests/run.sh runs it).  Bounded: every imapbench
run has a time limit and the whole run stops by itself."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import imaplib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from harness import LOOPBACK, Dovecot, Imapmux, Redis, TempDir, free_port, make_cert, wait_port  # noqa: E402

USER, PASSWORD = "bench", "bench-pw-1"

# Dovecot sized for thousands of connections: a few login processes that
# each serve many clients, and enough imap processes for the IDLE sessions.
DOVECOT_EXTRA = """
default_client_limit = 15000
default_vsz_limit = 1G
service imap-login {
  service_count = 0
  process_min_avail = 2
  process_limit = 4
  client_limit = 7000
}
service imap {
  process_limit = 2000
}
service anvil {
  client_limit = 15000
}
protocol imap {
  # one benchmark user holds hundreds of sessions at once
  mail_max_userip_connections = 10000
}
service auth {
  client_limit = 15000
}
"""

FULL = {"handshake": 3000, "churn": 1500, "bulk": 8, "latency": 3000,
        "idle_preauth": 5000, "idle_login": 400, "concurrency": 8}
SHORT = {"handshake": 40, "churn": 20, "bulk": 1, "latency": 50,
         "idle_preauth": 50, "idle_login": 10, "concurrency": 4}


def cpu_seconds(pid):
    """CPU time of every thread of pid, in seconds, from the scheduler's
    nanosecond counters (/proc/PID/task/*/schedstat); /proc/PID/stat's ticks
    are too coarse for short runs.  Threads of a proxy live as long as it."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def memory_kib(pid):
    """(PSS, RSS) in KiB."""
    pss = rss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def bin_path(name):
    env = os.environ.get(name.upper() + "_BIN")
    if env:
        return env
    for d in ("build", "build-asan"):
        p = os.path.join(HERE, "..", "..", d, name)
        if os.path.exists(p):
            return os.path.abspath(p)
    raise SystemExit("%s not built: run cmake --build build first" % name)


class HAProxy:
    """Debian's haproxy, one thread, TCP mode, terminating TLS."""

    def __init__(self, tmpdir, cert, backend_port, name="haproxy"):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        pem = os.path.join(self.dir, "combined.pem")
        with open(pem, "w") as out:
            for part in cert:
                with open(part) as f:
                    out.write(f.read())
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write("""global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend imaps
  bind {lo}:{port} ssl crt {pem}
  default_backend dovecot
backend dovecot
  server d {lo}:{bport}
""".format(lo=LOOPBACK, port=self.port, pem=pem, bport=backend_port))
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness._children.append(self.proc)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def imapbench(target, scenario, count, concurrency, tls, label, timeout=300, hold=None):
    """Runs imapbench; returns its JSON result.  hold: for the idle scenarios,
    a function called with the READY line while the connections are held."""
    port = target["port"]
    argv = [bin_path("imapbench"), "--host", LOOPBACK, "--port", str(port), "--scenario",
            scenario, "--user", USER, "--password", PASSWORD, "--count", str(count),
            "--concurrency", str(concurrency), "--max-seconds", str(timeout), "--label", label]
    if tls:
        argv.append("--tls")
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    held = None
    if hold is not None:
        ready = p.stdout.readline()
        if ready.startswith("READY"):
            held = hold(ready)
        p.stdin.close()
        p.stdin = None
    try:
        out, err = p.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("imapbench %s %s gave no result (exit %s): %s"
                           % (label, scenario, p.returncode, err[-2000:]))
    res = json.loads(lines[-1])
    res["exit"] = p.returncode
    res["stderr"] = err[-500:]
    if held is not None:
        res["held"] = held
    return res


def measure(target, scenario, count, concurrency, tls, label):
    """One imapbench run with the proxy's CPU counted around it."""
    pid = target.get("pid")
    before = cpu_seconds(pid) if pid else None
    res = imapbench(target, scenario, count, concurrency, tls, label)
    if pid:
        res["proxy_cpu_s"] = cpu_seconds(pid) - before
    return res


def measure_idle(target, scenario, count, label):
    """Memory per held connection, in a proxy process started for it: a
    process that ran other scenarios reuses the memory they freed."""
    pid = target["pid"]
    # warm up: the first handshakes allocate what every later one shares
    imapbench(target, "handshake", 20, 4, True, label)
    time.sleep(0.5)
    base = memory_kib(pid)

    def hold(ready):
        time.sleep(1.0)  # let the last handshakes settle
        _, n, failed = ready.split()
        return {"established": int(n), "failed": int(failed), "mem": memory_kib(pid)}

    res = imapbench(target, scenario, 1, count, True, label, hold=hold)
    held = res.get("held")
    if held is None or held["established"] == 0:
        raise RuntimeError("%s %s: no connection established: %s" % (label, scenario,
                                                                      res.get("stderr")))
    res["pss_per_conn_kib"] = (held["mem"][0] - base[0]) / held["established"]
    res["rss_per_conn_kib"] = (held["mem"][1] - base[1]) / held["established"]
    return res


def fill_mailbox(dovecot, short):
    """Mixed sizes: many small, some large, one of 20 MB."""
    m = imaplib.IMAP4(LOOPBACK, dovecot.port)
    m.login(USER, PASSWORD)
    sizes = [2000] * (10 if short else 50) + [100000] * (2 if short else 10) + [1000000] * 3
    sizes.append(20 * 1000 * 1000)
    total = 0
    for i, size in enumerate(sizes):
        line = b"x" * 76 + b"\r\n"
        body = line * (size // len(line) + 1)
        msg = (b"From: bench@example.org\r\nTo: bench@example.org\r\nSubject: message %d\r\n\r\n"
               % i) + body
        typ, _ = m.append("INBOX", None, None, msg)
        if typ != "OK":
            raise RuntimeError("APPEND failed")
        total += len(msg)
    m.logout()
    return total


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def fmt(s, unit="", scale=1.0, digits=1):
    if s is None:
        return "n/a"
    return "%.*f%s (%.*f..%.*f)" % (digits, s["median"] * scale, unit, digits, s["min"] * scale,
                                   digits, s["max"] * scale)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--short", action="store_true", help="tiny counts: checks it works")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    n = SHORT if args.short else FULL
    runs = 1 if args.short else args.runs
    started = time.monotonic()

    tmp = TempDir(prefix="imapmux-bench-")
    procs = []
    try:
        cert = make_cert(tmp.path)
        dovecot = Dovecot(tmp.path, users={USER: PASSWORD}, extra_conf=DOVECOT_EXTRA).start()
        procs.append(dovecot)
        redis = Redis(tmp.path).start()
        procs.append(redis)
        mailbox_bytes = fill_mailbox(dovecot, args.short)
        redis_cfg = {"host": LOOPBACK, "port": redis.port, "unknown_users": "passthrough"}
        backends, kw = imapmux_config(dovecot, redis_cfg, n)
        mux = Imapmux(tmp.path, backends, cert, **kw).start()
        procs.append(mux)
        backends, kw = imapmux_config(dovecot, redis_cfg, n, pool=False, cache=False)
        mux_plain = Imapmux(tmp.path, backends, cert, name="imapmux-plain", **kw).start()
        procs.append(mux_plain)
        haproxy = HAProxy(tmp.path, cert, dovecot.port).start()
        procs.append(haproxy)

        targets = {
            "direct": {"port": dovecot.port, "pid": None, "tls": False},
            "haproxy": {"port": haproxy.port, "pid": haproxy.proc.pid, "tls": True},
            "imapmux": {"port": mux.tls_port, "pid": mux.proc.pid, "tls": True},
            "imapmux-nocache": {"port": mux_plain.tls_port, "pid": mux_plain.proc.pid,
                                "tls": True},
        }
        plan = [
            ("handshake", ["haproxy", "imapmux"], n["handshake"]),
            ("churn", ["direct", "haproxy", "imapmux", "imapmux-nocache"], n["churn"]),
            ("bulk", ["direct", "haproxy", "imapmux"], n["bulk"]),
            ("latency", ["direct", "haproxy", "imapmux"], n["latency"]),
        ]
        results = {}
        for run in range(runs):
            for scenario, names, count in plan:
                conc = 1 if scenario in ("bulk", "latency") else n["concurrency"]
                for name in names:
                    t = targets[name]
                    r = measure(t, scenario, count, conc, t["tls"], name)
                    if r["errors"] or r["exit"] != 0:
                        raise RuntimeError("%s %s: %d errors (exit %s): %s" % (
                            name, scenario, r["errors"], r["exit"], r.get("first_error") or
                            r["stderr"]))
                    results.setdefault((scenario, name), []).append(r)
            for scenario, count in (("idle-preauth", n["idle_preauth"]),
                                    ("idle-login", n["idle_login"])):
                for name in ("haproxy", "imapmux"):
                    fresh = fresh_proxy(name, tmp.path, cert, dovecot, redis_cfg, n, run,
                                        scenario)
                    try:
                        t = {"port": fresh.port if name == "haproxy" else fresh.tls_port,
                             "pid": fresh.proc.pid, "tls": True}
                        r = measure_idle(t, scenario, count, name)
                    finally:
                        fresh.stop()
                    results.setdefault((scenario, name), []).append(r)

        fig = figures(results, mailbox_bytes, n)
        print_table(fig, runs, n, time.monotonic() - started)
        if args.json:
            with open(args.json, "w") as f:
                for k, v in fig.items():
                    f.write(json.dumps({"figure": k, **(v or {})}) + "\n")
        for k, v in fig.items():
            print(json.dumps({"figure": k, **(v or {})}))
        return 0
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                sys.stderr.write("stop failed: %s\n" % e)
        tmp.close()


def imapmux_config(dovecot, redis_cfg, n, pool=True, cache=True):
    backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}
    if pool:
        backend["pool_size"] = 4
    kw = {"routes": {"default": "main"}, "workers": 1, "redis": redis_cfg,
          "log_level": "warning", "listeners": [(LOOPBACK, free_port(), "implicit")]}
    if cache:
        kw["session_cache"] = {"enabled": True, "max_per_user": n["concurrency"]}
    return [backend], kw


def fresh_proxy(name, tmpdir, cert, dovecot, redis_cfg, n, run, scenario):
    if name == "haproxy":
        return HAProxy(tmpdir, cert, dovecot.port, name="haproxy-%s-%d" % (scenario, run)).start()
    backends, kw = imapmux_config(dovecot, redis_cfg, n)
    return Imapmux(tmpdir, backends, cert, name="imapmux-%s-%d" % (scenario, run), **kw).start()


def figures(results, mailbox_bytes, n):
    """Every figure as median (min..max) over runs.  A ratio is taken per
    run (both sides measured minutes apart at most) and then summarised, so
    that the machine's load drifting between runs cancels out."""
    def values(scenario, name, fn):
        return [fn(r) for r in results.get((scenario, name), [])]

    def cpu_per_op_ms(r):
        return r["proxy_cpu_s"] * 1000 / r["ok"] if r.get("ok") else None

    def cpu_per_gb(r):
        return r["proxy_cpu_s"] / (r["bytes"] / 1e9) if r.get("bytes") else None

    v = {}
    for name in ("haproxy", "imapmux"):
        v["handshake_cpu_ms/" + name] = values("handshake", name, cpu_per_op_ms)
    for name in ("haproxy", "imapmux", "imapmux-nocache"):
        v["churn_cpu_ms/" + name] = values("churn", name, cpu_per_op_ms)
    for name in ("haproxy", "imapmux"):
        v["bulk_cpu_s_per_gb/" + name] = values("bulk", name, cpu_per_gb)
    for name in ("haproxy", "imapmux"):
        v["idle_preauth_pss_kib/" + name] = values("idle-preauth", name,
                                                   lambda r: r["pss_per_conn_kib"])
        v["idle_login_pss_kib/" + name] = values("idle-login", name,
                                                 lambda r: r["pss_per_conn_kib"])
    for name in ("direct", "haproxy", "imapmux"):
        v["noop_p50_us/" + name] = values("latency", name, lambda r: r["p50_us"])
        v["noop_p99_us/" + name] = values("latency", name, lambda r: r["p99_us"])
    for name in ("direct", "haproxy", "imapmux", "imapmux-nocache"):
        v["login_p50_us/" + name] = values("churn", name, lambda r: r.get("login_p50_us"))

    def ratio(a, b):
        return [x / y if x is not None and y else None for x, y in zip(v[a], v[b])]

    v["ratio/churn_vs_haproxy"] = ratio("churn_cpu_ms/imapmux", "churn_cpu_ms/haproxy")
    v["ratio/churn_nocache_vs_haproxy"] = ratio("churn_cpu_ms/imapmux-nocache",
                                                "churn_cpu_ms/haproxy")
    v["ratio/churn_vs_own_handshake"] = ratio("churn_cpu_ms/imapmux", "handshake_cpu_ms/imapmux")
    v["ratio/bulk_vs_haproxy"] = ratio("bulk_cpu_s_per_gb/imapmux", "bulk_cpu_s_per_gb/haproxy")
    v["ratio/idle_preauth_vs_haproxy"] = ratio("idle_preauth_pss_kib/imapmux",
                                               "idle_preauth_pss_kib/haproxy")
    v["ratio/idle_login_vs_haproxy"] = ratio("idle_login_pss_kib/imapmux",
                                             "idle_login_pss_kib/haproxy")
    v["ratio/noop_p50_vs_haproxy"] = ratio("noop_p50_us/imapmux", "noop_p50_us/haproxy")
    v["ratio/noop_p50_vs_direct"] = ratio("noop_p50_us/imapmux", "noop_p50_us/direct")
    v["ratio/login_cached_vs_direct"] = ratio("login_p50_us/imapmux", "login_p50_us/direct")
    return {k: summary(x) for k, x in v.items()}


def print_table(f, runs, n, elapsed):
    print("imapmux benchmark: medians of %d run(s) (min..max); loopback, one proxy thread each"
          % runs)
    print("counts: %s" % json.dumps(n))
    print("%-44s %s" % ("figure", "value"))
    for k, v in f.items():
        digits = 2 if k.startswith(("ratio/", "handshake", "churn", "bulk")) else 1
        print("%-44s %s" % (k, fmt(v, digits=digits)))
    print("elapsed: %.0f s" % elapsed)


if __name__ == "__main__":
    sys.exit(main())

"""The imapmux benchmark: imapmux, HAProxy (TCP mode, terminating TLS, no
IMAP logic) and a direct connection in front of the same real Dovecot, with a
real Redis behind imapmux, all on loopback, driven by imapbench (C, libuv;
one binary with BoringSSL, one with the system's OpenSSL 3) in one run.

    python3 tests/bench/bench.py [--runs 3] [--short] [--json FILE]
        [--num-users 5000] [--return-share 0.3] [--return-window 100]

Scenarios (each a row of the table, in this order):
  - churn, distinct users: connect, TLS, LOGIN, SELECT, LOGOUT, each session
    another of --num-users users (in Redis with SHA512-crypt hashes, which
    imapmux verifies, and in Dovecot's passwd-file with the same hashes),
    with a BoringSSL client and with an OpenSSL 3 client;
  - churn, returning users (OpenSSL client): --return-share of the sessions
    repeat a user of the last --return-window sessions, within the session
    cache's TTL, the rest are new users;
  - churn, one user (BoringSSL): every login the same user, every login a
    session cache hit: the best case, for comparison with earlier runs;
  - handshake, bulk FETCH, NOOP latency, idle connections (before login and
    logged in, in IDLE);
  - the command gate's CPU per 1000 pipelined commands and CPU per MB
    fetched with and without COMPRESS=DEFLATE (gate_cost.py, run last).
Figures (medians over runs, with min..max):
  - CPU time of the proxy process (user + system, all threads) per
    handshake, per churn session and per GB fetched;
  - per churn session: backend connections (the proxy's connect calls) and
    backend logins (Dovecot's log) per client login, the proxy's system
    calls (perf's raw_syscalls counter, when perf can count);
  - memory (PSS from /proc/PID/smaps_rollup, RSS) per idle connection,
    before login and logged in and IDLE;
  - NOOP round trip p50/p99, login time (LOGIN to tagged OK).
Ratios are taken per run, then summarised.  CPU per operation holds even
when the load generator is the bottleneck.  --short runs every scenario with
tiny counts: it checks the benchmark works, not its figures (tests/run.sh
runs it).  Bounded: every imapbench run has a count and a time limit, and
the whole run stops by itself."""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import imaplib
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # crypt: still in Debian 12's Python
    import crypt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from harness import LOOPBACK, Dovecot, Imapmux, Redis, TempDir, free_port, make_cert, wait_port  # noqa: E402

USER, PASSWORD = "bench", "bench-pw-1"
# the churn scenarios' users: user0@example.test .. with their own passwords
USER_PATTERN, PASSWORD_PATTERN = "user%d@example.test", "pw-%d-churn"
# the hash imapmux (from Redis) and Dovecot (from its passwd-file) verify:
# SHA512-crypt with crypt(3)'s default of 5000 rounds, which is also what
# Dovecot's "doveadm pw -s SHA512-CRYPT" writes; a random salt per user
HASH_SCHEME = "SHA512-crypt, 5000 rounds"
REDIS_PREFIX = "imapmux:"
SESSION_CACHE_TTL_MS = 30000   # imapmux's default; returning users come back well within it

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
        "idle_preauth": 5000, "idle_login": 400, "concurrency": 8, "num_users": 5000}
SHORT = {"handshake": 40, "churn": 20, "bulk": 1, "latency": 50,
         "idle_preauth": 50, "idle_login": 10, "concurrency": 4, "num_users": 100}

# The churn scenarios: key, row label, client binary, users ("distinct",
# "returning" or "one"), targets.  Distinct users come first: that is what
# a provider meets.
CHURN = [
    ("churn-distinct-boringssl", "churn, distinct users, BoringSSL client", "imapbench",
     "distinct", ["direct", "haproxy", "imapmux", "imapmux-nocache"]),
    ("churn-distinct-openssl", "churn, distinct users, OpenSSL 3 client", "imapbench-openssl",
     "distinct", ["haproxy", "imapmux", "imapmux-nocache"]),
    ("churn-returning-openssl", "churn, returning users, OpenSSL 3 client", "imapbench-openssl",
     "returning", ["haproxy", "imapmux", "imapmux-nocache"]),
    ("churn-one-user-boringssl", "churn, one user (every login a cache hit), BoringSSL client",
     "imapbench", "one", ["haproxy", "imapmux"]),
]
TARGET_NAMES = {"haproxy": "HAProxy", "imapmux": "imapmux",
                "imapmux-nocache": "imapmux, no pool or cache", "direct": "direct"}


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


def bin_path(name, required=True):
    """The binary name: $NAME_BIN, else next to $IMAPBENCH_BIN, else in
    build/ or build-asan/.  Not found: exit, or None if not required."""
    var = name.upper().replace("-", "_") + "_BIN"
    env = os.environ.get(var)
    if env:
        if os.path.exists(env):
            return env
        if not required:
            return None
        raise SystemExit("%s=%s: no such file" % (var, env))
    dirs = []
    if os.environ.get("IMAPBENCH_BIN"):
        dirs.append(os.path.dirname(os.environ["IMAPBENCH_BIN"]))
    dirs += [os.path.join(HERE, "..", "..", d) for d in ("build", "build-asan")]
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return os.path.abspath(p)
    if not required:
        return None
    raise SystemExit("%s not built: run cmake --build build first" % name)


def hash_passwords(num_users):
    """SHA512-crypt hashes of the churn users' passwords, one salt each."""
    return [crypt.crypt(PASSWORD_PATTERN % i, crypt.mksalt(crypt.METHOD_SHA512))
            for i in range(num_users)]


class BenchDovecot(Dovecot):
    """The harness's Dovecot plus the churn users in its passwd-file, with
    the same SHA512-crypt hashes as in Redis; their maildirs are made by
    Dovecot at the first login (the warm-up)."""

    def __init__(self, tmpdir, hashes, **kw):
        super().__init__(tmpdir, **kw)
        self.hashes = hashes
        self._log_pos = 0
        self._logins = 0

    def _write_config(self):
        super()._write_config()
        with open(os.path.join(self.dir, "passwd"), "a") as f:
            for i, h in enumerate(self.hashes):
                f.write("%s:{SHA512-CRYPT}%s\n" % (USER_PATTERN % i, h))

    def logins_so_far(self):
        """Successful logins logged so far (read on from the last call);
        waits until the log stops growing (Dovecot writes it from another
        process), at most 3 s."""
        path = os.path.join(self.dir, "dovecot.log")
        deadline = time.monotonic() + 3
        while True:
            with open(path, "rb") as f:
                f.seek(self._log_pos)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self._logins += data[:end].count(b"imap-login: Info: Login: ")
            self._log_pos += end
            if end == 0 or time.monotonic() > deadline:
                return self._logins
            time.sleep(0.2)


def redis_add_users(redis, hashes):
    """user:<login> hashes with the password hash, in one pipelined write."""
    out = bytearray()
    for i, h in enumerate(hashes):
        args = [b"HSET", (REDIS_PREFIX + "user:" + USER_PATTERN % i).encode(), b"password",
                h.encode()]
        out += b"*%d\r\n" % len(args)
        for a in args:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection((LOOPBACK, redis.port), timeout=30) as sock:
        sock.sendall(bytes(out))
        f = sock.makefile("rb")
        for _ in hashes:
            line = f.readline()
            if not line.startswith(b":"):
                raise RuntimeError("redis HSET: %r" % line[:100])


class SyscallCounter:
    """perf stat counting a process's system calls and connect calls (all
    its threads) while it runs; counting in the kernel, a small cost per
    call, the same for every proxy.  None figures when perf cannot count."""

    EVENTS = "raw_syscalls:sys_enter,syscalls:sys_enter_connect"

    @staticmethod
    def usable():
        try:
            p = subprocess.run(["perf", "stat", "-x,", "-e", SyscallCounter.EVENTS, "--",
                                "true"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.returncode == 0 and "not supported" not in p.stderr

    def __init__(self, pid, path):
        self.path = path
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "-o", path, "-e", self.EVENTS,
                                      "-p", str(pid)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        harness._children.append(self.proc)
        time.sleep(0.3)  # attached before the load starts

    def stop(self):
        """{"syscalls": n, "connects": n} or None."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None
        counts = {}
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and parts[0].isdigit():
                        counts[parts[2]] = int(parts[0])
        except FileNotFoundError:
            return None
        if "raw_syscalls:sys_enter" not in counts:
            return None
        return {"syscalls": counts["raw_syscalls:sys_enter"],
                "connects": counts.get("syscalls:sys_enter_connect")}


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


def imapbench(target, scenario, count, concurrency, tls, label, timeout=300, hold=None,
              binary="imapbench", extra=()):
    """Runs imapbench (or binary); returns its JSON result.  hold: for the
    idle scenarios, a function called with the READY line while the
    connections are held.  extra: more arguments (the churn users)."""
    port = target["port"]
    argv = [bin_path(binary), "--host", LOOPBACK, "--port", str(port), "--scenario",
            scenario, "--user", USER, "--password", PASSWORD, "--count", str(count),
            "--concurrency", str(concurrency), "--max-seconds", str(timeout), "--label",
            label] + list(extra)
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


def measure(target, scenario, count, concurrency, tls, label, binary="imapbench", extra=(),
            dovecot=None, perf_path=None):
    """One imapbench run with the proxy's CPU counted around it; with
    dovecot, the backend logins it made; with perf_path, the proxy's
    system calls and connects (perf's output goes there)."""
    pid = target.get("pid")
    logins_before = dovecot.logins_so_far() if dovecot is not None else None
    counter = SyscallCounter(pid, perf_path) if pid and perf_path else None
    before = cpu_seconds(pid) if pid else None
    # one failure fails the scenario: end there rather than wait out the rest
    res = imapbench(target, scenario, count, concurrency, tls, label, binary=binary,
                    extra=list(extra) + ["--max-errors", "1"])
    if pid:
        res["proxy_cpu_s"] = cpu_seconds(pid) - before
    if counter is not None:
        counted = counter.stop()
        if counted is not None:
            res.update(counted)
    if dovecot is not None:
        res["backend_logins"] = dovecot.logins_so_far() - logins_before
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
    ap.add_argument("--num-users", type=int,
                    help="churn users (default %d, --short %d)" % (FULL["num_users"],
                                                                  SHORT["num_users"]))
    ap.add_argument("--return-share", type=float, default=0.3,
                    help="returning-users scenario: share of sessions that repeat a recent user")
    ap.add_argument("--return-window", type=int, default=100,
                    help="returning-users scenario: a returning user is one of the last N sessions'")
    ap.add_argument("--retries", type=int, default=1,
                    help="measure a failed scenario again this many times (a shared machine "
                    "may lose a process to someone else's test); --short: never")
    ap.add_argument("--no-syscalls", action="store_true", help="do not count system calls (perf)")
    ap.add_argument("--log-level", default="warning", choices=("error", "warning", "info", "debug"),
                    help="imapmux's log level (info shows each refused login and its reason; "
                    "keep the logs with IMAPMUX_KEEP_TMP=1)")
    args = ap.parse_args()
    n = dict(SHORT if args.short else FULL)
    if args.num_users:
        n["num_users"] = args.num_users
    if n["num_users"] < n["churn"]:
        raise SystemExit("--num-users must be at least the churn count (%d)" % n["churn"])
    if not 0.0 <= args.return_share <= 1.0 or not 1 <= args.return_window <= 100000:
        raise SystemExit("--return-share 0..1, --return-window 1..100000")
    n["return_share"], n["return_window"] = args.return_share, args.return_window
    n["log_level"] = args.log_level
    runs = 1 if args.short else args.runs
    retries = 0 if args.short else max(0, args.retries)
    started = time.monotonic()
    have_openssl = bin_path("imapbench-openssl", required=False) is not None
    if not have_openssl:
        sys.stderr.write("imapbench-openssl not built (no OpenSSL 3 found by CMake): "
                         "the OpenSSL client scenarios are left out\n")
    churn = [c for c in CHURN if have_openssl or c[2] != "imapbench-openssl"]
    use_perf = not args.no_syscalls and SyscallCounter.usable()
    if not args.no_syscalls and not use_perf:
        sys.stderr.write("perf cannot count system calls here: those figures are left out\n")

    tmp = TempDir(prefix="imapmux-bench-")
    procs = []
    try:
        cert = make_cert(tmp.path)
        t0 = time.monotonic()
        hashes = hash_passwords(n["num_users"])
        # what one verification costs (the same work as hashing), for reading
        # the churn figures: imapmux verifies every login that misses its cache
        n["hash_ms"] = round((time.monotonic() - t0) * 1000 / len(hashes), 2)
        sys.stderr.write("%d users hashed (%s) in %.1f s\n" % (len(hashes), HASH_SCHEME,
                                                                time.monotonic() - t0))
        dovecot = BenchDovecot(tmp.path, hashes, users={USER: PASSWORD},
                               extra_conf=DOVECOT_EXTRA).start()
        procs.append(dovecot)
        redis = Redis(tmp.path).start()
        procs.append(redis)
        redis_add_users(redis, hashes)
        mailbox_bytes = fill_mailbox(dovecot, args.short)
        direct = {"port": dovecot.port, "pid": None, "tls": False}
        # every user logs in once directly: Dovecot makes the maildirs now,
        # not in the first target's measurement
        t0 = time.monotonic()
        warm = imapbench(direct, "churn", n["num_users"], n["concurrency"], False, "warm-up",
                         extra=user_args(n, 0, "distinct") + ["--max-errors", "1"])
        if warm["errors"] or warm["exit"] != 0:
            raise RuntimeError("warm-up: %d errors: %s" % (warm["errors"], warm["first_error"]))
        sys.stderr.write("warm-up: %d users logged in once in %.1f s\n" % (
            warm["ok"], time.monotonic() - t0))
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
            "direct": direct,
            "haproxy": {"port": haproxy.port, "pid": haproxy.proc.pid, "tls": True},
            "imapmux": {"port": mux.tls_port, "pid": mux.proc.pid, "tls": True},
            "imapmux-nocache": {"port": mux_plain.tls_port, "pid": mux_plain.proc.pid,
                                "tls": True},
        }
        plan = [("handshake", "handshake", "imapbench", None, ["haproxy", "imapmux"],
                 n["handshake"])]
        plan += [(key, "churn", binary, users, names, n["churn"])
                 for key, _, binary, users, names in churn]
        plan += [
            ("bulk", "bulk", "imapbench", None, ["direct", "haproxy", "imapmux"], n["bulk"]),
            ("latency", "latency", "imapbench", None, ["direct", "haproxy", "imapmux"],
             n["latency"]),
        ]
        results = {}
        retried = []  # failures measured again (--retries), printed with the figures
        slot = 0  # which block of users a churn scenario takes
        perf_file = os.path.join(tmp.path, "perf.out")
        for run in range(runs):
            for key, scenario, binary, users, names, count in plan:
                conc = 1 if scenario in ("bulk", "latency") else n["concurrency"]
                extra = ()
                if users is not None:
                    # every target of a scenario gets the same users; the next
                    # scenario the next block, so that no user comes back to
                    # one imapmux within the cache TTL unless meant to
                    extra = user_args(n, slot * count, users)
                    slot += 1 if users != "one" else 0
                for name in names:
                    t = targets[name]
                    for attempt in range(1 + retries):
                        r = measure(t, scenario, count, conc, t["tls"], name, binary=binary,
                                    extra=extra, dovecot=dovecot if users else None,
                                    perf_path=perf_file if use_perf and users else None)
                        if r["errors"] == 0 and r["exit"] == 0:
                            break
                        failure = "%s %s: %d errors (exit %s): %s" % (
                            name, key, r["errors"], r["exit"], r.get("first_error") or
                            r["stderr"])
                        if attempt == retries:
                            raise RuntimeError(failure)
                        # once more, with users no one has used lately
                        sys.stderr.write("run %d: %s; measured again\n" % (run + 1, failure))
                        retried.append(failure)
                        if users not in (None, "one"):
                            extra = user_args(n, slot * count, users)
                            slot += 1
                    check_users(key, users, name, r)
                    results.setdefault((key, name), []).append(r)
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

        fig = figures(results, churn)
        elapsed = time.monotonic() - started
        print_summary(fig, runs, n, elapsed, results)
        print_markdown(fig, runs, n, churn, mailbox_bytes)
        # the command gate's and COMPRESS's cost: a Python client (zlib), its
        # own imapmux and Dovecot, after the rest so as not to load them
        gate = [sys.executable, os.path.join(HERE, "gate_cost.py")]
        gate += ["--short"] if args.short else ["--runs", str(runs)]
        print("\ncommand gate and COMPRESS=DEFLATE (gate_cost.py):")
        sys.stdout.flush()
        if subprocess.call(gate, timeout=600) != 0:
            raise RuntimeError("gate_cost.py failed")
        for failure in retried:
            print("measured again after: %s" % failure)
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


def check_users(key, users, name, r):
    """Distinct users must mean one backend login per client login, or the
    scenario measured the session cache instead (users coming back too
    soon); returning users must include some that came back."""
    if users == "distinct" and r.get("backend_logins") is not None and r["ok"]:
        if r["backend_logins"] < 0.98 * r["ok"] or r["returning_logins"] != 0:
            raise RuntimeError("%s %s: %d backend logins for %d distinct users" % (
                name, key, r["backend_logins"], r["ok"]))
    if users == "returning" and r["returning_logins"] == 0:
        raise RuntimeError("%s %s: no returning user in %d logins" % (name, key, r["ok"]))


def user_args(n, offset, users):
    """imapbench's arguments for the churn users: distinct from offset on,
    returning (a share repeating recent ones), or the one bench user."""
    if users == "one":
        return []
    argv = ["--users", USER_PATTERN, "--num-users", str(n["num_users"]), "--user-offset",
            str(offset % n["num_users"]), "--password-pattern", PASSWORD_PATTERN]
    if users == "returning":
        argv += ["--return-share", str(n["return_share"]), "--return-window",
                 str(n["return_window"])]
    return argv


def imapmux_config(dovecot, redis_cfg, n, pool=True, cache=True):
    backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}
    if pool:
        backend["pool_size"] = 4
    kw = {"routes": {"default": "main"}, "workers": 1, "redis": redis_cfg,
          "log_level": n.get("log_level", "warning"), "listeners": [(LOOPBACK, free_port(), "implicit")]}
    # a load test from one address: the idle scenario logs one user in 400
    # times at once, which the production defaults take for an attack (more
    # than verify_per_client checks in flight from one address; more than
    # block_pair_after attempts in flight for one login from one address,
    # and each of those blocked attempts then counts as a failure of the
    # address, which blocks 127.0.0.1 for everyone for bruteforce.window_s:
    # the next run's churn failed with NO [AUTHENTICATIONFAILED])
    kw["limits"] = {"verify_per_client": 0}
    kw["bruteforce"] = {"block_pair_after": 100000}
    if cache:
        kw["session_cache"] = {"enabled": True, "max_per_user": n["concurrency"]}
    return [backend], kw


def fresh_proxy(name, tmpdir, cert, dovecot, redis_cfg, n, run, scenario):
    if name == "haproxy":
        return HAProxy(tmpdir, cert, dovecot.port, name="haproxy-%s-%d" % (scenario, run)).start()
    backends, kw = imapmux_config(dovecot, redis_cfg, n)
    return Imapmux(tmpdir, backends, cert, name="imapmux-%s-%d" % (scenario, run), **kw).start()


def figures(results, churn):
    """Every figure as median (min..max) over runs.  A ratio is taken per
    run (both sides measured minutes apart at most) and then summarised, so
    that the machine's load drifting between runs cancels out.  Keys:
    metric/scenario/target and ratio/scenario/what."""
    def values(scenario, name, fn):
        return [fn(r) for r in results.get((scenario, name), [])]

    def per_op(field, scale=1.0):
        def fn(r):
            if r.get(field) is None or not r.get("ok"):
                return None
            return r[field] * scale / r["ok"]
        return fn

    def cpu_per_gb(r):
        return r["proxy_cpu_s"] / (r["bytes"] / 1e9) if r.get("bytes") else None

    v = {}
    for name in ("haproxy", "imapmux"):
        v["cpu_ms/handshake/" + name] = values("handshake", name, per_op("proxy_cpu_s", 1000))
    for key, _, _, _, names in churn:
        for name in names:
            if name != "direct":
                v["cpu_ms/%s/%s" % (key, name)] = values(key, name, per_op("proxy_cpu_s", 1000))
                v["syscalls/%s/%s" % (key, name)] = values(key, name, per_op("syscalls"))
            # a direct client's connection is its backend connection
            v["backend_conns/%s/%s" % (key, name)] = values(
                key, name, (lambda r: 1.0) if name == "direct" else per_op("connects"))
            v["backend_logins/%s/%s" % (key, name)] = values(key, name,
                                                             per_op("backend_logins"))
            v["login_p50_us/%s/%s" % (key, name)] = values(key, name,
                                                          lambda r: r.get("login_p50_us"))
            v["returning_share/%s/%s" % (key, name)] = values(
                key, name, lambda r: r["returning_logins"] / max(
                    1, r["returning_logins"] + r["distinct_logins"]))
    for name in ("haproxy", "imapmux"):
        v["cpu_s_per_gb/bulk/" + name] = values("bulk", name, cpu_per_gb)
        v["pss_kib/idle-preauth/" + name] = values("idle-preauth", name,
                                                   lambda r: r["pss_per_conn_kib"])
        v["pss_kib/idle-login/" + name] = values("idle-login", name,
                                                 lambda r: r["pss_per_conn_kib"])
    for name in ("direct", "haproxy", "imapmux"):
        v["noop_p50_us/latency/" + name] = values("latency", name, lambda r: r["p50_us"])
        v["noop_p99_us/latency/" + name] = values("latency", name, lambda r: r["p99_us"])

    def ratio(a, b):
        if a not in v or b not in v:
            return []
        return [x / y if x is not None and y else None for x, y in zip(v[a], v[b])]

    for key, _, _, _, names in churn:
        v["ratio/%s/imapmux_vs_haproxy" % key] = ratio("cpu_ms/%s/imapmux" % key,
                                                      "cpu_ms/%s/haproxy" % key)
        if "imapmux-nocache" in names:
            v["ratio/%s/nocache_vs_haproxy" % key] = ratio("cpu_ms/%s/imapmux-nocache" % key,
                                                          "cpu_ms/%s/haproxy" % key)
        v["ratio/%s/imapmux_vs_own_handshake" % key] = ratio("cpu_ms/%s/imapmux" % key,
                                                            "cpu_ms/handshake/imapmux")
        if "direct" in names:
            v["ratio/%s/login_imapmux_vs_direct" % key] = ratio(
                "login_p50_us/%s/imapmux" % key, "login_p50_us/%s/direct" % key)
    v["ratio/handshake/imapmux_vs_haproxy"] = ratio("cpu_ms/handshake/imapmux",
                                                    "cpu_ms/handshake/haproxy")
    v["ratio/bulk/imapmux_vs_haproxy"] = ratio("cpu_s_per_gb/bulk/imapmux",
                                               "cpu_s_per_gb/bulk/haproxy")
    v["ratio/idle-preauth/imapmux_vs_haproxy"] = ratio("pss_kib/idle-preauth/imapmux",
                                                       "pss_kib/idle-preauth/haproxy")
    v["ratio/idle-login/imapmux_vs_haproxy"] = ratio("pss_kib/idle-login/imapmux",
                                                     "pss_kib/idle-login/haproxy")
    v["ratio/latency/noop_p50_imapmux_vs_haproxy"] = ratio("noop_p50_us/latency/imapmux",
                                                          "noop_p50_us/latency/haproxy")
    v["ratio/latency/noop_p50_imapmux_vs_direct"] = ratio("noop_p50_us/latency/imapmux",
                                                         "noop_p50_us/latency/direct")
    return {k: summary(x) for k, x in v.items()}


def print_summary(f, runs, n, elapsed, results):
    print("imapmux benchmark: medians of %d run(s) (min..max); loopback, one proxy thread each"
          % runs)
    print("counts: %s; churn users' hashes: %s" % (json.dumps(n), HASH_SCHEME))
    for (key, name), rs in sorted(results.items()):
        if name == "imapmux" and rs[0].get("tls"):
            print("client TLS in %s: %s, %s" % (key, rs[0].get("tls_lib"), rs[0].get("cipher")))
    print("elapsed: %.0f s" % elapsed)


def print_markdown(f, runs, n, churn, mailbox_bytes):
    """The table: one row per scenario and figure, a distinct-user churn row
    first; cells are median (min..max) over runs."""
    def cell(key, digits):
        return "" if f.get(key) is None else fmt(f[key], digits=digits)

    def row(scenario, figure, metric, key, digits, ratios):
        cells = [cell("%s/%s/%s" % (metric, key, t), digits)
                 for t in ("haproxy", "imapmux", "imapmux-nocache", "direct")]
        rtext = "; ".join("%s %s" % (label, cell("ratio/%s/%s" % (key, r), 2))
                          for label, r in ratios if f.get("ratio/%s/%s" % (key, r)))
        if not any(cells) and not rtext:
            return
        print("| %s | %s | %s | %s |" % (scenario, figure, " | ".join(cells), rtext))

    print()
    print("Medians of %d run(s) with (min..max); ratios taken per run. Churn users: %d, "
          "%s (%.1f ms per hash here); returning: %.0f %% of sessions repeat one of the last "
          "%d sessions' users." % (runs, n["num_users"], HASH_SCHEME, n["hash_ms"],
                                   n["return_share"] * 100, n["return_window"]))
    print()
    print("| scenario | figure | %s | ratio (per run) |" % " | ".join(
        TARGET_NAMES[t] for t in ("haproxy", "imapmux", "imapmux-nocache", "direct")))
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key, label, _, users, _ in churn:
        if users == "returning":
            row(label, "share of logins by a returning user", "returning_share", key, 2, [])
        row(label, "CPU per session (ms)", "cpu_ms", key, 2,
            [("imapmux / HAProxy", "imapmux_vs_haproxy"),
             ("no pool or cache / HAProxy", "nocache_vs_haproxy"),
             ("imapmux / own handshake", "imapmux_vs_own_handshake")])
        row(label, "LOGIN to tagged OK, p50 (µs)", "login_p50_us", key, 0,
            [("imapmux / direct", "login_imapmux_vs_direct")])
        row(label, "backend connections per client login", "backend_conns", key, 2, [])
        row(label, "backend logins per client login", "backend_logins", key, 2, [])
        row(label, "proxy system calls per session", "syscalls", key, 1, [])
    row("handshake only, BoringSSL client", "CPU per handshake (ms)", "cpu_ms", "handshake", 2,
        [("imapmux / HAProxy", "imapmux_vs_haproxy")])
    row("bulk: FETCH 1:* BODY.PEEK[] (%.0f MB)" % (mailbox_bytes / 1e6), "CPU per GB fetched (s)", "cpu_s_per_gb",
        "bulk", 2, [("imapmux / HAProxy", "imapmux_vs_haproxy")])
    row("idle before login (C = %d)" % n["idle_preauth"], "PSS per connection (KiB)", "pss_kib",
        "idle-preauth", 1, [("imapmux / HAProxy", "imapmux_vs_haproxy")])
    row("idle logged in, IDLE (C = %d)" % n["idle_login"],
        "PSS per session, both connections (KiB)", "pss_kib", "idle-login", 1,
        [("imapmux / HAProxy", "imapmux_vs_haproxy")])
    row("latency: sequential NOOPs", "round trip p50 (µs)", "noop_p50_us", "latency", 0,
        [("imapmux / HAProxy", "noop_p50_imapmux_vs_haproxy"),
         ("imapmux / direct", "noop_p50_imapmux_vs_direct")])
    row("latency: sequential NOOPs", "round trip p99 (µs)", "noop_p99_us", "latency", 0, [])


if __name__ == "__main__":
    sys.exit(main())

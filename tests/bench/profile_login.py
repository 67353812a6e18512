"""Where a distinct-user login costs imapmux, counted rather than timed (for
a shared machine): system calls per session by name (strace -c -f on the
proxy), backend connections and logins per client login, and PSS per idle
TLS connection before login and per logged-in IDLE session.  Two imapmux
binaries (A, and B with --vs-bin) or two configurations (pool and cache on,
and off) in front of one real Dovecot and Redis on loopback.

    python3 tests/bench/profile_login.py [--sessions 300] [--vs-bin OLD_IMAPMUX]
        [--idle-preauth 2000] [--idle-login 200] [--perf]

Every load loop is bounded in count and time (imapbench --count,
--max-seconds)."""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import (BenchDovecot, DOVECOT_EXTRA, PASSWORD, USER, hash_passwords,  # noqa: E402
                   imapbench, imapmux_config, measure_idle, redis_add_users, user_args)
from harness import LOOPBACK, Imapmux, Redis, TempDir, make_cert  # noqa: E402


def strace_counts(pid, path, full=False):
    """strace -c (or, full, a whole trace into path + ".full") of pid's threads."""
    argv = ["strace", "-f", "-q", "-o", path + ".full" if full else path, "-p", str(pid)]
    if not full:
        argv.insert(1, "-c")
    p = subprocess.Popen(argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.harness._children.append(p)
    time.sleep(0.5)
    return p


def parse_strace(path):
    counts = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--vs-bin", help="a second imapmux binary, run with pool and cache on too")
    ap.add_argument("--idle-preauth", type=int, default=2000)
    ap.add_argument("--idle-login", type=int, default=200)
    ap.add_argument("--perf", action="store_true", help="also perf record -g the churn of A")
    ap.add_argument("--trace", action="store_true",
                    help="a whole strace of each target's churn instead of counts (kept with "
                    "IMAPMUX_KEEP_TMP=1); use a few --sessions")
    args = ap.parse_args()
    try:
        subprocess.run(["strace", "-V"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("strace is needed (deploy/install-deps.sh installs it)")
    n = dict(bench.FULL)
    n["num_users"] = args.sessions * 12  # no user twice in one run
    n["log_level"] = "info"  # the counters at exit (cache_parked)
    tmp = TempDir(prefix="imapmux-profile-")
    procs = []
    try:
        cert = make_cert(tmp.path)
        hashes = hash_passwords(n["num_users"])
        dovecot = BenchDovecot(tmp.path, hashes, users={USER: PASSWORD},
                               extra_conf=DOVECOT_EXTRA).start()
        procs.append(dovecot)
        redis = Redis(tmp.path).start()
        procs.append(redis)
        redis_add_users(redis, hashes)
        direct = {"port": dovecot.port, "pid": None, "tls": False}
        imapbench(direct, "churn", n["num_users"], 8, False, "warm-up",
                  extra=user_args(n, 0, "distinct"))
        redis_cfg = {"host": LOOPBACK, "port": redis.port, "unknown_users": "passthrough"}
        targets = [("A, pool and cache", None, True), ("A, neither", None, False)]
        if args.vs_bin:
            targets += [("B, pool and cache", args.vs_bin, True), ("B, neither", args.vs_bin, False)]
        rows = []
        for i, (label, binary, on) in enumerate(targets):
            backends, kw = imapmux_config(dovecot, redis_cfg, n, pool=on, cache=on)
            old = os.environ.get("IMAPMUX_BIN")
            if binary:
                os.environ["IMAPMUX_BIN"] = binary
            try:
                mux = Imapmux(tmp.path, backends, cert, name="mux%d" % i, **kw).start()
            finally:
                if binary:
                    if old is None:
                        del os.environ["IMAPMUX_BIN"]
                    else:
                        os.environ["IMAPMUX_BIN"] = old
            procs.append(mux)
            t = {"port": mux.tls_port, "pid": mux.proc.pid, "tls": True}
            imapbench(t, "handshake", 20, 4, True, label)  # warm up
            out = os.path.join(tmp.path, "strace%d.txt" % i)
            logins0 = dovecot.logins_so_far()
            st = strace_counts(mux.proc.pid, out, args.trace)
            cpu0 = bench.cpu_seconds(mux.proc.pid)
            r = imapbench(t, "churn", args.sessions, 1 if args.trace else 8, True, label,
                          extra=user_args(n, (i + 1) * args.sessions, "distinct"))
            cpu = bench.cpu_seconds(mux.proc.pid) - cpu0
            st.send_signal(2)
            st.wait(20)
            time.sleep(1)
            logins = dovecot.logins_so_far() - logins0
            counts = {} if args.trace else parse_strace(out)
            total = sum(counts.values())
            if args.perf and on:
                pdata = os.path.join(tmp.path, "perf%d.data" % i)
                p = subprocess.Popen(["perf", "record", "-g", "-o", pdata, "-p",
                                      str(mux.proc.pid)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                time.sleep(0.5)
                pcpu = bench.cpu_seconds(mux.proc.pid)
                imapbench(t, "churn", args.sessions, 8, True, label,
                          extra=user_args(n, (len(targets) + 1 + i) * args.sessions, "distinct"))
                pcpu = bench.cpu_seconds(mux.proc.pid) - pcpu
                p.send_signal(2)
                p.wait(30)
                rep = subprocess.run(["perf", "report", "-i", pdata, "--sort", "dso", "--stdio",
                                      "--no-children", "-g", "none"],
                                     capture_output=True, text=True).stdout
                shares = [l.strip() for l in rep.splitlines()
                          if "%" in l and not l.strip().startswith("#")]
                print("perf shares by object, %s (CPU %.2f ms per session, not under strace):"
                      % (label, pcpu * 1000 / args.sessions))
                for l in shares[:12]:
                    print("    " + l)
            parked = None
            mux.stop()
            for line in mux.log_text().splitlines():
                m = re.search(r"cache_parked=(\d+)", line)
                if m:
                    parked = int(m.group(1))
            rows.append((label, r["ok"], r["errors"], total / max(1, r["ok"]),
                         {k: v / max(1, r["ok"]) for k, v in counts.items()},
                         logins / max(1, r["ok"]), parked, cpu * 1000 / max(1, r["ok"])))
        names = sorted({k for row in rows for k in row[4]}, key=lambda k: -rows[0][4].get(k, 0))
        print("| per distinct-user session | " + " | ".join(r[0] for r in rows) + " |")
        print("| --- |" + " --- |" * len(rows))
        print("| sessions ok / errors | " + " | ".join("%d / %d" % (r[1], r[2]) for r in rows) + " |")
        print("| CPU ms (under strace: relative only) | " + " | ".join("%.2f" % r[7] for r in rows) + " |")
        print("| backend logins per client login | " + " | ".join("%.2f" % r[5] for r in rows) + " |")
        print("| connections parked (cache_parked at exit) | " + " | ".join(str(r[6]) for r in rows) + " |")
        print("| system calls | " + " | ".join("%.1f" % r[3] for r in rows) + " |")
        for k in names:
            print("| %s | " % k + " | ".join("%.2f" % r[4].get(k, 0) for r in rows) + " |")
        if args.idle_preauth or args.idle_login:
            print()
            print("| PSS per connection (KiB) | " + " | ".join(
                l for l, b, on in targets if on) + " |")
            print("| --- |" + " --- |" * len([1 for t in targets if t[2]]))
            for scen, count in (("idle-preauth", args.idle_preauth),
                                ("idle-login", args.idle_login)):
                if not count:
                    continue
                cells = []
                for i, (label, binary, on) in enumerate(targets):
                    if not on:
                        continue
                    backends, kw = imapmux_config(dovecot, redis_cfg, n)
                    if binary:
                        os.environ["IMAPMUX_BIN"] = binary
                    try:
                        mux = Imapmux(tmp.path, backends, cert, name="idle%s%d" % (scen, i),
                                      **kw).start()
                    finally:
                        if binary:
                            del os.environ["IMAPMUX_BIN"]
                    try:
                        r = measure_idle({"port": mux.tls_port, "pid": mux.proc.pid,
                                          "tls": True}, scen, count, label)
                    finally:
                        mux.stop()
                    cells.append("%.2f (%d held)" % (r["pss_per_conn_kib"],
                                                     r["held"]["established"]))
                print("| %s | " % scen + " | ".join(cells) + " |")
        return 0
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:
                sys.stderr.write("stop failed: %s\n" % e)
        tmp.close()


if __name__ == "__main__":
    sys.exit(main())

"""What the audit tap costs: imapmux's CPU time (user + system from /proc)
per command and per MB relayed, with the audit log off and on (file sink),
against a real Dovecot on loopback.  Bounded: RUNS runs of COMMANDS
pipelined NOOPs and FETCHES fetches of a 2 MB message per setting.

    python3 tests/bench/audit_cost.py [--runs 3] [--commands 20000] [--fetches 20]

Needs IMAPMUX_BIN (or a build in build/).  Prints a table and one JSON line
per figure; a figure is the median over runs, with its spread (min..max)."""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import LOOPBACK, read_line, read_to_eof  # noqa: E402

PASSWORD = "bench-pw-1"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def until_tag(sock, tag):
    while True:
        line = read_line(sock)
        if not line:
            raise RuntimeError("connection closed before %r" % tag)
        if line.startswith(tag + b" "):
            return line


def noops(mux, n):
    s, _ = mux.raw_tls(timeout=60)
    s.sendall(b"l LOGIN bench " + PASSWORD.encode() + b"\r\n")
    until_tag(s, b"l")
    batch = 500
    for start in range(0, n, batch):
        s.sendall(b"".join(b"n%d NOOP\r\n" % i for i in range(start, min(n, start + batch))))
        until_tag(s, b"n%d" % (min(n, start + batch) - 1))
    s.sendall(b"z LOGOUT\r\n")
    read_to_eof(s, timeout=60)
    s.close()


def fetches(mux, n):
    s, _ = mux.raw_tls(timeout=60)
    s.sendall(b"l LOGIN bench " + PASSWORD.encode() + b"\r\nm SELECT INBOX\r\n")
    until_tag(s, b"m")
    got = 0
    for i in range(n):
        s.sendall(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i)
        head = read_line(s)
        size = int(head[head.rindex(b"{") + 1:head.rindex(b"}")])
        left = size
        while left > 0:
            chunk = s.recv(min(left, 1 << 20))
            if not chunk:
                raise RuntimeError("closed in a literal")
            left -= len(chunk)
        got += size
        until_tag(s, b"f%d" % i)
    s.sendall(b"z LOGOUT\r\n")
    read_to_eof(s, timeout=60)
    s.close()
    return got


def measure(tmp, dovecot, audit, runs, n_cmds, n_fetch):
    cfg = {"file": os.path.join(tmp, "audit-%d.log" % time.monotonic_ns())} if audit else None
    mux = harness.Imapmux(tmp, [{"name": "local", "host": LOOPBACK, "port": dovecot.port,
                                 "tls": "none"}], workers=1, audit=cfg,
                          name="imapmux-%s" % ("on" if audit else "off")).start()
    per_cmd, per_mb = [], []
    try:
        noops(mux, 100)  # warm up
        for _ in range(runs):
            c0 = cpu_seconds(mux.proc.pid)
            noops(mux, n_cmds)
            c1 = cpu_seconds(mux.proc.pid)
            size = fetches(mux, n_fetch)
            c2 = cpu_seconds(mux.proc.pid)
            per_cmd.append((c1 - c0) / n_cmds * 1e6)
            per_mb.append((c2 - c1) / (size / 1e6) * 1e3)
    finally:
        mux.stop()
    return per_cmd, per_mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--commands", type=int, default=20000)
    ap.add_argument("--fetches", type=int, default=20)
    a = ap.parse_args()
    with harness.TempDir() as tmp:
        dovecot = harness.Dovecot(tmp.path, users={"bench": PASSWORD}).start()
        body = ("x" * 76 + "\r\n") * (2 * 1024 * 1024 // 78)
        dovecot.add_message("bench", harness.sample_message("big", body=body))
        try:
            off = measure(tmp.path, dovecot, False, a.runs, a.commands, a.fetches)
            on = measure(tmp.path, dovecot, True, a.runs, a.commands, a.fetches)
        finally:
            dovecot.stop()
    rows = [("CPU per NOOP (us)", off[0], on[0]), ("CPU per MB fetched (ms)", off[1], on[1])]
    print("%-26s %22s %22s %7s" % ("figure (median, min..max)", "audit off", "audit on", "ratio"))
    for name, o, n in rows:
        mo, mn = statistics.median(o), statistics.median(n)
        print("%-26s %8.2f (%5.2f..%5.2f) %8.2f (%5.2f..%5.2f) %7.2f" %
              (name, mo, min(o), max(o), mn, min(n), max(n), mn / mo if mo else 0))
    for name, o, n in rows:
        print(json.dumps({"figure": name, "audit_off": o, "audit_on": n,
                          "ratio_median": statistics.median(n) / statistics.median(o)
                          if statistics.median(o) else None}))


if __name__ == "__main__":
    main()

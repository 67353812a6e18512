"""What the command gate and COMPRESS=DEFLATE cost: imapmux's CPU time (all
threads, from the scheduler's counters in /proc/PID/task/*/schedstat) per 1000 commands through the gate and per
MB fetched with and without COMPRESS=DEFLATE, one worker, audit off, against
a real Dovecot on loopback.  The client is Python (ssl, zlib); only the
proxy's CPU is counted, so a slow client does not change the figures.

    python3 tests/bench/gate_cost.py [--runs 3] [--commands 20000] [--fetches 10] [--short]

- gate, NOOP: pipelined NOOPs, the cheapest command the gate parses;
- gate, mix: pipelined cycles of NOOP, SELECT INBOX, UID FETCH 1:* (FLAGS
  BODY.PEEK[HEADER.FIELDS (SUBJECT)]), SEARCH UNSEEN SUBJECT "x" and
  STORE 1 +FLAGS.SILENT (\\Seen) (each parsed by its grammar rule);
- fetch: FETCH 1 BODY.PEEK[] of a 2 MB message (half text lines, half a
  base64 attachment), plain, then in a session with COMPRESS=DEFLATE (the
  client inflates every byte and checks the size).

Needs IMAPMUX_BIN (or a build in build/).  Prints a Markdown table (medians
over runs with min..max) and one JSON line per figure.  --short: one run,
small counts (a check that it works, under 20 s)."""
import argparse
import base64
import json
import os
import random
import statistics
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import LOOPBACK, read_line, read_to_eof  # noqa: E402

PASSWORD = "bench-pw-gate"
BATCH = 100  # commands pipelined before waiting for the last answer (the gate allows 128)
MIX = (b"NOOP", b"SELECT INBOX", b"UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
       b"SEARCH UNSEEN SUBJECT \"x\"", b"STORE 1 +FLAGS.SILENT (\\Seen)")


def cpu_seconds(pid):
    """CPU time of every thread of pid, in seconds, from the scheduler's
    counters (nanoseconds; /proc/PID/stat has a 10 ms tick)."""
    total = 0
    task_dir = "/proc/%d/task" % pid
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "schedstat")) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


class Client:
    """A logged-in TLS session; with compress(), both directions deflated."""

    def __init__(self, mux):
        self.s, _ = mux.raw_tls(timeout=60)
        self.buf = b""
        self.z_in = self.z_out = None
        self.send(b"l LOGIN bench " + PASSWORD.encode() + b"\r\n")
        self.until(b"l")

    def send(self, data):
        if self.z_out is not None:
            data = self.z_out.compress(data) + self.z_out.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)

    def fill(self):
        data = self.s.recv(1 << 18)
        if not data:
            raise RuntimeError("connection closed")
        self.buf += self.z_in.decompress(data) if self.z_in is not None else data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def until(self, tag):
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError("%r: %r" % (tag, line))
                return line

    def skip(self, n):
        while len(self.buf) < n:
            self.fill()
        self.buf = self.buf[n:]

    def compress(self):
        self.send(b"z COMPRESS DEFLATE\r\n")
        self.until(b"z")
        if self.buf:
            raise RuntimeError("data after the COMPRESS answer")
        self.z_in = zlib.decompressobj(-15)
        self.z_out = zlib.compressobj(1, zlib.DEFLATED, -15)

    def close(self):
        self.send(b"q LOGOUT\r\n")
        self.s.settimeout(30)
        try:
            while True:
                data = self.s.recv(65536)
                if not data:
                    break
        except OSError:
            pass
        self.s.close()


def commands(mux, n, mix):
    c = Client(mux)
    c.send(b"s SELECT INBOX\r\n")
    c.until(b"s")
    for start in range(0, n, BATCH):
        end = min(n, start + BATCH)
        c.send(b"".join(b"c%d %s\r\n" % (i, (MIX[i % len(MIX)] if mix else b"NOOP"))
                        for i in range(start, end)))
        c.until(b"c%d" % (end - 1))
    c.close()


def fetches(mux, n, compress):
    c = Client(mux)
    if compress:
        c.compress()
    c.send(b"s SELECT INBOX\r\n")
    c.until(b"s")
    got = 0
    for i in range(n):
        c.send(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i)
        head = c.line()
        size = int(head[head.rindex(b"{") + 1:head.rindex(b"}")])
        c.skip(size)
        got += size
        c.until(b"f%d" % i)
    c.close()
    return got


def message(size):
    """Half text lines of words, half a base64 attachment of random bytes."""
    rng = random.Random(7)
    words = ["mail", "proxy", "the", "of", "message", "Dovecot", "relay", "audit", "and", "to",
             "meeting", "Tuesday", "report", "attached", "please", "find", "regards"]
    lines, n = [], 0
    while n < size // 2:
        line = " ".join(rng.choice(words) for _ in range(12))
        lines.append(line)
        n += len(line) + 2
    att = base64.encodebytes(rng.randbytes(size // 2 * 3 // 4)).decode().replace("\n", "\r\n")
    body = ("--b1\r\nContent-Type: text/plain\r\n\r\n" + "\r\n".join(lines) +
            "\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + att + "--b1--\r\n")
    return ("From: Bench <bench@example.test>\r\nTo: bench@example.test\r\nSubject: big\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" + body).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--commands", type=int, default=20000)
    ap.add_argument("--fetches", type=int, default=10)
    ap.add_argument("--short", action="store_true", help="one run, small counts")
    a = ap.parse_args()
    if a.short:
        a.runs, a.commands, a.fetches = 1, 2000, 2
    figures = {k: [] for k in ("noop", "mix", "plain", "deflate")}
    started = time.monotonic()
    with harness.TempDir() as tmp:
        dovecot = harness.Dovecot(tmp.path, users={"bench": PASSWORD}).start()
        mux = None
        try:
            dovecot.add_message("bench", message(2 * 1024 * 1024))
            for i in range(3):
                dovecot.add_message("bench", harness.sample_message("small %d" % i))
            mux = harness.Imapmux(tmp.path, [{"name": "local", "host": LOOPBACK,
                                              "port": dovecot.port, "tls": "none"}],
                                  workers=1, log_level="warning").start()
            commands(mux, 100, True)  # warm up
            for _ in range(a.runs):
                for key, fn, per in (("noop", lambda: commands(mux, a.commands, False), None),
                                     ("mix", lambda: commands(mux, a.commands, True), None),
                                     ("plain", lambda: fetches(mux, a.fetches, False), "mb"),
                                     ("deflate", lambda: fetches(mux, a.fetches, True), "mb")):
                    c0 = cpu_seconds(mux.proc.pid)
                    size = fn()
                    c1 = cpu_seconds(mux.proc.pid)
                    if per == "mb":
                        figures[key].append((c1 - c0) / (size / 1e6) * 1e3)  # ms per MB
                    else:
                        figures[key].append((c1 - c0) / a.commands * 1e6)  # ms per 1000
        finally:
            if mux is not None:
                rc = mux.stop()
                if rc != 0:
                    raise RuntimeError("imapmux exited with %s" % rc)
            dovecot.stop()
    rows = (("gate, pipelined NOOP", "ms CPU per 1000 commands", figures["noop"]),
            ("gate, mix of NOOP SELECT FETCH SEARCH STORE", "ms CPU per 1000 commands",
             figures["mix"]),
            ("FETCH 2 MB, plain", "ms CPU per MB", figures["plain"]),
            ("FETCH 2 MB, COMPRESS=DEFLATE", "ms CPU per MB", figures["deflate"]))
    print("| scenario | figure | median (min..max) |\n| --- | --- | --- |")
    for name, unit, v in rows:
        print("| %s | %s | %.2f (%.2f..%.2f) |" % (name, unit, statistics.median(v), min(v), max(v)))
    plain, deflate = statistics.median(figures["plain"]), statistics.median(figures["deflate"])
    if plain > 0:
        print("COMPRESS=DEFLATE / plain, CPU per MB: %.2f" % (deflate / plain))
    print("(%d runs, %.0f s)" % (a.runs, time.monotonic() - started))
    for name, unit, v in rows:
        print(json.dumps({"scenario": name, "unit": unit, "values": v,
                          "median": statistics.median(v)}))


if __name__ == "__main__":
    main()

"""A stranger's pre-auth flood cannot crowd the audit log, against a real
Dovecot with one worker and a small audit queue: while one client sends 64 KB
of pipelined NOOPs before login, a logged-in session runs 200 commands.  Under
policy block the logged-in session completes and under policy drop none of
its records is lost: every one of its commands is in the file.  The
flooder's records are bounded (audit.preauth_records one by one, then at most
one preauth_summary a second), and the summaries and its session_end count
every command it sent.  imapmuxctl audit verify accepts the file.  A
session that logs in after many commands gets the count left in a last
summary before its login record, and records every command after it."""
import json
import os
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line

USERS = {"alice": "alice-pw-Flood"}
PREAUTH_RECORDS = 16     # audit.preauth_records (the default)
FLOOD_BYTES = 64 * 1024  # of pipelined NOOPs
COMMANDS = 200           # of the logged-in session
QUEUE_BYTES = 16384      # audit.queue_bytes: a few dozen records


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def until_tag(sock, tag, timeout=30):
    lines = harness.read_until_tag(sock, tag, timeout=timeout)
    if not lines or not lines[-1].startswith(tag.encode() + b" "):
        raise AssertionError("no answer tagged %s; got %r" % (tag, b"".join(lines)[-300:]))
    return lines[-1]


class Flooder:
    """One cleartext client sending FLOOD_BYTES of NOOPs as fast as it can
    while a thread of its own reads the answers (so that TCP never stalls
    both ways)."""

    def __init__(self, mux):
        self.sock, greeting = mux.raw_plain(timeout=60)
        assert greeting.startswith(b"* OK"), greeting
        self.port = self.sock.getsockname()[1]
        lines, n = [], 0
        while n < FLOOD_BYTES:
            line = b"f%d NOOP\r\n" % len(lines)
            lines.append(line)
            n += len(line)
        self.payload = b"".join(lines)
        self.count = len(lines)
        self.answered = 0
        self.first_answer = threading.Event()
        self.done = threading.Event()
        self.error = None

    def read_answers(self):
        buf = b""
        deadline = time.monotonic() + 120
        try:
            self.sock.settimeout(5)
            while self.answered < self.count and time.monotonic() < deadline:
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    continue
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\r\n")
                self.answered += sum(1 for l in done if l.startswith(b"f") and b" OK " in l)
                if self.answered > 0:
                    self.first_answer.set()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.first_answer.set()
            self.done.set()

    def start(self):
        threading.Thread(target=self.read_answers, daemon=True).start()
        threading.Thread(target=self.sock.sendall, args=(self.payload,), daemon=True).start()

    def finish(self):
        self.done.wait(130)
        self.sock.sendall(b"x LOGOUT\r\n")
        try:
            harness.read_to_eof(self.sock, timeout=20)
        finally:
            self.sock.close()


class AuditFlood(unittest.TestCase):
    def run_policy(self, policy):
        tmp = harness.TempDir()
        mux = None
        dovecot = harness.Dovecot(tmp.path, users=USERS).start()
        try:
            audit = os.path.join(tmp.path, "audit.log")
            backends = [{"name": "local", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}]
            mux = harness.Imapmux(tmp.path, backends, workers=1, log_level="info",
                                  audit={"file": audit, "policy": policy,
                                         "queue_bytes": QUEUE_BYTES}).start()
            s, _ = mux.raw_tls(timeout=60)
            s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\n")
            self.assertIn(b"a OK", until_tag(s, "a"))
            port = s.getsockname()[1]

            flood = Flooder(mux)
            t0 = time.monotonic()
            flood.start()
            flood.first_answer.wait(30)  # the flood is under way
            kinds = (b"NOOP", b"STATUS INBOX (MESSAGES)", b'LIST "" INBOX', b"EXAMINE INBOX")
            for i in range(COMMANDS):
                tag = "c%d" % i
                s.sendall(tag.encode() + b" " + kinds[i % len(kinds)] + b"\r\n")
                self.assertIn(b" OK ", until_tag(s, tag), tag)
            s.sendall(b"z LOGOUT\r\n")
            until_tag(s, "z")
            s.close()
            flood.finish()
            elapsed = time.monotonic() - t0
            self.assertIsNone(flood.error)
            self.assertEqual(flood.answered, flood.count, "the flooder got all its answers")

            # both sessions ended and their records are out
            deadline = time.monotonic() + 30
            while True:
                recs = records(audit)
                ends = {r["client_port"] for r in recs if r["type"] == "session_end"}
                if {port, flood.port} <= ends or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(mux.stop(), 0)
            recs = records(audit)
            mine = [r for r in recs if r.get("client_port") == port]
            cmds = {r["tag"]: r["status"] for r in mine if r["type"] == "command"}
            want = {"c%d" % i: "OK" for i in range(COMMANDS)}
            want.update({"a": "OK", "z": "OK"})
            self.assertEqual(cmds, want, "every command of the logged-in session is recorded")

            theirs = [r for r in recs if r.get("client_port") == flood.port]
            individual = [r for r in theirs if r["type"] == "command"]
            summaries = [r for r in theirs if r["type"] == "preauth_summary"]
            end = [r for r in theirs if r["type"] == "session_end"]
            self.assertLessEqual(len(individual), PREAUTH_RECORDS)
            self.assertLessEqual(len(summaries), int(elapsed) + 2, elapsed)
            self.assertEqual(len(end), 1)
            counted = (len(individual) + sum(r["unrecorded_commands"] for r in summaries) +
                       end[0].get("unrecorded_commands", 0))
            self.assertEqual(counted, flood.count + 1, "every command counted (LOGOUT too)")
            if os.environ.get("IMAPMUX_TEST_VERBOSE"):
                print("%s: %d NOOPs in %.1fs: %d records one by one, %d summaries" %
                      (policy, flood.count, elapsed, len(individual), len(summaries)))

            v = harness.imapmuxctl(None, "audit", "verify", audit)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
            log = mux.log_text()
            # the flood never made the worker wait for the writer, nor lost a record
            self.assertNotIn("audit queue full", log)
            self.assertNotIn("AddressSanitizer", log)
            self.assertNotIn("runtime error:", log)
        finally:
            if mux is not None and mux.alive():
                mux.stop()
            dovecot.stop()
            tmp.close()

    def test_count_left_at_login(self):
        """Commands before a login: the count not yet in a summary goes into
        one last preauth_summary before the login record."""
        tmp = harness.TempDir()
        mux = None
        dovecot = harness.Dovecot(tmp.path, users=USERS).start()
        try:
            audit = os.path.join(tmp.path, "audit.log")
            backends = [{"name": "local", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}]
            mux = harness.Imapmux(tmp.path, backends, workers=1, log_level="info",
                                  audit={"file": audit, "preauth_records": 4}).start()
            s, _ = mux.raw_tls(timeout=60)
            port = s.getsockname()[1]
            s.sendall(b"".join(b"n%d NOOP\r\n" % i for i in range(40)))
            until_tag(s, "n39")
            s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\nb NOOP\r\n")
            self.assertIn(b"b OK", until_tag(s, "b"))
            s.sendall(b"z LOGOUT\r\n")
            until_tag(s, "z")
            s.close()
            self.assertEqual(mux.stop(), 0)
            mine = [r for r in records(audit) if r.get("client_port") == port]
            types = [r["type"] for r in mine]
            self.assertEqual(types[:5], ["session_start"] + ["command"] * 4, types)
            self.assertEqual([r["tag"] for r in mine[1:5]], ["n0", "n1", "n2", "n3"])
            login = types.index("login")
            summaries = [r for r in mine[:login] if r["type"] == "preauth_summary"]
            self.assertTrue(summaries and types[login - 1] == "preauth_summary", types)
            self.assertEqual(sum(r["unrecorded_commands"] for r in summaries), 36)
            # after login, every command has its record again
            self.assertEqual([r["tag"] for r in mine if r["type"] == "command"][4:],
                             ["a", "b", "z"])
            self.assertNotIn("unrecorded_commands", mine[-1])
        finally:
            if mux is not None and mux.alive():
                mux.stop()
            dovecot.stop()
            tmp.close()

    def test_block(self):
        self.run_policy("block")

    def test_drop(self):
        self.run_policy("drop")


if __name__ == "__main__":
    unittest.main()

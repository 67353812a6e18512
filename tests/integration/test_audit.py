"""The audit log against a real Dovecot (and redis-server for the stream sink
and the master-login path): a scripted session gives exactly the expected
records; no secret reaches a record on any authentication path; the hash
chain catches an edited, a deleted and a swapped line; SIGUSR1 reopens the
file; the policies block, drop and close act on a stalled sink; the Redis
stream gets every record, also after Redis was down for a while; the chain
goes on across restarts, a record cut by a crash and a broken end, records
stay strict JSON whatever the mailbox name, and verify rejects a line that
is not."""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line, read_to_eof

USERS = {"alice": "alice-Secret-71", "bob": "bob-Secret-72", "carol": "carol-Secret-73"}
MASTER = {"proxy": "master-Secret-74"}
BODY_MARK = "BodyMarker-Confidential-5150"
VOLATILE = ("time", "duration_us", "client_port", "session", "chain", "tls", "cipher",
            "bytes_in", "bytes_out")


def read_records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stream_records(entries):
    """The records of XRANGE's answer: [[id, [field, value, ...]], ...]."""
    out = []
    for _, fields in entries:
        f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in zip(fields[::2], fields[1::2])}
        out.append(json.loads(f["record"]))
    return out


def stable(rec):
    return {k: v for k, v in rec.items() if k not in VOLATILE}


def read_until_tag(sock, tag, timeout=10):
    """Bytes up to and including the line tagged tag (bytes)."""
    lines = harness.read_until_tag(sock, tag.decode(), timeout=timeout)
    if not lines or not lines[-1].startswith(tag + b" "):
        raise AssertionError("no answer tagged %r; got %r" % (tag, b"".join(lines)[-300:]))
    return b"".join(lines)


def send(sock, line, tag):
    sock.sendall(line)
    return read_until_tag(sock, tag)


class ScriptedSessionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cert = harness.make_cert(cls.tmp.path)
        cls.dovecot = harness.Dovecot(cls.tmp.path, users=USERS).start()
        cls.dovecot.add_message("alice", harness.sample_message("first"))
        cls.audit_path = os.path.join(cls.tmp.path, "audit.log")
        backends = [{"name": "local", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, cls.cert, workers=1,
                                  audit={"file": cls.audit_path, "seqset_max": 8}).start()

    @classmethod
    def tearDownClass(cls):
        if cls.mux.alive():
            cls.mux.stop()
        cls.dovecot.stop()
        cls.tmp.close()

    def test_1_scripted_session_gives_exactly_these_records(self):
        s, greeting = self.mux.raw_tls()
        self.assertTrue(greeting.startswith(b"* OK"))
        self.assertIn(b"a1 OK", send(s, b"a1 CAPABILITY\r\n", b"a1"))
        self.assertIn(b"a2 NO", send(s, b"a2 LOGIN alice wrong-password\r\n", b"a2"))
        s.sendall(b"a3 LOGIN {5}\r\n")
        self.assertTrue(read_line(s).startswith(b"+"))
        self.assertIn(b"a3 OK", send(s, b"alice \"" + USERS["alice"].encode() + b"\"\r\n", b"a3"))
        # pipelined: SELECT, FETCH with a body (a server may finish pipelined
        # commands in any order; Dovecot does for FETCH and STORE)
        out = send(s, b"b1 SELECT INBOX\r\nb2 UID FETCH 1:* (FLAGS BODY.PEEK[])\r\n", b"b2")
        self.assertIn(b"b1 OK", out)
        self.assertIn(b"b2 OK", out)
        send(s, b"b3 STORE 1 +FLAGS.SILENT (\\Flagged)\r\n", b"b3")
        msg = harness.sample_message("appended", body=BODY_MARK + "\r\n")
        s.sendall(b"b4 APPEND \"&ZeVnLIqe-\" {%d+}\r\n" % len(msg) + msg + b"\r\n")
        self.assertIn(b"b4 NO", read_until_tag(s, b"b4"))  # no such mailbox yet
        self.assertIn(b"b5 OK", send(s, b"b5 CREATE \"&ZeVnLIqe-\"\r\n", b"b5"))
        s.sendall(b"b6 APPEND \"&ZeVnLIqe-\" (\\Seen) {%d+}\r\n" % len(msg) + msg + b"\r\n")
        self.assertIn(b"b6 OK", read_until_tag(s, b"b6"))
        # the relay stays byte-exact with the tap on: fetch it back
        send(s, b"b7 SELECT \"&ZeVnLIqe-\"\r\n", b"b7")
        out = send(s, b"b8 FETCH 1 BODY.PEEK[]\r\n", b"b8")
        self.assertIn(b"{%d}\r\n" % len(msg) + msg + b")\r\n", out)
        self.assertIn(b"b9 OK", send(s, b"b9 UID SEARCH SUBJECT \"appended\" UNSEEN\r\n", b"b9"))
        s.sendall(b"c1 IDLE\r\n")
        self.assertTrue(read_line(s).startswith(b"+"))
        self.assertIn(b"c1 OK", send(s, b"DONE\r\n", b"c1"))
        self.assertIn(b"c2 OK", send(s, b"c2 UID COPY 1:3,5,7,9,11 INBOX\r\n", b"c2"))
        s.sendall(b"c3 LOGOUT\r\n")
        read_to_eof(s)
        s.close()
        self.mux.stop()  # flushes the queue and ends the chain

        recs = read_records(self.audit_path)
        self.assertEqual(recs[0]["type"], "chain_start")
        self.assertEqual(recs[-1]["type"], "chain_end")
        # the harness's port probes are sessions too: keep ours
        ours = next(r["session"] for r in recs if r.get("tag") == "a1")
        body = [stable(r) for r in recs[1:-1] if r["session"] == ours]
        base = {"instance": "imapmux", "client": LOOPBACK,
                "listener": "%s:%d" % (LOOPBACK, self.mux.tls_port)}
        user = dict(base, user="alice", backend="local",
                    backend_host="%s:%d" % (LOOPBACK, self.dovecot.port))

        def cmd(tag, name, status, u=user, uid=False, code=None, **fields):
            r = dict(u, type="command", tag=tag, command=name, uid=uid, status=status, **fields)
            if code:
                r["code"] = code
            return r
        want = [
            dict(base, type="session_start"),
            cmd("a1", "CAPABILITY", "OK", base),
            dict(base, type="login", result="failed", user="alice", backend="local",
                 backend_host=user["backend_host"], reason="refused by the backend"),
            cmd("a2", "LOGIN", "NO", dict(base, user="alice", backend="local",
                                          backend_host=user["backend_host"]),
                code="AUTHENTICATIONFAILED"),
            dict(user, type="login", result="ok"),
            cmd("a3", "LOGIN", "OK", code="CAPABILITY"),
            cmd("b1", "SELECT", "OK", code="READ-WRITE", mailbox="INBOX"),
            cmd("b2", "FETCH", "OK", uid=True, seqset="1:*", items=["FLAGS", "BODY.PEEK[]"]),
            cmd("b3", "STORE", "OK", seqset="1", flags="+FLAGS.SILENT (\\Flagged)"),
            cmd("b4", "APPEND", "NO", code="TRYCREATE", mailbox="日本語", append_size=len(msg)),
            cmd("b5", "CREATE", "OK", mailbox="日本語"),
            cmd("b6", "APPEND", "OK", code="APPENDUID", mailbox="日本語", append_size=len(msg)),
            cmd("b7", "SELECT", "OK", code="READ-WRITE", mailbox="日本語"),
            cmd("b8", "FETCH", "OK", seqset="1", items=["BODY.PEEK[]"]),
            cmd("b9", "SEARCH", "OK", uid=True, search="SUBJECT ? UNSEEN"),
            cmd("c1", "IDLE", "OK"),
            cmd("c2", "COPY", "OK", uid=True, code="COPYUID", mailbox="INBOX", seqset="1:3,5,7,", seqset_truncated=True),
            cmd("c3", "LOGOUT", "OK"),
            dict(user, type="session_end", reason="backend closed after BYE", commands=15),
        ]
        # Dovecot may answer the failed APPEND with or without TRYCREATE
        if "code" not in body[9]:
            del want[9]["code"]
        self.assertEqual(len(body), len(want), "\n".join(json.dumps(b) for b in body))
        for got, exp in zip(body, want):
            self.assertEqual(got, exp)
        by_tag = {r.get("tag"): r for r in recs if r.get("type") == "command"}
        self.assertEqual(by_tag["b6"]["bytes_in"], len(b"b6 APPEND \"&ZeVnLIqe-\" (\\Seen) {%d+}\r\n"
                                                        % len(msg)) + len(msg) + 2)
        self.assertGreater(by_tag["b8"]["bytes_out"], len(msg))
        self.assertRegex(recs[1]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual(by_tag["a3"]["tls"], "TLSv1.3")
        text = open(self.audit_path, encoding="utf-8").read()
        for secret in (USERS["alice"], "wrong-password", BODY_MARK, "appended"):
            self.assertNotIn(secret, text)

        # the chain: intact, then an edited, a deleted and a swapped line
        ok = harness.imapmuxctl(None, "audit", "verify", self.audit_path)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        self.assertIn("chain intact", ok.stdout)
        lines = open(self.audit_path, encoding="utf-8").read().splitlines(True)

        def verify(new_lines):
            p = os.path.join(self.tmp.path, "tampered.log")
            with open(p, "w", encoding="utf-8") as f:
                f.writelines(new_lines)
            return harness.imapmuxctl(None, "audit", "verify", p)
        edited = list(lines)
        edited[6] = edited[6].replace('"status":"OK"', '"status":"NO"')
        self.assertNotEqual(edited[6], lines[6])
        r = verify(edited)
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 7:", r.stdout)
        r = verify(lines[:4] + lines[5:])
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 5:", r.stdout)
        swapped = list(lines)
        swapped[8], swapped[9] = swapped[9], swapped[8]
        r = verify(swapped)
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 9:", r.stdout)
        r = verify(lines[2:])
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 1:", r.stdout)


class ReopenTest(unittest.TestCase):
    def test_sigusr1_reopens_and_the_chain_goes_on(self):
        with harness.TempDir() as tmp:
            dovecot = harness.Dovecot(tmp.path, users=USERS).start()
            path = os.path.join(tmp.path, "audit.log")
            mux = harness.Imapmux(tmp.path, [{"name": "local", "host": LOOPBACK,
                                              "port": dovecot.port, "tls": "none"}],
                                  audit={"file": path}).start()
            try:
                m = mux.ssl_client()
                m.login("bob", USERS["bob"])
                m.noop()
                rotated = path + ".1"
                os.rename(path, rotated)
                mux.proc.send_signal(signal.SIGUSR1)
                deadline = time.monotonic() + 10
                while not os.path.exists(path) and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertTrue(os.path.exists(path), "no new file after SIGUSR1")
                m.select("INBOX")
                m.logout()
            finally:
                mux.stop()
                dovecot.stop()
            old = read_records(rotated)
            new = read_records(path)
            self.assertEqual(old[-1]["type"], "chain_end")
            self.assertEqual(new[0]["type"], "chain_start")
            self.assertEqual(new[0]["prev"], old[-1]["chain"])
            self.assertIn("SELECT", [r.get("command") for r in new])
            for p in (rotated, path):
                r = harness.imapmuxctl(None, "audit", "verify", p)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class NoSecretsTest(unittest.TestCase):
    """Every way in: LOGIN (atom, quoted, literal, literal+), AUTHENTICATE
    PLAIN (initial response and continuation, cancelled), wrong passwords,
    pass-through and master backends, and credentials sent after login
    (relayed to the backend).  No password, SASL data or message text may
    reach the audit file, the Redis stream, standard output or the log."""

    def test_no_secret_in_any_sink(self):
        with harness.TempDir() as tmp:
            cert = harness.make_cert(tmp.path)
            redis = harness.Redis(tmp.path).start()
            dovecot = harness.Dovecot(tmp.path, users=USERS, master_users=MASTER).start()
            path = os.path.join(tmp.path, "audit.log")
            backends = [
                {"name": "pass", "host": LOOPBACK, "port": dovecot.port, "tls": "none"},
                {"name": "master", "host": LOOPBACK, "port": dovecot.port, "tls": "none",
                 "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]},
            ]
            import crypt
            redis.cmd("HSET", "imapmux:user:carol", "password",
                      crypt.crypt(USERS["carol"], crypt.mksalt(crypt.METHOD_SHA512)),
                      "backend", "master")
            mux = harness.Imapmux(
                tmp.path, backends, cert, routes={"default": "pass"},
                redis={"host": LOOPBACK, "port": redis.port, "unknown_users": "passthrough"},
                bruteforce={"enabled": False},
                audit={"file": path, "stdout": True,
                       "redis_stream": {"key": "audit", "maxlen": 100000}}).start()
            secrets = [MASTER["proxy"], BODY_MARK]
            try:
                for user in ("alice", "carol"):  # pass-through, then master
                    pw = USERS[user]
                    plain = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode())
                    secrets += [pw, plain.decode()]
                    ways = [
                        b"t LOGIN " + user.encode() + b" " + pw.encode() + b"\r\n",
                        b"t LOGIN \"" + user.encode() + b"\" \"" + pw.encode() + b"\"\r\n",
                        b"t LOGIN " + user.encode() + b" {%d+}\r\n" % len(pw) + pw.encode()
                        + b"\r\n",
                        b"t AUTHENTICATE PLAIN " + plain + b"\r\n",
                    ]
                    for way in ways:
                        s, _ = mux.raw_tls()
                        self.assertIn(b"t OK", send(s, way, b"t"), way)
                        # credentials again after login: refused by imapmux itself,
                        # never relayed (and so never recorded)
                        out = send(s, b"u LOGIN " + user.encode() + b" " + pw.encode() + b"\r\n",
                                   b"u")
                        self.assertIn(b"u BAD Already logged in", out)
                        s.sendall(b"v APPEND INBOX {%d+}\r\n" % (len(BODY_MARK) + 2)
                                  + BODY_MARK.encode() + b"\r\n\r\n")
                        read_until_tag(s, b"v")
                        s.sendall(b"w LOGOUT\r\n")
                        read_to_eof(s)
                        s.close()
                    # synchronizing literal and AUTHENTICATE with a continuation
                    s, _ = mux.raw_tls()
                    s.sendall(b"x LOGIN " + user.encode() + b" {%d}\r\n" % len(pw))
                    self.assertTrue(read_line(s).startswith(b"+"))
                    self.assertIn(b"x OK", send(s, pw.encode() + b"\r\n", b"x"))
                    s.close()
                    s, _ = mux.raw_tls()
                    s.sendall(b"y AUTHENTICATE PLAIN\r\n")
                    self.assertTrue(read_line(s).startswith(b"+"))
                    self.assertIn(b"y OK", send(s, plain + b"\r\n", b"y"))
                    s.close()
                    # wrong passwords, and a cancelled exchange
                    bad = pw + "-not"
                    badplain = base64.b64encode(b"\0" + user.encode() + b"\0" + bad.encode())
                    secrets += [bad, badplain.decode()]
                    s, _ = mux.raw_tls()
                    self.assertIn(b"z NO", send(s, b"z LOGIN " + user.encode() + b" " + bad.encode()
                                                + b"\r\n", b"z"))
                    self.assertIn(b"z2 NO", send(s, b"z2 AUTHENTICATE PLAIN " + badplain + b"\r\n",
                                                 b"z2"))
                    s.sendall(b"z3 AUTHENTICATE PLAIN\r\n")
                    read_line(s)
                    self.assertIn(b"z3 BAD", send(s, b"*\r\n", b"z3"))
                    s.close()
            finally:
                mux.stop()
                stream = redis.cmd("XRANGE", "audit", "-", "+")
                redis.stop()
                dovecot.stop()
            audit_text = open(path, encoding="utf-8").read()
            log_text = mux.log_text()
            stream_text = json.dumps(stream, default=lambda b: b.decode(errors="replace"))
            self.assertGreater(audit_text.count('"type":"login"'), 10)
            self.assertGreater(len(stream), 50)
            self.assertIn('"result":"ok"', stream_text.replace('\\"', '"'))
            # the stdout sink (in the log) has every record the file has
            self.assertEqual(log_text.count('"type":"command"'),
                             audit_text.count('"type":"command"'))
            self.assertGreaterEqual(audit_text.count('"type":"command"'), 34)
            for secret in secrets:
                for name, text in (("audit file", audit_text), ("log and stdout", log_text),
                                   ("redis stream", stream_text)):
                    self.assertNotIn(secret, text, "%s in the %s" % (secret, name))


class StalledSinkTest(unittest.TestCase):
    """The file sink is a FIFO the test reads only when it wants: the writer
    stalls on it like on a hung disk."""

    def start(self, tmp, policy):
        self.dovecot = harness.Dovecot(tmp.path, users=USERS).start()
        self.fifo = os.path.join(tmp.path, "audit.fifo")
        os.mkfifo(self.fifo)
        self.reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.mux = harness.Imapmux(tmp.path, [{"name": "local", "host": LOOPBACK,
                                               "port": self.dovecot.port, "tls": "none"}],
                                   workers=1,
                                   audit={"file": self.fifo, "queue_bytes": 8192,
                                          "policy": policy}).start()
        self.drained = b""

    def drain(self, until=None, seconds=10):
        """Reads the FIFO for up to seconds (or until until() is true)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                chunk = os.read(self.reader, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                self.drained += chunk
            elif until is not None and until():
                return
            else:
                time.sleep(0.02)

    def stop(self):
        done = threading.Event()

        def keep_draining():
            while not done.is_set():
                self.drain(seconds=0.2)
        t = threading.Thread(target=keep_draining)
        t.start()
        try:
            self.mux.stop()
        finally:
            done.set()
            t.join()
            self.drain(seconds=0.3)
            os.close(self.reader)
            self.dovecot.stop()

    def noop_until_stalled(self, s, limit=3000):
        """NOOPs until one is not answered within a second; returns how many
        were answered, or None if all were."""
        s.settimeout(1.0)
        for i in range(limit):
            s.sendall(b"n%d NOOP\r\n" % i)
            try:
                read_until_tag(s, b"n%d" % i, timeout=1.0)
            except Exception:
                return i
        return None

    def test_block_waits_and_loses_nothing(self):
        with harness.TempDir() as tmp:
            self.start(tmp, "block")
            try:
                s, _ = self.mux.raw_tls()
                self.assertIn(b"l OK", send(s, b"l LOGIN bob " + USERS["bob"].encode() + b"\r\n",
                                             b"l"))
                answered = self.noop_until_stalled(s)
                self.assertIsNotNone(answered, "the proxy never waited for the stalled sink")
                # another client of the same worker waits as well, from its handshake on
                second = {}

                def other_client():
                    try:
                        s2, _ = self.mux.raw_tls(timeout=30)
                        second["answer"] = send(s2, b"k CAPABILITY\r\n", b"k")
                        second["at"] = time.monotonic()
                        s2.close()
                    except Exception as e:  # reported below
                        second["error"] = e
                t2 = threading.Thread(target=other_client)
                t2.start()
                time.sleep(1.5)
                self.assertNotIn("answer", second, "a client was served while the queue was full")
                # the sink catches up: everything goes on, nothing was lost
                drain_start = time.monotonic()
                reader = threading.Thread(target=self.drain, kwargs={"seconds": 8})
                reader.start()
                s.settimeout(30)
                out = read_until_tag(s, b"n%d" % answered, timeout=30)
                self.assertIn(b"OK", out)
                t2.join(30)
                self.assertNotIn("error", second)
                self.assertIn(b"k OK", second["answer"])
                self.assertGreaterEqual(second["at"], drain_start)
                s.sendall(b"z LOGOUT\r\n")
                read_to_eof(s)
                reader.join()
            finally:
                self.stop()
            recs = [json.loads(x) for x in self.drained.decode().splitlines() if x]
            noops = {r["tag"] for r in recs if r.get("command") == "NOOP"}
            self.assertEqual(noops, {"n%d" % i for i in range(answered + 1)})
            self.assertIn("audit queue full", self.mux.log_text())

    def test_drop_goes_on_and_counts(self):
        with harness.TempDir() as tmp:
            self.start(tmp, "drop")
            try:
                s, _ = self.mux.raw_tls()
                send(s, b"l LOGIN bob " + USERS["bob"].encode() + b"\r\n", b"l")
                self.assertIsNone(self.noop_until_stalled(s, limit=1500))
                s.close()
            finally:
                self.stop()
            log = self.mux.log_text()
            self.assertRegex(log, r"audit: queue full \(policy drop\): \d+ records not logged")
            m = re.search(r"audit records=(\d+) dropped=(\d+)", log)
            self.assertIsNotNone(m, "no audit counters in the log")
            self.assertGreater(int(m.group(2)), 0)
            recs = [x for x in self.drained.decode().splitlines() if x]
            self.assertLess(len(recs), 1500)

    def test_close_ends_the_session(self):
        with harness.TempDir() as tmp:
            self.start(tmp, "close")
            try:
                s, _ = self.mux.raw_tls()
                send(s, b"l LOGIN bob " + USERS["bob"].encode() + b"\r\n", b"l")
                s.settimeout(5)
                got = b""
                for i in range(3000):
                    s.sendall(b"n%d NOOP\r\n" % i)
                    line = b""
                    while not line.startswith(b"n%d " % i):
                        line = read_line(s)
                        got += line
                        if not line or line.startswith(b"* BYE"):
                            break
                    if not line or line.startswith(b"* BYE"):
                        break
                got += read_to_eof(s)
                self.assertIn(b"* BYE [UNAVAILABLE] Audit log unavailable", got)
            finally:
                self.stop()


class RedisStreamTest(unittest.TestCase):
    def test_stream_gets_every_record_across_an_outage(self):
        with harness.TempDir() as tmp:
            redis = harness.Redis(tmp.path).start()
            dovecot = harness.Dovecot(tmp.path, users=USERS).start()
            mux = harness.Imapmux(tmp.path, [{"name": "local", "host": LOOPBACK,
                                              "port": dovecot.port, "tls": "none"}],
                                  workers=1,
                                  audit={"redis_stream": {"host": LOOPBACK, "port": redis.port,
                                                          "key": "imapmux:audit",
                                                          "maxlen": 1000}}).start()
            try:
                m = mux.ssl_client()
                m.login("alice", USERS["alice"])
                for _ in range(20):
                    m.noop()
                # wait for this session's records, not for a count of entries:
                # the harness's readiness probe leaves records of its own
                deadline = time.monotonic() + 10
                while True:
                    recs = stream_records(redis.cmd("XRANGE", "imapmux:audit", "-", "+"))
                    ours = next((r["session"] for r in recs if r["type"] == "login"), None)
                    recs = [r for r in recs if ours is not None and r["session"] == ours]
                    noops = sum(1 for r in recs if r.get("command") == "NOOP")
                    if noops >= 20 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                self.assertEqual([(r["type"], r.get("command")) for r in recs[:4]],
                                 [("session_start", None), ("command", "CAPABILITY"),
                                  ("login", None), ("command", "LOGIN")])
                self.assertEqual(sum(1 for r in recs if r.get("command") == "NOOP"), 20)
                # Redis goes away: sessions carry on, records wait
                redis.kill()
                for i in range(10):
                    m.noop()
                time.sleep(1.5)
                redis.restart()
                m.logout()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    recs = stream_records(redis.cmd("XRANGE", "imapmux:audit", "-", "+"))
                    if any(r["type"] == "session_end" for r in recs):
                        break
                    time.sleep(0.1)
                # redis restarted without persistence: only what came after the outage
                self.assertEqual(sum(1 for r in recs if r.get("command") == "NOOP"), 10)
                self.assertEqual(recs[-1]["type"], "session_end")
                # the cap holds: MAXLEN ~ trims whole nodes of 100 entries
                m = mux.ssl_client()
                m.login("alice", USERS["alice"])
                for _ in range(1500):
                    m.noop()
                m.logout()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    ends = [e for e in redis.cmd("XREVRANGE", "imapmux:audit", "+", "-",
                                                 "COUNT", "1")]
                    if ends and stream_records(ends)[0]["type"] == "session_end":
                        break
                    time.sleep(0.1)
                self.assertLessEqual(int(redis.cmd("XLEN", "imapmux:audit")), 1100)
                self.assertGreaterEqual(int(redis.cmd("XLEN", "imapmux:audit")), 1000)
            finally:
                mux.stop()
                redis.stop()
                dovecot.stop()
            self.assertIn("audit: cannot write: redis stream", mux.log_text())


def strict_json(line):
    """json.loads under the verifier's rules: one object, no NaN, no name twice."""
    def no_dups(pairs):
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError("a name twice: %r" % names)
        return dict(pairs)

    def no_constant(name):
        raise ValueError("constant " + name)
    rec = json.loads(line, object_pairs_hook=no_dups, parse_constant=no_constant)
    if not isinstance(rec, dict):
        raise ValueError("not an object")
    return rec


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def seal(prev_hex, record):
    """The line audit_chain_seal makes of record (JSON text ending in '}')
    after a line whose chain value is prev_hex; returns (line, chain)."""
    import hashlib
    body = record.encode("utf-8", "surrogateescape") if isinstance(record, str) else record
    chain = hashlib.sha256(bytes.fromhex(prev_hex) + body).hexdigest()
    sep = b"," if body != b"{}" else b""
    return body[:-1] + sep + b'"chain":"' + chain.encode() + b'"}\n', chain


class RestartTest(unittest.TestCase):
    """The chain goes on across restarts, a record cut by a crash, and a
    broken end; verify rejects a chain started again and a line that is not
    strict JSON, even when its chain value is right."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cert = harness.make_cert(cls.tmp.path)
        cls.dovecot = harness.Dovecot(cls.tmp.path, users=USERS).start()
        cls.runs = 0

    @classmethod
    def tearDownClass(cls):
        cls.dovecot.stop()
        cls.tmp.close()

    def run_mux(self, path, session=None):
        """One daemon run on the audit file path with a session in it;
        returns the daemon's log."""
        type(self).runs += 1
        mux = harness.Imapmux(self.tmp.path, [{"name": "local", "host": LOOPBACK,
                                               "port": self.dovecot.port, "tls": "none"}],
                              self.cert, workers=1, name="mux%d" % self.runs,
                              audit={"file": path}).start()
        try:
            if session is not None:
                session(mux)
            else:
                m = mux.ssl_client()
                m.login("alice", USERS["alice"])
                m.select("INBOX")
                m.noop()
                m.logout()
        finally:
            rc = mux.stop()
        log = mux.log_text()
        self.assertEqual(rc, 0, log[-3000:])
        for bad in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
            self.assertNotIn(bad, log)
        return log

    def verify(self, path):
        return harness.imapmuxctl(None, "audit", "verify", path)

    def lines(self, path):
        with open(path, "rb") as f:
            return f.read().splitlines(True)

    def test_three_runs_make_one_chain(self):
        path = os.path.join(self.tmp.path, "three.log")
        for _ in range(3):
            self.run_mux(path)
        recs = [strict_json(l) for l in self.lines(path)]
        starts = [i for i, r in enumerate(recs) if r["type"] == "chain_start"]
        self.assertEqual(len(starts), 3)
        self.assertEqual(starts[0], 0)
        self.assertEqual(recs[0]["prev"], "0" * 64)
        for i in starts[1:]:
            self.assertEqual(recs[i - 1]["type"], "chain_end")
            self.assertEqual(recs[i]["prev"], recs[i - 1]["chain"])
        self.assertEqual(sum(1 for r in recs if r.get("command") == "SELECT"), 3)
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("chain intact over 3 starts", r.stdout)

        # a chain started again at zero in the same file (what a restart did
        # before) is named, though every hash in it is right
        lines = self.lines(path)
        restarted = lines[:starts[1]]
        prev = "0" * 64
        for l in lines[starts[1]:]:
            rec = strict_json(l)
            if rec["type"] == "chain_start":
                rec["prev"] = prev
            del rec["chain"]
            line, prev = seal(prev, json.dumps(rec, separators=(",", ":"), ensure_ascii=False))
            restarted.append(line)
        p = os.path.join(self.tmp.path, "restarted.log")
        with open(p, "wb") as f:
            f.writelines(restarted)
        r = self.verify(p)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("line %d: a chain_start whose prev" % (starts[1] + 1), r.stdout)

    def test_a_reopen_of_the_same_file_goes_on(self):
        """SIGUSR1 with no rotation: the file is reopened and its chain goes on."""
        path = os.path.join(self.tmp.path, "reopen.log")

        def session(mux):
            m = mux.ssl_client()
            m.login("alice", USERS["alice"])
            mux.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while "reopened" not in mux.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn("audit file %s reopened" % path, mux.log_text())
            m.select("INBOX")
            m.logout()
        self.run_mux(path, session)
        recs = [strict_json(l) for l in self.lines(path)]
        self.assertEqual([r["type"] for r in recs].count("chain_start"), 2)
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("chain intact over 2 starts", r.stdout)

    def test_a_record_cut_by_a_crash_is_cut_off(self):
        path = os.path.join(self.tmp.path, "cut.log")
        self.run_mux(path)
        lines = self.lines(path)
        whole = b"".join(lines[:-1])
        cut = lines[-1][:len(lines[-1]) // 2]  # the chain_end, half written
        with open(path, "wb") as f:
            f.write(whole + cut)
        r = self.verify(path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cut short", r.stdout)
        log = self.run_mux(path)
        self.assertIn("its last record was cut short (%d bytes" % len(cut), log)
        data = read_bytes(path)
        self.assertTrue(data.startswith(whole))
        after = data[len(whole):].splitlines(True)
        start = strict_json(after[0])
        self.assertEqual(start["type"], "chain_start")
        self.assertEqual(start["cut_bytes"], len(cut))
        import hashlib
        self.assertEqual(start["cut_sha256"], hashlib.sha256(cut).hexdigest())
        self.assertEqual(start["prev"], strict_json(lines[-2])["chain"])
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("1 record cut short by a crash", r.stdout)

        # a last record whole but for its newline is kept, and the newline added
        lines = self.lines(path)
        with open(path, "wb") as f:
            f.write(b"".join(lines)[:-1])
        log = self.run_mux(path)
        self.assertIn("its last record had no newline; added", log)
        self.assertTrue(read_bytes(path).startswith(b"".join(lines)))
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_a_broken_end_moves_the_file_aside(self):
        path = os.path.join(self.tmp.path, "broken.log")
        self.run_mux(path)
        # garbage, garbage cut short (no record's start), valid JSON with no chain
        for i, garbage in enumerate((b"\x00\xffgarbage\n", b"not json at all",
                                     b'{"type":"command"}\n')):
            with open(path, "ab") as f:
                f.write(garbage)
            before = read_bytes(path)
            log = self.run_mux(path)
            asides = sorted(n for n in os.listdir(self.tmp.path) if n.startswith("broken.log.broken-"))
            self.assertEqual(len(asides), i + 1, asides)
            moved = [n for n in asides if read_bytes(os.path.join(self.tmp.path, n)) == before]
            self.assertEqual(len(moved), 1, "the broken file is kept byte for byte")
            self.assertIn("audit file %s: its end is no chained record; moved aside to %s"
                          % (path, os.path.join(self.tmp.path, moved[0])), log)
            recs = [strict_json(l) for l in self.lines(path)]
            self.assertEqual(recs[0]["type"], "chain_start")
            self.assertEqual(recs[0]["prev"], "0" * 64)
            self.assertEqual(recs[0]["broken_aside"], os.path.join(self.tmp.path, moved[0]))
            r = self.verify(path)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("chain intact over 1 start", r.stdout)

    def test_a_hostile_mailbox_name_gives_valid_json(self):
        path = os.path.join(self.tmp.path, "hostile.log")
        names = [b"\x02\x1f" * 256,  # 3072 bytes escaped: more than a record's fields hold
                 b"ctl\x01\x07\x1b[2J\x7f \\\" quote \xc3\xa9 \xff\xfe 8bit",
                 b"\\\\\\\"" * 40]

        def session(mux):
            s, greeting = mux.raw_tls()
            self.assertIn(b"a0 OK", send(s, b"a0 LOGIN alice " + USERS["alice"].encode() + b"\r\n",
                                         b"a0"))
            for i, name in enumerate(names):
                tag = b"h%d" % i
                # as a literal: the command gate refuses control characters
                # in a quoted string before the backend sees them
                s.sendall(tag + b" SELECT {%d}\r\n" % len(name))
                self.assertTrue(read_line(s).startswith(b"+"))
                send(s, name + b"\r\n", tag)
            self.assertIn(b"q1 BAD", send(s, b'q1 SELECT "ctl\x01"\r\n', b"q1"))
            lit = b"\"q\\\x01\xff\xc3\xa9}{,"
            s.sendall(b"h9 DELETE {%d}\r\n" % len(lit))
            self.assertTrue(read_line(s).startswith(b"+"))
            send(s, lit + b"\r\n", b"h9")
            send(s, b"z LOGOUT\r\n", b"z")
            s.close()
        self.run_mux(path, session)
        lines = self.lines(path)
        recs = [strict_json(l) for l in lines]  # every line, strictly
        by_tag = {r.get("tag"): r for r in recs}
        self.assertTrue(by_tag["h0"].get("truncated"), by_tag["h0"])
        self.assertEqual(by_tag["h0"]["command"], "SELECT")
        # the tap unescapes a quoted string and shows a \x01 (its own mark) as ?
        self.assertEqual(by_tag["h1"]["mailbox"],
                         "ctl\x01\x07\x1b[2J\x7f \\\" quote \u00e9 \ufffd\ufffd 8bit")
        self.assertEqual(by_tag["h2"]["mailbox"], "\\\\\\\"" * 40)
        self.assertNotIn("q1", by_tag)  # refused by imapmux, never executed
        self.assertEqual(by_tag["h9"]["mailbox"], "\"q\\\x01\ufffd\u00e9}{,")
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        def check(new_lines):
            p = os.path.join(self.tmp.path, "hostile-edited.log")
            with open(p, "wb") as f:
                f.writelines(new_lines)
            return self.verify(p)
        # a line that is no JSON, with a right chain value, at the end...
        last = strict_json(lines[-1])["chain"]
        for bad in (b'{"a":1,,"truncated":true}', b'{"a":1,"a":2}', b'{"a":"\xff"}',
                    b'{"a":"\x01"}', b'{"a":NaN}'):
            forged, _ = seal(last, bad)
            r = check(lines + [forged])
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("line %d: not valid JSON" % (len(lines) + 1), r.stdout)
        # ...and in the middle
        mid = len(lines) // 2
        forged, _ = seal(strict_json(lines[mid - 1])["chain"], b'{"type":"command",,"x":1}')
        r = check(lines[:mid] + [forged] + lines[mid:])
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("line %d: not valid JSON" % (mid + 1), r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)

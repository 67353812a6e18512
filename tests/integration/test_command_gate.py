"""The command gate after login, against a real Dovecot with the audit log on:
the evasions that hid commands from the audit no longer reach the backend,
what is relayed is recorded, and COMPRESS=DEFLATE is terminated by imapmux
(the audit and the backend see plain commands)."""
import json
import os
import socket
import time
import unittest
import zlib

import harness
from harness import LOOPBACK, read_line

USERS = {"alice": "alice-pw-Gate"}


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def commands(path, session=None):
    return [(r["tag"], r["command"], r["status"]) for r in records(path)
            if r["type"] == "command" and (session is None or r["session"] == session)]


def until_tag(sock, tag, timeout=20):
    lines = harness.read_until_tag(sock, tag.decode(), timeout=timeout)
    return b"".join(lines)


class DovecotBehind(unittest.TestCase):
    """A Dovecot (with the messages of messages()) and imapmux in front of it
    with the audit log on, for the whole class."""

    @classmethod
    def messages(cls):
        return [harness.sample_message("first")]

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.dovecot = harness.Dovecot(cls.tmp.path, users=USERS).start()
        for m in cls.messages():
            cls.dovecot.add_message("alice", m)
        cls.audit = os.path.join(cls.tmp.path, "audit.log")
        backends = [{"name": "local", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=1,
                                  audit={"file": cls.audit}).start()

    @classmethod
    def tearDownClass(cls):
        if cls.mux.alive():
            cls.mux.stop()
        cls.dovecot.stop()
        cls.tmp.close()


class GateTest(DovecotBehind):
    def login(self):
        s, _ = self.mux.raw_tls(timeout=20)
        s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\n")
        self.assertIn(b"a OK", until_tag(s, b"a"))
        return s

    def session_of_last_login(self):
        time.sleep(0.3)
        recs = records(self.audit)
        return [r for r in recs if r["type"] == "login" and r.get("result") == "ok"][-1]["session"]

    def exists(self, mailbox):
        s = self.login()
        s.sendall(b"s STATUS " + mailbox + b" (MESSAGES)\r\n")
        out = until_tag(s, b"s")
        s.close()
        return b"s OK" in out

    def inbox_count(self):
        s = self.login()
        s.sendall(b"s STATUS INBOX (MESSAGES)\r\n")
        out = until_tag(s, b"s")
        s.close()
        return int(out.split(b"MESSAGES ")[1].split(b")")[0])

    def test_unknown_command_with_literal_plus_hides_nothing(self):
        s = self.login()
        s.sendall(b"c CREATE Finance\r\n")
        self.assertIn(b"c OK", until_tag(s, b"c"))
        sess = self.session_of_last_login()
        # Dovecot skips an unknown command's line without reading its literal,
        # so a naive relay runs the DELETE hidden in the "literal"
        s.sendall(b"B1 XFOO {19+}\r\nB2 DELETE Finance\r\n")
        out = harness.read_all(s, timeout=5)
        s.close()
        self.assertIn(b"B1 BAD Unknown command", out)
        self.assertIn(b"* BYE", out)
        self.assertNotIn(b"B2 OK", out)
        self.assertTrue(self.exists(b"Finance"), "the hidden DELETE ran")
        self.assertNotIn("DELETE", [c for _, c, _ in commands(self.audit, sess)])

    def test_bare_lf_append_is_refused_and_its_body_is_not_a_command(self):
        before = self.inbox_count()
        s = self.login()
        sess = self.session_of_last_login()
        body = b"Subject: x\nTo: a\n\nE1 DELETE INBOX\nline {999999999999}\n"
        s.sendall(b"A1 APPEND INBOX {%d}\n" % len(body))
        self.assertTrue(read_line(s).startswith(b"A1 BAD Line must end in CRLF"))
        s.sendall(body)
        s.sendall(b"A2 NOOP\r\n")
        out = until_tag(s, b"A2")
        self.assertIn(b"A2 OK", out)
        self.assertNotIn(b"E1 OK", out)
        s.close()
        self.assertEqual(self.inbox_count(), before)
        cmds = commands(self.audit, sess)
        self.assertIn(("A2", "NOOP", "OK"), cmds)
        self.assertFalse([c for c in cmds if c[0] in ("A1", "E1")], cmds)

    def test_lf_only_login_logs_in_no_one_and_records_no_password(self):
        # the LOGIN whose password a lenient parser took for a tag
        s, _ = self.mux.raw_tls()
        s.sendall(b"p1 LOGIN {5}\nalice {6}\nZq9Xw7\np2 NOOP\r\n")
        out = until_tag(s, b"p2")
        s.close()
        self.assertIn(b"p1 BAD Line must end in CRLF", out)
        self.assertNotIn(b" OK [CAPABILITY", out)
        self.assertIn(b"p2 OK", out)
        time.sleep(0.5)
        with open(self.audit, encoding="utf-8") as f:
            audit = f.read()
        self.assertNotIn("Zq9Xw7", audit)
        self.assertNotIn("Zq9Xw7", self.mux.log_text())
        self.assertIn('"tag":"p2"', audit)

    def test_unauthenticate_and_login_after_login_are_refused(self):
        s = self.login()
        s.sendall(b"u1 UNAUTHENTICATE\r\nu2 LOGIN alice x\r\nu3 NOOP\r\n")
        out = until_tag(s, b"u3")
        s.close()
        self.assertIn(b"u1 BAD", out)
        self.assertIn(b"u2 BAD Already logged in", out)
        self.assertIn(b"u3 OK", out)

    def test_what_is_relayed_is_recorded(self):
        s = self.login()
        sess = self.session_of_last_login()
        msg = harness.sample_message("gate")
        s.sendall(b"r1 SELECT INBOX\r\nr2 APPEND INBOX {%d}\r\n" % len(msg))
        out = b""
        while b"+ " not in out:
            out += s.recv(4096)
        s.sendall(msg + b"\r\nr3 UID SEARCH SUBJECT {4}\r\n")
        while out.count(b"+ ") < 2:
            out += s.recv(4096)
        s.sendall(b"gate\r\nr4 LOGOUT\r\n")
        out += harness.read_all(s, timeout=5)
        s.close()
        for t in (b"r1 OK", b"r2 OK", b"r3 OK"):
            self.assertIn(t, out)
        time.sleep(0.3)
        got = [(t, c) for t, c, _ in commands(self.audit, sess)]
        self.assertEqual(got[-4:], [("r1", "SELECT"), ("r2", "APPEND"), ("r3", "SEARCH"),
                                    ("r4", "LOGOUT")])


class Inflater:
    """The client's side of RFC 4978 over a TLS socket."""

    def __init__(self, sock):
        self.sock = sock
        self.z = zlib.decompressobj(-15)
        self.c = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH))

    def until(self, marker, timeout=30):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError("no %r; got %r" % (marker, self.buf[-300:]))
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("closed; got %r" % self.buf[-300:])
            self.buf += self.z.decompress(data)
        i = self.buf.index(marker)
        end = self.buf.index(b"\r\n", i) + 2
        out, self.buf = self.buf[:end], self.buf[end:]
        return out


class CompressTest(DovecotBehind):
    # a 2 MB message with a body that does not compress
    big = harness.sample_message("big", body=os.urandom(1 << 20).hex() + "\r\n")

    @classmethod
    def messages(cls):
        return [cls.big]

    def test_compress_end_to_end(self):
        s, _ = self.mux.raw_tls(timeout=30)
        s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\n")
        ok = until_tag(s, b"a")
        self.assertIn(b"COMPRESS=DEFLATE", ok)
        s.sendall(b"z COMPRESS DEFLATE\r\n")
        self.assertEqual(read_line(s), b"z OK DEFLATE active\r\n")
        c = Inflater(s)
        c.send(b"b SELECT INBOX\r\n")
        self.assertIn(b"b OK", c.until(b"b OK"))
        c.send(b"c FETCH 1 BODY.PEEK[]\r\n")
        head = c.until(b"BODY[] {")
        size = int(head.rsplit(b"{", 1)[1].split(b"}")[0])
        while len(c.buf) < size:
            data = s.recv(65536)
            self.assertTrue(data)
            c.buf += c.z.decompress(data)
        body, c.buf = c.buf[:size], c.buf[size:]
        self.assertEqual(body, self.big)
        self.assertIn(b"c OK", c.until(b"c OK"))
        c.send(b"d IDLE\r\n")
        c.until(b"+ ")
        c.send(b"DONE\r\n")
        self.assertIn(b"d OK", c.until(b"d OK"))
        c.send(b"e CAPABILITY\r\n")
        caps = c.until(b"e OK")
        c.send(b"f LOGOUT\r\n")
        self.assertIn(b"* BYE", c.until(b"* BYE"))
        s.close()
        time.sleep(0.5)
        got = [(t, n, st) for t, n, st in commands(self.audit)]
        for want in (("z", "COMPRESS", "OK"), ("b", "SELECT", "OK"), ("c", "FETCH", "OK"),
                     ("d", "IDLE", "OK"), ("e", "CAPABILITY", "OK"), ("f", "LOGOUT", "OK")):
            self.assertIn(want, got)
        self.assertNotIn(b"UNAUTHENTICATE", caps)

    def test_compress_twice_and_other_mechanisms(self):
        s, _ = self.mux.raw_tls(timeout=30)
        s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\n")
        until_tag(s, b"a")
        s.sendall(b"y COMPRESS XZ\r\n")
        self.assertTrue(read_line(s).startswith(b"y NO"))
        s.sendall(b"z COMPRESS DEFLATE\r\n")
        self.assertEqual(read_line(s), b"z OK DEFLATE active\r\n")
        c = Inflater(s)
        c.send(b"z2 COMPRESS DEFLATE\r\n")
        self.assertIn(b"z2 NO [COMPRESSIONACTIVE]", c.until(b"z2 "))
        c.send(b"q NOOP\r\n")
        self.assertIn(b"q OK", c.until(b"q OK"))
        s.close()

    def test_corrupt_stream_ends_the_session(self):
        s, _ = self.mux.raw_tls(timeout=30)
        s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\n")
        until_tag(s, b"a")
        s.sendall(b"z COMPRESS DEFLATE\r\n")
        self.assertEqual(read_line(s), b"z OK DEFLATE active\r\n")
        s.sendall(b"\xff\xff\xff\xff not deflate at all")
        data = harness.read_all(s, timeout=5)
        s.close()
        # the connection ends; nothing readable as a command reached the backend
        self.assertLess(len(data), 200)
        s2, _ = self.mux.raw_tls()
        s2.sendall(b"n NOOP\r\n")
        self.assertEqual(read_line(s2), b"n OK NOOP completed\r\n")
        s2.close()


if __name__ == "__main__":
    unittest.main()

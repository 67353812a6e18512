"""Capability lists after login: the client sees one list, the login OK's,
wherever it looks.  Against a real Dovecot that announces UNAUTHENTICATE,
STARTTLS, AUTH=PLAIN and COMPRESS=DEFLATE after login too, the answer to
CAPABILITY is the login OK's list (with imapmux's own COMPRESS=DEFLATE once,
or none with relay.compress off), also inside a COMPRESS=DEFLATE stream.  A
[CAPABILITY] response code in a tagged or untagged status response is
rewritten the same way; as Dovecot sends one only in the login OK, a small
scripted backend sends those, and a literal holding capability text passes
unchanged."""
import re
import socket
import threading
import unittest
import zlib

import harness
from harness import LOOPBACK, read_line

USERS = {"alice": "alice-pw-Capa"}
REMOVED = re.compile(rb"^(STARTTLS|LOGINDISABLED|AUTH=.*|SASL-IR|COMPRESS=.*|UNAUTHENTICATE)$",
                     re.I)
# added on top of Dovecot's own list after login
EXTRA_CAPA = b"UNAUTHENTICATE STARTTLS AUTH=PLAIN COMPRESS=DEFLATE X-IMAPMUX-TEST"


def until_tag(sock, tag, timeout=20):
    return b"".join(harness.read_until_tag(sock, tag.decode(), timeout=timeout))


def code_list(line):
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", line, re.I)
    assert m is not None, line
    return m.group(1).split()


def untagged_list(out):
    lines = [l for l in out.split(b"\r\n") if l.upper().startswith(b"* CAPABILITY")]
    assert len(lines) == 1, out
    return lines[0].split()[2:]


class CapabilityChecks:
    def check_list(self, caps, compress=True):
        self.assertFalse([c for c in caps if REMOVED.match(c) and c != b"COMPRESS=DEFLATE"], caps)
        self.assertEqual(caps.count(b"COMPRESS=DEFLATE"), 1 if compress else 0, caps)
        self.assertEqual(len(caps), len(set(c.upper() for c in caps)), caps)


class DovecotCapabilities(unittest.TestCase, CapabilityChecks):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.dovecot = harness.Dovecot(cls.tmp.path, users=USERS,
                                      extra_conf="imap_capability = +%s\n"
                                      % EXTRA_CAPA.decode()).start()
        backends = [{"name": "local", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=1).start()
        cls.mux_plain = harness.Imapmux(cls.tmp.path, backends, workers=1, name="nocompress")
        with open(cls.mux_plain.conf, "a") as f:
            f.write("relay: {compress: false}\n")
        cls.mux_plain.start()

    @classmethod
    def tearDownClass(cls):
        for mux in (cls.mux, cls.mux_plain):
            if mux.alive():
                mux.stop()
            log = mux.log_text()
            if "ERROR: AddressSanitizer" in log or "runtime error:" in log:
                raise AssertionError("sanitizer report:\n" + log[-6000:])
        cls.dovecot.stop()
        cls.tmp.close()

    def login(self, mux):
        s, _ = mux.raw_tls(timeout=20)
        s.sendall(b"a LOGIN alice " + USERS["alice"].encode() + b"\r\n")
        out = until_tag(s, b"a")
        self.assertIn(b"a OK", out)
        return s, code_list(out.split(b"\r\n")[-2])

    def test_dovecot_announces_what_is_to_be_filtered(self):
        # the backend really sends them: else the test below proves nothing
        m = self.dovecot.client()
        m.login("alice", USERS["alice"])
        typ, data = m.capability()
        m.logout()
        caps = data[0].split()
        for c in EXTRA_CAPA.split():
            self.assertIn(c, caps)

    def test_capability_command_gets_the_login_list(self):
        s, at_login = self.login(self.mux)
        self.check_list(at_login)
        self.assertIn(b"X-IMAPMUX-TEST", at_login)
        s.sendall(b"c CAPABILITY\r\n")
        out = until_tag(s, b"c")
        self.assertIn(b"c OK", out)
        self.assertEqual(untagged_list(out), at_login)
        # twice, and pipelined with other commands: the rest passes unchanged
        s.sendall(b"d NOOP\r\ne CAPABILITY\r\nf STATUS INBOX (MESSAGES)\r\n")
        out = until_tag(s, b"f")
        self.assertIn(b"d OK", out)
        self.assertIn(b"* STATUS INBOX (MESSAGES 0)", out)
        self.assertEqual(untagged_list(out), at_login)
        s.close()

    def test_without_compress_no_compress_at_all(self):
        s, at_login = self.login(self.mux_plain)
        self.check_list(at_login, compress=False)
        s.sendall(b"c CAPABILITY\r\n")
        out = until_tag(s, b"c")
        self.assertEqual(untagged_list(out), at_login)
        s.close()

    def test_inside_a_compressed_stream(self):
        s, at_login = self.login(self.mux)
        s.sendall(b"z COMPRESS DEFLATE\r\n")
        self.assertEqual(read_line(s), b"z OK DEFLATE active\r\n")
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        de = zlib.decompressobj(-15)
        s.sendall(co.compress(b"c CAPABILITY\r\n") + co.flush(zlib.Z_SYNC_FLUSH))
        out = b""
        s.settimeout(10)
        while b"\r\nc " not in out:
            chunk = s.recv(65536)
            self.assertTrue(chunk, out)
            out += de.decompress(chunk)
        self.assertEqual(untagged_list(out), at_login)
        s.close()


class ScriptedBackend:
    """A scripted IMAP server (one thread per connection) for the response
    code case: its NOOP answers carry [CAPABILITY] codes, its FETCH a
    literal that reads like capability lines."""

    CAPA = b"IMAP4rev1 STARTTLS AUTH=PLAIN COMPRESS=DEFLATE UNAUTHENTICATE IDLE X-SCRIPTED"
    LITERAL = b"* CAPABILITY STARTTLS AUTH=X\r\nq OK [CAPABILITY STARTTLS] no\r\n"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(60)
        try:
            c.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted ready\r\n")
            f = c.makefile("rb")
            for _ in range(1000):
                line = f.readline()
                if not line:
                    return
                parts = line.rstrip(b"\r\n").split(b" ")
                tag, cmd = parts[0], (parts[1].upper() if len(parts) > 1 else b"")
                if cmd == b"CAPABILITY":
                    c.sendall(b"* CAPABILITY " + self.CAPA + b"\r\n" + tag + b" OK done\r\n")
                elif cmd == b"LOGIN":
                    c.sendall(tag + b" OK [CAPABILITY " + self.CAPA + b"] Logged in\r\n")
                elif cmd == b"AUTHENTICATE":
                    if len(parts) < 4:
                        c.sendall(b"+ \r\n")
                        f.readline()
                    c.sendall(tag + b" OK [CAPABILITY " + self.CAPA + b"] Logged in\r\n")
                elif cmd == b"NOOP":
                    c.sendall(b"* OK [CAPABILITY " + self.CAPA + b"] untagged\r\n" + tag +
                              b" OK [CAPABILITY " + self.CAPA + b"] NOOP done\r\n")
                elif cmd == b"FETCH":
                    c.sendall(b"* 1 FETCH (BODY[] {%d}\r\n" % len(self.LITERAL) + self.LITERAL +
                              b")\r\n" + tag + b" OK FETCH done\r\n")
                elif cmd == b"LOGOUT":
                    c.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                else:
                    c.sendall(tag + b" OK done\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


class ResponseCode(unittest.TestCase, CapabilityChecks):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.backend = ScriptedBackend()
        backends = [{"name": "scripted", "host": LOOPBACK, "port": cls.backend.port,
                     "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=1).start()

    @classmethod
    def tearDownClass(cls):
        if cls.mux.alive():
            cls.mux.stop()
        log = cls.mux.log_text()
        cls.backend.close()
        cls.tmp.close()
        if "ERROR: AddressSanitizer" in log or "runtime error:" in log:
            raise AssertionError("sanitizer report:\n" + log[-6000:])

    def test_codes_rewritten_literal_untouched(self):
        s, _ = self.mux.raw_tls(timeout=20)
        s.sendall(b"a LOGIN alice pw\r\n")
        out = until_tag(s, b"a")
        at_login = code_list(out.split(b"\r\n")[-2])
        self.check_list(at_login)
        self.assertIn(b"X-SCRIPTED", at_login)
        s.sendall(b"n NOOP\r\n")
        out = until_tag(s, b"n")
        lines = out.split(b"\r\n")
        self.assertEqual(code_list(lines[0]), at_login, out)
        self.assertTrue(lines[0].endswith(b"] untagged"), out)
        self.assertEqual(code_list(lines[1]), at_login, out)
        self.assertTrue(lines[1].endswith(b"] NOOP done"), out)
        s.sendall(b"f FETCH 1 BODY[]\r\n")
        out = until_tag(s, b"f")
        lit = ScriptedBackend.LITERAL
        self.assertEqual(out, b"* 1 FETCH (BODY[] {%d}\r\n" % len(lit) + lit +
                         b")\r\nf OK FETCH done\r\n")
        s.sendall(b"c CAPABILITY\r\n")
        self.assertEqual(untagged_list(until_tag(s, b"c")), at_login)
        s.close()


if __name__ == "__main__":
    unittest.main()

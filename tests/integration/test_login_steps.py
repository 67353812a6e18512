"""The login's steps and its one refusal path, seen from outside: every
refusal is counted, a login that times out says in which step, and backend
log lines carry the session they work for."""
import base64
import re
import socket
import threading
import unittest

import harness
from harness import read_line, read_until_tag


def final_stats(log):
    """The counters of the last stats line (one worker)."""
    totals = {}
    for line in log.splitlines():
        if ": stats " in line:
            for k, v in re.findall(r"(\w+)=(\d+)", line.split(": stats ", 1)[1]):
                totals[k] = int(v)
    return totals


class SilentBackend:
    """A TCP listener on loopback that accepts and never says a word: a
    backend stuck before its greeting."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((harness.LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


class RefusalsCountedTest(unittest.TestCase):
    """Refusals found before any lookup (a login name that cannot be a login,
    a NUL in the password) count as failed logins like the others."""

    def test_every_refusal_is_counted(self):
        with harness.TempDir() as tmp:
            dovecot = harness.Dovecot(tmp.path, users={"alice": "pw"}).start()
            try:
                backend = {"name": "main", "host": harness.LOOPBACK, "port": dovecot.port,
                           "tls": "none"}
                mux = harness.Imapmux(tmp.path, [backend], workers=1,
                                      limits={"max_auth_failures": 10}).start()
                try:
                    s, _ = mux.raw_tls()
                    s.sendall(b"a LOGIN \"bad name\" pw\r\n")
                    self.assertTrue(read_line(s).startswith(b"a NO [AUTHENTICATIONFAILED]"))
                    s.sendall(b"b LOGIN alice {3+}\r\np\x00w\r\n")
                    self.assertTrue(read_line(s).startswith(b"b NO [AUTHENTICATIONFAILED]"))
                    s.sendall(b"c LOGIN alice wrong\r\n")
                    self.assertIn(b"c NO [AUTHENTICATIONFAILED]", b"".join(read_until_tag(s, "c", 30)))
                    s.sendall(b"d LOGIN alice pw\r\n")
                    self.assertIn(b"d OK", b"".join(read_until_tag(s, "d", 30)))
                    s.close()
                finally:
                    self.assertEqual(mux.stop(), 0)
                log = mux.log_text()
                st = final_stats(log)
                self.assertEqual(st.get("logins_failed"), 3, log[-3000:])
                self.assertEqual(st.get("logins_ok"), 1)
                self.assertIn("login failed: unusable login name", log)
                self.assertIn("login failed: NUL in the password", log)
            finally:
                dovecot.stop()


class StepInLogTest(unittest.TestCase):

    def test_timeout_names_the_step(self):
        silent = SilentBackend()
        try:
            with harness.TempDir() as tmp:
                backend = {"name": "stuck", "host": harness.LOOPBACK, "port": silent.port,
                           "tls": "none"}
                mux = harness.Imapmux(tmp.path, [backend], workers=1,
                                      limits={"preauth_timeout_ms": 1500,
                                              "backend_greeting_timeout_ms": 20000}).start()
                try:
                    s, _ = mux.raw_tls(timeout=15)
                    s.sendall(b"a LOGIN alice pw\r\n")
                    line = read_line(s)
                    self.assertEqual(line, b"* BYE Pre-authentication timeout\r\n")
                    s.close()
                finally:
                    self.assertEqual(mux.stop(), 0)
                log = mux.log_text()
                self.assertRegex(log, r"closed: login timed out in step=backend")
        finally:
            silent.close()

    def test_backend_lines_carry_the_session(self):
        with harness.TempDir() as tmp:
            closed = harness.free_port()  # nothing listens there
            backend = {"name": "gone", "host": harness.LOOPBACK, "port": closed, "tls": "none"}
            mux = harness.Imapmux(tmp.path, [backend], workers=1).start()
            try:
                s, _ = mux.raw_tls()
                s.sendall(b"a LOGIN alice pw\r\n")
                self.assertIn(b"a NO [UNAVAILABLE]", b"".join(read_until_tag(s, "a", 30)))
                s.close()
            finally:
                self.assertEqual(mux.stop(), 0)
            log = mux.log_text()
            m = re.search(r"session=(w0-\d+) backend=gone\(127\.0\.0\.1:%d\) state=connect: "
                          r"connect failed" % closed, log)
            self.assertIsNotNone(m, log[-3000:])
            # the session's own refusal names the same session and the step
            self.assertRegex(log, r"session=%s .*state=logging-in step=backend: login failed: "
                                  r"backend unavailable" % m.group(1))


class AuthzidTest(unittest.TestCase):
    """A SASL authorization identity other than the login, in pass-through
    mode, is refused by imapmux unless the backend is configured to decide."""

    def run_plain(self, backend_extra):
        with harness.TempDir() as tmp:
            dovecot = harness.Dovecot(tmp.path, users={"alice": "pw", "bob": "pw2"}).start()
            try:
                backend = {"name": "main", "host": harness.LOOPBACK, "port": dovecot.port,
                           "tls": "none"}
                backend.update(backend_extra)
                mux = harness.Imapmux(tmp.path, [backend], workers=1).start()
                try:
                    s, _ = mux.raw_tls()
                    msg = base64.b64encode(b"bob\0alice\0pw")
                    s.sendall(b"a AUTHENTICATE PLAIN " + msg + b"\r\n")
                    answer = b"".join(read_until_tag(s, "a", 30))
                    s.sendall(b"b LOGIN alice pw\r\n")
                    self.assertIn(b"b OK", b"".join(read_until_tag(s, "b", 30)))
                    s.close()
                finally:
                    self.assertEqual(mux.stop(), 0)
                return answer, mux.log_text(), dovecot.log_text()
            finally:
                dovecot.stop()

    def test_refused_without_asking_the_backend(self):
        answer, log, dlog = self.run_plain({})
        self.assertTrue(answer.startswith(b"a NO [AUTHORIZATIONFAILED]"), answer)
        self.assertIn("login failed: authorization identity differs from the login: alice", log)
        # routed and logged as the user acted as
        self.assertRegex(log, r"user=bob .*login failed: authorization identity")
        # the backend saw one login: the LOGIN that followed
        self.assertEqual(dlog.count("imap-login: Info: Login:"), 1, dlog[-2000:])
        self.assertNotIn("auth failed", dlog)

    def test_the_backend_decides_when_configured(self):
        answer, log, dlog = self.run_plain({"passthrough_authzid": True})
        # Dovecot knows no master users here: it refuses, but it was asked
        self.assertTrue(answer.startswith(b"a NO"), answer)
        self.assertNotIn("authorization identity differs", log)
        self.assertIn("login failed: refused by the backend", log)


if __name__ == "__main__":
    unittest.main()

"""Faults: wrong passwords, backends down, slow or dying, client gone, drain."""
import socket
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line, read_until_tag, read_all, read_to_eof


class AuthFailureTest(harness.ProxyTestCase):
    """Dovecot delays repeated failures from one address (up to 15 s), so
    reads after a failed login wait up to 40 s."""
    limits = {"max_auth_failures": 3}

    def test_wrong_password_then_right_one(self):
        s, _ = self.mux.raw_tls(timeout=40)
        s.sendall(b"a LOGIN alice wrong\r\n")
        self.assertTrue(read_line(s).startswith(b"a NO [AUTHENTICATIONFAILED]"))
        s.sendall(b"b LOGIN alice pw\r\n")
        self.assertTrue(read_until_tag(s, "b", timeout=40)[-1].startswith(b"b OK [CAPABILITY"))
        s.close()

    def test_unknown_user_answers_like_wrong_password(self):
        s, _ = self.mux.raw_tls(timeout=40)
        s.sendall(b"a LOGIN alice wrong\r\n")
        wrong = read_line(s)
        s.sendall(b"b LOGIN nosuchuser wrong\r\n")
        unknown = read_line(s)
        self.assertEqual(wrong[1:], unknown[1:])
        s.close()

    def test_failure_limit_ends_in_bye(self):
        s, _ = self.mux.raw_tls(timeout=40)
        for tag in (b"a", b"b", b"c"):
            s.sendall(tag + b" LOGIN alice wrong\r\n")
            self.assertTrue(read_line(s).startswith(tag + b" NO [AUTHENTICATIONFAILED]"))
        rest = read_to_eof(s, timeout=5)
        self.assertTrue(rest.startswith(b"* BYE Too many failed logins"), rest)
        s.close()
        self.assertServing()

    def test_client_vanishing_closes_backend(self):
        before = self.dovecot.log_text().count("Disconnected")
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN bob pw2\r\n")
        read_until_tag(s, "a")
        s.sendall(b"b SELECT INBOX\r\n")
        read_until_tag(s, "b")
        s.close()  # no LOGOUT
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.dovecot.log_text().count("Disconnected") > before:
                break
            time.sleep(0.1)
        self.assertGreater(self.dovecot.log_text().count("Disconnected"), before)


class SilentBackend:
    """A TCP server that accepts and never greets."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except socket.timeout:
                pass

    def close(self):
        self.stop = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


class BackendDownTest(unittest.TestCase):
    def test_backend_refusing_and_silent(self):
        silent = SilentBackend()
        tmp = harness.TempDir()
        mux = None
        try:
            cert = harness.make_cert(tmp.path)
            closed_port = harness.free_port()  # nothing listens there
            mux = harness.Imapmux(
                tmp.path,
                [{"name": "down", "host": LOOPBACK, "port": closed_port, "tls": "none"},
                 {"name": "silent", "host": LOOPBACK, "port": silent.port, "tls": "none"}],
                cert, routes={"default": "down", "users": {"slow": "silent"}},
                limits={"backend_greeting_timeout_ms": 1000}).start()
            s, _ = mux.raw_tls()
            start = time.monotonic()
            s.sendall(b"a LOGIN alice pw\r\n")
            line = read_line(s)
            self.assertTrue(line.startswith(b"a NO [UNAVAILABLE]"), line)
            self.assertLess(time.monotonic() - start, 5)
            start = time.monotonic()
            s.sendall(b"b LOGIN slow pw\r\n")
            line = read_line(s)
            self.assertTrue(line.startswith(b"b NO [UNAVAILABLE]"), line)
            self.assertLess(time.monotonic() - start, 6)
            s.sendall(b"c NOOP\r\n")  # the connection stays usable
            self.assertEqual(read_line(s), b"c OK NOOP completed\r\n")
            s.close()
            log = mux.log_text()
            self.assertIn("backend unavailable", log)
            self.assertEqual(mux.stop(), 0)
            mux = None
        finally:
            if mux is not None:
                mux.stop()
            silent.close()
            tmp.close()


class BackendDeathTest(unittest.TestCase):
    def test_backend_killed_mid_session_other_session_carries_on(self):
        tmp = harness.TempDir()
        d1 = d2 = mux = None
        try:
            cert = harness.make_cert(tmp.path)
            d1 = harness.Dovecot(tmp.path, users={"alice": "pw"}, name="d1").start()
            d2 = harness.Dovecot(tmp.path, users={"bob": "pw2"}, name="d2").start()
            d2.add_message("bob", harness.sample_message("still here"))
            mux = harness.Imapmux(
                tmp.path,
                [{"name": "main", "host": LOOPBACK, "port": d1.port, "tls": "none"},
                 {"name": "other", "host": LOOPBACK, "port": d2.port, "tls": "none"}],
                cert, routes={"default": "main", "users": {"alice": "main", "bob": "other"}}).start()
            a = mux.ssl_client()
            a.login("alice", "pw")
            a.select("INBOX")
            b = mux.ssl_client()
            b.login("bob", "pw2")
            b.select("INBOX")
            self.assertEqual(d1.login_count(), 1)
            self.assertEqual(d2.login_count(), 2)  # add_message and bob's session
            killed = time.monotonic()
            d1.kill()
            got = read_to_eof(a.sock, timeout=10)
            self.assertIn(b"* BYE [UNAVAILABLE] Backend connection lost", got)
            self.assertLess(time.monotonic() - killed, 10)
            # bob's session, on the other backend, carries on
            self.assertEqual(b.noop()[0], "OK")
            typ, n = b.select("INBOX")
            self.assertEqual(typ, "OK", n)
            self.assertEqual(int(n[0]), 1)
            typ, d = b.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            self.assertEqual(typ, "OK")
            self.assertIn(b"still here", d[0][1])
            b.logout()
            # a new login for alice now fails cleanly, bob's still works
            s, _ = mux.raw_tls()
            s.sendall(b"c LOGIN alice pw\r\n")
            line = read_line(s)
            self.assertTrue(line.startswith(b"c NO [UNAVAILABLE]"), line)
            s.sendall(b"d LOGIN bob pw2\r\n")
            self.assertTrue(read_until_tag(s, "d")[-1].startswith(b"d OK [CAPABILITY"))
            s.close()
            self.assertIn("backend connection lost", mux.log_text())
            self.assertEqual(mux.stop(), 0)
            mux = None
        finally:
            if mux is not None:
                mux.stop()
            for d in (d1, d2):
                if d is not None:
                    d.stop()
            tmp.close()


class DrainTest(unittest.TestCase):
    def test_sigterm_drains_and_exits_zero(self):
        tmp = harness.TempDir()
        dov = mux = None
        try:
            cert = harness.make_cert(tmp.path)
            dov = harness.Dovecot(tmp.path).start()
            mux = harness.Imapmux(tmp.path, [{"name": "m", "host": LOOPBACK, "port": dov.port,
                                              "tls": "none"}], cert,
                                  limits={"drain_timeout_ms": 1500}).start()
            pre, _ = mux.raw_plain()
            logged, _ = mux.raw_tls()
            logged.sendall(b"a LOGIN alice pw\r\n")
            read_until_tag(logged, "a")
            start = time.monotonic()
            mux.proc.send_signal(15)
            pre_got = read_all(pre, timeout=5)
            self.assertTrue(pre_got.startswith(b"* BYE [UNAVAILABLE] Server shutting down"), pre_got)
            # logged-in sessions may finish their work during the drain
            logged.sendall(b"b NOOP\r\n")
            self.assertTrue(read_until_tag(logged, "b")[-1].startswith(b"b OK"))
            rest = read_all(logged, timeout=10)
            self.assertIn(b"* BYE [UNAVAILABLE] Server shutting down", rest)
            self.assertGreater(time.monotonic() - start, 1.0)
            rc = mux.proc.wait(15)
            self.assertEqual(rc, 0)
            # new connections are refused once draining
            with self.assertRaises(OSError):
                socket.create_connection((LOOPBACK, mux.tls_port), timeout=2)
        finally:
            if mux is not None:
                mux.stop()
            if dov is not None:
                dov.stop()
            tmp.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""STARTTLS command injection, server side (RFC 9051 section 11.1): bytes a
backend (or someone on the path) sends in cleartext right after the tagged OK
to STARTTLS must not be taken as the backend's word.  A fake backend in a
thread answers STARTTLS with "S OK" and, in the same send, an untagged line;
imapmux must refuse the login with NO [UNAVAILABLE], name the reason in its
log, and never send the credentials.  The same fake without the injected
bytes lets the login through, for direct logins and warm pool connections."""
import socket
import ssl
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line, read_until_tag

INJECTED = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n"
REASON = "backend sent data after its STARTTLS answer"
MAX_LINES_PER_CONN = 50      # commands a fake backend connection answers at most
CONN_TIMEOUT_S = 10          # a fake backend connection idle this long is dropped


class FakeBackend:
    """A raw-socket IMAP server on a free loopback port, one thread per
    connection: greeting, STARTTLS (optionally followed by INJECTED in the
    same send), TLS with the given certificate, then CAPABILITY, AUTHENTICATE
    and LOGOUT answered by tag."""

    def __init__(self, cert, inject):
        self.inject = inject
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert[0], cert[1])
        self.lock = threading.Lock()
        self.tls_sessions = 0   # handshakes that completed
        self.commands = []      # (tls, line) for every command line received
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _record(self, tls, line):
        with self.lock:
            self.commands.append((tls, line))

    def _serve(self, conn):
        conn.settimeout(CONN_TIMEOUT_S)
        try:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
            line = read_line(conn)
            self._record(False, line)
            if line != b"S STARTTLS\r\n":
                return
            # one send: the OK and whatever follows reach imapmux in one read
            conn.sendall(b"S OK go\r\n" + (INJECTED if self.inject else b""))
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return  # imapmux refused to go on: expected with the injection
            with self.lock:
                self.tls_sessions += 1
            conn = tls
            for _ in range(MAX_LINES_PER_CONN):
                line = read_line(conn)
                if not line:
                    return
                self._record(True, line)
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                cmd = rest.split(b" ", 1)[0].upper()
                if cmd == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID\r\n" +
                                 tag + b" OK done\r\n")
                elif cmd == b"AUTHENTICATE":
                    conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 ID] logged in\r\n")
                elif cmd == b"LOGOUT":
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                else:
                    conn.sendall(tag + b" OK " + cmd + b" done\r\n")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def seen(self):
        with self.lock:
            return list(self.commands), self.tls_sessions

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(CONN_TIMEOUT_S + 2)


def wait_for(predicate, timeout=15.0):
    """Polls predicate (bounded in time); returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(0.1)
        value = predicate()
    return value


class BackendStarttlsInjectionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.fakes = []
        cls.mux = None
        try:
            cls.cert = harness.make_cert(cls.tmp.path)
            cls.bad = cls._fake(inject=True)
            cls.good = cls._fake(inject=False)
            cls.warm_bad = cls._fake(inject=True)
            cls.warm_good = cls._fake(inject=False)

            def backend(name, fake, pool=0):
                b = {"name": name, "host": LOOPBACK, "port": fake.port, "tls": "starttls",
                     "ca_file": cls.cert[0], "server_name": "localhost"}
                if pool:
                    b["pool_size"] = pool
                return b

            backends = [backend("inj", cls.bad), backend("ok", cls.good),
                        backend("winj", cls.warm_bad, pool=1),
                        backend("wok", cls.warm_good, pool=1)]
            cls.mux = harness.Imapmux(cls.tmp.path, backends, cls.cert, workers=1,
                                      routes={"default": "ok",
                                              "users": {"alice": "inj", "carol": "ok",
                                                        "dave": "winj", "erin": "wok"}}).start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def _fake(cls, inject):
        f = FakeBackend(cls.cert, inject)
        cls.fakes.append(f)
        return f

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "mux", None) is not None:
            assert cls.mux.stop() == 0
        for f in getattr(cls, "fakes", []):
            f.stop()
        cls.tmp.close()

    def login(self, user, password):
        s, greeting = self.mux.raw_tls()
        self.assertTrue(greeting.startswith(b"* OK"), greeting)
        s.sendall(b"a LOGIN " + user + b" " + password + b"\r\n")
        lines = read_until_tag(s, "a")
        self.assertTrue(lines, "no answer to LOGIN")
        return s, lines[-1]

    def assert_refused(self, fake, user):
        s, answer = self.login(user, b"secret-pw")
        s.close()
        self.assertTrue(answer.startswith(b"a NO [UNAVAILABLE]"), answer)
        commands, tls_sessions = fake.seen()
        # the handshake never started and nothing but STARTTLS went out
        self.assertEqual(tls_sessions, 0)
        self.assertTrue(commands)
        self.assertEqual({line for _, line in commands}, {b"S STARTTLS\r\n"})
        log = self.mux.log_text()
        self.assertIn("login failed: backend unavailable: " + REASON, log)
        self.assertNotIn("secret-pw", log)

    def assert_logged_in(self, fake, user):
        s, answer = self.login(user, b"pw")
        self.assertTrue(answer.startswith(b"a OK"), answer)
        s.sendall(b"b LOGOUT\r\n")
        self.assertTrue(read_until_tag(s, "b")[-1].startswith(b"b OK"))
        s.close()
        commands, tls_sessions = fake.seen()
        self.assertGreaterEqual(tls_sessions, 1)
        over_tls = [line for tls, line in commands if tls]
        # capabilities are asked again over TLS, then the login goes out
        self.assertTrue(any(line.endswith(b" CAPABILITY\r\n") for line in over_tls), over_tls)
        self.assertTrue(any(line.startswith(b"L AUTHENTICATE PLAIN ") for line in over_tls),
                        over_tls)

    def test_injection_after_starttls_refused(self):
        self.assert_refused(self.bad, b"alice")

    def test_clean_starttls_logs_in(self):
        self.assert_logged_in(self.good, b"carol")

    def test_warm_connection_with_injection_refused(self):
        # the pool's own connections fail with the same reason...
        self.assertTrue(wait_for(lambda: "warm connection failed" in self.mux.log_text() and
                                 REASON in self.mux.log_text()), self.mux.log_text()[-3000:])
        # ...and a login on that backend gets no connection that went wrong
        self.assert_refused(self.warm_bad, b"dave")

    def test_warm_connection_clean_logs_in(self):
        ready = "warm connection to backend wok host %s:%d ready" % (LOOPBACK, self.warm_good.port)
        self.assertTrue(wait_for(lambda: ready in self.mux.log_text()), self.mux.log_text()[-3000:])
        self.assert_logged_in(self.warm_good, b"erin")


if __name__ == "__main__":
    unittest.main(verbosity=2)

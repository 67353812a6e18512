"""Connection caps and the bounded password check queue, against real
Dovecot and Redis: a source over its cap gets a clear BYE, and a flood of
expensive logins gets NO [UNAVAILABLE] at once while a pass-through login
from another address is not held up."""
import socket
import threading
import time
import unittest
import warnings

import harness
from harness import LOOPBACK, read_line, read_until_tag

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


def connect_from(port, source, timeout=10):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((LOOPBACK, port))
    return s


class CapsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.dovecot = harness.Dovecot(cls.tmp.path, users={"alice": "pw"}).start()
        backends = [{"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=2,
                                  limits={"max_connections": 4,
                                          "max_connections_per_ip": 2}).start()

    @classmethod
    def tearDownClass(cls):
        cls.mux.stop()
        cls.dovecot.stop()
        cls.tmp.close()

    def greet(self, source):
        s = connect_from(self.mux.plain_port, source)
        return s, read_line(s)

    def wait_for_free_places(self):
        """The readiness probes' connections count until their sessions are
        freed: wait (bounded) until all four places can be had, then give
        them back."""
        deadline = time.monotonic() + 10
        while True:
            held = [self.greet("127.0.0.9") for _ in range(2)] + \
                [self.greet("127.0.0.10") for _ in range(2)]
            ok = all(g.startswith(b"* OK") for _, g in held)
            for s, _ in held:
                s.close()
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertTrue(ok, "places taken by connections that are gone")
        time.sleep(1)  # the four just closed are freed in a few loop turns

    def test_per_address_and_total(self):
        self.wait_for_free_places()
        a1, g1 = self.greet("127.0.0.2")
        a2, g2 = self.greet("127.0.0.2")
        a3, g3 = self.greet("127.0.0.2")
        self.assertTrue(g1.startswith(b"* OK") and g2.startswith(b"* OK"))
        self.assertEqual(g3, b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
        # another address still gets in, up to the total
        b1, h1 = self.greet("127.0.0.3")
        b2, h2 = self.greet("127.0.0.3")
        self.assertTrue(h1.startswith(b"* OK") and h2.startswith(b"* OK"))
        c1, k1 = self.greet("127.0.0.4")
        self.assertTrue(k1.startswith(b"* BYE [UNAVAILABLE]"), k1)
        for s in (a1, a3, b1, c1):
            s.close()
        # the places come back once the sessions end
        deadline = time.monotonic() + 10
        while True:
            s, g = self.greet("127.0.0.2")
            s.close()
            if g.startswith(b"* OK") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(g.startswith(b"* OK"), g)
        a2.close()
        b2.close()
        log = self.mux.log_text()
        self.assertIn("connection cap of the address reached", log)
        self.assertIn("connection cap reached (limits.max_connections)", log)


class VerifyQueueTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.redis = harness.Redis(cls.tmp.path).start()
        cls.dovecot = harness.Dovecot(cls.tmp.path, users={"alice": "x", "pat": "pat-pw"}).start()
        slow = crypt.crypt("alice-pw", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 12))
        cls.redis.cmd("HSET", "imapmux:user:alice", "password", slow, "backend", "main")
        backends = [{"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none",
                     "auth": "master", "master_user": "proxy", "master_password": "m"},
                    {"name": "pass", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=1, routes={"default": "pass"},
                                  redis={"host": LOOPBACK, "port": cls.redis.port,
                                         "unknown_users": "passthrough"},
                                  bruteforce={"enabled": False},
                                  limits={"verify_threads": 1, "verify_queue": 2,
                                          "verify_per_client": 2, "max_auth_failures": 50}).start()

    @classmethod
    def tearDownClass(cls):
        cls.mux.stop()
        cls.dovecot.stop()
        cls.redis.stop()
        cls.tmp.close()

    def test_flood_gets_unavailable_at_once_and_passthrough_goes_on(self):
        answers = []
        lock = threading.Lock()

        def attempt(i):
            s, _ = self.mux.raw_tls(timeout=60)
            t0 = time.monotonic()
            s.sendall(b"a LOGIN alice wrong-%d\r\n" % i)
            line = b"".join(read_until_tag(s, "a", timeout=60))
            with lock:
                answers.append((line, time.monotonic() - t0))
            s.close()

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        # meanwhile a pass-through login (no hash here: Dovecot checks it)
        t0 = time.monotonic()
        m = self.mux.ssl_client()
        m.login("pat", "pat-pw")
        passthrough_s = time.monotonic() - t0
        m.logout()
        for t in threads:
            t.join(90)
        busy = [a for a in answers if b"NO [UNAVAILABLE]" in a[0]]
        refused = [a for a in answers if b"NO [AUTHENTICATIONFAILED]" in a[0]]
        self.assertEqual(len(answers), 8)
        self.assertGreaterEqual(len(busy), 4, answers)
        self.assertGreaterEqual(len(refused), 1, answers)
        # a full queue answers at once, not after the hashes ahead of it
        self.assertLess(min(d for _, d in busy), min(d for _, d in refused))
        self.assertLess(passthrough_s, 30)
        self.assertIn("login failed: password check queue full", self.mux.log_text())


if __name__ == "__main__":
    unittest.main()

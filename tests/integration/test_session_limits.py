"""Logged-in sessions per login and per (login, address), counted across two
imapmux instances in a real redis-server with leases: the session over a
limit gets NO [LIMIT], a limit in the user's or the domain's hash wins over
the configured one, a session's end gives its place back at once, a killed
instance's sessions stop counting once their leases expire, and a Redis
error lets the login in (on_redis_error: allow) or refuses it (refuse)."""
import socket
import time
import unittest
import urllib.request
import warnings

import harness
from harness import LOOPBACK, read_line, read_until_tag

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

LEASE_MS = 1500
USERS = ("alice", "bob", "carol", "dave@example.org", "erin", "kim", "wrong", "parker")


def sha512(pw):
    return crypt.crypt(pw, crypt.mksalt(crypt.METHOD_SHA512))


class SessionLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cert = harness.make_cert(cls.tmp.path)
        cls.redis = harness.Redis(cls.tmp.path).start()
        cls.dovecot = harness.Dovecot(cls.tmp.path, users={u: "pw" for u in USERS}).start()
        backends = [{"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}]
        redis_cfg = {"host": LOOPBACK, "port": cls.redis.port, "cache_ttl_ms": 0,
                     "reconnect_max_ms": 500, "command_timeout_ms": 1000}
        common = {"max_sessions_per_user": 3, "max_sessions_per_user_ip": 2,
                  "session_lease_ms": LEASE_MS, "max_auth_failures": 50}
        bf = {"enabled": False}
        cls.mux = harness.Imapmux(cls.tmp.path, backends, cls.cert, redis=redis_cfg,
                                  bruteforce=bf, limits=dict(common, on_redis_error="allow"),
                                  name="mux1").start()
        cls.mux2 = harness.Imapmux(cls.tmp.path, backends, cls.cert, redis=redis_cfg,
                                   bruteforce=bf, limits=dict(common, on_redis_error="refuse"),
                                   name="mux2").start()
        # with the session cache: a login served from it is counted too
        cls.mux3 = harness.Imapmux(cls.tmp.path, backends, cls.cert, redis=redis_cfg,
                                   bruteforce=bf, limits=common, name="mux3", workers=1,
                                   session_cache={"enabled": True, "park": "always"})
        cls.admin_port = harness.free_port()
        with open(cls.mux3.conf, "a") as f:
            f.write("admin:\n  listen: \"%s:%d\"\n" % (LOOPBACK, cls.admin_port))
        cls.mux3.start()
        harness.wait_port(cls.admin_port, proc=cls.mux3.proc)
        for u in USERS:
            cls.redis.cmd("HSET", "imapmux:user:" + u, "password", sha512("pw"))
        cls.open = []

    @classmethod
    def tearDownClass(cls):
        for m in (cls.mux, cls.mux2, cls.mux3):
            if m.alive():
                m.stop()
            for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
                if bad in m.log_text():
                    raise AssertionError("sanitizer report in %s" % m.log)
        cls.dovecot.stop()
        cls.redis.stop()
        cls.tmp.close()

    def tearDown(self):
        for s in self.open:
            try:
                s.close()
            except OSError:
                pass
        self.open = []

    def login(self, mux, user, source="127.0.0.1", pw="pw"):
        """Logs in from source; returns (socket, tagged answer)."""
        raw = socket.socket()
        raw.settimeout(15)
        raw.bind((source, 0))
        raw.connect((LOOPBACK, mux.tls_port))
        s = harness.client_context(self.cert[0]).wrap_socket(raw, server_hostname="localhost")
        self.open.append(s)
        read_line(s)
        s.sendall(b"a LOGIN " + user.encode() + b" " + pw.encode() + b"\r\n")
        return s, read_until_tag(s, "a", timeout=15)[-1]

    def logout(self, s):
        s.sendall(b"z LOGOUT\r\n")
        read_until_tag(s, "z", timeout=10)
        s.close()

    def count(self, user):
        return int(self.redis.cmd("ZCARD", "imapmux:sess:" + user))

    def test_user_limit_across_instances(self):
        a, r = self.login(self.mux, "alice", "127.0.0.1")
        self.assertTrue(r.startswith(b"a OK"), r)
        b, r = self.login(self.mux2, "alice", "127.0.0.2")
        self.assertTrue(r.startswith(b"a OK"), r)
        c, r = self.login(self.mux, "alice", "127.0.0.3")
        self.assertTrue(r.startswith(b"a OK"), r)
        self.assertEqual(self.count("alice"), 3)
        for mux in (self.mux, self.mux2):
            _, r = self.login(mux, "alice", "127.0.0.4")
            self.assertTrue(r.startswith(b"a NO [LIMIT] Too many sessions open for this account;"),
                            r)
        # a session's end gives its place back at once, on the other instance too
        self.logout(b)
        _, r = self.login(self.mux, "alice", "127.0.0.4")
        self.assertTrue(r.startswith(b"a OK"), r)
        self.assertIn("session limit of the login reached: at most 3", self.mux.log_text())

    def test_limit_per_address(self):
        for mux in (self.mux, self.mux2):
            _, r = self.login(mux, "bob", "127.0.0.5")
            self.assertTrue(r.startswith(b"a OK"), r)
        _, r = self.login(self.mux, "bob", "127.0.0.5")
        self.assertTrue(r.startswith(b"a NO [LIMIT] Too many sessions open for this account from "
                                     b"your address"), r)
        # another address of the same login still gets the third place
        _, r = self.login(self.mux2, "bob", "127.0.0.6")
        self.assertTrue(r.startswith(b"a OK"), r)

    def test_user_and_domain_records_win(self):
        self.redis.cmd("HSET", "imapmux:user:carol", "max_sessions", "1")
        _, r = self.login(self.mux, "carol", "127.0.0.7")
        self.assertTrue(r.startswith(b"a OK"), r)
        _, r = self.login(self.mux2, "carol", "127.0.0.8")
        self.assertTrue(r.startswith(b"a NO [LIMIT]"), r)
        # the domain's limit, for users without one of their own
        self.redis.cmd("HSET", "imapmux:domain:example.org", "max_sessions", "5")
        for i in range(5):
            _, r = self.login(self.mux if i % 2 else self.mux2, "dave@example.org",
                              "127.0.1.%d" % i)
            self.assertTrue(r.startswith(b"a OK"), r)
        _, r = self.login(self.mux, "dave@example.org", "127.0.1.9")
        self.assertTrue(r.startswith(b"a NO [LIMIT]"), r)
        # 0 in the user's hash: no limit for this user
        self.redis.cmd("HSET", "imapmux:user:kim", "max_sessions", "0")
        for i in range(5):
            _, r = self.login(self.mux, "kim", "127.0.2.%d" % i)
            self.assertTrue(r.startswith(b"a OK"), r)

    def test_wrong_password_takes_no_place(self):
        self.redis.cmd("HSET", "imapmux:user:wrong", "max_sessions", "1")
        for _ in range(3):
            _, r = self.login(self.mux, "wrong", pw="nope")
            self.assertTrue(r.startswith(b"a NO [AUTHENTICATIONFAILED]"), r)
        self.assertEqual(self.count("wrong"), 0)
        _, r = self.login(self.mux, "wrong")
        self.assertTrue(r.startswith(b"a OK"), r)

    def test_redis_error_policy(self):
        # a key of the wrong type makes the lease script fail: Redis error
        self.redis.cmd("SET", "imapmux:sess:erin", "not a sorted set")
        _, r = self.login(self.mux, "erin")
        self.assertTrue(r.startswith(b"a OK"), r)          # on_redis_error: allow
        _, r = self.login(self.mux2, "erin")
        self.assertTrue(r.startswith(b"a NO [UNAVAILABLE]"), r)  # on_redis_error: refuse
        self.assertIn("sessions cannot be counted (redis)", self.mux2.log_text())
        self.redis.cmd("DEL", "imapmux:sess:erin")
        # the allowed session's lease reaches Redis with the next renewal
        deadline = time.monotonic() + LEASE_MS / 1000.0
        while self.count("erin") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.count("erin"), 1)

    def wait_count(self, user, n, timeout=5):
        deadline = time.monotonic() + timeout
        while self.count(user) != n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.count(user)

    def test_session_cache_hit_is_counted(self):
        s, r = self.login(self.mux3, "parker")
        self.assertTrue(r.startswith(b"a OK"), r)
        self.assertEqual(self.wait_count("parker", 1), 1)
        self.logout(s)  # parks the backend connection, gives the lease back
        self.assertEqual(self.wait_count("parker", 0), 0)
        s, r = self.login(self.mux3, "parker")
        self.assertTrue(r.startswith(b"a OK"), r)
        self.assertEqual(self.wait_count("parker", 1), 1)
        self.assertRegex(self.mux3.log_text(), r"user=parker .*login ok \(TLS[^)]*, session cache")
        s.close()
        self.assertEqual(self.wait_count("parker", 0), 0)

    def leases_metric(self):
        body = urllib.request.urlopen("http://%s:%d/metrics" % (LOOPBACK, self.admin_port),
                                      timeout=10).read().decode()
        for line in body.splitlines():
            if line.startswith("imapmux_session_leases "):
                return float(line.split()[1])
        return None

    def test_leases_on_the_metrics_endpoint(self):
        base = self.leases_metric()
        self.assertIsNotNone(base)
        held = []
        for u in ("kim", "erin"):
            s, r = self.login(self.mux3, u, "127.0.0.7")
            self.assertTrue(r.startswith(b"a OK"), r)
            held.append(s)
        self.assertEqual(self.leases_metric(), base + 2)
        for s in held:
            self.logout(s)
        deadline = time.monotonic() + 10
        while self.leases_metric() != base and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.leases_metric(), base)

    def test_zz_killed_instance_leases_expire(self):
        held = []
        for i in range(3):
            s, r = self.login(self.mux2, "alice", "127.0.3.%d" % i)
            self.assertTrue(r.startswith(b"a OK"), r)
            held.append(s)
        # live sessions are renewed: they outlast their first lease
        time.sleep(LEASE_MS * 1.5 / 1000.0)
        self.assertEqual(self.count("alice"), 3)
        _, r = self.login(self.mux, "alice", "127.0.3.9")
        self.assertTrue(r.startswith(b"a NO [LIMIT]"), r)
        killed = time.monotonic()
        self.mux2.proc.kill()
        self.mux2.proc.wait(5)
        # within one lease (plus the renewal period), the dead sessions stop counting
        while True:
            _, r = self.login(self.mux, "alice", "127.0.3.9")
            if r.startswith(b"a OK"):
                break
            self.assertTrue(r.startswith(b"a NO [LIMIT]"), r)
            self.assertLess(time.monotonic() - killed, LEASE_MS * 1.5 / 1000.0 + 1)
            time.sleep(0.1)
        # the dead sessions' leases expire one by one (each from its own last
        # renewal): the login got in when the first went; within another
        # lease only the new session counts
        deadline = time.monotonic() + LEASE_MS / 1000.0 + 2
        while self.live_count("alice") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.live_count("alice"), 1)

    def live_count(self, user):
        """Leases not expired by Redis's own clock (expired ones stay in the
        set until the next login's script removes them)."""
        sec, usec = self.redis.cmd("TIME")
        now_ms = int(sec) * 1000 + int(usec) // 1000
        return int(self.redis.cmd("ZCOUNT", "imapmux:sess:" + user, "(%d" % now_ms, "+inf"))


if __name__ == "__main__":
    unittest.main(verbosity=2)

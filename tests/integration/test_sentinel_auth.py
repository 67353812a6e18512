"""Sentinels with a password of their own (requirepass on the sentinel, not
only on the master): imapmux and imapmuxctl find the master through them with
`redis.sentinel_password`; a wrong one is a clear refusal, not a hang."""
import imaplib
import time
import unittest
import warnings

import harness
from harness import LOOPBACK

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

MASTER = {"proxy": "master-secret-Sa"}
SENTINEL_PW = "sentinel-secret-Qw"
REDIS_PW = "redis-secret-Zx"


class SentinelAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cert = harness.make_cert(cls.tmp.path)
        cls.master = harness.Redis(cls.tmp.path, name="master", password=REDIS_PW).start()
        cls.sentinel = harness.Sentinel(cls.tmp.path, cls.master, password=SENTINEL_PW).start()
        cls.d = harness.Dovecot(cls.tmp.path, users={"alice": "x"}, master_users=MASTER).start()
        cls.master.cmd("HSET", "imapmux:user:alice", "password",
                       crypt.crypt("apw", crypt.mksalt(crypt.METHOD_SHA512)))

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.sentinel.stop()
        cls.master.stop()
        cls.tmp.close()

    def mux(self, name, sentinel_password):
        redis = {"sentinels": ["%s:%d" % (LOOPBACK, self.sentinel.port)],
                 "master_name": "mymaster", "password": REDIS_PW, "reconnect_max_ms": 500,
                 "command_timeout_ms": 1000, "connect_timeout_ms": 1000, "cache_ttl_ms": 0}
        if sentinel_password is not None:
            redis["sentinel_password"] = sentinel_password
        return harness.Imapmux(self.tmp.path, [
            {"name": "one", "host": LOOPBACK, "port": self.d.port, "tls": "none",
             "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]}],
            self.cert, redis=redis, name=name).start()

    def test_right_password_logs_in(self):
        mux = self.mux("good", SENTINEL_PW)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    m = mux.ssl_client()
                    m.login("alice", "apw")
                    m.logout()
                    break
                except imaplib.IMAP4.error as e:
                    self.assertIn("UNAVAILABLE", str(e))
                    self.assertLess(time.monotonic(), deadline, "no login through the sentinel")
                    time.sleep(0.3)
            self.assertIn("sentinel names master %s:%d" % (LOOPBACK, self.master.port),
                          mux.log_text())
            self.assertNotIn(SENTINEL_PW, mux.log_text())
            # imapmuxctl reads the same configuration and finds the master too
            r = harness.imapmuxctl(mux.conf, "user", "show", "alice")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("alice", r.stdout)
        finally:
            self.assertEqual(mux.stop(), 0)

    def test_missing_or_wrong_password_is_refused(self):
        for name, pw in (("nopw", None), ("badpw", "not-the-password")):
            mux = self.mux(name, pw)
            try:
                time.sleep(1.5)  # a few connection attempts
                s, _ = mux.raw_tls()
                s.sendall(b"a LOGIN alice apw\r\n")
                line = harness.read_until_tag(s, "a", timeout=20)[-1]
                s.close()
                self.assertIn(b"a NO [UNAVAILABLE]", line)
                log = mux.log_text()
                self.assertRegex(log, r"NOAUTH|WRONGPASS|invalid password|Authentication",
                                 "the log says why the sentinel refused")
                self.assertNotIn("sentinel names master", log)
                if pw is not None:
                    self.assertNotIn(pw, log)
                    r = harness.imapmuxctl(mux.conf, "user", "show", "alice")
                    self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            finally:
                self.assertEqual(mux.stop(), 0)


if __name__ == "__main__":
    unittest.main()

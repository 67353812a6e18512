"""The Redis routing table against a real redis-server and two real Dovecot
backends: routes, local passwords in every format, master login, disabled and
unknown users, moves and kicks across two imapmux instances, Redis going away
and coming back, a Sentinel failover, and the brute-force counters."""
import imaplib
import os
import time
import unittest
import warnings

import harness
from harness import LOOPBACK, read_line, read_until_tag, read_to_eof

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # the system's libcrypt: an implementation independent of imapmux

MASTER = {"proxy": "master-secret-Zq"}
DOVECOT_USERS = {u: "backend-only-pw" for u in (
    "alice", "bob", "sha", "bcr", "yes", "arg", "dave@example.org", "erin.old", "frank",
    "carol", "mover", "kicked", "both")}
DOVECOT_USERS["pat"] = "pat-backend-pw"  # a pass-through user: Dovecot checks this one


def sha512(pw):
    return crypt.crypt(pw, crypt.mksalt(crypt.METHOD_SHA512))


def bcrypt(pw):
    return crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH))


def yescrypt(pw):
    return crypt.crypt(pw, "$y$j9T$" + crypt.mksalt(crypt.METHOD_SHA512)[3:19] + "$")


def subject_of_first(m):
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    return data[0][1].decode().strip()


class RoutingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cert = harness.make_cert(cls.tmp.path)
        cls.redis = harness.Redis(cls.tmp.path).start()
        cls.d1 = harness.Dovecot(cls.tmp.path, users=DOVECOT_USERS, name="d1",
                                 master_users=MASTER).start()
        cls.d2 = harness.Dovecot(cls.tmp.path, users=DOVECOT_USERS, name="d2",
                                 master_users=MASTER).start()
        for user in DOVECOT_USERS:
            cls.d1.add_message(user, harness.sample_message("on-d1"))
            cls.d2.add_message(user, harness.sample_message("on-d2"))
        backends = [
            {"name": "one", "host": LOOPBACK, "port": cls.d1.port, "tls": "none",
             "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]},
            {"name": "two", "host": LOOPBACK, "port": cls.d2.port, "tls": "none",
             "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]},
            {"name": "pass", "host": LOOPBACK, "port": cls.d1.port, "tls": "none"},
        ]
        redis_cfg = {"host": LOOPBACK, "port": cls.redis.port, "cache_ttl_ms": 60000,
                     "reconnect_max_ms": 500, "command_timeout_ms": 1000,
                     "connect_timeout_ms": 1000}
        bf = {"delay_after": 1000, "block_login_after": 1000, "block_ip_after": 100000}
        cls.mux = harness.Imapmux(cls.tmp.path, backends, cls.cert, routes={"default": "one"},
                                  redis=redis_cfg, bruteforce=bf,
                                  limits={"max_auth_failures": 50}).start()
        cls.mux2 = harness.Imapmux(cls.tmp.path, backends, cls.cert, routes={"default": "one"},
                                   redis=redis_cfg, bruteforce=bf, name="imapmux2").start()
        r = cls.redis.cmd
        r("HSET", "imapmux:user:alice", "password", sha512("alice-pw"), "backend", "one")
        r("HSET", "imapmux:user:bob", "password", yescrypt("bob-pw"), "backend", "two")
        r("HSET", "imapmux:user:sha", "password", sha512("sha-pw"), "backend", "two")
        r("HSET", "imapmux:user:bcr", "password", bcrypt("bcr-pw"), "backend", "two")
        r("HSET", "imapmux:user:yes", "password", yescrypt("yes-pw"), "backend", "two")
        r("HSET", "imapmux:domain:example.org", "backend", "two", "auth", "local")
        r("HSET", "imapmux:user:dave@example.org", "password", sha512("dave-pw"))
        r("HSET", "imapmux:user:erin", "password", sha512("erin-pw"), "backend", "two",
          "login_as", "erin.old")
        r("HSET", "imapmux:user:frank", "password", sha512("frank-pw"), "state", "disabled")
        r("HSET", "imapmux:user:pat", "backend", "pass")
        r("HSET", "imapmux:user:mover", "password", sha512("mover-pw"), "backend", "one")
        r("HSET", "imapmux:user:kicked", "password", sha512("kicked-pw"), "backend", "one")
        r("HSET", "imapmux:user:both", "password", sha512("both-pw"), "backend", "two")

    @classmethod
    def tearDownClass(cls):
        for m in (cls.mux, cls.mux2):
            if m.alive():
                m.stop()
            for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
                if bad in m.log_text():
                    raise AssertionError("sanitizer report in %s" % m.log)
        for d in (cls.d1, cls.d2):
            d.stop()
        cls.redis.stop()
        cls.tmp.close()

    def login(self, user, pw, mux=None):
        m = (mux or self.mux).ssl_client()
        m.login(user, pw)
        return m

    def refused(self, user, pw, mux=None):
        s, _ = (mux or self.mux).raw_tls(timeout=30)
        s.sendall(b"a LOGIN " + user.encode() + b" " + pw.encode() + b"\r\n")
        line = read_until_tag(s, "a", timeout=30)[-1]
        s.close()
        return line

    def assertLandsOn(self, user, pw, subject):
        m = self.login(user, pw)
        try:
            self.assertEqual(subject_of_first(m), "Subject: " + subject)
        finally:
            m.logout()

    def test_user_routes_and_master_login(self):
        self.assertLandsOn("alice", "alice-pw", "on-d1")
        self.assertLandsOn("bob", "bob-pw", "on-d2")
        # the backend never saw the client's password: it was a master login
        self.assertIn("master", self.d2.log_text().lower())

    def test_each_password_format(self):
        for user in ("sha", "bcr", "yes"):
            self.assertLandsOn(user, user + "-pw", "on-d2")
            line = self.refused(user, "wrong-" + user)
            self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)

    def test_argon2id_from_imapmuxctl(self):
        r = harness.imapmuxctl(self.mux.conf, "user", "add", "arg", "--backend", "two",
                               "--scheme", "argon2id", input="arg-pw\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(self.redis.cmd("HGET", "imapmux:user:arg", "password").startswith("$argon2id$"))
        self.assertLandsOn("arg", "arg-pw", "on-d2")
        line = self.refused("arg", "nope")
        self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)

    def test_domain_fallback_and_case(self):
        self.assertLandsOn("Dave@Example.ORG", "dave-pw", "on-d2")
        # a user of that domain without a hash: auth local refuses it
        line = self.refused("zed@example.org", "whatever")
        self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)

    def test_rename(self):
        m = self.login("erin", "erin-pw")
        self.assertEqual(subject_of_first(m), "Subject: on-d2")
        m.logout()
        self.assertIn("erin.old", self.d2.log_text())

    def test_unknown_user_answers_like_wrong_password(self):
        wrong = self.refused("alice", "not-her-password")
        unknown = self.refused("nosuchuser", "not-her-password")
        self.assertEqual(wrong.replace(b"a ", b"", 1), unknown.replace(b"a ", b"", 1))
        log = self.mux.log_text()
        self.assertIn("user=nosuchuser", log)
        self.assertIn("unknown user", log)

    def test_disabled_user(self):
        line = self.refused("frank", "frank-pw")
        self.assertTrue(line.startswith(b"a NO [CONTACTADMIN]"), line)
        # a wrong password still looks like one
        line = self.refused("frank", "bad")
        self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)

    def test_passthrough_user(self):
        m = self.login("pat", "pat-backend-pw")
        self.assertEqual(subject_of_first(m), "Subject: on-d1")
        m.logout()
        line = self.refused("pat", "wrong")
        self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)

    def test_move_kicks_and_next_login_lands_on_new_backend(self):
        m = self.login("mover", "mover-pw")
        self.assertEqual(subject_of_first(m), "Subject: on-d1")
        r = harness.imapmuxctl(self.mux.conf, "user", "move", "mover", "two")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = read_to_eof(m.sock, timeout=15)
        self.assertIn(b"* BYE [UNAVAILABLE] Mailbox moved", got)
        self.assertLandsOn("mover", "mover-pw", "on-d2")

    def test_kick_reaches_both_instances_after_idle(self):
        a = self.login("kicked", "kicked-pw")
        b = self.login("kicked", "kicked-pw", mux=self.mux2)
        other = self.login("alice", "alice-pw", mux=self.mux2)
        # one of them is in IDLE: kicked at once; the other idle between commands
        a.select("INBOX")
        a.send(b"i1 IDLE\r\n")
        self.assertTrue(read_line(a.sock).startswith(b"+"))
        r = harness.imapmuxctl(self.mux.conf, "kick", "kicked")
        self.assertEqual(r.returncode, 0, r.stderr)
        for conn in (a, b):
            got = read_to_eof(conn.sock, timeout=15)
            self.assertIn(b"* BYE [UNAVAILABLE] Session ended by the administrator", got)
        # someone else's session on the same instance carries on
        self.assertEqual(other.noop()[0], "OK")
        other.logout()

    def test_kick_waits_for_the_command_in_flight(self):
        # a 4 MB FETCH the client does not read yet: backpressure keeps the
        # command in flight (mid-literal) while the kick arrives
        body = ("y" * 78 + "\r\n") * 50000
        self.d2.add_message("both", harness.sample_message("big", body))
        m = self.login("both", "both-pw")
        typ, n = m.select("INBOX")
        last = int(n[0])
        m.send(b"f1 FETCH %d (BODY.PEEK[])\r\n" % last)
        time.sleep(1)
        r = harness.imapmuxctl(self.mux.conf, "kick", "both")
        self.assertEqual(r.returncode, 0, r.stderr)
        time.sleep(1)
        got = read_to_eof(m.sock, timeout=30)
        # the whole answer, then the tagged completion, then the BYE
        self.assertIn(b"f1 OK", got)
        self.assertGreater(got.index(b"f1 OK"), len(body))
        self.assertIn(b"* BYE [UNAVAILABLE] Session ended by the administrator", got)
        self.assertLess(got.index(b"f1 OK"), got.index(b"* BYE [UNAVAILABLE]"))


class RedisOutageTest(unittest.TestCase):
    def test_redis_killed_and_restarted(self):
        with harness.TempDir() as tmp:
            cert = harness.make_cert(tmp.path)
            redis = harness.Redis(tmp.path).start()
            d = harness.Dovecot(tmp.path, users={"alice": "x", "bob": "x"},
                                master_users=MASTER).start()
            mux = harness.Imapmux(tmp.path, [
                {"name": "one", "host": LOOPBACK, "port": d.port, "tls": "none",
                 "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]}],
                cert, redis={"host": LOOPBACK, "port": redis.port, "reconnect_max_ms": 500,
                             "command_timeout_ms": 1000, "connect_timeout_ms": 1000,
                             "cache_ttl_ms": 0}).start()
            try:
                users = {"alice": sha512("apw"), "bob": sha512("bpw")}
                for u, h in users.items():
                    redis.cmd("HSET", "imapmux:user:" + u, "password", h, "backend", "one")
                a = mux.ssl_client()
                a.login("alice", "apw")
                a.select("INBOX")
                redis.kill()
                start = time.monotonic()
                s, _ = mux.raw_tls(timeout=20)
                s.sendall(b"b LOGIN bob bpw\r\n")
                line = read_until_tag(s, "b", timeout=20)[-1]
                self.assertTrue(line.startswith(b"b NO [UNAVAILABLE]"), line)
                self.assertLess(time.monotonic() - start, 15)  # bounded, not a benchmark
                # the logged-in session carries on
                self.assertEqual(a.noop()[0], "OK")
                self.assertEqual(a.select("INBOX")[0], "OK")
                redis.restart()
                for u, h in users.items():
                    redis.cmd("HSET", "imapmux:user:" + u, "password", h, "backend", "one")
                deadline = time.monotonic() + 20
                while True:
                    s.sendall(b"c LOGIN bob bpw\r\n")
                    line = read_until_tag(s, "c", timeout=20)[-1]
                    if line.startswith(b"c OK") or time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
                self.assertTrue(line.startswith(b"c OK"), line)
                s.close()
                a.logout()
                log = mux.log_text()
                self.assertIn("routing table unavailable", log)
                self.assertIn("connected again", log)
            finally:
                self.assertEqual(mux.stop(), 0)
                d.stop()
                redis.stop()


class SentinelFailoverTest(unittest.TestCase):
    def test_failover(self):
        with harness.TempDir() as tmp:
            cert = harness.make_cert(tmp.path)
            master = harness.Redis(tmp.path, name="master").start()
            replica = harness.Redis(tmp.path, name="replica", replica_of=master).start()
            sentinel = harness.Sentinel(tmp.path, master).start()
            d = harness.Dovecot(tmp.path, users={"alice": "x"}, master_users=MASTER).start()
            mux = harness.Imapmux(tmp.path, [
                {"name": "one", "host": LOOPBACK, "port": d.port, "tls": "none",
                 "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]}],
                cert, redis={"sentinels": ["%s:%d" % (LOOPBACK, sentinel.port)],
                             "master_name": "mymaster", "reconnect_max_ms": 500,
                             "command_timeout_ms": 1000, "connect_timeout_ms": 1000,
                             "cache_ttl_ms": 0}).start()
            try:
                master.cmd("HSET", "imapmux:user:alice", "password", sha512("apw"))
                deadline = time.monotonic() + 20
                while replica.cmd("HGET", "imapmux:user:alice", "password") is None:
                    self.assertLess(time.monotonic(), deadline, "replication did not happen")
                    time.sleep(0.2)
                m = mux.ssl_client()
                m.login("alice", "apw")
                m.logout()
                master.kill()
                sentinel.wait_for_master(replica.port, timeout=40)
                deadline = time.monotonic() + 30
                while True:
                    try:
                        m = mux.ssl_client()
                        m.login("alice", "apw")
                        m.logout()
                        break
                    except imaplib.IMAP4.error as e:
                        self.assertIn("UNAVAILABLE", str(e))
                        self.assertLess(time.monotonic(), deadline, "no login after failover")
                        time.sleep(0.5)
                self.assertIn("sentinel names master %s:%d" % (LOOPBACK, replica.port),
                              mux.log_text())
            finally:
                self.assertEqual(mux.stop(), 0)
                d.stop()
                sentinel.stop()
                replica.stop()
                master.stop()


class BruteForceTest(unittest.TestCase):
    def test_block_then_expiry(self):
        with harness.TempDir() as tmp:
            cert = harness.make_cert(tmp.path)
            redis = harness.Redis(tmp.path).start()
            d = harness.Dovecot(tmp.path, users={"alice": "x"}, master_users=MASTER).start()
            mux = harness.Imapmux(tmp.path, [
                {"name": "one", "host": LOOPBACK, "port": d.port, "tls": "none",
                 "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]}],
                cert, redis={"host": LOOPBACK, "port": redis.port},
                bruteforce={"window_s": 3, "delay_after": 1, "delay_ms": 50,
                            "max_delay_ms": 200, "block_login_after": 3,
                            "block_ip_after": 1000},
                limits={"max_auth_failures": 20}).start()
            try:
                redis.cmd("HSET", "imapmux:user:alice", "password", sha512("apw"))
                s, _ = mux.raw_tls(timeout=30)
                for tag in ("a", "b", "c"):
                    s.sendall(tag.encode() + b" LOGIN alice wrong\r\n")
                    line = read_until_tag(s, tag, timeout=30)[-1]
                    self.assertTrue(line.startswith(tag.encode() + b" NO [AUTHENTICATIONFAILED]"))
                # the counters are written without waiting: poll (bounded)
                deadline = time.monotonic() + 10
                while redis.cmd("GET", "imapmux:bf:login:alice") != "3" and \
                        time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(redis.cmd("GET", "imapmux:bf:login:alice"), "3")
                self.assertEqual(redis.cmd("GET", "imapmux:bf:ip:127.0.0.1"), "3")
                # blocked: the right password gets the wrong-password answer
                s.sendall(b"d LOGIN alice apw\r\n")
                line = read_until_tag(s, "d", timeout=30)[-1]
                self.assertTrue(line.startswith(b"d NO [AUTHENTICATIONFAILED]"), line)
                self.assertIn("blocked by the brute-force counters", mux.log_text())
                # the counters expire; then the login works and clears its counter
                deadline = time.monotonic() + 20
                while redis.cmd("EXISTS", "imapmux:bf:login:alice") == 1:
                    self.assertLess(time.monotonic(), deadline, "counter did not expire")
                    time.sleep(0.3)
                s.sendall(b"e LOGIN alice apw\r\n")
                line = read_until_tag(s, "e", timeout=30)[-1]
                self.assertTrue(line.startswith(b"e OK"), line)
                s.close()
            finally:
                self.assertEqual(mux.stop(), 0)
                d.stop()
                redis.stop()
            log = mux.log_text()
            self.assertRegex(log, r"bruteforce_delayed=[1-9]")
            self.assertRegex(log, r"bruteforce_blocked=[1-9]")


if __name__ == "__main__":
    unittest.main(verbosity=2)

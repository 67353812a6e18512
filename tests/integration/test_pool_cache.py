"""Warm backend pools and the session cache, against a real Dovecot.

Pool: warm connections are observed as established TCP connections to
Dovecot's port (/proc/net/tcp) and through imapmux's counters at exit.
Session cache: a reuse is observed as a login that Dovecot never saw (its
log has one "Login:" line per backend login)."""
import os
import re
import select
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LOOPBACK, Dovecot, Imapmux, TempDir, make_cert, read_line,  # noqa: E402
                     read_to_eof, read_until_tag, sample_message)


def established_to(port):
    """Established TCP connections to port on loopback (either family)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    remote, state = fields[2], fields[3]
                    if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                        n += 1
        except FileNotFoundError:
            pass
    return n


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def warm_ready(mux):
    """Warm connections that became ready so far (debug lines of imapmux).
    An established TCP connection is not yet ready: the greeting and the
    capabilities come after it."""
    return len(re.findall(r"pool: warm connection to backend \S+ host \S+ ready",
                          mux.log_text()))


def final_stats(log):
    """The counters of the stats lines at exit, summed over workers."""
    totals = {}
    for line in log.splitlines():
        if ": stats " not in line:
            continue
        for k, v in re.findall(r"(\w+)=(\d+)", line.split(": stats ", 1)[1]):
            totals[k] = int(v)  # one worker in these tests: the last line counts
    return totals


def backend_logins(dovecot, user):
    return dovecot.log_text().count("Login: user=<%s>" % user)


def check_sanitizers(testcase, log):
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
        testcase.assertNotIn(marker, log)


class ProxySession:
    """A raw TLS client through imapmux with tagged commands."""

    def __init__(self, mux):
        self.sock, self.greeting = mux.raw_tls()
        self.n = 0

    def cmd(self, text):
        self.n += 1
        tag = "t%d" % self.n
        self.sock.sendall(("%s %s\r\n" % (tag, text)).encode())
        lines = read_until_tag(self.sock, tag)
        if not lines or not lines[-1].startswith(tag.encode() + b" "):
            raise AssertionError("no tagged answer to %r: %r" % (text, lines))
        return lines

    def login(self, user, password):
        lines = self.cmd('LOGIN "%s" "%s"' % (user, password))
        return lines[-1].split(b" ", 1)[1]

    def logout(self):
        self.n += 1
        tag = "t%d" % self.n
        self.sock.sendall(("%s LOGOUT\r\n" % tag).encode())
        data = read_to_eof(self.sock)
        self.sock.close()
        return data


class PoolTest(unittest.TestCase):
    POOL = 2

    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.close)
        self.dovecot = Dovecot(self.tmp.path, users={"alice": "pw", "bob": "pw2"}).start()
        self.addCleanup(self.dovecot.stop)
        backend = {"name": "main", "host": LOOPBACK, "port": self.dovecot.port, "tls": "none",
                   "pool_size": self.POOL, "pool_check_interval_ms": 300,
                   "pool_max_idle_ms": 60000}
        self.mux = Imapmux(self.tmp.path, [backend], make_cert(self.tmp.path), workers=1).start()

    def stop_mux(self):
        self.assertEqual(self.mux.stop(), 0)
        log = self.mux.log_text()
        check_sanitizers(self, log)
        return final_stats(log)

    def test_fills_refills_after_use_and_after_backend_restart(self):
        port = self.dovecot.port
        wait_for(lambda: established_to(port) == self.POOL, what="the pool to fill")
        wait_for(lambda: warm_ready(self.mux) == self.POOL, what="the warm connections' greetings")
        s = ProxySession(self.mux)
        self.assertTrue(s.login("alice", "pw").startswith(b"OK [CAPABILITY "))
        self.assertIn(b"OK", s.cmd("SELECT INBOX")[-1])
        # one connection is the session's now; the pool made another
        wait_for(lambda: established_to(port) == self.POOL + 1, what="the refill after a login")
        s.logout()
        wait_for(lambda: established_to(port) == self.POOL, what="the session's connection to go")

        # the backend restarts: warm connections die, the pool notices and
        # connects again once the backend is back
        self.dovecot.kill()
        wait_for(lambda: established_to(port) == 0, what="the warm connections to go")
        self.dovecot.start()
        wait_for(lambda: established_to(port) == self.POOL, timeout=20,
                 what="the refill after the restart")
        wait_for(lambda: warm_ready(self.mux) == 2 * self.POOL + 1,
                 what="the new warm connections' greetings")
        s = ProxySession(self.mux)
        self.assertTrue(s.login("bob", "pw2").startswith(b"OK [CAPABILITY "))
        s.logout()

        st = self.stop_mux()
        self.assertEqual(st["pool_hits"], 2)
        self.assertEqual(st["pool_misses"], 0)
        self.assertGreaterEqual(st["pool_lost"], self.POOL)
        self.assertGreaterEqual(st["pool_connects"], 2 * self.POOL + 1)

    def test_wrong_password_through_a_warm_connection(self):
        wait_for(lambda: warm_ready(self.mux) == self.POOL, what="the pool to fill")
        s = ProxySession(self.mux)
        self.assertTrue(s.login("alice", "wrong").startswith(b"NO [AUTHENTICATIONFAILED]"))
        self.assertTrue(s.login("alice", "pw").startswith(b"OK "))
        s.logout()
        st = self.stop_mux()
        self.assertEqual(st["pool_hits"], 2)

    def test_health_check_replaces_a_dead_connection(self):
        port = self.dovecot.port
        wait_for(lambda: warm_ready(self.mux) == self.POOL, what="the pool to fill")
        # kill the backend's login processes only: the master stays up and
        # accepts again, the warm connections die without a BYE
        self.assertGreater(self.dovecot.kill_logins(), 0)
        # the pool notices the loss and has new connections greeted
        wait_for(lambda: warm_ready(self.mux) >= 2 * self.POOL, timeout=20,
                 what="the pool to fill again")
        self.assertEqual(established_to(port), self.POOL)
        s = ProxySession(self.mux)
        self.assertTrue(s.login("alice", "pw").startswith(b"OK "))
        s.logout()
        st = self.stop_mux()
        self.assertGreaterEqual(st["pool_lost"], 1)
        self.assertEqual(st["pool_hits"], 1)


class ForgetfulRelay:
    """A TCP relay to the backend that can forget its connections, like a
    NAT or firewall dropping idle state: after forget(), the backend side of
    every current connection is closed, and the proxy side is reset by the
    first byte the proxy sends on it.  New connections are relayed."""

    def __init__(self, backend_port):
        self.backend_port = backend_port
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.pairs = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                front, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            back = socket.create_connection((LOOPBACK, self.backend_port), timeout=5)
            pair = {"front": front, "back": back, "forgotten": False}
            with self.lock:
                self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair):
        front, back = pair["front"], pair["back"]
        deadline = time.monotonic() + 120  # bounded, like every loop here
        while not self.stopping and time.monotonic() < deadline:
            socks = [front] if pair["forgotten"] else [front, back]
            try:
                ready, _, _ = select.select(socks, [], [], 0.1)
            except (OSError, ValueError):
                break
            if front in ready:
                data = front.recv(65536)
                if pair["forgotten"] or not data:
                    break  # forgotten: this byte meets no state, the proxy gets a reset
                back.sendall(data)
            if back in ready and not pair["forgotten"]:
                data = back.recv(65536)
                if not data:
                    break
                front.sendall(data)
        front.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        front.close()
        back.close()

    def forget(self):
        with self.lock:
            for pair in self.pairs:
                pair["forgotten"] = True
                try:
                    pair["back"].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stopping = True
        self.sock.close()


class PoolForgottenConnectionTest(unittest.TestCase):
    def test_login_on_a_dead_warm_connection_goes_on_on_a_new_one(self):
        with TempDir() as tmp:
            dovecot = Dovecot(tmp.path, users={"alice": "pw"}).start()
            relay = ForgetfulRelay(dovecot.port)
            try:
                # no health check within the test: the pool cannot know
                backend = {"name": "main", "host": LOOPBACK, "port": relay.port, "tls": "none",
                           "pool_size": 1, "pool_check_interval_ms": 60000,
                           "pool_max_idle_ms": 60000}
                mux = Imapmux(tmp.path, [backend], make_cert(tmp.path), workers=1).start()
                wait_for(lambda: warm_ready(mux) == 1, what="the warm connection")
                relay.forget()
                s = ProxySession(mux)
                ok = s.login("alice", "pw")
                self.assertTrue(ok.startswith(b"OK "), ok)
                self.assertIn(b"OK", s.cmd("SELECT INBOX")[-1])
                s.logout()
                self.assertEqual(mux.stop(), 0)
                log = mux.log_text()
                check_sanitizers(self, log)
                self.assertIn("warm connection failed", log)
                st = final_stats(log)
                self.assertEqual(st["pool_hits"], 1)
                self.assertEqual(st["pool_retries"], 1)
                self.assertEqual(st["logins_ok"], 1)
                self.assertEqual(st["logins_unavailable"], 0)
            finally:
                relay.close()
                dovecot.stop()


class PoolRecycleTest(unittest.TestCase):
    def test_old_connections_are_replaced(self):
        with TempDir() as tmp:
            dovecot = Dovecot(tmp.path).start()
            try:
                backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none",
                           "pool_size": 1, "pool_max_idle_ms": 1000}
                mux = Imapmux(tmp.path, [backend], make_cert(tmp.path), workers=1).start()
                time.sleep(3.5)
                self.assertEqual(established_to(dovecot.port), 1)
                self.assertEqual(mux.stop(), 0)
                st = final_stats(mux.log_text())
                self.assertGreaterEqual(st["pool_recycled"], 2)
                self.assertEqual(st["pool_connect_failures"], 0)
            finally:
                dovecot.stop()


    def test_an_idle_pool_shrinks_to_one(self):
        # no login for a while: connections retiring unused are not replaced
        # beyond one (each would be a backend connection for nothing)
        with TempDir() as tmp:
            dovecot = Dovecot(tmp.path, users={"alice": "pw"}).start()
            try:
                backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none",
                           "pool_size": 4, "pool_max_idle_ms": 2000}
                mux = Imapmux(tmp.path, [backend], make_cert(tmp.path), workers=1).start()
                wait_for(lambda: warm_ready(mux) >= 4, what="the pool filled")
                wait_for(lambda: established_to(dovecot.port) == 1, timeout=15,
                         what="the idle pool down to one")
                # demand brings it back: logins take and the pool refills
                for _ in range(3):
                    s = ProxySession(mux)
                    self.assertTrue(s.login("alice", "pw").startswith(b"OK"))
                    s.logout()
                # three takes in this window: 3 + 1 kept
                wait_for(lambda: established_to(dovecot.port) >= 3, timeout=4,
                         what="the pool grown again")
                self.assertEqual(mux.stop(), 0)
            finally:
                dovecot.stop()


USERS = {"alice": "pw", "bob": "pw2", "carol": "pw", "dave": "pw4", "erin": "pw5",
         "frank": "pw6", "grace": "pw7", "heidi": "pw8", "ivan": "pw9"}


class SessionCacheTest(unittest.TestCase):
    """One imapmux with the cache on (ttl 1.5 s, one per user, five in all);
    every test uses its own users so that the tests do not meet in it."""

    TTL_MS = 1500

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.dovecot = Dovecot(cls.tmp.path, users=dict(USERS)).start()
        for user in USERS:
            cls.dovecot.add_message(user, sample_message(subject="mailbox of " + user))
        # the deliveries above are direct logins: count from here on
        wait_for(lambda: all(backend_logins(cls.dovecot, u) == 1 for u in USERS),
                 what="the deliveries' logins in the Dovecot log")
        cls.base = {u: backend_logins(cls.dovecot, u) for u in USERS}
        backend = {"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}
        cls.mux = Imapmux(cls.tmp.path, [backend], make_cert(cls.tmp.path), workers=1,
                          session_cache={"enabled": True, "ttl_ms": cls.TTL_MS,
                                         "max_per_user": 1, "max_total": 5,
                                         "park": "always"}).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.mux.stop()
        cls.dovecot.stop()
        log = cls.mux.log_text()
        cls.tmp.close()
        if rc != 0:
            raise AssertionError("imapmux exited with %s" % rc)
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
            if marker in log:
                raise AssertionError("sanitizer report:\n" + log[-6000:])

    def logins(self, user):
        return backend_logins(self.dovecot, user) - self.base[user]

    def wait_logins(self, user, n):
        wait_for(lambda: self.logins(user) == n, timeout=5,
                 what="%d backend logins of %s (have %d)" % (n, user, self.logins(user)))

    def session(self, user, password=None, select=True):
        s = ProxySession(self.mux)
        ok = s.login(user, password or USERS[user])
        self.assertTrue(ok.startswith(b"OK [CAPABILITY "), ok)
        if select:
            self.assertIn(b"OK", s.cmd("SELECT INBOX")[-1])
        return s, ok

    def subject(self, s):
        lines = s.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        return b"".join(lines)

    def test_hit_skips_the_backend_login_and_resets_the_mailbox(self):
        s, first_ok = self.session("alice")
        self.assertIn(b"mailbox of alice", self.subject(s))
        bye = s.logout()
        self.assertIn(b"* BYE", bye)
        self.assertRegex(bye, rb"t\d+ OK ")
        self.wait_logins("alice", 1)

        s, second_ok = self.session("alice", select=False)
        # the same capabilities as at the first login, and no mailbox selected
        self.assertEqual(first_ok, second_ok)
        self.assertTrue(s.cmd("FETCH 1 FLAGS")[-1].split(b" ")[1] == b"BAD")
        self.assertIn(b"OK", s.cmd("SELECT INBOX")[-1])
        self.assertIn(b"mailbox of alice", self.subject(s))
        s.logout()
        time.sleep(0.5)
        self.assertEqual(self.logins("alice"), 1, "the second login reached the backend")

    def test_wrong_password_never_hits(self):
        s, _ = self.session("bob")
        s.logout()
        self.wait_logins("bob", 1)
        s = ProxySession(self.mux)
        self.assertTrue(s.login("bob", "not-the-password").startswith(b"NO [AUTHENTICATIONFAILED]"))
        # the parked connection is still there for the right password
        self.assertTrue(s.login("bob", USERS["bob"]).startswith(b"OK "))
        s.logout()
        time.sleep(0.5)
        self.assertEqual(self.logins("bob"), 1)

    def test_two_users_never_share_a_connection(self):
        # carol has alice's password; dave logs in right after carol logs out
        s, _ = self.session("carol")
        s.logout()
        s, _ = self.session("dave")
        self.assertIn(b"mailbox of dave", self.subject(s))
        self.assertNotIn(b"mailbox of carol", self.subject(s))
        s.logout()
        self.wait_logins("dave", 1)
        self.wait_logins("carol", 1)

    def test_same_password_other_user_misses(self):
        # erin and a second login of erin's password as another user
        s, _ = self.session("erin")
        s.logout()
        self.wait_logins("erin", 1)
        s = ProxySession(self.mux)
        self.assertTrue(s.login("frank", USERS["erin"]).startswith(b"NO "))
        s.sock.close()
        s, _ = self.session("erin")
        self.assertIn(b"mailbox of erin", self.subject(s))
        s.logout()
        time.sleep(0.5)
        self.assertEqual(self.logins("erin"), 1)

    def test_ttl_evicts(self):
        s, _ = self.session("grace")
        s.logout()
        self.wait_logins("grace", 1)
        time.sleep(self.TTL_MS / 1000.0 + 1.2)
        s, _ = self.session("grace")
        s.logout()
        self.wait_logins("grace", 2)

    def test_per_user_limit_evicts_the_oldest(self):
        a, _ = self.session("heidi")
        b, _ = self.session("heidi")
        self.wait_logins("heidi", 2)
        a.logout()
        b.logout()  # one per user: a's parked connection goes
        c, _ = self.session("heidi")
        d, _ = self.session("heidi")
        c.logout()
        d.logout()
        self.wait_logins("heidi", 3)  # one hit, one miss

    def test_enable_is_never_parked(self):
        s, _ = self.session("ivan")
        self.assertIn(b"OK", s.cmd("ENABLE CONDSTORE")[-1])
        s.logout()
        self.wait_logins("ivan", 1)
        s, _ = self.session("ivan")
        s.logout()
        self.wait_logins("ivan", 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The several-instance topology of deploy/ with real processes on loopback:
HAProxy in TCP mode with health checks in front of two imapmux instances,
two Dovecot backends, a Redis master and replica with three Sentinels.

It checks that the backend and the audit see the client's own address
(PROXY protocol v2 from HAProxy, when this build has it), that a move kicks
the user's sessions on both instances within a second, that a Sentinel
failover during 100 logged-in sessions loses none of them and logins work
again afterwards, that the per-user session limit holds across the two
instances, and that once one instance is killed new logins through HAProxy
land on the other and the dead instance's leases expire."""
import os
import socket
import subprocess
import threading
import time
import unittest

import harness
import topology
from harness import LOOPBACK, read_line, read_to_eof, read_until_tag

LEASE_MS = 1500
NUM_SESSIONS = 100
USERS = ["u%02d" % i for i in range(NUM_SESSIONS)] + ["kuser", "lim", "addr", "fresh"]


def tls_connect(cert, port, source="127.0.0.1", timeout=15):
    """A TLS connection from source to port, past the greeting."""
    raw = socket.socket()
    raw.settimeout(timeout)
    raw.bind((source, 0))
    raw.connect((LOOPBACK, port))
    s = harness.client_context(cert).wrap_socket(raw, server_hostname="localhost")
    greeting = read_line(s)
    if not greeting.startswith(b"* OK"):
        raise AssertionError("greeting %r" % greeting)
    return s


class TopologyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        cls.tmp = harness.TempDir()
        try:
            cls._start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def _start(cls):
        tmp = cls.tmp.path
        cls.cert = harness.make_cert(tmp)
        cls.proxy = topology.proxy_protocol_supported()
        cls.master = harness.Redis(tmp, name="master").start()
        # a replica's first full sync starts at once, not 5 s later
        cls.master.cmd("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        cls.replica = harness.Redis(tmp, name="replica", replica_of=cls.master).start()
        cls.sentinels = [harness.Sentinel(tmp, cls.master, name="sentinel%d" % i).start()
                         for i in range(3)]
        conf = "default_process_limit = 400\nmail_max_userip_connections = 200\n"
        cls.d1 = harness.Dovecot(tmp, users={u: "pw" for u in USERS}, name="d1",
                                 extra_conf=conf).start()
        cls.d2 = harness.Dovecot(tmp, users={u: "pw" for u in USERS}, name="d2",
                                 extra_conf=conf).start()
        backends = [
            {"name": "one", "host": LOOPBACK, "port": cls.d1.port, "tls": "none",
             "forward_id": True},
            {"name": "two", "host": LOOPBACK, "port": cls.d2.port, "tls": "none",
             "forward_id": True},
        ]
        redis_cfg = {"sentinels": ["%s:%d" % (LOOPBACK, s.port) for s in cls.sentinels],
                     "master_name": "mymaster", "connect_timeout_ms": 1000,
                     "command_timeout_ms": 1000, "reconnect_max_ms": 500}
        limits = {"max_sessions_per_user": 50, "session_lease_ms": LEASE_MS,
                  "on_redis_error": "allow"}
        cls.muxes = []
        cls.balanced_ports = []
        for i in (1, 2):
            port = harness.free_port()
            mux = harness.Imapmux(tmp, backends, cls.cert, name="mux%d" % i,
                                  routes={"default": "one"}, redis=redis_cfg, limits=limits,
                                  extra_listeners=[(LOOPBACK, port, "implicit")],
                                  audit={"file": os.path.join(tmp, "audit%d.log" % i)},
                                  log_level="info")
            if cls.proxy:
                topology.mark_proxy_listener(mux, port)
            cls.muxes.append(mux.start())
            cls.balanced_ports.append(port)
        r = cls.master.cmd
        for i, u in enumerate(USERS):
            r("HSET", "imapmux:user:" + u, "backend", "one" if i % 2 == 0 else "two")
        r("HSET", "imapmux:user:kuser", "backend", "one")
        r("HSET", "imapmux:user:lim", "max_sessions", "3")
        cls.haproxy = topology.HAProxy(tmp, [("m1", cls.balanced_ports[0]),
                                             ("m2", cls.balanced_ports[1])],
                                       send_proxy=cls.proxy).start()
        cls.wait_servers_up()

    @classmethod
    def wait_servers_up(cls, timeout=10):
        """Until a login through HAProxy works (its checks mark servers up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = tls_connect(cls.cert[0], cls.haproxy.port)
                s.sendall(b"a LOGIN fresh pw\r\n")
                ok = read_until_tag(s, "a")[-1].startswith(b"a OK")
                s.close()
                if ok:
                    return
            except (OSError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("no login through haproxy within %ds" % timeout)
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        for name in ("haproxy",):
            if hasattr(cls, name):
                getattr(cls, name).stop()
        for m in getattr(cls, "muxes", []):
            if m.alive():
                m.stop()
            for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
                if m.proc is not None and bad in m.log_text():
                    raise AssertionError("sanitizer report in %s" % m.log)
        for d in ("d1", "d2"):
            if hasattr(cls, d):
                getattr(cls, d).stop()
        for s in getattr(cls, "sentinels", []):
            s.stop()
        for r in ("replica", "master"):
            if hasattr(cls, r):
                getattr(cls, r).stop()
        cls.tmp.close()
        print("topology test: %.1f s" % (time.monotonic() - cls.t0))

    def login(self, port, user, source="127.0.0.1"):
        """(socket, tagged answer) of a LOGIN on port from source."""
        s = tls_connect(self.cert[0], port, source)
        s.sendall(b"a LOGIN " + user.encode() + b" pw\r\n")
        return s, read_until_tag(s, "a", timeout=15)[-1]

    def logged_in(self, port, user, source="127.0.0.1"):
        s, r = self.login(port, user, source)
        self.assertTrue(r.startswith(b"a OK"), (user, r))
        return s

    # -- the client's address -------------------------------------------------

    def test_1_backend_and_audit_see_the_client(self):
        if not self.proxy:
            self.skipTest("this build has no PROXY protocol listener yet: HAProxy runs "
                          "without send-proxy-v2 and imapmux sees HAProxy's address")
        s = self.logged_in(self.haproxy.port, "addr", source="127.0.0.77")
        s.sendall(b"b NOOP\r\n")
        read_until_tag(s, "b")
        s.sendall(b"z LOGOUT\r\n")
        read_until_tag(s, "z")
        s.close()
        deadline = time.monotonic() + 5
        while True:
            dov = self.d1.log_text() + self.d2.log_text()
            audit = ""
            for i in (1, 2):
                try:
                    with open(os.path.join(self.tmp.path, "audit%d.log" % i)) as f:
                        audit += f.read()
                except FileNotFoundError:
                    pass
            if ("user=<addr>" in dov and "rip=127.0.0.77" in dov
                    and '"client":"127.0.0.77"' in audit):
                break
            self.assertLess(time.monotonic(), deadline,
                            "the backend or the audit did not see 127.0.0.77")
            time.sleep(0.1)

    # -- a move kicks everywhere -------------------------------------------------

    def test_2_move_kicks_sessions_on_both_instances(self):
        socks = []
        for mux in self.muxes:
            for _ in range(2):
                socks.append(self.logged_in(mux.tls_port, "kuser"))
        for _ in range(2):
            socks.append(self.logged_in(self.haproxy.port, "kuser"))
        start = time.monotonic()
        r = harness.imapmuxctl(self.muxes[0].conf, "user", "move", "kuser", "two")
        self.assertEqual(r.returncode, 0, r.stderr)
        for s in socks:
            left = max(0.05, start + 1.0 - time.monotonic())
            data = read_to_eof(s, timeout=left)
            self.assertIn(b"* BYE [UNAVAILABLE] Mailbox moved", data)
            s.close()
        self.assertLess(time.monotonic() - start, 1.0)
        # and the next login lands on the new backend
        s = self.logged_in(self.haproxy.port, "kuser")
        s.close()
        self.assertEqual(self.master.cmd("HGET", "imapmux:user:kuser", "backend"), "two")

    # -- a Sentinel failover under load ------------------------------------------

    def test_3_failover_keeps_logged_in_sessions(self):
        counts = [m.log_text().count("login ok") for m in self.muxes]
        sessions = [self.logged_in(self.haproxy.port, "u%02d" % i) for i in range(NUM_SESSIONS)]
        # HAProxy spread them over both instances
        spread = [m.log_text().count("login ok") - c for m, c in zip(self.muxes, counts)]
        self.assertTrue(all(n >= NUM_SESSIONS // 4 for n in spread), spread)
        errors = []
        passes = [0]
        stop = threading.Event()

        def noops():
            n = 0
            while not stop.is_set() and passes[0] < 10000:
                for i, s in enumerate(sessions):
                    n += 1
                    tag = "n%d" % n
                    try:
                        s.sendall(tag.encode() + b" NOOP\r\n")
                        line = read_until_tag(s, tag, timeout=10)[-1]
                    except OSError as e:
                        line = repr(e).encode()
                    if not line.startswith(tag.encode() + b" OK"):
                        errors.append((i, line))
                passes[0] += 1

        t = threading.Thread(target=noops)
        t.start()
        try:
            # the replica holds the routing table and the Sentinels know it
            # before its master dies
            deadline = time.monotonic() + 20
            while (self.replica.cmd("EXISTS", "imapmux:user:fresh") != 1
                   or not self.sentinels[0].cmd("SENTINEL", "replicas", "mymaster")):
                self.assertLess(time.monotonic(), deadline, "the replica is not ready")
                time.sleep(0.2)
            self.master.kill()
            failover_at = time.monotonic()
            for s in self.sentinels:
                s.wait_for_master(self.replica.port, timeout=20)
            # logins work again (through both instances)
            deadline = time.monotonic() + 20
            while True:
                s, r = self.login(self.haproxy.port, "fresh")
                s.close()
                if r.startswith(b"a OK"):
                    break
                self.assertLess(time.monotonic(), deadline, "no login after the failover: %r" % r)
                time.sleep(0.2)
            back_after = time.monotonic() - failover_at
            p = passes[0]
            deadline = time.monotonic() + 10
            while passes[0] < p + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(30)
        self.assertEqual(errors, [], "logged-in sessions failed during the failover")
        self.assertGreaterEqual(passes[0], 2)
        self.assertEqual(self.replica.cmd("ROLE")[0], "master")
        print("master killed: logins again after %.1f s; %d NOOP passes over %d sessions"
              % (back_after, passes[0], NUM_SESSIONS))
        # both instances followed the Sentinels to the new master
        deadline = time.monotonic() + 5
        while not all(":%d" % self.replica.port in m.log_text() for m in self.muxes):
            self.assertLess(time.monotonic(), deadline, "an instance did not follow the failover")
            time.sleep(0.1)
        for s in sessions:
            s.sendall(b"z LOGOUT\r\n")
            read_until_tag(s, "z")
            s.close()

    # -- limits across instances, and an instance that dies --------------------------

    def test_4_limit_across_instances_and_a_killed_instance(self):
        m1, m2 = self.muxes
        # after the failover of test 3, each instance's session-limit client
        # may still be reconnecting; until it is back a login is let in
        # uncounted (on_redis_error: allow) and only the next renewal writes
        # its lease: wait (bounded) until both count again
        redis = self.replica if self.replica.cmd("ROLE")[0] == "master" else self.master
        for m in (m1, m2):
            deadline = time.monotonic() + 15
            while True:
                s = self.logged_in(m.tls_port, "lim")
                counted = int(redis.cmd("ZCARD", "imapmux:sess:lim")) >= 1
                s.sendall(b"z LOGOUT\r\n")
                read_until_tag(s, "z")
                s.close()
                if counted:
                    break
                self.assertLess(time.monotonic(), deadline, "an instance does not count sessions")
                time.sleep(0.2)
            deadline = time.monotonic() + 10
            while int(redis.cmd("ZCARD", "imapmux:sess:lim")) != 0:
                self.assertLess(time.monotonic(), deadline, "a lease was not given back")
                time.sleep(0.05)
        held = [self.logged_in(m2.tls_port, "lim"), self.logged_in(m2.tls_port, "lim"),
                self.logged_in(m1.tls_port, "lim")]
        for port in (m1.tls_port, self.haproxy.port):
            s, r = self.login(port, "lim")
            s.close()
            self.assertTrue(r.startswith(b"a NO [LIMIT]"), r)
        killed = time.monotonic()
        m2.proc.kill()
        m2.proc.wait(5)
        m2._logf.close()
        # new logins through HAProxy land on the survivor
        before = m1.log_text().count("login ok")
        for i in range(10):
            s = self.logged_in(self.haproxy.port, "u%02d" % i)
            s.close()
        self.assertGreaterEqual(m1.log_text().count("login ok") - before, 10)
        # the dead instance's two leases expire: a third session fits again
        while True:
            s, r = self.login(self.haproxy.port, "lim")
            s.close()
            if r.startswith(b"a OK"):
                break
            self.assertTrue(r.startswith(b"a NO [LIMIT]"), r)
            self.assertLess(time.monotonic() - killed, LEASE_MS * 1.5 / 1000.0 + 2,
                            "the killed instance's leases did not expire")
            time.sleep(0.1)
        print("killed instance's leases gone after %.1f s" % (time.monotonic() - killed))
        for s in held:
            s.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Brute-force protection that an attacker cannot turn against the owner, and
equal cost for unknown users, against real Dovecot and Redis.  Client
addresses are loopback addresses (127.0.0.0/8) chosen per connection."""
import re
import socket
import ssl
import statistics
import threading
import time
import unittest
import warnings

import harness
from harness import LOOPBACK, read_line, read_until_tag

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

MASTER = {"proxy": "master-secret-Bf"}


def tls_from(mux, source, timeout=60):
    """A TLS connection to mux from the loopback address source, past the greeting."""
    raw = socket.socket()
    raw.settimeout(timeout)
    raw.bind((source, 0))
    raw.connect((LOOPBACK, mux.tls_port))
    s = harness.client_context(mux.cert[0]).wrap_socket(raw, server_hostname="localhost")
    read_line(s)
    return s


def login_from(mux, source, user, password, timeout=60):
    s = tls_from(mux, source, timeout)
    s.sendall(b"a LOGIN " + user.encode() + b" " + password.encode() + b"\r\n")
    line = read_until_tag(s, "a", timeout=timeout)[-1]
    s.close()
    return line


def final_stats(log):
    totals = {}
    for line in log.splitlines():
        if ": stats " in line:
            for k, v in re.findall(r"(\w+)=(\d+)", line.split(": stats ", 1)[1]):
                totals[k] = int(v)
    return totals


class BruteforceTest(unittest.TestCase):
    def run_mux(self, tmp, redis, d, bruteforce, limits=None):
        backends = [{"name": "one", "host": LOOPBACK, "port": d.port, "tls": "none",
                     "auth": "master", "master_user": "proxy", "master_password": MASTER["proxy"]}]
        lim = {"max_auth_failures": 50}
        lim.update(limits or {})
        return harness.Imapmux(tmp.path, backends, workers=1, routes={"default": "one"},
                               redis={"host": LOOPBACK, "port": redis.port},
                               bruteforce=bruteforce, limits=lim).start()

    def test_owner_keeps_logging_in_while_strangers_hammer(self):
        with harness.TempDir() as tmp:
            redis = harness.Redis(tmp.path).start()
            d = harness.Dovecot(tmp.path, users={"alice": "x"}, master_users=MASTER).start()
            mux = None
            try:
                redis.cmd("HSET", "imapmux:user:alice", "password",
                          crypt.crypt("owner-pw", crypt.mksalt(crypt.METHOD_SHA512)))
                mux = self.run_mux(tmp, redis, d, {"delay_after": 2, "delay_ms": 50,
                                                   "max_delay_ms": 400, "block_pair_after": 3,
                                                   "block_ip_after": 1000, "window_s": 600})
                # the owner's usual address
                self.assertTrue(login_from(mux, "127.0.0.2", "alice", "owner-pw").startswith(b"a OK"))
                # strangers: 10 addresses, 4 wrong passwords each (the 4th blocked:
                # its password is not tested, so it is no failure of the login)
                for i in range(10):
                    for _ in range(4):
                        line = login_from(mux, "127.0.1.%d" % (i + 1), "alice", "guess")
                        self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)
                # the failures are counted without waiting for Redis: poll (bounded)
                deadline = time.monotonic() + 10
                while int(redis.cmd("GET", "imapmux:bf:login:alice") or 0) < 30 and \
                        time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(int(redis.cmd("GET", "imapmux:bf:login:alice")), 30)
                # the owner from the usual address: neither blocked nor slowed
                t0 = time.monotonic()
                self.assertTrue(login_from(mux, "127.0.0.2", "alice", "owner-pw").startswith(b"a OK"))
                trusted_s = time.monotonic() - t0
                # from an address never seen: slowed, not blocked
                self.assertTrue(login_from(mux, "127.0.0.3", "alice", "owner-pw").startswith(b"a OK"))
                # a stranger's blocked address stays blocked, even with the right password
                line = login_from(mux, "127.0.1.1", "alice", "owner-pw")
                self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)
                self.assertLess(trusted_s, 5)
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                d.stop()
                redis.stop()
            log = mux.log_text()
            self.assertIn("blocked by the brute-force counters", log)

    def test_parallel_burst_is_counted_before_it_is_decided(self):
        burst, threshold = 500, 10
        with harness.TempDir() as tmp:
            redis = harness.Redis(tmp.path).start()
            d = harness.Dovecot(tmp.path, users={"alice": "x"}, master_users=MASTER).start()
            mux = None
            try:
                redis.cmd("HSET", "imapmux:user:alice", "password",
                          crypt.crypt("owner-pw", crypt.mksalt(crypt.METHOD_SHA512)))
                mux = self.run_mux(tmp, redis, d,
                                   {"delay_after": 100000, "block_pair_after": threshold,
                                    "block_ip_after": 100000, "window_s": 600},
                                   limits={"verify_queue": 1024, "verify_per_client": 1024})
                lines = []
                lock = threading.Lock()
                sem = threading.Semaphore(64)

                def attempt():
                    with sem:
                        s = tls_from(mux, "127.0.2.1")
                        s.sendall(b"a LOGIN alice wrong\r\n")
                        line = read_until_tag(s, "a", timeout=120)[-1]
                        s.close()
                    with lock:
                        lines.append(line)

                threads = [threading.Thread(target=attempt) for _ in range(burst)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
                self.assertEqual(len(lines), burst)
                self.assertTrue(all(l.startswith(b"a NO [AUTHENTICATIONFAILED]") for l in lines))
                # the right password at the end of the burst, from that address
                line = login_from(mux, "127.0.2.1", "alice", "owner-pw")
                self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                d.stop()
                redis.stop()
            st = final_stats(mux.log_text())
            # verified for real: the attempts that were not blocked
            verified = st["logins_failed"] - st["bruteforce_blocked"]
            self.assertLessEqual(verified, threshold + 2, st)
            self.assertGreaterEqual(st["bruteforce_blocked"], burst + 1 - threshold - 2, st)

    def test_burst_of_right_logins_does_not_block_the_address(self):
        # a webmail host or a client opening many connections at once: more
        # logins of one account from one address in flight than
        # block_pair_after allows; the ones over it are refused, but they
        # tested no password, so they must not add up to a block of the
        # address for every other user behind it
        burst = 24
        with harness.TempDir() as tmp:
            redis = harness.Redis(tmp.path).start()
            d = harness.Dovecot(tmp.path, users={"alice": "x", "bob": "x"},
                                master_users=MASTER).start()
            mux = None
            try:
                for u in ("alice", "bob"):
                    redis.cmd("HSET", "imapmux:user:" + u, "password",
                              crypt.crypt(u + "-pw", crypt.mksalt(crypt.METHOD_SHA512)))
                mux = self.run_mux(tmp, redis, d,
                                   {"delay_after": 100000, "block_pair_after": 3,
                                    "block_ip_after": 5, "window_s": 600},
                                   limits={"verify_queue": 1024, "verify_per_client": 1024})
                lines = []
                lock = threading.Lock()
                go = threading.Event()

                def attempt():
                    s = tls_from(mux, "127.0.3.1")
                    go.wait(30)
                    s.sendall(b"a LOGIN alice alice-pw\r\n")
                    line = read_until_tag(s, "a", timeout=120)[-1]
                    s.close()
                    with lock:
                        lines.append(line)

                threads = [threading.Thread(target=attempt) for _ in range(burst)]
                for t in threads:
                    t.start()
                time.sleep(1)
                go.set()
                for t in threads:
                    t.join(120)
                self.assertEqual(len(lines), burst)
                refused = [l for l in lines if not l.startswith(b"a OK")]
                self.assertTrue(all(l.startswith(b"a NO [AUTHENTICATIONFAILED]") for l in refused))
                self.assertGreater(len(refused), 5, "the burst went over block_ip_after")
                # the address is not blocked: another user, and alice herself
                line = login_from(mux, "127.0.3.1", "bob", "bob-pw")
                self.assertTrue(line.startswith(b"a OK"), line)
                line = login_from(mux, "127.0.3.1", "alice", "alice-pw")
                self.assertTrue(line.startswith(b"a OK"), line)
                self.assertLessEqual(int(redis.cmd("GET", "imapmux:bf:ip:127.0.3.1") or 0), 0)
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                d.stop()
                redis.stop()

    def test_unknown_users_cost_what_real_users_cost(self):
        schemes = {
            "sha512": crypt.crypt("pw-1", crypt.mksalt(crypt.METHOD_SHA512)),
            "bcrypt": crypt.crypt("pw-1", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10)),
            "yescrypt": crypt.crypt("pw-1", "$y$j9T$" + crypt.mksalt(crypt.METHOD_SHA512)[3:19] + "$"),
        }
        with harness.TempDir() as tmp:
            redis = harness.Redis(tmp.path).start()
            d = harness.Dovecot(tmp.path, users={"u": "x"}, master_users=MASTER).start()
            mux = None
            try:
                for name, h in schemes.items():
                    redis.cmd("HSET", "imapmux:user:%s" % name, "password", h)
                mux = self.run_mux(tmp, redis, d, {"enabled": False})
                # argon2id: made by imapmuxctl (Python's crypt has no argon2)
                r = harness.imapmuxctl(mux.conf, "user", "add", "argon2", "--scheme",
                                       "argon2id", input="pw-1\n")
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertTrue(redis.cmd("HGET", "imapmux:user:argon2", "password")
                                .startswith("$argon2id$"))
                n = 0
                for name in list(schemes) + ["argon2"]:
                    s = tls_from(mux, "127.0.3.1")  # 14 failures: under max_auth_failures
                    known, unknown = [], []
                    for i in range(7):
                        for user, out in ((name, known), ("nobody-%s-%d" % (name, i), unknown)):
                            n += 1
                            t0 = time.monotonic()
                            s.sendall(b"t%d LOGIN %s wrong\r\n" % (n, user.encode()))
                            line = read_until_tag(s, "t%d" % n, timeout=60)[-1]
                            out.append(time.monotonic() - t0)
                            self.assertIn(b"NO [AUTHENTICATIONFAILED]", line)
                    gap = abs(statistics.median(known) - statistics.median(unknown)) * 1000
                    self.assertLess(gap, 15, "%s: known %s, unknown %s" % (name, known, unknown))
                    s.close()
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                d.stop()
                redis.stop()


if __name__ == "__main__":
    unittest.main()

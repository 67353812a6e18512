"""OAuth logins with the Redis routing table: the token's identity meets the
account state (disabled), the brute-force counters and the session cache as
a password login does.  Real Redis, real Dovecot (master user), keys and
tokens from tests/oauth/jwtmint."""
import base64
import json
import os
import socket
import subprocess
import time
import unittest
import warnings

import harness
from harness import LOOPBACK, read_line

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

ISS = "https://idp.test"
MASTER = {"proxy": "master-secret-Oa"}


def jwtmint_bin():
    return os.environ.get("JWTMINT_BIN") or os.path.join(
        os.path.dirname(harness.imapmux_bin()), "jwtmint")


class OAuthRedisTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.redis = cls.dovecot = cls.mux = None
        try:
            d = cls.tmp.path
            cls.keys = os.path.join(d, "keys")
            os.makedirs(cls.keys)
            subprocess.run([jwtmint_bin(), "keys", cls.keys], check=True)
            cls.redis = harness.Redis(d).start()
            users = {u: "x" for u in ("grace@example.com", "henry@example.com",
                                      "ivy@example.com", "jack@example.com",
                                      "kate@example.com")}
            cls.dovecot = harness.Dovecot(d, users=users, master_users=MASTER,
                                          extra_conf="auth_verbose = yes\n").start()
            r = cls.redis.cmd
            pw = crypt.crypt("pw", crypt.mksalt(crypt.METHOD_SHA512))
            r("HSET", "imapmux:user:grace@example.com", "password", pw, "state", "disabled")
            r("HSET", "imapmux:user:henry@example.com", "password", pw)
            r("HSET", "imapmux:user:jack@example.com", "password", pw)
            r("HSET", "imapmux:user:kate@example.com", "password", pw, "max_sessions", "1")
            backends = [{"name": "one", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none",
                         "auth": "master", "master_user": "proxy",
                         "master_password": MASTER["proxy"]}]
            cls.mux = harness.Imapmux(
                d, backends, workers=1, routes={"default": "one"},
                redis={"host": LOOPBACK, "port": cls.redis.port},
                bruteforce={"delay_after": 1000, "block_pair_after": 3, "block_ip_after": 1000,
                            "window_s": 600},
                session_cache={"enabled": True, "park": "always"}, limits={"max_auth_failures": 100})
            with open(cls.mux.conf, "a") as f:
                f.write("oauth:\n  domains:\n    - {domain: example.com, jwks_file: %s,"
                        " issuer: %s}\n" % (os.path.join(cls.keys, "jwks.json"), ISS))
            cls.mux.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "mux", None) is not None and cls.mux.proc is not None:
            rc = cls.mux.stop()
            log = cls.mux.log_text()
            if rc != 0 or "ERROR: AddressSanitizer" in log or "runtime error:" in log or \
                    "LeakSanitizer" in log:
                raise AssertionError("imapmux exited with %s; log:\n%s" % (rc, log[-6000:]))
        for p in (getattr(cls, "dovecot", None), getattr(cls, "redis", None)):
            if p is not None:
                p.stop()
        cls.tmp.close()

    def mint(self, email, exp_delta=600, kid="ed1", alg="EdDSA"):
        claims = {"iss": ISS, "email": email, "exp": int(time.time()) + exp_delta}
        out = subprocess.run([jwtmint_bin(), "sign", self.keys, alg,
                              json.dumps({"alg": alg, "kid": kid}), json.dumps(claims)],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def auth(self, user, token, source=LOOPBACK, logout=True):
        """XOAUTH2 with SASL-IR from a loopback source address; returns the
        lines up to the tagged answer (AQ== sent after an error challenge)."""
        raw = socket.socket()
        raw.settimeout(30)
        raw.bind((source, 0))
        raw.connect((LOOPBACK, self.mux.tls_port))
        s = harness.client_context(self.mux.cert[0]).wrap_socket(raw, server_hostname="localhost")
        read_line(s)
        msg = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode())
        s.sendall(b"a AUTHENTICATE XOAUTH2 " + msg + b"\r\n")
        lines = []
        for _ in range(10):
            line = read_line(s).decode()
            if not line:
                break
            if line.startswith("* "):
                continue
            lines.append(line)
            if line.startswith("+ "):
                s.sendall(b"AQ==\r\n")
            elif line.startswith("a "):
                break
        if lines and lines[-1].startswith("a OK") and logout:
            s.sendall(b"b LOGOUT\r\n")
            while True:
                line = read_line(s)
                if not line or line.startswith(b"b "):
                    break
        s.close()
        return lines

    def open_session(self, user):
        """A logged-in XOAUTH2 session left open; returns its socket."""
        raw = socket.create_connection((LOOPBACK, self.mux.tls_port), timeout=30)
        s = harness.client_context(self.mux.cert[0]).wrap_socket(raw, server_hostname="localhost")
        read_line(s)
        msg = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01"
                                % (user, self.mint(user))).encode())
        s.sendall(b"a AUTHENTICATE XOAUTH2 " + msg + b"\r\n")
        while True:
            line = read_line(s)
            self.assertTrue(line, "closed")
            if line.startswith(b"a "):
                self.assertTrue(line.startswith(b"a OK"), line)
                return s

    def assertExchange(self, lines, code):
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("+ "), lines)
        self.assertEqual(json.loads(base64.b64decode(lines[0][2:]))["status"], "invalid_token")
        self.assertTrue(lines[1].startswith("a NO [%s]" % code), lines)

    def test_disabled_account(self):
        self.assertExchange(self.auth("grace@example.com", self.mint("grace@example.com")),
                            "CONTACTADMIN")

    def test_user_unknown_to_redis_is_routed_by_default(self):
        lines = self.auth("ivy@example.com", self.mint("ivy@example.com"))
        self.assertTrue(lines[-1].startswith("a OK"), lines)
        self.assertIn("Master user logging in as ivy@example.com", self.dovecot.log_text())

    def test_refused_tokens_feed_the_brute_force_counters(self):
        src = "127.0.0.45"
        for _ in range(3):
            self.assertExchange(self.auth("henry@example.com", self.mint("henry@example.com", -900),
                                          source=src), "AUTHENTICATIONFAILED")
        key = "imapmux:bf:pair:henry@example.com %s" % src
        deadline = time.monotonic() + 10
        while int(self.redis.cmd("GET", key) or 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(int(self.redis.cmd("GET", key) or 0), 3)
        # that pair is blocked now, even with a valid token
        self.assertExchange(self.auth("henry@example.com", self.mint("henry@example.com"),
                                      source=src), "AUTHENTICATIONFAILED")
        self.assertIn("blocked by the brute-force counters", self.mux.log_text())
        # from another address the owner logs in
        lines = self.auth("henry@example.com", self.mint("henry@example.com"), source="127.0.0.46")
        self.assertTrue(lines[-1].startswith("a OK"), lines)

    def test_session_cache_keyed_by_the_token(self):
        tok = self.mint("jack@example.com")
        hits = self.mux.log_text().count("session cache hit")
        for _ in range(2):
            lines = self.auth("jack@example.com", tok)
            self.assertTrue(lines[-1].startswith("a OK"), lines)
            time.sleep(0.3)  # the LOGOUT parks the connection
        self.assertGreater(self.mux.log_text().count("session cache hit"), hits)
        # another token of the same user: another key, never the parked one
        hits = self.mux.log_text().count("session cache hit")
        lines = self.auth("jack@example.com", self.mint("jack@example.com", 700, kid="ec1",
                                                        alg="ES256"))
        self.assertTrue(lines[-1].startswith("a OK"), lines)
        self.assertEqual(self.mux.log_text().count("session cache hit"), hits)
        self.assertNotIn(tok, self.mux.log_text())

    def test_session_limit(self):
        """OAuth logins take a lease among the login's sessions like any other."""
        first = self.open_session("kate@example.com")
        try:
            lines = self.auth("kate@example.com", self.mint("kate@example.com"))
            self.assertExchange(lines, "LIMIT")
        finally:
            first.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

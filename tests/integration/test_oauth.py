"""OAuth 2.0 logins (AUTHENTICATE OAUTHBEARER and XOAUTH2) validated by imapmux.

Keys and tokens are made by the test (tests/oauth/jwtmint, BoringSSL: RSA 2048,
EC P-256, Ed25519); a small HTTP server in this process serves the key set
and an RFC 7662 introspection endpoint.  Two real Dovecots: one that trusts
imapmux's master user (the legacy backend), one with its oauth2 passdb
against the same introspection endpoint (pass-through).
"""
import base64
import http.server
import imaplib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

import harness

LO = harness.LOOPBACK
ISS = "https://idp.test"
AUD = "imap"


def jwtmint_bin():
    b = os.environ.get("JWTMINT_BIN")
    if b:
        return b
    return os.path.join(os.path.dirname(harness.imapmux_bin()), "jwtmint")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdP:
    """The key set and the introspection endpoint, with request counts."""

    def __init__(self, jwks_path):
        self.jwks_path = jwks_path
        self.jwks_up = True
        self.jwks_requests = 0
        self.tokens = {}          # token -> introspection answer
        self.introspections = {}  # token -> requests from imapmux
        self.dovecot_introspections = 0
        self.auth_seen = set()
        self.lock = threading.Lock()
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/jwks.json":
                    return self._send(404, {})
                with idp.lock:
                    idp.jwks_requests += 1
                    up = idp.jwks_up
                if not up:
                    return self._send(503, {"error": "down"})
                with open(idp.jwks_path, "rb") as f:
                    self._send(200, f.read())

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                tok = form.get("token", [""])[0]
                ua = self.headers.get("User-Agent", "")
                with idp.lock:
                    idp.auth_seen.add(self.headers.get("Authorization", ""))
                    if ua.startswith("imapmux/"):
                        idp.introspections[tok] = idp.introspections.get(tok, 0) + 1
                    else:
                        idp.dovecot_introspections += 1
                    answer = idp.tokens.get(tok, {"active": False})
                self._send(200, answer)

        self.server = http.server.ThreadingHTTPServer((LO, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class OAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.idp = None
        cls.mux = cls.legacy = cls.modern = None
        try:
            cls._setup()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def _setup(cls):
        d = cls.tmp.path
        cls.keys = os.path.join(d, "keys")
        os.makedirs(cls.keys)
        subprocess.run([jwtmint_bin(), "keys", cls.keys], check=True)
        cls.jwks = os.path.join(cls.keys, "jwks.json")
        with open(cls.jwks) as f:
            cls.jwks_doc = json.load(f)
        cls.idp = IdP(cls.jwks)
        cls.cert = harness.make_cert(d)
        # the legacy backend: knows imapmux's master user, nothing of OAuth
        cls.legacy = harness.Dovecot(d, name="legacy", users={
            "alice@example.com": "pw-a", "bob@example.com": "pw-b", "carol@file.test": "pw-c"},
            master_users={"mux": "master-secret"},
            extra_conf="auth_verbose = yes\n").start()  # logs each master login
        # the modern backend: its own oauth2 passdb against our endpoint
        oauth2_conf = os.path.join(d, "dovecot-oauth2.conf.ext")
        with open(oauth2_conf, "w") as f:
            f.write("introspection_mode = post\n"
                    "introspection_url = http://dovecot:dsecret@%s:%d/introspect\n"
                    "username_attribute = email\nactive_attribute = active\n"
                    "active_value = true\n" % (LO, cls.idp.port))
        cls.modern = harness.Dovecot(d, name="modern", users={"nobody@none": "x"}, extra_conf=(
            "auth_mechanisms = plain login oauthbearer xoauth2\n"
            "passdb {\n  driver = oauth2\n  args = %s\n}\n" % oauth2_conf)).start()
        cls.audit_file = os.path.join(d, "audit.jsonl")
        backends = [
            {"name": "legacy", "host": LO, "port": cls.legacy.port, "tls": "none",
             "auth": "master", "master_user": "mux", "master_password": "master-secret"},
            {"name": "modern", "host": LO, "port": cls.modern.port, "tls": "none"},
        ]
        cls.mux = harness.Imapmux(d, backends, cls.cert, routes={
            "default": "legacy", "domains": {"intro.test": "modern"}},
            audit={"file": cls.audit_file}, limits={"max_auth_failures": 100})
        jwks_url = "http://%s:%d/jwks.json" % (LO, cls.idp.port)
        with open(cls.mux.conf, "a") as f:
            f.write("oauth:\n  domains:\n"
                    "    - {domain: example.com, jwks_url: %s, jwks_refresh_s: 5,"
                    " jwks_min_fetch_interval_s: 2, issuer: %s, audience: %s,"
                    " identity_claim: email, clock_skew_s: 30, scope: \"openid email\"}\n"
                    "    - {domain: file.test, jwks_file: %s, issuer: %s, audience: %s}\n"
                    "    - {domain: intro.test, introspection_url: http://%s:%d/introspect,"
                    " client_id: imapmux, client_secret: csecret, identity_claim: email,"
                    " cache_s: 300, negative_cache_s: 60}\n"
                    % (jwks_url, ISS, AUD, cls.jwks, ISS, AUD, LO, cls.idp.port))
        cls.mux.start()
        cls.tokens_used = []

    @classmethod
    def tearDownClass(cls):
        mux = getattr(cls, "mux", None)
        if mux is not None and mux.proc is not None:
            rc = mux.stop()
            log = mux.log_text()
            if rc != 0:
                raise AssertionError("imapmux exited with %s; log:\n%s" % (rc, log[-4000:]))
            if "ERROR: AddressSanitizer" in log or "runtime error:" in log or "LeakSanitizer" in log:
                raise AssertionError("sanitizer report in the imapmux log:\n" + log[-8000:])
        for dv in (getattr(cls, "legacy", None), getattr(cls, "modern", None)):
            if dv is not None:
                dv.stop()
        if getattr(cls, "idp", None) is not None:
            cls.idp.stop()
        cls.tmp.close()

    # --- building blocks -------------------------------------------------------

    def mint(self, alg, kid, claims=None, header=None, **extra):
        now = int(time.time())
        c = {"iss": ISS, "aud": AUD, "email": "alice@example.com", "exp": now + 600,
             "iat": now}
        c.update(claims or {})
        c.update(extra)
        c = {k: v for k, v in c.items() if v is not None}
        h = header if header is not None else {"alg": alg, "kid": kid, "typ": "JWT"}
        out = subprocess.run([jwtmint_bin(), "sign", self.keys, alg, json.dumps(h),
                              json.dumps(c)], check=True, capture_output=True, text=True)
        tok = out.stdout.strip()
        self.tokens_used.append(tok)
        return tok

    def bearer_msg(self, user, token):
        a = "a=%s" % user if user else ""
        return base64.b64encode(("n,%s,\x01host=localhost\x01auth=Bearer %s\x01\x01"
                                 % (a, token)).encode()).decode()

    def raw_auth(self, mech, msg, ir=True):
        """AUTHENTICATE over a raw TLS socket; returns the lines seen (the
        dummy reply AQ== sent after an error challenge)."""
        s, greeting = self.mux.raw_tls(timeout=30)
        self.assertIn(b"AUTH=OAUTHBEARER", greeting)
        self.assertIn(b"AUTH=XOAUTH2", greeting)
        lines = []
        try:
            if ir:
                s.sendall(("a AUTHENTICATE %s %s\r\n" % (mech, msg)).encode())
            else:
                s.sendall(("a AUTHENTICATE %s\r\n" % mech).encode())
                cont = harness.read_line(s)
                self.assertEqual(cont, b"+ \r\n")
                s.sendall((msg + "\r\n").encode())
            for _ in range(10):
                line = harness.read_line(s)
                if not line:
                    break
                lines.append(line.decode())
                if line.startswith(b"+ "):
                    s.sendall(b"AQ==\r\n")
                elif line.startswith(b"a "):
                    break
        finally:
            s.close()
        return lines

    def assertRefused(self, lines, code="AUTHENTICATIONFAILED"):
        """The RFC 7628 section 3.2.3 exchange: the error as a base64 JSON
        continuation, then (after AQ==) the tagged NO."""
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("+ "), lines)
        err = json.loads(base64.b64decode(lines[0][2:].strip()))
        self.assertEqual(err["schemes"], "bearer")
        self.assertIn(err["status"], ("invalid_token", "temporarily_unavailable"))
        self.assertTrue(lines[1].startswith("a NO [%s]" % code), lines)
        return err

    def imaplib_xoauth2(self, user, token):
        m = self.mux.ssl_client()
        typ, _ = m.authenticate("XOAUTH2", lambda _: (
            "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode())
        self.assertEqual(typ, "OK")
        typ, data = m.select("INBOX")
        self.assertEqual(typ, "OK")
        m.logout()

    def curl_bearer(self, user, token):
        return subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", self.cert[0],
                               "--login-options", "AUTH=OAUTHBEARER",
                               "imaps://%s@127.0.0.1:%d/" % (urllib.parse.quote(user),
                                                             self.mux.tls_port),
                               "--oauth2-bearer", token],
                              capture_output=True, text=True, timeout=60)

    # --- valid tokens ----------------------------------------------------------------

    def test_valid_each_algorithm_curl_oauthbearer(self):
        before = self.legacy.log_text().count("Master user logging in as alice@example.com")
        for alg, kid in (("RS256", "rsa1"), ("ES256", "ec1"), ("EdDSA", "ed1")):
            tok = self.mint(alg, kid)
            r = self.curl_bearer("alice@example.com", tok)
            self.assertEqual(r.returncode, 0, "%s: %s" % (alg, r.stderr))
            self.assertIn("INBOX", r.stdout)
        # the legacy backend saw master logins as the token's identity
        log = self.legacy.log_text()
        self.assertGreaterEqual(log.count("Master user logging in as alice@example.com"),
                                before + 3)

    def test_valid_imaplib_xoauth2_each_algorithm(self):
        for alg, kid in (("RS256", "rsa1"), ("ES256", "ec1"), ("EdDSA", "ed1")):
            self.imaplib_xoauth2("bob@example.com", self.mint(alg, kid, email="bob@example.com"))

    def test_oauthbearer_without_sasl_ir(self):
        tok = self.mint("ES256", "ec1")
        s, _ = self.mux.raw_tls(timeout=30)
        s.sendall(b"a AUTHENTICATE OAUTHBEARER\r\n")
        self.assertEqual(harness.read_line(s), b"+ \r\n")
        s.sendall((self.bearer_msg("alice@example.com", tok) + "\r\n").encode())
        line = harness.read_line(s)
        self.assertTrue(line.startswith(b"a OK"), line)
        s.sendall(b"b LOGOUT\r\n")
        s.close()

    def test_oauthbearer_without_authzid_needs_a_catch_all_entry(self):
        # which issuer to trust is chosen by the login's domain: without one
        # only a "*" entry could apply, and this configuration has none
        tok = self.mint("ES256", "ec1")
        self.assertRefused(self.raw_auth("OAUTHBEARER", self.bearer_msg("", tok), ir=False))

    def test_jwks_file_domain(self):
        self.imaplib_xoauth2("carol@file.test", self.mint("EdDSA", "ed1", email="carol@file.test"))

    # --- refusals, each with the RFC 7628 exchange ---------------------------------------

    def test_refusals(self):
        now = int(time.time())
        cases = {
            "expired": self.mint("RS256", "rsa1", exp=now - 300),
            "not yet valid": self.mint("RS256", "rsa1", nbf=now + 300),
            "wrong issuer": self.mint("ES256", "ec1", iss="https://evil.test"),
            "wrong audience": self.mint("EdDSA", "ed1", aud="smtp"),
            "unknown kid": self.mint("RS256", "rsa1", header={"alg": "RS256", "kid": "nope"}),
            "kid of another key type": self.mint("ES256", "ec1",
                                                 header={"alg": "ES256", "kid": "rsa1"}),
        }
        claims = {"iss": ISS, "aud": AUD, "email": "alice@example.com", "exp": now + 600}
        body = b64url(json.dumps(claims).encode())
        none_hdr = b64url(json.dumps({"alg": "none", "kid": "rsa1"}).encode())
        cases["alg none"] = "%s.%s." % (none_hdr, body)
        # HMAC keyed with the RSA public key (the algorithm confusion attack)
        import hashlib
        import hmac
        hs_hdr = b64url(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
        pub = json.dumps(self.jwks_doc["keys"][0]).encode()
        mac = hmac.new(pub, ("%s.%s" % (hs_hdr, body)).encode(), hashlib.sha256).digest()
        cases["hmac with the public key"] = "%s.%s.%s" % (hs_hdr, body, b64url(mac))
        good = self.mint("RS256", "rsa1")
        h, p, sig = good.split(".")
        evil = dict(claims, email="mallory@example.com")
        cases["tampered payload"] = "%s.%s.%s" % (h, b64url(json.dumps(evil).encode()), sig)
        for name, tok in cases.items():
            self.tokens_used.append(tok)
            with self.subTest(name):
                self.assertRefused(self.raw_auth("OAUTHBEARER",
                                                 self.bearer_msg("alice@example.com", tok)))
            with self.subTest(name + " (XOAUTH2, no SASL-IR)"):
                msg = base64.b64encode(("user=alice@example.com\x01auth=Bearer %s\x01\x01"
                                        % tok).encode()).decode()
                self.assertRefused(self.raw_auth("XOAUTH2", msg, ir=False))
        err = self.assertRefused(self.raw_auth("OAUTHBEARER", self.bearer_msg(
            "alice@example.com", cases["expired"])))
        self.assertEqual(err["scope"], "openid email")

    def test_other_users_token_with_mismatching_authzid(self):
        tok = self.mint("EdDSA", "ed1", email="bob@example.com")
        self.assertRefused(self.raw_auth("OAUTHBEARER", self.bearer_msg("alice@example.com", tok)),
                           code="AUTHORIZATIONFAILED")
        msg = base64.b64encode(("user=alice@example.com\x01auth=Bearer %s\x01\x01"
                                % tok).encode()).decode()
        self.assertRefused(self.raw_auth("XOAUTH2", msg), code="AUTHORIZATIONFAILED")

    def test_issuer_vouches_for_its_domain_only(self):
        # a good example.com token whose identity lives in another domain
        tok = self.mint("ES256", "ec1", email="carol@file.test")
        self.assertRefused(self.raw_auth("OAUTHBEARER", self.bearer_msg("", tok)))

    # --- key set outage --------------------------------------------------------------------

    def test_jwks_down_keeps_cached_keys(self):
        self.imaplib_xoauth2("alice@example.com", self.mint("RS256", "rsa1"))
        with self.idp.lock:
            self.idp.jwks_up = False
            before = self.idp.jwks_requests
        try:
            # a background refresh (every 5 s) fails meanwhile
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with self.idp.lock:
                    if self.idp.jwks_requests > before:
                        break
                time.sleep(0.2)
            self.assertGreater(self.idp.jwks_requests, before)
            time.sleep(0.5)
            self.assertIn("key set fetch failed", self.mux.log_text())
            for alg, kid in (("RS256", "rsa1"), ("ES256", "ec1"), ("EdDSA", "ed1")):
                self.imaplib_xoauth2("alice@example.com", self.mint(alg, kid))
        finally:
            with self.idp.lock:
                self.idp.jwks_up = True

    def test_unknown_kid_fetches_are_rate_limited(self):
        with self.idp.lock:
            before = self.idp.jwks_requests
        for i in range(5):
            tok = self.mint("RS256", "rsa1", header={"alg": "RS256", "kid": "ghost%d" % i})
            self.assertRefused(self.raw_auth("OAUTHBEARER", self.bearer_msg("", tok)))
        with self.idp.lock:
            fetched = self.idp.jwks_requests - before
        # at most one on-demand fetch in the 2 s interval, plus a background one
        self.assertLessEqual(fetched, 2)

    # --- introspection ----------------------------------------------------------------------

    def test_introspection_cached_and_pass_through(self):
        tok = "intro-" + b64url(os.urandom(24))
        self.tokens_used.append(tok)
        with self.idp.lock:
            self.idp.tokens[tok] = {"active": True, "email": "dave@intro.test",
                                    "exp": int(time.time()) + 600, "scope": "imap"}
        for _ in range(3):
            # pass-through: the modern Dovecot checks the same token itself
            self.imaplib_xoauth2("dave@intro.test", tok)
        r = self.curl_bearer("dave@intro.test", tok)
        self.assertEqual(r.returncode, 0, r.stderr)
        with self.idp.lock:
            self.assertEqual(self.idp.introspections.get(tok), 1)
            self.assertGreaterEqual(self.idp.dovecot_introspections, 1)
            auth = set(self.idp.auth_seen)
        self.assertIn("Basic " + base64.b64encode(b"imapmux:csecret").decode(), auth)
        self.assertIn("user=<dave@intro.test>", self.modern.log_text())

    def test_introspection_inactive_cached_briefly(self):
        tok = "revoked-" + b64url(os.urandom(24))
        self.tokens_used.append(tok)
        for _ in range(2):
            self.assertRefused(self.raw_auth("OAUTHBEARER", self.bearer_msg("eve@intro.test", tok)))
        with self.idp.lock:
            self.assertEqual(self.idp.introspections.get(tok), 1)

    # --- reload ----------------------------------------------------------------------------------

    def test_reload_changing_oauth_is_refused(self):
        with open(self.mux.conf) as f:
            conf = f.read()
        try:
            with open(self.mux.conf, "w") as f:
                f.write(conf.replace("audience: %s," % AUD, "audience: other,", 1))
            before = self.mux.log_text().count("reload refused")
            self.mux.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while self.mux.log_text().count("reload refused") == before and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            line = [l for l in self.mux.log_text().splitlines() if "reload refused" in l][before]
            self.assertIn("oauth changed, which needs a restart", line)
        finally:
            with open(self.mux.conf, "w") as f:
                f.write(conf)
        # the entries the process started with keep working
        self.imaplib_xoauth2("alice@example.com", self.mint("EdDSA", "ed1"))

    # --- secrets ---------------------------------------------------------------------------------

    def test_zz_no_token_anywhere(self):
        """Runs last (name order): every token used by the tests above."""
        self.assertGreater(len(self.tokens_used), 10)
        with open(self.audit_file, errors="replace") as f:
            audit = f.read()
        self.assertIn("OAUTHBEARER", audit)  # the mechanism is recorded, nothing more
        log = self.mux.log_text()
        self.assertIn("oauth", log)
        for tok in self.tokens_used:
            parts = [tok] + [p for p in tok.split(".") if len(p) > 16]
            sig = tok.split(".")[-1]
            if len(sig) > 16:
                parts.append(sig)
            for piece in parts:
                self.assertNotIn(piece, log)
                self.assertNotIn(piece, audit)
            for b64 in (base64.b64encode(("auth=Bearer %s" % tok).encode()).decode()[:40],):
                self.assertNotIn(b64, log)


class NoOAuthConfiguredTest(harness.ProxyTestCase):
    """Without an oauth section nothing of it is offered or taken."""

    def test_not_advertised_nor_accepted(self):
        s, greeting = self.mux.raw_tls()
        self.assertNotIn(b"OAUTHBEARER", greeting)
        self.assertNotIn(b"XOAUTH2", greeting)
        self.assertIn(b"AUTH=PLAIN", greeting)
        for mech in (b"OAUTHBEARER", b"XOAUTH2"):
            s.sendall(b"a AUTHENTICATE " + mech + b" bixhPWFAYiwBYXV0aD1CZWFyZXIgeAEB\r\n")
            self.assertEqual(harness.read_line(s),
                             b"a NO [CANNOT] Unsupported authentication mechanism\r\n")
        s.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

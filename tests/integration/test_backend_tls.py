"""Backend connections over STARTTLS and implicit TLS with certificate
verification, ID forwarding of the client address, an RSA front certificate."""
import socket
import unittest

import harness
from harness import LOOPBACK, read_line, read_until_tag


class BackendTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        try:
            cls.cert = harness.make_cert(cls.tmp.path)
            cls.rsa = harness.make_cert(cls.tmp.path, kind="rsa")
            cls.d_starttls = harness.Dovecot(cls.tmp.path, users={"alice": "pw"}, ssl_mode="starttls",
                                             cert=cls.cert, name="dstarttls").start()
            cls.d_implicit = harness.Dovecot(cls.tmp.path, users={"bob": "pw2"}, ssl_mode="implicit",
                                             cert=cls.cert, name="dimplicit").start()
            backends = [
                {"name": "st", "host": LOOPBACK, "port": cls.d_starttls.port, "tls": "starttls",
                 "ca_file": cls.cert[0], "server_name": "localhost", "forward_id": True},
                {"name": "im", "host": "localhost", "port": cls.d_implicit.port, "tls": "implicit",
                 "ca_file": cls.cert[0]},
                # same server, but a CA that did not sign it: verification must fail
                {"name": "untrusted", "host": LOOPBACK, "port": cls.d_implicit.port,
                 "tls": "implicit", "ca_file": cls.rsa[0]},
                {"name": "unverified", "host": LOOPBACK, "port": cls.d_implicit.port,
                 "tls": "implicit", "verify": False},
            ]
            cls.mux = harness.Imapmux(cls.tmp.path, backends, cls.rsa,
                                      routes={"default": "st",
                                              "users": {"bob": "im", "mallory": "untrusted",
                                                        "bob@unverified": "unverified"}}).start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "mux", None) is not None:
            assert cls.mux.stop() == 0
        for d in ("d_starttls", "d_implicit"):
            if getattr(cls, d, None) is not None:
                getattr(cls, d).stop()
        cls.tmp.close()

    def test_starttls_backend_with_id_forwarding(self):
        s = socket.create_connection((LOOPBACK, self.mux.tls_port), timeout=10)
        client_port = s.getsockname()[1]
        t = harness.client_context(self.rsa[0]).wrap_socket(s, server_hostname="localhost")
        self.assertTrue(read_line(t).startswith(b"* OK"))
        self.assertEqual(t.version(), "TLSv1.3")
        t.sendall(b"a LOGIN alice pw\r\n")
        self.assertTrue(read_until_tag(t, "a")[-1].startswith(b"a OK [CAPABILITY"))
        t.sendall(b"b LOGOUT\r\n")
        read_until_tag(t, "b")
        t.close()
        log = self.d_starttls.log_text()
        # the backend saw TLS and the client's own source port (forwarded by ID)
        self.assertIn("user=<alice>", log)
        self.assertIn("rport=%d" % client_port, log)
        self.assertIn("TLS", log)

    def test_implicit_tls_backend_by_host_name(self):
        m = self.mux.ssl_client()
        typ, _ = m.login("bob", "pw2")
        self.assertEqual(typ, "OK")
        self.assertEqual(m.select("INBOX")[0], "OK")
        m.logout()

    def test_untrusted_backend_certificate_refused(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN mallory pw\r\n")
        line = read_line(s)
        self.assertTrue(line.startswith(b"a NO [UNAVAILABLE]"), line)
        s.close()
        self.assertIn("TLS handshake failed", self.mux.log_text())

    def test_verification_can_be_turned_off(self):
        # bob@unverified is routed to a backend with verify: false; dovecot
        # knows no such user, so the login reaches the backend and is refused
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN bob@unverified pw2\r\n")
        line = read_line(s)
        self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)
        s.close()


class Ipv6ListenerTest(unittest.TestCase):
    def test_ipv6_loopback(self):
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback on this machine")
        tmp = harness.TempDir()
        dov = mux = None
        try:
            cert = harness.make_cert(tmp.path)
            dov = harness.Dovecot(tmp.path).start()
            port6 = harness.free_port()
            mux = harness.Imapmux(tmp.path, [{"name": "m", "host": LOOPBACK, "port": dov.port,
                                              "tls": "none"}], cert,
                                  extra_listeners=[("::1", port6, "implicit")]).start()
            s = socket.create_connection(("::1", port6), timeout=10)
            ctx = harness.client_context(cert[0])
            ctx.check_hostname = False
            t = ctx.wrap_socket(s)
            self.assertTrue(read_line(t).startswith(b"* OK"))
            t.sendall(b"a LOGIN alice pw\r\n")
            self.assertTrue(read_until_tag(t, "a")[-1].startswith(b"a OK"))
            t.close()
            self.assertEqual(mux.stop(), 0)
            mux = None
        finally:
            if mux is not None:
                mux.stop()
            if dov is not None:
                dov.stop()
            tmp.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The cleartext listener: STARTTLS required, injection defence."""
import ssl
import time
import unittest

import harness
from harness import read_line, read_until_tag, read_all


class StarttlsTest(harness.ProxyTestCase):
    def test_capabilities_before_tls(self):
        s, greeting = self.mux.raw_plain()
        self.assertIn(b"STARTTLS", greeting)
        self.assertIn(b"LOGINDISABLED", greeting)
        self.assertNotIn(b"AUTH=", greeting)
        s.close()

    def test_login_before_starttls_refused(self):
        s, _ = self.mux.raw_plain()
        s.sendall(b"a LOGIN alice pw\r\n")
        self.assertTrue(read_line(s).startswith(b"a NO [PRIVACYREQUIRED]"))
        s.sendall(b"b AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n")
        self.assertTrue(read_line(s).startswith(b"b NO [PRIVACYREQUIRED]"))
        s.close()

    def test_imaplib_starttls_session(self):
        self.dovecot.add_message("bob", harness.sample_message("starttls"))
        m = self.mux.starttls_client()
        typ, caps = m.capability()
        self.assertIn(b"AUTH=PLAIN", caps[0])
        self.assertNotIn(b"STARTTLS", caps[0])
        typ, _ = m.login("bob", "pw2")
        self.assertEqual(typ, "OK")
        typ, n = m.select("INBOX")
        self.assertEqual(typ, "OK")
        typ, d = m.fetch("1", "(BODY.PEEK[])")
        self.assertIn(b"Subject: starttls", d[0][1])
        m.logout()

    def test_starttls_command_injection(self):
        s, _ = self.mux.raw_plain()
        s.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        self.assertEqual(read_line(s), b"a OK Begin TLS negotiation now\r\n")
        ctx = harness.client_context(self.cert[0])
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"c NOOP\r\n")
        got = b"".join(read_until_tag(t, "c"))
        self.assertNotIn(b"b OK", got)
        self.assertNotIn(b"* CAPABILITY", got)
        self.assertIn(b"c OK NOOP completed", got)
        t.sendall(b"d LOGOUT\r\n")
        rest = read_all(t, timeout=3)
        self.assertNotIn(b"b OK", rest)
        self.assertIn(b"d OK", rest)
        t.close()

    def test_starttls_twice_refused(self):
        m = self.mux.starttls_client()
        tag = m._new_tag()
        m.send(tag + b" STARTTLS\r\n")
        self.assertIn(b"BAD", m.readline())
        m.logout()


if __name__ == "__main__":
    unittest.main(verbosity=2)

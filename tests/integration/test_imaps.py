"""Python imaplib over implicit TLS through imapmux to a real dovecot."""
import base64
import os
import threading
import time
import unittest

import harness
from harness import read_line, read_until_tag


class ImapsTest(harness.ProxyTestCase):
    def test_login_list_select_fetch(self):
        self.dovecot.add_message("alice", harness.sample_message("first"))
        m = self.mux.ssl_client()
        self.assertIn("AUTH=PLAIN", m.capabilities)
        self.assertNotIn("STARTTLS", m.capabilities)
        typ, data = m.login("alice", "pw")
        self.assertEqual(typ, "OK")
        caps = data[0].decode()
        self.assertIn("[CAPABILITY IMAP4rev1", caps)
        for gone in ("STARTTLS", "AUTH=", "LOGINDISABLED", "SASL-IR", "UNAUTHENTICATE"):
            self.assertNotIn(gone, caps)
        # COMPRESS is imapmux's own (it terminates it), never the backend's
        self.assertEqual(caps.count("COMPRESS="), 1, caps)
        self.assertIn(" COMPRESS=DEFLATE", caps)
        self.assertIn("IDLE", caps)
        typ, boxes = m.list()
        self.assertEqual(typ, "OK")
        self.assertTrue(any(b"INBOX" in b for b in boxes))
        typ, n = m.select("INBOX")
        self.assertEqual(typ, "OK")
        self.assertGreaterEqual(int(n[0]), 1)
        typ, d = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(typ, "OK")
        self.assertIn(b"Subject:", d[0][1])
        m.logout()

    def test_append_10mb_byte_exact(self):
        body = os.urandom(7 * 1024 * 1024)
        encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
        msg = (b"From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + encoded)
        self.assertGreater(len(msg), 9 * 1024 * 1024)
        m = self.mux.ssl_client()
        m.login("alice", "pw")
        m.create("Big")
        typ, data = m.append("Big", None, None, msg)
        self.assertEqual(typ, "OK", data)
        m.select("Big")
        typ, d = m.fetch("1", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        self.assertEqual(len(d[0][1]), len(msg))
        self.assertEqual(d[0][1], msg)
        m.logout()

    def test_idle_sees_append_from_second_connection(self):
        m = self.mux.ssl_client()
        m.login("alice", "pw")
        m.create("Idle")
        m.select("Idle")
        tag = m._new_tag().decode()
        m.send(("%s IDLE\r\n" % tag).encode())
        self.assertTrue(m.readline().startswith(b"+"))

        def deliver():
            time.sleep(0.5)
            m2 = self.mux.ssl_client()
            m2.login("alice", "pw")
            m2.append("Idle", None, None, harness.sample_message("while idle"))
            m2.logout()

        t = threading.Thread(target=deliver)
        t.start()
        m.sock.settimeout(20)
        seen = b""
        deadline = time.monotonic() + 20
        while b"EXISTS" not in seen and time.monotonic() < deadline:
            seen += m.readline()
        t.join()
        self.assertIn(b"* 1 EXISTS", seen)
        m.send(b"DONE\r\n")
        line = m.readline()
        while not line.startswith(tag.encode()):
            line = m.readline()
        self.assertTrue(line.startswith((tag + " OK").encode()), line)
        m.logout()

    def test_authenticate_plain_with_sasl_ir(self):
        s, greeting = self.mux.raw_tls()
        self.assertIn(b"SASL-IR", greeting)
        ir = base64.b64encode(b"\0alice\0pw")
        s.sendall(b"a AUTHENTICATE PLAIN " + ir + b"\r\n")
        lines = read_until_tag(s, "a")
        self.assertTrue(lines[-1].startswith(b"a OK [CAPABILITY "), lines)
        s.sendall(b"b LOGOUT\r\n")
        self.assertTrue(read_until_tag(s, "b")[-1].startswith(b"b OK"))
        s.close()

    def test_authenticate_plain_with_continuation_and_cancel(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a AUTHENTICATE PLAIN\r\n")
        self.assertTrue(read_line(s).startswith(b"+"))
        s.sendall(b"*\r\n")
        self.assertTrue(read_line(s).startswith(b"a BAD"))
        s.sendall(b"b AUTHENTICATE PLAIN\r\n")
        self.assertTrue(read_line(s).startswith(b"+"))
        s.sendall(base64.b64encode(b"\0bob\0pw2") + b"\r\n")
        self.assertTrue(read_until_tag(s, "b")[-1].startswith(b"b OK [CAPABILITY "))
        s.close()

    def test_login_with_literals_and_pipelining(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN {5}\r\n")
        self.assertTrue(read_line(s).startswith(b"+ "))
        # non-synchronizing literal for the password, then commands pipelined
        s.sendall(b"alice {2+}\r\npw\r\nb SELECT INBOX\r\nc LOGOUT\r\n")
        lines = read_until_tag(s, "c")
        text = b"".join(lines)
        self.assertIn(b"a OK [CAPABILITY", text)
        self.assertIn(b"b OK [READ-WRITE]", text)
        self.assertTrue(lines[-1].startswith(b"c OK"))
        s.close()

    def test_preauth_commands(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a CAPABILITY\r\nb NOOP\r\nc ID NIL\r\nd ID (\"name\" \"test\")\r\ne STARTTLS\r\n"
                  b"f SELECT INBOX\r\ng AUTHENTICATE CRAM-MD5\r\nh LOGOUT\r\n")
        lines = read_until_tag(s, "h")
        text = b"".join(lines)
        self.assertIn(b"* CAPABILITY IMAP4rev1", text)
        self.assertIn(b"a OK", text)
        self.assertIn(b"b OK", text)
        self.assertIn(b"* ID (\"name\" \"imapmux\"", text)
        self.assertIn(b"c OK", text)
        self.assertIn(b"d OK", text)
        self.assertIn(b"e BAD", text)
        self.assertIn(b"f BAD", text)
        self.assertIn(b"g NO", text)
        self.assertIn(b"* BYE", text)
        self.assertTrue(lines[-1].startswith(b"h OK"))
        s.close()

    def test_no_password_in_log(self):
        m = self.mux.ssl_client()
        try:
            m.login("alice", "Wr0ngSecretXyz")
        except m.error:
            pass
        m.login("alice", "pw")
        m.logout()
        # dovecot delays repeated failures from one address (up to 15 s)
        s, _ = self.mux.raw_tls(timeout=40)
        s.sendall(b"a AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0SaslSecretQq") + b"\r\n")
        read_until_tag(s, "a", timeout=40)
        # the continuation path, and a literal password
        s.sendall(b"b AUTHENTICATE PLAIN\r\n")
        read_line(s)
        s.sendall(base64.b64encode(b"\0alice\0ContSecretKk") + b"\r\n")
        read_until_tag(s, "b", timeout=40)
        s.sendall(b"c LOGIN alice {13+}\r\nLitSecretJjjj\r\n")
        read_until_tag(s, "c", timeout=40)
        s.close()
        log = self.mux.log_text()
        self.assertIn("login failed", log)
        for secret in ("Wr0ngSecretXyz", "SaslSecretQq", "ContSecretKk", "LitSecretJjjj",
                       base64.b64encode(b"\0alice\0SaslSecretQq").decode(),
                       base64.b64encode(b"\0alice\0ContSecretKk").decode()):
            self.assertNotIn(secret, log)


if __name__ == "__main__":
    unittest.main(verbosity=2)

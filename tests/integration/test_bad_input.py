"""Bad input by raw socket: every case gets a bounded answer and the daemon
keeps serving."""
import os
import socket
import struct
import time
import unittest

import harness
from harness import read_line, read_until_tag, read_all, read_to_eof


def tls10_client_hello():
    """A ClientHello that offers TLS 1.0 only (record and client_version 3.1)."""
    body = (b"\x03\x01" + os.urandom(32) + b"\x00"          # version, random, no session id
            + b"\x00\x04\x00\x2f\x00\x35"                   # AES128-SHA, AES256-SHA
            + b"\x01\x00")                                  # null compression, no extensions
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


class BadInputTest(harness.ProxyTestCase):
    limits = {"max_line_len": 8192, "max_preauth_literal_len": 8192}

    def test_one_megabyte_line(self):
        s, _ = self.mux.raw_plain()
        s.sendall(b"a NOOP " + b"x" * (1024 * 1024) + b"\r\nb NOOP\r\n")
        first = read_line(s)
        self.assertTrue(first.startswith(b"a BAD") and b"too long" in first, first)
        self.assertEqual(read_line(s), b"b OK NOOP completed\r\n")
        s.close()
        self.assertServing()

    def test_huge_synchronizing_literal_before_login(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN {100000000}\r\n")
        line = read_line(s)
        # refused at once: BAD, never a "+" continuation inviting the data
        self.assertTrue(line.startswith(b"a BAD"), line)
        self.assertIn(b"too large", line.lower())
        s.sendall(b"b NOOP\r\n")
        self.assertEqual(read_line(s), b"b OK NOOP completed\r\n")
        s.close()
        self.assertServing()

    def test_huge_non_synchronizing_literal_before_login(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN {100000000+}\r\n" + b"A" * 4096)
        data = read_to_eof(s, timeout=5)
        self.assertTrue(data.startswith(b"* BYE"), data[:200])
        self.assertNotIn(b"+ ", data)
        s.close()
        self.assertServing()

    def test_literal_overflowing_digits(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a LOGIN {99999999999999999999999999}\r\n")
        line = read_line(s)
        self.assertTrue(line.startswith(b"a BAD"), line)
        s.sendall(b"b NOOP\r\n")
        self.assertEqual(read_line(s), b"b OK NOOP completed\r\n")
        s.close()
        self.assertServing()

    def test_long_authenticate_response_line(self):
        s, _ = self.mux.raw_tls()
        s.sendall(b"a AUTHENTICATE PLAIN\r\n")
        self.assertTrue(read_line(s).startswith(b"+"))
        s.sendall(b"A" * 100000 + b"\r\nb NOOP\r\n")
        line = read_line(s)
        self.assertTrue(line.startswith(b"a BAD") or line.startswith(b"a NO"), line)
        self.assertEqual(read_line(s), b"b OK NOOP completed\r\n")
        s.close()
        self.assertServing()

    def test_ten_bad_commands_end_in_bye(self):
        s, _ = self.mux.raw_tls()
        for i in range(9):
            s.sendall(b"x%d FROBNICATE\r\n" % i)
            line = read_line(s)
            self.assertTrue(line.startswith(b"x%d BAD " % i), line)
        # nine are tolerated: the connection still works
        s.sendall(b"n NOOP\r\n")
        self.assertEqual(read_line(s), b"n OK NOOP completed\r\n")
        s.sendall(b"x9 FROBNICATE\r\n")
        self.assertTrue(read_line(s).startswith(b"x9 BAD "))
        rest = read_to_eof(s, timeout=5)
        self.assertEqual(rest, b"* BYE Too many invalid commands\r\n")
        s.close()
        self.assertServing()

    def test_garbage_bytes(self):
        s, _ = self.mux.raw_plain()
        s.sendall(bytes(range(256)) * 64)
        data = read_to_eof(s, timeout=5)
        self.assertIn(b"BAD", data)
        self.assertIn(b"* BYE Too many invalid commands", data)
        s.close()
        self.assertServing()

    def test_syntax_errors_answered_with_reasons(self):
        s, _ = self.mux.raw_tls()
        cases = [
            (b"a LOGIN onlyuser\r\n", b"a BAD"),
            (b"b LOGIN \"unterminated\r\n", b"b BAD"),
            (b"c ID ((((((((((x))))))))))\r\n", b"c BAD"),
            (b"d NOOP " + b"x " * 100 + b"\r\n", b"d BAD"),
            (b"\r\n", b"* BAD"),
            (b"e\r\n", b"e BAD"),
            (b"f+ NOOP\r\n", b"* BAD"),
        ]
        for sent, want in cases:
            s.sendall(sent)
            line = read_line(s)
            self.assertTrue(line.startswith(want), (sent, line))
        s.sendall(b"z NOOP\r\n")
        self.assertEqual(read_line(s), b"z OK NOOP completed\r\n")
        s.close()
        self.assertServing()

    def test_tls10_client_hello_refused(self):
        s = socket.create_connection(("127.0.0.1", self.mux.tls_port), timeout=5)
        s.sendall(tls10_client_hello())
        data = read_all(s, timeout=5)
        # a fatal alert (content type 21) or a plain close; never a ServerHello
        self.assertTrue(data == b"" or data[0] == 0x15, data[:20])
        s.close()
        self.assertServing()

    def test_plaintext_on_tls_port(self):
        s = socket.create_connection(("127.0.0.1", self.mux.tls_port), timeout=5)
        s.sendall(b"a LOGIN alice pw\r\n")
        data = read_all(s, timeout=5)
        self.assertNotIn(b"OK", data)
        s.close()
        self.assertServing()


class SlowClientTest(harness.ProxyTestCase):
    limits = {"preauth_timeout_ms": 3000}

    def test_one_byte_per_second_gets_bye(self):
        start = time.monotonic()
        s, _ = self.mux.raw_plain()
        got = b""
        s.settimeout(1.0)
        for ch in b"a NOOP and never the end of the line":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                break
            try:
                chunk = s.recv(1000)
                got += chunk
                if not chunk or b"BYE" in got:
                    break
            except socket.timeout:
                pass
            if time.monotonic() - start > 15:
                break
        elapsed = time.monotonic() - start
        self.assertIn(b"* BYE Pre-authentication timeout", got)
        # the timeout counts from accept, whatever trickles in: 3 s, not
        # reset by every byte
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 6)
        # and the connection is closed after the BYE
        read_to_eof(s, timeout=5)
        s.close()
        self.assertServing()

    def test_stalled_tls_handshake_is_closed(self):
        s = socket.create_connection(("127.0.0.1", self.mux.tls_port), timeout=15)
        s.sendall(tls10_client_hello()[:10])  # half a record, then nothing
        start = time.monotonic()
        data = read_all(s, timeout=12)
        self.assertEqual(data, b"")
        self.assertLess(time.monotonic() - start, 11)
        s.close()
        self.assertServing()


if __name__ == "__main__":
    unittest.main(verbosity=2)

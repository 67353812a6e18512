"""Bounds before login against a hostile client: a client that sends without
reading cannot grow the proxy's memory, a line without an end is cut off, and
an ID command as large as RFC 2971 allows is answered."""
import os
import select
import time
import unittest

import harness
from harness import read_line, read_all


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def send_without_reading(sock, chunk, total, seconds, stall=2.0, until_answer=False):
    """Sends chunk repeatedly, never reading, until total bytes went out, the
    time is up, nothing could be sent for stall seconds, the peer closed, or
    (until_answer) it has something to read. Returns the bytes sent."""
    sock.setblocking(False)
    sent = 0
    start = last = time.monotonic()
    view = memoryview(chunk)
    off = 0
    while sent < total and time.monotonic() - start < seconds:
        if until_answer and select.select([sock], [], [], 0)[0]:
            break
        try:
            n = sock.send(view[off:])
        except (BrokenPipeError, ConnectionResetError):
            break
        except BlockingIOError:
            if time.monotonic() - last > stall:
                break
            time.sleep(0.01)
            continue
        sent += n
        off = (off + n) % len(chunk)
        last = time.monotonic()
    return sent


class PreauthBoundsTest(harness.ProxyTestCase):
    limits = {"max_line_len": 8192, "max_preauth_literal_len": 8192}

    @classmethod
    def setUpClass(cls):
        # freed memory that AddressSanitizer keeps in quarantine would count
        # as growth: this file measures the proxy's live memory
        opts = os.environ.get("ASAN_OPTIONS", "")
        os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=0"
        super().setUpClass()

    def test_noop_flood_without_reading_stays_bounded(self):
        pid = self.mux.proc.pid
        s, greeting = self.mux.raw_plain(timeout=30)
        self.assertTrue(greeting.startswith(b"* OK"))
        time.sleep(0.5)
        before = rss_kib(pid)
        noops = b"a NOOP\r\n" * 8192
        # up to 10^7 pipelined NOOPs (80 MB) offered; the proxy answers each
        # with 22 bytes, which would be 220 MB if it kept reading
        sent = send_without_reading(s, noops, 10 ** 7 * 8, seconds=30)
        time.sleep(1.0)
        after = rss_kib(pid)
        s.close()
        # the client got stuck long before its 80 MB were taken
        self.assertLess(sent, 40 * 1024 * 1024, "the proxy read %d bytes" % sent)
        self.assertLess(after - before, 24 * 1024,
                        "RSS grew from %d to %d KiB after %d bytes" % (before, after, sent))
        self.assertServing()

    def test_reads_again_once_the_client_reads(self):
        s, _ = self.mux.raw_plain(timeout=30)
        n = 40000
        sent = send_without_reading(s, b"a NOOP\r\n" * n, n * 8, seconds=20)
        self.assertEqual(sent, n * 8)
        s.setblocking(True)
        s.settimeout(30)
        got = 0
        buf = b""
        while got < n:
            data = s.recv(65536)
            self.assertTrue(data, "closed after %d answers" % got)
            buf += data
            got += buf.count(b"a OK NOOP completed\r\n")
            buf = buf[buf.rfind(b"\r\n") + 2:] if b"\r\n" in buf else buf
        self.assertEqual(got, n)
        s.sendall(b"b NOOP\r\n")
        self.assertEqual(read_line(s), b"b OK NOOP completed\r\n")
        s.close()

    def test_unterminated_line_is_cut_off(self):
        s, _ = self.mux.raw_plain(timeout=30)
        chunk = b"a NOOP " + b"x" * (1024 * 1024 - 7)
        rest = b"x" * (1024 * 1024)
        total = 32 * 1024 * 1024
        sock_sent = send_without_reading(s, chunk + rest * 31, total, seconds=30,
                                         until_answer=True)
        s.setblocking(True)
        s.settimeout(10)
        answer = read_all(s, timeout=10)
        s.close()
        self.assertIn(b"* BYE Line too long", answer)
        self.assertLess(sock_sent, total, "all 32 MB were read")
        self.assertServing()

    def test_full_size_id_is_answered(self):
        pairs = b" ".join(b'"field%02d" "%s"' % (i, b"v" * 1024) for i in range(30))
        s, _ = self.mux.raw_tls()
        s.sendall(b"a ID (" + pairs + b")\r\n")
        self.assertTrue(read_line(s).startswith(b"* ID ("))
        self.assertEqual(read_line(s), b"a OK ID completed\r\n")
        s.sendall(b"b NOOP\r\n")
        self.assertEqual(read_line(s), b"b OK NOOP completed\r\n")
        s.close()


if __name__ == "__main__":
    unittest.main()

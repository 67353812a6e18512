"""The relay's backpressure: a client that reads a 20 MB FETCH slowly does
not make imapmux hold the message.  Memory is read from /proc, not timed."""
import os
import time
import unittest

import harness
from harness import read_until_tag


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class BackpressureTest(harness.ProxyTestCase):
    limits = {"relay_buffer_len": 65536}

    def test_slow_reader_of_20mb_fetch(self):
        size = 20 * 1024 * 1024
        body = (b"0123456789abcdef" * 4 + b"\r\n") * (size // 66)
        msg = b"From: a@example.com\r\nSubject: twenty\r\n\r\n" + body
        m = self.mux.ssl_client()
        m.login("alice", "pw")
        m.create("Twenty")
        self.assertEqual(m.append("Twenty", None, None, msg)[0], "OK")
        m.logout()

        s, _ = self.mux.raw_tls(timeout=60)
        s.sendall(b"a LOGIN alice pw\r\n")
        read_until_tag(s, "a")
        s.sendall(b"b SELECT Twenty\r\n")
        read_until_tag(s, "b")
        base = rss_kib(self.mux.proc.pid)
        s.sendall(b"c FETCH 1 BODY.PEEK[]\r\n")
        peak = base
        # read nothing for a while: socket buffers fill, the proxy must stop
        # reading the backend instead of buffering the message
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(self.mux.proc.pid))
            time.sleep(0.1)
        growth_mib = (peak - base) / 1024.0
        self.assertLess(growth_mib, 10, "imapmux grew by %.1f MiB while the client did not read"
                        % growth_mib)
        # now read it all: nothing lost
        got = b""
        s.settimeout(60)
        while not got.endswith(b"\r\nc OK Fetch completed.\r\n") and b"\r\nc OK" not in got[-200:]:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        start = got.index(b"}\r\n") + 3
        self.assertEqual(got[start:start + len(msg)], msg)
        s.close()


class IdleTimeoutTest(harness.ProxyTestCase):
    limits = {"idle_timeout_ms": 2000}

    def test_idle_client_is_logged_out_active_one_is_not(self):
        quiet, _ = self.mux.raw_tls(timeout=15)
        quiet.sendall(b"a LOGIN alice pw\r\n")
        read_until_tag(quiet, "a")
        busy, _ = self.mux.raw_tls(timeout=15)
        busy.sendall(b"a LOGIN bob pw2\r\n")
        read_until_tag(busy, "a")
        start = time.monotonic()
        for i in range(8):  # 4 s of NOOPs, twice the timeout
            busy.sendall(b"n%d NOOP\r\n" % i)
            self.assertTrue(read_until_tag(busy, "n%d" % i)[-1].startswith(b"n%d OK" % i))
            time.sleep(0.5)
        got = harness.read_all(quiet, timeout=5)
        self.assertIn(b"* BYE Autologout; idle for too long", got)
        self.assertGreater(time.monotonic() - start, 1.5)
        busy.close()
        quiet.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Connection caps per IPv6 prefix: one host holds a whole /64, so the cap
counts a prefix, not an address.  The test runs in a network namespace of its
own (unshare --net), whose loopback gets a few IPv6 addresses in two /64s;
nothing outside the namespace is touched."""
import os
import socket
import subprocess
import sys
import time
import unittest

import harness
from harness import read_line

SERVER = "fd00:64::1"
SAME_64 = ("fd00:64::2", "fd00:64::3", "fd00:64::4")
OTHER_64 = "fd00:65::2"


def in_own_namespace():
    """Re-runs this file inside a new network namespace; returns its exit code,
    or None when already inside."""
    if os.environ.get("IMAPMUX_IN_NETNS") == "1":
        return None
    r = subprocess.run(["unshare", "--net", sys.executable, os.path.abspath(__file__)] +
                       sys.argv[1:], env=dict(os.environ, IMAPMUX_IN_NETNS="1"))
    return r.returncode


def set_up_addresses():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for a in (SERVER,) + SAME_64 + (OTHER_64,):
        subprocess.run(["ip", "-6", "addr", "add", a + "/128", "dev", "lo", "nodad"], check=True)


class Ipv6PrefixCapTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        set_up_addresses()
        cls.tmp = harness.TempDir()
        port = harness.free_port()
        backends = [{"name": "main", "host": "127.0.0.1", "port": harness.free_port(),
                     "tls": "none"}]
        cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=1,
                                  listeners=[(SERVER, port, "starttls")],
                                  limits={"max_connections_per_ip": 10,
                                          "max_connections_per_ipv6_prefix": 2,
                                          "ipv6_prefix_len": 64}).start()
        cls.port = port

    @classmethod
    def tearDownClass(cls):
        cls.mux.stop()
        cls.tmp.close()

    def greet(self, source):
        s = socket.socket(socket.AF_INET6)
        s.settimeout(10)
        s.bind((source, 0))
        s.connect((SERVER, self.port))
        return s, read_line(s)

    def test_a_prefix_is_one_source(self):
        a, ga = self.greet(SAME_64[0])
        b, gb = self.greet(SAME_64[1])
        self.assertTrue(ga.startswith(b"* OK") and gb.startswith(b"* OK"), (ga, gb))
        # a third address of the same /64: over the prefix's cap
        c, gc = self.greet(SAME_64[2])
        self.assertEqual(gc, b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
        # another /64 is another source
        d, gd = self.greet(OTHER_64)
        self.assertTrue(gd.startswith(b"* OK"), gd)
        for s in (a, b, c, d):
            s.close()
        deadline = time.monotonic() + 10
        while True:
            s, g = self.greet(SAME_64[2])
            s.close()
            if g.startswith(b"* OK") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(g.startswith(b"* OK"), g)
        self.assertIn("connection cap of the IPv6 prefix reached", self.mux.log_text())


if __name__ == "__main__":
    rc = in_own_namespace()
    if rc is not None:
        sys.exit(rc)
    unittest.main()

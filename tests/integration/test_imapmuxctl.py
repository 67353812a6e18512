"""imapmuxctl against a real redis-server: what it writes, what it shows and
hides, its events and its exit codes."""
import socket
import subprocess
import unittest

import harness


class CtlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.redis = harness.Redis(cls.tmp.path).start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        cls.tmp.close()

    def ctl(self, *args, input=None, port=None):
        return subprocess.run([harness.imapmuxctl_bin(), "-r",
                               "127.0.0.1:%d" % (port or self.redis.port)] + list(args),
                              input=input, capture_output=True, text=True, timeout=30)

    def test_add_each_scheme_and_show(self):
        for scheme, prefix in (("yescrypt", "$y$"), ("sha512-crypt", "$6$"),
                               ("bcrypt", "$2b$"), ("argon2id", "$argon2id$")):
            login = "u-" + scheme
            r = self.ctl("user", "add", login, "--backend", "one", "--scheme", scheme,
                         input="Secret-%s\n" % scheme)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("Secret", r.stdout + r.stderr)
            h = self.redis.cmd("HGET", "imapmux:user:" + login, "password")
            self.assertTrue(h.startswith(prefix), h)
            shown = self.ctl("user", "show", login)
            self.assertEqual(shown.returncode, 0)
            self.assertIn("password: (set, %s)" % scheme, shown.stdout)
            self.assertNotIn(h, shown.stdout)
            self.assertIn(h, self.ctl("user", "show", login, "--show-hash").stdout)

    def test_duplicate_missing_and_normalised(self):
        self.assertEqual(self.ctl("user", "add", "Dup@Example.COM", "--no-password").returncode, 0)
        self.assertEqual(self.redis.cmd("EXISTS", "imapmux:user:dup@example.com"), 1)
        r = self.ctl("user", "add", "dup@example.com", "--no-password")
        self.assertEqual(r.returncode, 1)
        self.assertIn("exists", r.stderr)
        r = self.ctl("user", "show", "nobody-here")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such user", r.stderr)
        self.assertEqual(self.ctl("user", "add", "x", "--no-password", "--backend", "a b").returncode, 1)
        self.assertEqual(self.ctl("user", "add", "bad login", "--no-password").returncode, 1)
        self.assertEqual(self.ctl("user", "add", "e", input="\n").returncode, 1)

    def subscribe(self):
        s = socket.create_connection(("127.0.0.1", self.redis.port), timeout=10)
        s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\nimapmux:events\r\n")
        f = s.makefile("rb")
        harness._resp_read(f)  # the subscribe confirmation
        return s, f

    def test_move_disable_delete_publish(self):
        self.assertEqual(self.ctl("user", "add", "mv", "--no-password", "--backend", "one").returncode, 0)
        s, f = self.subscribe()
        self.assertEqual(self.ctl("user", "move", "mv", "two").returncode, 0)
        self.assertEqual(harness._resp_read(f), ["message", "imapmux:events", "route mv"])
        self.assertEqual(self.redis.cmd("HGET", "imapmux:user:mv", "backend"), "two")
        self.assertEqual(self.ctl("user", "disable", "mv").returncode, 0)
        self.assertEqual(harness._resp_read(f), ["message", "imapmux:events", "kick mv"])
        self.assertEqual(self.redis.cmd("HGET", "imapmux:user:mv", "state"), "disabled")
        r = self.ctl("kick", "MV")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(harness._resp_read(f), ["message", "imapmux:events", "kick mv"])
        self.assertEqual(self.ctl("user", "delete", "mv").returncode, 0)
        self.assertEqual(harness._resp_read(f), ["message", "imapmux:events", "kick mv"])
        self.assertEqual(self.redis.cmd("EXISTS", "imapmux:user:mv"), 0)
        s.close()

    def test_domain_and_backend(self):
        self.assertEqual(self.ctl("domain", "set", "Example.org", "--backend", "two",
                                  "--auth", "local").returncode, 0)
        self.assertEqual(self.redis.cmd("HGET", "imapmux:domain:example.org", "auth"), "local")
        self.assertIn("backend: two", self.ctl("domain", "show", "example.org").stdout)
        self.assertEqual(self.ctl("domain", "set", "example.org", "--auth", "maybe").returncode, 1)
        self.assertEqual(self.ctl("backend", "set", "two", "--hosts",
                                  "10.0.0.1:143,[::1]:143").returncode, 0)
        self.assertEqual(self.redis.cmd("HGET", "imapmux:backend:two", "hosts"),
                         "10.0.0.1:143,[::1]:143")
        self.assertEqual(self.ctl("backend", "set", "two", "--hosts", "nohost").returncode, 1)
        self.assertEqual(self.ctl("backend", "set", "two", "--down", "10.0.0.1:143").returncode, 0)
        self.assertEqual(self.redis.cmd("HGET", "imapmux:backend:two", "down"), "10.0.0.1:143")
        self.assertEqual(self.ctl("backend", "set", "two", "--up").returncode, 0)
        self.assertIsNone(self.redis.cmd("HGET", "imapmux:backend:two", "down"))

    def test_list(self):
        for u in ("list-b", "list-a"):
            self.ctl("user", "add", u, "--no-password")
        r = self.ctl("user", "list", "list-*")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(sorted(r.stdout.split()), ["list-a", "list-b"])

    def test_usage_and_unreachable(self):
        self.assertEqual(self.ctl("frobnicate").returncode, 2)
        self.assertEqual(self.ctl("user").returncode, 2)
        self.assertEqual(self.ctl("user", "add", "z", "--bogus").returncode, 2)
        r = self.ctl("user", "show", "z", port=harness.free_port())
        self.assertEqual(r.returncode, 3)
        self.assertIn("cannot reach Redis", r.stderr)
        r = subprocess.run([harness.imapmuxctl_bin(), "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("user move", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)

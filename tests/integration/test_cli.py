"""The command line: --version, --help, --check-config, bad files."""
import os
import subprocess
import unittest

import harness


def run(*args):
    return subprocess.run([harness.imapmux_bin()] + list(args), capture_output=True, text=True,
                          timeout=30)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cert = harness.make_cert(cls.tmp.path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.close()

    def write(self, name, text):
        p = os.path.join(self.tmp.path, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_version_and_help(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^imapmux \d+\.\d+\.\d+")
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--check-config", r.stdout)
        r = run("--no-such-option")
        self.assertEqual(r.returncode, 2)
        r = run()
        self.assertEqual(r.returncode, 2)

    def test_check_config_good(self):
        p = self.write("good.yaml", """listeners:
  - {address: 127.0.0.1, port: 10993, tls: implicit}
  - {address: "::1", port: 10143, tls: starttls}
tls: {cert: %s, key: %s}
backends:
  - {name: main, host: 127.0.0.1, port: 143}
""" % self.cert)
        r = run("--check-config", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)

    def test_check_config_bad_line(self):
        p = self.write("bad.yaml", """backends:
  - name: main
    host: 127.0.0.1
    port: 99999
""")
        r = run("--check-config", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.yaml:4:", r.stderr)
        self.assertIn("port", r.stderr)

    def test_check_config_unknown_key_and_bad_key_file(self):
        p = self.write("unknown.yaml", "backends:\n  - {name: a, host: h, port: 1}\nbogus: 1\n")
        r = run("--check-config", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown.yaml:3: unknown key bogus", r.stderr)
        # a key that does not belong to the certificate is caught by the check too
        other = harness.make_cert(self.tmp.path, kind="rsa")
        p = self.write("mismatch.yaml", """listeners: [{address: 127.0.0.1, port: 1993, tls: implicit}]
tls: {cert: %s, key: %s}
backends: [{name: a, host: h, port: 1}]
""" % (self.cert[0], other[1]))
        r = run("--check-config", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("TLS", r.stderr)

    def test_missing_file(self):
        r = run("-c", os.path.join(self.tmp.path, "missing.yaml"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)

    def test_port_in_use_is_a_clear_error(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = self.write("busy.yaml", """listeners: [{address: 127.0.0.1, port: %d, tls: implicit}]
tls: {cert: %s, key: %s}
backends: [{name: a, host: h, port: 1}]
""" % (port, self.cert[0], self.cert[1]))
        r = run("-c", p)
        s.close()
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot bind 127.0.0.1 port %d" % port, r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

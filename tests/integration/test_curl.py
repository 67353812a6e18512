"""curl imaps:// through imapmux."""
import subprocess
import unittest

import harness


class CurlTest(harness.ProxyTestCase):
    def curl(self, path, user="alice:pw"):
        return subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", self.cert[0],
                               "imaps://127.0.0.1:%d/%s" % (self.mux.tls_port, path), "-u", user],
                              capture_output=True, text=True, timeout=60)

    def test_list_mailboxes_and_fetch(self):
        self.dovecot.add_message("alice", harness.sample_message("via curl"))
        r = self.curl("")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("INBOX", r.stdout)
        r = self.curl("INBOX?ALL")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("* SEARCH 1", r.stdout)
        r = self.curl("INBOX;UID=1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Subject: via curl", r.stdout)

    def test_wrong_password(self):
        r = self.curl("", user="alice:nope")
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

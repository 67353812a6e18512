"""mbsync (isync) syncing a mailbox through imapmux into a local Maildir.

mbsync checks the certificate against a host name (not an IP address), so it
connects to "localhost"; the proxy listens on 127.0.0.1."""
import os
import subprocess
import unittest

import harness


class MbsyncTest(harness.ProxyTestCase):
    def test_sync_inbox(self):
        for i in range(5):
            self.dovecot.add_message("alice", harness.sample_message("sync %d" % i))
        local = os.path.join(self.tmp.path, "local")
        os.makedirs(local)
        rc = os.path.join(self.tmp.path, "mbsyncrc")
        with open(rc, "w") as f:
            f.write("""IMAPAccount proxy
Host localhost
Port {port}
User alice
Pass pw
SSLType IMAPS
CertificateFile {cert}

IMAPStore remote
Account proxy

MaildirStore local
Path {local}/
Inbox {local}/INBOX

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Near
SyncState *
""".format(port=self.mux.tls_port, cert=self.cert[0], local=local))
        r = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        new = os.path.join(local, "INBOX", "new")
        cur = os.path.join(local, "INBOX", "cur")
        files = [os.path.join(d, n) for d in (new, cur) if os.path.isdir(d) for n in os.listdir(d)]
        self.assertEqual(len(files), 5)
        subjects = set()
        for p in files:
            with open(p, "rb") as f:
                for line in f:
                    if line.startswith(b"Subject: "):
                        subjects.add(line.strip())
        self.assertEqual(subjects, {("Subject: sync %d" % i).encode() for i in range(5)})


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The session cache's parking policy (session_cache.park: returning, the
default), against a real Dovecot: a LOGOUT parks its backend connection only
when a return is likely, that is when the same credentials were seen (at a
login or a LOGOUT) within the TTL, or when the client named itself in ID with
a name of session_cache.park_clients.  Distinct users therefore never park:
their LOGOUT goes to Dovecot, which ends the logged-in process at once.

Observed in Dovecot (one "Login:" line per backend login, "Logged out" per
LOGOUT it ran, its imap processes by parent PID) and in imapmux's counters
at exit (cache_parked, cache_not_parked, cache_hits)."""
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import LOOPBACK, Dovecot, Imapmux, TempDir, make_cert, read_to_eof, read_until_tag  # noqa: E402

USERS = {"u%d" % i: "pw-%d" % i for i in range(8)}
USERS.update({"ret": "ret-pw", "web": "web-pw"})
TTL_MS = 20000  # long enough for a slow, loaded machine


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def final_stats(log):
    totals = {}
    for line in log.splitlines():
        if ": stats " in line:
            for k, v in re.findall(r"(\w+)=(\d+)", line.split(": stats ", 1)[1]):
                totals[k] = int(v)  # one worker: the last line counts
    return totals


class Client:
    def __init__(self, mux):
        self.sock, self.greeting = mux.raw_tls()
        self.n = 0

    def cmd(self, text):
        self.n += 1
        tag = "t%d" % self.n
        self.sock.sendall(("%s %s\r\n" % (tag, text)).encode())
        lines = read_until_tag(self.sock, tag)
        if not lines or not lines[-1].startswith(tag.encode() + b" "):
            raise AssertionError("no tagged answer to %r: %r" % (text, lines))
        return lines[-1]

    def logout(self):
        self.n += 1
        self.sock.sendall(("t%d LOGOUT\r\n" % self.n).encode())
        data = read_to_eof(self.sock)
        self.sock.close()
        return data


class ParkPolicyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.dovecot = Dovecot(cls.tmp.path, users=dict(USERS)).start()
        cls.cert = make_cert(cls.tmp.path)
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.dovecot.stop()
        cls.tmp.close()

    def start_mux(self, **cache):
        ParkPolicyTest.n += 1
        backend = {"name": "main", "host": LOOPBACK, "port": self.dovecot.port, "tls": "none"}
        conf = {"enabled": True, "ttl_ms": TTL_MS, "max_per_user": 2}
        conf.update(cache)
        mux = Imapmux(self.tmp.path, [backend], self.cert, workers=1,
                      name="imapmux-%d" % self.n, session_cache=conf).start()
        self.addCleanup(lambda: mux.alive() and mux.stop())
        return mux

    def stop_mux(self, mux):
        self.assertEqual(mux.stop(), 0)
        log = mux.log_text()
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
            self.assertNotIn(marker, log)
        return final_stats(log)

    def logins(self, user):
        return self.dovecot.log_text().count("Login: user=<%s>" % user)

    def logged_out(self, user):
        return len(re.findall(r"imap\(%s\)<[^>]*><[^>]*>: (?:Info: )?(?:Disconnected: )?Logged out" % re.escape(user),
                              self.dovecot.log_text()))

    def imap_processes(self):
        """This Dovecot's logged-in imap processes (by parent PID: other
        tests' Dovecots run on the machine too)."""
        out = subprocess.run(["pgrep", "-P", str(self.dovecot.proc.pid), "-x", "imap"],
                             capture_output=True, text=True, check=False).stdout
        return len(out.split())

    def session(self, mux, user, id_name=None):
        c = Client(mux)
        if id_name is not None:
            self.assertIn(b"OK", c.cmd('ID ("name" "%s" "version" "1.0")' % id_name))
        self.assertTrue(c.cmd('LOGIN "%s" "%s"' % (user, USERS[user])).startswith(b"t"))
        self.assertIn(b" OK ", c.cmd("SELECT INBOX"))
        bye = c.logout()
        self.assertIn(b"* BYE", bye)
        self.assertRegex(bye, rb"t\d+ OK ")

    def test_distinct_users_never_park(self):
        mux = self.start_mux()
        users = ["u%d" % i for i in range(8)]
        base = {u: self.logins(u) for u in users}
        base_out = {u: self.logged_out(u) for u in users}
        for u in users:
            self.session(mux, u)
        # every LOGOUT reached Dovecot, which ended the logged-in process
        for u in users:
            wait_for(lambda: self.logged_out(u) == base_out[u] + 1, timeout=10,
                     what="Dovecot's Logged out line of %s" % u)
            self.assertEqual(self.logins(u), base[u] + 1)
        wait_for(lambda: self.imap_processes() == 0, timeout=10,
                 what="no logged-in imap process left on Dovecot (have %d)" % self.imap_processes())
        st = self.stop_mux(mux)
        self.assertEqual(st.get("cache_parked"), 0, st)
        self.assertEqual(st.get("cache_not_parked"), len(users), st)
        self.assertEqual(st.get("cache_size"), 0, st)

    def test_returning_user_parks_on_its_second_logout(self):
        mux = self.start_mux()
        base = self.logins("ret")
        base_out = self.logged_out("ret")
        self.session(mux, "ret")  # first: seen, not parked
        wait_for(lambda: self.logged_out("ret") == base_out + 1, timeout=10,
                 what="the first LOGOUT at Dovecot")
        self.session(mux, "ret")  # seen within the TTL: parked
        self.assertEqual(self.logins("ret"), base + 2)
        self.session(mux, "ret")  # the parked connection: no backend login
        time.sleep(0.5)
        self.assertEqual(self.logins("ret"), base + 2, "the third login reached the backend")
        self.assertEqual(self.logged_out("ret"), base_out + 1)
        st = self.stop_mux(mux)
        self.assertEqual(st.get("cache_parked"), 2, st)
        self.assertEqual(st.get("cache_hits"), 1, st)
        self.assertEqual(st.get("cache_not_parked"), 1, st)

    def test_park_client_parks_on_the_first_logout(self):
        mux = self.start_mux(park_clients=["Example Webmail"])
        base = self.logins("web")
        # another client's name does not count
        self.session(mux, "u0", id_name="Some Phone")
        self.session(mux, "web", id_name="example webmail")  # any case
        self.session(mux, "web")  # a hit
        time.sleep(0.5)
        self.assertEqual(self.logins("web"), base + 1, "the second login reached the backend")
        st = self.stop_mux(mux)
        self.assertEqual(st.get("cache_parked"), 2, st)
        self.assertEqual(st.get("cache_hits"), 1, st)
        self.assertEqual(st.get("cache_not_parked"), 1, st)

    def test_park_always_parks_every_logout(self):
        mux = self.start_mux(park="always")
        self.session(mux, "u1")
        self.session(mux, "u2")
        st = self.stop_mux(mux)
        self.assertEqual(st.get("cache_parked"), 2, st)
        self.assertEqual(st.get("cache_not_parked"), 0, st)


if __name__ == "__main__":
    unittest.main(verbosity=2)

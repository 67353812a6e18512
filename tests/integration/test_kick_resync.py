"""Kicks and moves are never lost: while an imapmux instance cannot reach
Redis, a kick or a move published by imapmuxctl reaches no one; once the
instance is back, it looks its sessions up again and ends those that were
kicked or moved meanwhile."""
import re
import socket
import threading
import time
import unittest
import warnings

import harness
from harness import LOOPBACK

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


class CuttableRelay:
    """A TCP relay on loopback in front of one address.  cut() closes every
    connection and refuses new ones (the instance is cut off from Redis, which
    itself runs on); restore() accepts again on the same port."""

    def __init__(self, port):
        self.target = (LOOPBACK, port)
        self.port = harness.free_port()
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None
        self.stopping = False
        self.restore()

    def _listen(self, listener):
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((LOOPBACK, self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._listen, args=(ls,), daemon=True).start()

    def cut(self):
        self.listener.close()
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def sha512(pw):
    return crypt.crypt(pw, crypt.mksalt(crypt.METHOD_SHA512))


class KickResyncTest(unittest.TestCase):
    def test_kick_and_move_during_an_outage(self):
        with harness.TempDir() as tmp:
            redis = harness.Redis(tmp.path).start()
            users = {"alice": "backend-pw", "bob": "backend-pw"}
            master = {"proxy": "master-secret"}
            d1 = harness.Dovecot(tmp.path, users=users, name="d1", master_users=master).start()
            d2 = harness.Dovecot(tmp.path, users=users, name="d2", master_users=master).start()
            relay = CuttableRelay(redis.port)
            mux = None
            try:
                backends = [
                    {"name": "one", "host": LOOPBACK, "port": d1.port, "tls": "none",
                     "auth": "master", "master_user": "proxy", "master_password": "master-secret"},
                    {"name": "two", "host": LOOPBACK, "port": d2.port, "tls": "none",
                     "auth": "master", "master_user": "proxy", "master_password": "master-secret"},
                ]
                redis.cmd("HSET", "imapmux:user:alice", "password", sha512("a-pw"), "backend", "one")
                redis.cmd("HSET", "imapmux:user:bob", "password", sha512("b-pw"), "backend", "one")
                redis.cmd("HSET", "imapmux:backend:one", "hosts", "%s:%d" % (LOOPBACK, d1.port))
                redis.cmd("HSET", "imapmux:backend:two", "hosts", "%s:%d" % (LOOPBACK, d2.port))
                mux = harness.Imapmux(tmp.path, backends, routes={"default": "one"}, workers=1,
                                      redis={"host": LOOPBACK, "port": relay.port,
                                             "reconnect_max_ms": 300,
                                             "command_timeout_ms": 1000,
                                             "connect_timeout_ms": 1000}).start()
                # imapmuxctl reaches Redis directly: only the instance is cut off
                with open(mux.conf) as f:
                    conf = f.read().replace("port: %d" % relay.port, "port: %d" % redis.port)
                ctl_conf = mux.conf + ".ctl"
                with open(ctl_conf, "w") as f:
                    f.write(conf)

                a = mux.ssl_client()
                a.login("alice", "a-pw")
                a.select("INBOX")
                b = mux.ssl_client()
                b.login("bob", "b-pw")
                b.select("INBOX")

                relay.cut()
                harness_wait(lambda: re.search(r"redis-events: \S+: .*retrying in", mux.log_text()),
                             "the events link to drop")
                r = harness.imapmuxctl(ctl_conf, "kick", "alice")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("sent to 0 imapmux", r.stdout)  # nobody heard it
                r = harness.imapmuxctl(ctl_conf, "user", "move", "bob", "two")
                self.assertEqual(r.returncode, 0, r.stderr)
                time.sleep(0.5)
                # still logged in: the events were lost
                self.assertEqual(a.noop()[0], "OK")
                self.assertEqual(b.noop()[0], "OK")

                relay.restore()
                for m, text in ((a, b"Session ended by the administrator"),
                                (b, b"Mailbox moved")):
                    got = wait_bye(m, 15)
                    self.assertIn(text, got)
                self.assertIn("looking 2 sessions up again", mux.log_text())
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                relay.cut()
                d1.stop()
                d2.stop()
                redis.stop()


def harness_wait(cond, what, timeout=15):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def wait_bye(m, timeout):
    """Sends NOOPs until the server's BYE arrives; returns what it said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            m.noop()
        except m.abort as e:
            return str(e).encode()
        except OSError as e:
            return str(e).encode()
        if m.untagged_responses.get("BYE"):
            return b" ".join(m.untagged_responses["BYE"])
        time.sleep(0.2)
    raise AssertionError("no BYE within %ss" % timeout)


if __name__ == "__main__":
    unittest.main()

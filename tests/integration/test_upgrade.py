"""Upgrades without refused connections, against a real Dovecot: a second
imapmux started with --takeover on the same socket takes the running one's
listening sockets; the old one stops accepting, drains and exits.

Client loops connect as fast as they can to both listeners during the swap
and each connection must read the greeting and have a NOOP answered: no
refusal, no reset, no early close, no BYE.  A session logged in on the old process keeps working after the swap
until it logs out, and an idle one lasts until the drain timeout.

UPGRADE_WITHOUT_TAKEOVER=1 runs the same swap the naive way (the new process
binds its own SO_REUSEPORT sockets, the old one gets SIGTERM): the loops then
see failures, which shows the test can fail."""
import imaplib
import os
import socket
import ssl
import subprocess
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line

NAIVE = os.environ.get("UPGRADE_WITHOUT_TAKEOVER") == "1"
LOOP_SECONDS = 6.0      # the client loops run this long, the swap in the middle
DRAIN_TIMEOUT_MS = 10000
BURST = 16             # connections each loop opens at once


class TakeoverMux(harness.Imapmux):
    """imapmux started with --takeover SOCKET."""

    def __init__(self, *a, takeover=None, **kw):
        super().__init__(*a, **kw)
        self.takeover = takeover

    def start(self, wait=True):
        self._logf = open(self.log, "ab")
        argv = [harness.imapmux_bin(), "-c", self.conf]
        if self.takeover and not NAIVE:
            argv += ["--takeover", self.takeover]
        self.proc = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT)
        harness._children.append(self.proc)
        if wait:
            for l in self.listeners:
                harness.wait_port(l[1], proc=self.proc, host=l[0])
        return self


class ClientLoop(threading.Thread):
    """Connects as fast as it can until stopped; each connection must read
    the greeting.  Counts successes and keeps every failure."""

    def __init__(self, port, ctx=None):
        super().__init__(daemon=True)
        self.port, self.ctx = port, ctx
        self.ok = 0
        self.failures = []
        self.stop = threading.Event()

    def one(self, s):
        """Greeting, then a NOOP answered: the connection works."""
        if self.ctx is not None:
            s = self.ctx.wrap_socket(s, server_hostname="localhost")
        try:
            g = read_line(s)
            if not g.startswith(b"* OK"):
                self.failures.append("greeting %r" % g[:60])
                return
            s.sendall(b"n NOOP\r\n")
            r = read_line(s)
            if not r.startswith(b"n OK"):
                self.failures.append("NOOP answered %r" % r[:60])
                return
            self.ok += 1
        finally:
            s.close()

    def run(self):
        deadline = time.monotonic() + LOOP_SECONDS + 30  # a bound whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            # a burst: connections wait in the accept queue at any moment
            socks = []
            for _ in range(BURST):
                try:
                    socks.append(socket.create_connection((LOOPBACK, self.port), timeout=10))
                except OSError as e:
                    self.failures.append("connect: %s: %s" % (type(e).__name__, e))
            for s in socks:
                try:
                    self.one(s)
                except (OSError, ssl.SSLError) as e:
                    self.failures.append("%s: %s" % (type(e).__name__, e))


class UpgradeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.TempDir()
        self.dovecot = harness.Dovecot(self.tmp.path, users={"alice": "pw"}).start()
        self.cert = harness.make_cert(self.tmp.path)
        self.sock = os.path.join(self.tmp.path, "imapmux.sock")
        self.listeners = [(LOOPBACK, harness.free_port(), "implicit"),
                          (LOOPBACK, harness.free_port(), "starttls")]
        self.muxes = []

    def tearDown(self):
        for m in self.muxes:
            if m.alive():
                m.stop()
        self.dovecot.stop()
        self.tmp.close()

    def mux(self, name):
        backend = {"name": "main", "host": LOOPBACK, "port": self.dovecot.port, "tls": "none"}
        m = TakeoverMux(self.tmp.path, [backend], self.cert, name=name, workers=2,
                        listeners=self.listeners, takeover=self.sock, log_level="info",
                        limits={"drain_timeout_ms": DRAIN_TIMEOUT_MS})
        self.muxes.append(m)
        return m

    def wait_log(self, mux, text, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in mux.log_text():
                return
            time.sleep(0.05)
        self.fail("%r not in %s's log:\n%s" % (text, mux.dir, mux.log_text()[-3000:]))

    def login(self, mux):
        m = imaplib.IMAP4(LOOPBACK, mux.plain_port, timeout=30)
        m.starttls(ssl_context=harness.client_context(self.cert[0]))
        m.login("alice", "pw")
        return m

    def test_swap_under_a_connection_flood(self):
        old = self.mux("mux-old").start()
        if not NAIVE:
            self.wait_log(old, "takeover: nothing serves")
        busy = self.login(old)     # keeps working across the swap
        idle = self.login(old)     # stays idle: ends at the drain timeout
        self.assertEqual(busy.select("INBOX")[0], "OK")

        ctx = harness.client_context(self.cert[0])
        loops = [ClientLoop(old.plain_port), ClientLoop(old.plain_port),
                 ClientLoop(old.tls_port, ctx)]
        for l in loops:
            l.start()
        time.sleep(LOOP_SECONDS / 3)
        new = self.mux("mux-new").start(wait=False)
        t_swap = time.monotonic()
        if NAIVE:
            for l in self.listeners:
                harness.wait_port(l[1], proc=new.proc)
            time.sleep(0.5)  # the new process binds its own sockets
            old.proc.send_signal(15)
        else:
            self.wait_log(new, "hands its sockets over")
            self.wait_log(old, "the new process polls the listening sockets")
        time.sleep(LOOP_SECONDS * 2 / 3)
        for l in loops:
            l.stop.set()
        for l in loops:
            l.join(60)

        failures = [f for l in loops for f in l.failures]
        total = sum(l.ok for l in loops)
        print("\nconnections greeted: %d, failed: %d (%s)" % (total, len(failures),
                                                              sorted(set(failures))[:5]))
        self.assertGreater(total, 100, "the loops hardly ran")
        self.assertEqual(failures, [], "connections failed during the swap")
        # new connections now go to the new process only
        self.assertTrue(new.alive())
        s = socket.create_connection((LOOPBACK, new.plain_port), timeout=10)
        self.assertTrue(read_line(s).startswith(b"* OK"))
        s.close()

        # the session logged in on the old process goes on
        self.assertTrue(old.alive(), "the old process left before its sessions:\n" +
                        old.log_text()[-3000:])
        self.assertEqual(busy.noop()[0], "OK")
        self.assertEqual(busy.select("INBOX")[0], "OK")
        busy.logout()
        # the idle one gets BYE at the drain timeout, then the old one exits 0
        rc = old.proc.wait(DRAIN_TIMEOUT_MS / 1000 + 20)
        self.assertEqual(rc, 0, old.log_text()[-3000:])
        self.assertGreaterEqual(time.monotonic() - t_swap, DRAIN_TIMEOUT_MS / 1000 - 1)
        with self.assertRaises((imaplib.IMAP4.abort, OSError)):
            idle.noop()
            idle.noop()
        self.assertIn("drain timeout", old.log_text())

        # and the new process can itself be taken over: its socket serves
        third = self.mux("mux-third").start(wait=False)
        self.wait_log(third, "hands its sockets over")
        self.wait_log(new, "the new process polls the listening sockets")
        s = socket.create_connection((LOOPBACK, third.plain_port), timeout=10)
        self.assertTrue(read_line(s).startswith(b"* OK"))
        s.close()
        self.assertEqual(new.proc.wait(30), 0)
        for m in (old, new):
            log = m.log_text()
            self.assertNotIn("ERROR: AddressSanitizer", log)
            self.assertNotIn("runtime error:", log)

    def test_failed_new_process_leaves_the_old_one_serving(self):
        old = self.mux("mux-old").start()
        # something that connects, asks, and goes away without READY
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(10)
        s.connect(self.sock)
        s.send(b"TAKEOVER\n")
        msgs = []
        while True:
            msg, anc, flags, addr = s.recvmsg(64, socket.CMSG_SPACE(4 * 250))
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    for i in range(0, len(data) - len(data) % 4, 4):
                        os.close(int.from_bytes(data[i:i + 4], "little"))
            msgs.append(msg)
            if msg == b"END\n":
                break
        self.assertTrue(msgs[0].startswith(b"FDS "), msgs)
        s.close()  # no READY
        self.wait_log(old, "did not take over; serving on")
        c = socket.create_connection((LOOPBACK, old.plain_port), timeout=10)
        self.assertTrue(read_line(c).startswith(b"* OK"))
        c.close()
        self.assertTrue(old.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)

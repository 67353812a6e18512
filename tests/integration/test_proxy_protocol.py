"""PROXY protocol in and out, against a real Dovecot whose imap listener has
haproxy = yes.

In: listeners with proxy_protocol take the client's address from a v1 or v2
header (sent here by the test as a balancer would), only from proxy_trusted
networks, within the header timeout, before the TLS handshake on an
implicit-TLS listener; the bytes after the header are the client's and are
kept; a malformed header is closed.  The header's address is the client's in
the log, the audit records and the connection caps.  On a listener marked
proxy_tls_terminated, a v2 SSL TLV makes the session TLS-protected.

Out: the backend has proxy_protocol: v2.  Between imapmux and Dovecot a tap
relays every byte unchanged and keeps each connection's header, so the test
reads both what imapmux sent (addresses, SSL, AUTHORITY, UNIQUE_ID) and what
Dovecot made of it (rip= and TLS in its own login line)."""
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line, read_until_tag

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def tlv(t, v):
    return bytes([t]) + struct.pack(">H", len(v)) + v


def v2_header(src, sport, dst="127.0.0.1", dport=143, tlvs=b"", local=False):
    if local:
        return SIG + b"\x20\x00\x00\x00"
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport) + tlvs
    return SIG + b"\x21\x11" + struct.pack(">H", len(body)) + body


def ssl_tlv(version=b"TLSv1.3", cipher=b"TLS_AES_128_GCM_SHA256"):
    return tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, version) + tlv(0x23, cipher))


def parse_v2(h):
    """(src, sport, dst, dport, {type: value}, ssl_subs) of a v2 header."""
    assert h[:12] == SIG, h[:16]
    fam = h[13]
    body = h[16:]
    if fam == 0x11:
        src, dst = socket.inet_ntoa(body[0:4]), socket.inet_ntoa(body[4:8])
        sport, dport = struct.unpack(">HH", body[8:12])
        pos = 12
    else:
        raise AssertionError("family %#x" % fam)
    tlvs, subs = {}, {}
    while pos < len(body):
        t, n = body[pos], struct.unpack(">H", body[pos + 1:pos + 3])[0]
        tlvs[t] = body[pos + 3:pos + 3 + n]
        pos += 3 + n
    if 0x20 in tlvs:
        v = tlvs[0x20]
        p = 5
        while p < len(v):
            t, n = v[p], struct.unpack(">H", v[p + 1:p + 3])[0]
            subs[t] = v[p + 3:p + 3 + n]
            p += 3 + n
    return src, sport, dst, dport, tlvs, subs


class HeaderTap:
    """Relays loopback TCP to target unchanged, keeping the PROXY v2 header
    each connection starts with (the test reads what imapmux sent)."""

    def __init__(self, target_port):
        self.target = target_port
        self.headers = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        c.settimeout(30)
        try:
            head = b""
            while len(head) < 16:
                d = c.recv(16 - len(head))
                if not d:
                    c.close()
                    return
                head += d
            n = struct.unpack(">H", head[14:16])[0]
            while len(head) < 16 + n:
                d = c.recv(16 + n - len(head))
                if not d:
                    c.close()
                    return
                head += d
            with self.lock:
                self.headers.append(head)
            # from another loopback address: Dovecot takes a peer on its own
            # address as secured, and the test wants the SSL TLV to decide
            up = socket.create_connection((LOOPBACK, self.target), timeout=30,
                                          source_address=("127.0.0.3", 0))
            up.sendall(head)
        except OSError:
            c.close()
            return

        def pipe(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pipe, args=(up, c), daemon=True)
        t.start()
        pipe(c, up)
        t.join(30)
        c.close()
        up.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


class Helpers(unittest.TestCase):
    # --- helpers ---
    def wait_for(self, what, fn, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.1)
        self.fail("timed out waiting for " + what)

    def dovecot_login_line(self, rip):
        def find():
            for line in self.dovecot.log_text().splitlines():
                if "Login: user=<alice>" in line and "rip=%s," % rip in line:
                    return line
            return None
        try:
            return self.wait_for("dovecot's login line with rip=" + rip, find, timeout=5)
        except AssertionError:
            lines = [l for l in self.dovecot.log_text().splitlines() if "Login:" in l]
            raise AssertionError("no login line with rip=%s in:\n%s" % (rip, "\n".join(lines[-5:])))


class ProxyProtocolTest(Helpers):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        try:
            cls.dovecot = harness.Dovecot(cls.tmp.path, users={"alice": "pw"}, haproxy=True).start()
            cls.tap = HeaderTap(cls.dovecot.port)
            trusted = {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8", "::1/128"]}
            cls.p_plain = harness.free_port()   # cleartext + STARTTLS behind a balancer
            cls.p_term = harness.free_port()    # cleartext, TLS ended at the balancer
            cls.p_tls = harness.free_port()     # implicit TLS behind a TCP balancer
            cls.p_untrusted = harness.free_port()
            cls.p_direct = harness.free_port()  # no PROXY protocol
            listeners = [
                (LOOPBACK, cls.p_direct, "starttls"),
                (LOOPBACK, cls.p_plain, "starttls", dict(trusted, proxy_header_timeout_ms=400)),
                (LOOPBACK, cls.p_term, "starttls", dict(trusted, proxy_tls_terminated=True)),
                (LOOPBACK, cls.p_tls, "implicit", trusted),
                (LOOPBACK, cls.p_untrusted, "starttls",
                 {"proxy_protocol": True, "proxy_trusted": ["10.0.0.0/8"]}),
            ]
            # pool_size is set on purpose: a proxy_protocol backend has no pool
            backend = {"name": "main", "host": LOOPBACK, "port": cls.tap.port, "tls": "none",
                       "proxy_protocol": "v2", "pool_size": 2}
            cls.audit_path = os.path.join(cls.tmp.path, "audit.log")
            cls.mux = harness.Imapmux(cls.tmp.path, [backend], listeners=listeners,
                                      limits={"max_connections_per_ip": 1,
                                              "proxy_header_timeout_ms": 3000},
                                      audit={"file": cls.audit_path}).start()
            cls.ctx = harness.client_context(cls.mux.cert[0])
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        mux = getattr(cls, "mux", None)
        if mux is not None:
            rc = mux.stop()
            log = mux.log_text()
            if rc != 0 or "ERROR: AddressSanitizer" in log or "runtime error:" in log:
                raise AssertionError("imapmux exit %s; log:\n%s" % (rc, log[-6000:]))
        if getattr(cls, "tap", None) is not None:
            cls.tap.close()
        if getattr(cls, "dovecot", None) is not None:
            cls.dovecot.stop()
        cls.tmp.close()

    # --- helpers ---

    def connect(self, port, first=b"", timeout=10):
        s = socket.create_connection((LOOPBACK, port), timeout=timeout)
        if first:
            s.sendall(first)
        return s

    def login_plain(self, s, tag="a"):
        s.sendall(tag.encode() + b" LOGIN alice pw\r\n")
        return b"".join(read_until_tag(s, tag))

    def starttls(self, s):
        s.sendall(b"s STARTTLS\r\n")
        self.assertTrue(read_line(s).startswith(b"s OK"))
        return self.ctx.wrap_socket(s, server_hostname="localhost")

    def closed_silently(self, s, timeout=5):
        """The peer closes without sending anything."""
        s.settimeout(timeout)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        return data == b""

    # --- in ---

    def test_v2_address_is_the_client_everywhere(self):
        hdr = v2_header("127.0.0.77", 40077, tlvs=tlv(0x02, b"imap.example.org"))
        s = self.connect(self.p_plain, hdr)
        g = read_line(s)
        self.assertTrue(g.startswith(b"* OK"), g)
        self.assertIn(b"LOGINDISABLED", g)  # cleartext: STARTTLS first
        t = self.starttls(s)
        resp = self.login_plain(t)
        self.assertTrue(b"\na OK" in b"\n" + resp, resp)
        t.sendall(b"b LOGOUT\r\n")
        read_until_tag(t, "b")
        t.close()
        log = self.mux.log_text()
        self.assertIn("client=127.0.0.77:40077", log)
        # Dovecot's own log: the client's address, and TLS from the SSL TLV
        line = self.dovecot_login_line("127.0.0.77")
        self.assertIn("secured", line)  # plaintext logins are off there: the SSL TLV did it
        # the header imapmux sent
        hdrs = [parse_v2(h) for h in self.tap.headers]
        mine = [h for h in hdrs if h[0] == "127.0.0.77"]
        self.assertEqual(len(mine), 1, hdrs)
        src, sport, dst, dport, tlvs, subs = mine[0]
        self.assertEqual((sport, dst, dport), (40077, "127.0.0.1", 143))
        self.assertEqual(tlvs.get(0x02), b"imap.example.org")
        self.assertIn(0x20, tlvs)
        self.assertEqual(tlvs[0x20][0] & 1, 1)
        self.assertTrue(subs.get(0x21, b"").startswith(b"TLSv1."), subs)
        self.assertTrue(len(subs.get(0x23, b"")) > 0, subs)
        # UNIQUE_ID is the session id of the audit records
        recs = self.wait_for("audit login record", lambda: [
            r for r in records(self.audit_path) if r.get("client") == "127.0.0.77"
            and r.get("type") == "login"])
        self.assertEqual(tlvs.get(0x05), recs[0]["session"].encode())
        self.assertEqual(recs[0].get("via"), "127.0.0.1")
        start = [r for r in records(self.audit_path)
                 if r.get("session") == recs[0]["session"] and r.get("type") == "session_start"]
        self.assertEqual(start[0]["client"], "127.0.0.77")

    def test_v1_byte_by_byte_then_pipelined_command(self):
        hdr = b"PROXY TCP4 127.0.0.78 127.0.0.1 40078 143\r\n"
        s = self.connect(self.p_plain)
        for i in range(len(hdr)):
            s.sendall(hdr[i:i + 1])
            time.sleep(0.002)
        self.assertTrue(read_line(s).startswith(b"* OK"))
        s.close()
        # the header and the client's first command in one segment: kept
        s = self.connect(self.p_plain, b"PROXY TCP4 127.0.0.79 127.0.0.1 40079 143\r\nn NOOP\r\n")
        self.assertTrue(read_line(s).startswith(b"* OK"))
        self.assertTrue(read_line(s).startswith(b"n OK"))
        s.close()
        self.wait_for("log line", lambda: "client=127.0.0.79:40079" in self.mux.log_text())

    def test_implicit_tls_header_then_client_hello_in_one_segment(self):
        s = self.connect(self.p_tls)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        s.sendall(v2_header("127.0.0.80", 40080, dport=993) + hello)
        deadline = time.monotonic() + 10
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = out.read()
                if pending:
                    s.sendall(pending)
                self.assertLess(time.monotonic(), deadline)
                d = s.recv(65536)
                self.assertTrue(d, "closed during the handshake")
                inc.write(d)
        pending = out.read()
        if pending:
            s.sendall(pending)
        greeting = b""
        while b"\r\n" not in greeting:
            try:
                greeting += obj.read(4096)
            except ssl.SSLWantReadError:
                self.assertLess(time.monotonic(), deadline)
                d = s.recv(65536)
                self.assertTrue(d, "closed before the greeting")
                inc.write(d)
        self.assertTrue(greeting.startswith(b"* OK"), greeting)
        self.assertIn(b"AUTH=PLAIN", greeting)
        s.close()
        self.wait_for("the TLS session's log", lambda: "client=127.0.0.80:40080" in
                      self.mux.log_text())

    def test_tls_terminated_at_balancer_allows_login(self):
        hdr = v2_header("127.0.0.81", 40081, tlvs=ssl_tlv())
        s = self.connect(self.p_term, hdr)
        g = read_line(s)
        self.assertNotIn(b"LOGINDISABLED", g)
        self.assertIn(b"AUTH=PLAIN", g)
        resp = self.login_plain(s)
        self.assertTrue(b"\na OK" in b"\n" + resp, resp)
        s.sendall(b"b LOGOUT\r\n")
        read_until_tag(s, "b")
        s.close()
        line = self.dovecot_login_line("127.0.0.81")
        self.assertIn("secured", line)
        recs = self.wait_for("audit record", lambda: [
            r for r in records(self.audit_path) if r.get("client") == "127.0.0.81"
            and r.get("type") == "login"])
        self.assertEqual(recs[0].get("tls"), "TLSv1.3")
        self.assertEqual(recs[0].get("cipher"), "TLS_AES_128_GCM_SHA256")

    def test_ssl_tlv_counts_only_where_the_listener_says_so(self):
        # the same SSL TLV on a listener not marked proxy_tls_terminated
        s = self.connect(self.p_plain, v2_header("127.0.0.82", 40082, tlvs=ssl_tlv()))
        g = read_line(s)
        self.assertIn(b"LOGINDISABLED", g)
        s.sendall(b"a LOGIN alice pw\r\n")
        self.assertTrue(read_line(s).startswith(b"a NO"))
        s.close()
        # the marked listener without an SSL TLV: cleartext
        s = self.connect(self.p_term, v2_header("127.0.0.83", 40083))
        self.assertIn(b"LOGINDISABLED", read_line(s))
        s.close()

    def test_untrusted_peer_is_closed(self):
        s = self.connect(self.p_untrusted, v2_header("127.0.0.84", 40084))
        self.assertTrue(self.closed_silently(s))
        s.close()
        self.wait_for("log", lambda: "closing the connection from 127.0.0.1" in self.mux.log_text())

    def test_malformed_and_missing_headers_are_closed(self):
        for bad in (b"PROXY TCP4 127.0.0.1 nonsense\r\n", b"a NOOP\r\n",
                    b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\n",
                    SIG + b"\x21\x11\x00\x04\x00\x00\x00\x00",  # address block too short
                    b"\x16\x03\x01\x00\x05hello"):
            s = self.connect(self.p_plain, bad)
            self.assertTrue(self.closed_silently(s), bad)
            s.close()
        # nothing at all: closed after the listener's 400 ms
        t0 = time.monotonic()
        s = self.connect(self.p_plain)
        self.assertTrue(self.closed_silently(s, timeout=5))
        took = time.monotonic() - t0
        self.assertGreater(took, 0.3)
        self.assertLess(took, 2.5)
        s.close()
        self.assertIn("PROXY header timeout", self.mux.log_text())
        self.assertIn("PROXY header refused", self.mux.log_text())

    def test_local_command_keeps_the_connection_address(self):
        s = self.connect(self.p_plain, v2_header(None, 0, local=True))
        self.assertTrue(read_line(s).startswith(b"* OK"))
        s.close()

    def test_connection_cap_counts_the_header_address(self):
        # max_connections_per_ip is 1: per header address, not per balancer
        a = self.connect(self.p_plain, v2_header("127.0.0.90", 1))
        b = self.connect(self.p_plain, v2_header("127.0.0.91", 2))
        self.assertTrue(read_line(a).startswith(b"* OK"))
        self.assertTrue(read_line(b).startswith(b"* OK"))
        c = self.connect(self.p_plain, v2_header("127.0.0.90", 3))
        self.assertTrue(read_line(c).startswith(b"* BYE"))
        for x in (a, b, c):
            x.close()

    def test_direct_listener_unchanged(self):
        s = self.connect(self.p_direct)
        self.assertTrue(read_line(s).startswith(b"* OK"))
        s.close()

    def test_zz_no_warm_pool_for_a_proxy_backend(self):
        # every backend connection carried a header (Dovecot would refuse
        # one without), and none came from a pool
        for h in self.tap.headers:
            self.assertEqual(h[:12], SIG)
        self.assertNotIn("invalid", self.dovecot.log_text().lower().replace("invalid password", ""))
        self.assertNotIn("warm connection ready", self.mux.log_text())


@unittest.skipUnless(shutil.which("haproxy"), "haproxy not installed")
class HaproxyInFrontTest(Helpers):
    """A real HAProxy in front: it ends the client's TLS and sends
    send-proxy-v2-ssl with the SSL, AUTHORITY, UNIQUE_ID and CRC32C TLVs to a
    proxy_tls_terminated listener; and it passes TLS through (mode tcp) with
    send-proxy-v2 to an implicit-TLS listener.  Clients connect from their own
    loopback addresses, which Dovecot must log as rip=."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.haproxy = None
        try:
            cls.dovecot = harness.Dovecot(cls.tmp.path, users={"alice": "pw"}, haproxy=True).start()
            cls.tap = HeaderTap(cls.dovecot.port)
            trusted = {"proxy_protocol": True, "proxy_trusted": ["127.0.0.1"]}
            cls.p_term = harness.free_port()
            cls.p_tls = harness.free_port()
            listeners = [(LOOPBACK, cls.p_term, "starttls", dict(trusted, proxy_tls_terminated=True)),
                         (LOOPBACK, cls.p_tls, "implicit", trusted)]
            backend = {"name": "main", "host": LOOPBACK, "port": cls.tap.port, "tls": "none",
                       "proxy_protocol": "v2"}
            cls.audit_path = os.path.join(cls.tmp.path, "audit.log")
            cls.mux = harness.Imapmux(cls.tmp.path, [backend], listeners=listeners,
                                      audit={"file": cls.audit_path}).start()
            cls.ctx = harness.client_context(cls.mux.cert[0])
            pem = os.path.join(cls.tmp.path, "haproxy.pem")
            with open(pem, "w") as f:
                f.write(open(cls.mux.cert[0]).read() + open(cls.mux.cert[1]).read())
            cls.h_term, cls.h_pass = harness.free_port(), harness.free_port()
            conf = os.path.join(cls.tmp.path, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write("""global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend term
    bind {lo}:{h_term} ssl crt {pem}
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt
    default_backend term
backend term
    server mux {lo}:{p_term} send-proxy-v2-ssl proxy-v2-options ssl,authority,unique-id,crc32c,ssl-cipher
frontend pass
    bind {lo}:{h_pass}
    default_backend pass
backend pass
    server mux {lo}:{p_tls} send-proxy-v2
""".format(lo=LOOPBACK, h_term=cls.h_term, h_pass=cls.h_pass, pem=pem, p_term=cls.p_term,
           p_tls=cls.p_tls))
            cls.haproxy = subprocess.Popen(["haproxy", "-db", "-f", conf],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            harness._children.append(cls.haproxy)
            harness.wait_port(cls.h_term, proc=cls.haproxy)
            harness.wait_port(cls.h_pass, proc=cls.haproxy)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "haproxy", None) is not None and cls.haproxy.poll() is None:
            cls.haproxy.terminate()
            cls.haproxy.wait(10)
        ProxyProtocolTest.tearDownClass.__func__(cls)

    def from_(self, source, port):
        s = socket.socket()
        s.settimeout(10)
        s.bind((source, 0))
        s.connect((LOOPBACK, port))
        return s

    def test_haproxy_ends_tls_and_says_so(self):
        s = self.ctx.wrap_socket(self.from_("127.0.0.66", self.h_term), server_hostname="localhost")
        g = read_line(s)
        self.assertNotIn(b"LOGINDISABLED", g)  # the SSL TLV made it TLS
        s.sendall(b"a LOGIN alice pw\r\n")
        resp = b"".join(read_until_tag(s, "a"))
        self.assertIn(b"\r\na OK", b"\r\n" + resp)
        s.sendall(b"b LOGOUT\r\n")
        read_until_tag(s, "b")
        s.close()
        line = self.dovecot_login_line("127.0.0.66")
        self.assertIn("secured", line)
        recs = self.wait_for("audit record", lambda: [
            r for r in records(self.audit_path) if r.get("client") == "127.0.0.66"
            and r.get("type") == "login"])
        self.assertTrue(recs[0].get("tls", "").startswith("TLSv1."), recs[0])
        self.assertTrue(recs[0].get("cipher"), recs[0])
        # what imapmux sent on: the name the client asked HAProxy for
        mine = [parse_v2(h) for h in self.tap.headers if parse_v2(h)[0] == "127.0.0.66"]
        self.assertEqual(mine[0][4].get(0x02), b"localhost")
        self.assertEqual(mine[0][4].get(0x05), recs[0]["session"].encode())

    def test_haproxy_passes_tls_through(self):
        s = self.ctx.wrap_socket(self.from_("127.0.0.67", self.h_pass), server_hostname="localhost")
        self.assertTrue(read_line(s).startswith(b"* OK"))
        s.sendall(b"a LOGIN alice pw\r\n")
        resp = b"".join(read_until_tag(s, "a"))
        self.assertIn(b"\r\na OK", b"\r\n" + resp)
        s.close()
        self.dovecot_login_line("127.0.0.67")
        # TLS passed through: the AUTHORITY imapmux sends on is the client's own SNI
        mine = [parse_v2(h) for h in self.tap.headers if parse_v2(h)[0] == "127.0.0.67"]
        self.assertEqual(mine[0][4].get(0x02), b"localhost")


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""SNI: several certificates chosen by the client's server name, checked
with the real openssl s_client (-servername, -sigalgs) and Python's ssl: two
names get their own certificates, a one-label wildcard matches, an unknown
name and a client without SNI get the default, and for a name that has both
an ECDSA and an RSA certificate an ECDSA-only client and an RSA-only client
each get the one they can verify.  A certificate close to expiry is a warning
in the log at start and at each reload.  Certificates are made here with the
openssl command line."""
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import unittest

import harness
from harness import LOOPBACK


def make_named_cert(directory, stem, cn, kind="ec", days=30, org=None):
    """A self-signed certificate for cn (also its SAN); returns (cert, key)."""
    cert = os.path.join(directory, stem + ".pem")
    key = os.path.join(directory, stem + ".key")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" \
        else ["-newkey", "rsa:2048"]
    subj = "/CN=%s" % cn + ("/O=%s" % org if org else "")
    subprocess.run(["openssl", "req", "-x509"] + newkey +
                   ["-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", subj,
                    "-addext", "subjectAltName=DNS:%s" % cn],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def s_client(port, *args):
    """openssl s_client's view of the server certificate: (subject, output)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOOPBACK, port)] +
                       list(args), input=b"", capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    m = re.search(r"^subject=(.*)$", out, re.M)
    return (m.group(1).strip() if m else None), out


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class SniTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        d = cls.tmp.path
        try:
            cls.default = make_named_cert(d, "default", "default.test")
            cls.a = make_named_cert(d, "a", "a.test")
            cls.b = make_named_cert(d, "b", "b.test", kind="rsa")
            cls.wild = make_named_cert(d, "wild", "*.w.test")
            cls.both_ec = make_named_cert(d, "both-ec", "both.test", org="ecdsa")
            cls.both_rsa = make_named_cert(d, "both-rsa", "both.test", kind="rsa", org="rsa")
            cls.soon = make_named_cert(d, "soon", "soon.test", days=3)
            cls.dovecot = harness.Dovecot(d).start()
            backend = {"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}
            cls.proxy_port = harness.free_port()
            cls.mux = harness.Imapmux(d, [backend], cls.default, extra_listeners=[
                (LOOPBACK, cls.proxy_port, "implicit",
                 {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8"]})])
            cls.rewrite_conf()
            cls.mux.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def rewrite_conf(cls):
        """The harness writes "tls: {cert, key}"; this puts the certificate
        list in its place."""
        with open(cls.mux.conf) as f:
            text = f.read()
        tls = ("tls:\n  cert: %s\n  key: %s\n  expiry_warning_days: 14\n  certificates:\n" %
               cls.default)
        for names, ck in ((["a.test"], cls.a), (["B.test"], cls.b), (["*.w.test"], cls.wild),
                          (["both.test"], cls.both_rsa), (["both.test"], cls.both_ec),
                          (["soon.test"], cls.soon)):
            tls += "    - {names: [%s], cert: %s, key: %s}\n" % (
                ", ".join('"%s"' % n for n in names), ck[0], ck[1])
        text = re.sub(r"^tls: .*\n", lambda m: tls, text, flags=re.M)
        with open(cls.mux.conf, "w") as f:
            f.write(text)

    @classmethod
    def tearDownClass(cls):
        mux = getattr(cls, "mux", None)
        if mux is not None and mux.proc is not None:
            rc = mux.stop()
            log = mux.log_text()
            if rc != 0 or any(m in log for m in ("ERROR: AddressSanitizer", "runtime error:",
                                                 "LeakSanitizer")):
                raise AssertionError("imapmux exited with %s; log:\n%s" % (rc, log[-4000:]))
        if getattr(cls, "dovecot", None) is not None:
            cls.dovecot.stop()
        cls.tmp.close()

    def subject(self, *args):
        subj, out = s_client(self.mux.tls_port, *args)
        self.assertIsNotNone(subj, out[-2000:])
        return subj

    def test_names_get_their_certificates(self):
        self.assertIn("CN = a.test", self.subject("-servername", "a.test"))
        self.assertIn("CN = b.test", self.subject("-servername", "b.test"))
        self.assertIn("CN = a.test", self.subject("-servername", "A.TEST"))

    def authority_cert(self, authority, sni=None):
        """The certificate served after a PROXY v2 header whose AUTHORITY TLV
        names authority (None: no TLV), the ClientHello naming sni."""
        from test_proxy_protocol import tlv, v2_header
        tlvs = tlv(0x02, authority.encode()) if authority is not None else b""
        raw = socket.create_connection((LOOPBACK, self.proxy_port), timeout=10)
        raw.sendall(v2_header("192.0.2.9", 40000, dport=993, tlvs=tlvs))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        t = ctx.wrap_socket(raw, server_hostname=sni)
        try:
            return t.getpeercert(binary_form=True)
        finally:
            t.close()

    def test_proxy_authority_chooses_without_sni(self):
        # a balancer that passes TLS through but names what the client asked
        # for: the AUTHORITY TLV chooses when the ClientHello has no name
        self.assertEqual(self.authority_cert("a.test"), der_of(self.a[0]))
        self.assertEqual(self.authority_cert("x.w.test"), der_of(self.wild[0]))
        self.assertEqual(self.authority_cert(None), der_of(self.default[0]))
        self.assertEqual(self.authority_cert("unknown.test"), der_of(self.default[0]))
        # the client's own SNI wins over the balancer's word
        self.assertEqual(self.authority_cert("a.test", sni="b.test"), der_of(self.b[0]))

    def test_wildcard_matches_one_label(self):
        self.assertIn("CN = *.w.test", self.subject("-servername", "imap.w.test"))
        self.assertIn("CN = default.test", self.subject("-servername", "x.imap.w.test"))
        self.assertIn("CN = default.test", self.subject("-servername", "w.test"))

    def test_unknown_name_and_no_sni_get_the_default(self):
        self.assertIn("CN = default.test", self.subject("-servername", "unknown.test"))
        self.assertIn("CN = default.test", self.subject("-noservername"))

    def test_ecdsa_and_rsa_for_one_name(self):
        # an unrestricted client gets ECDSA
        self.assertIn("O = ecdsa", self.subject("-servername", "both.test"))
        # TLS 1.3: the signature algorithms decide
        self.assertIn("O = ecdsa", self.subject("-servername", "both.test", "-tls1_3",
                                                "-sigalgs", "ECDSA+SHA256"))
        self.assertIn("O = rsa", self.subject("-servername", "both.test", "-tls1_3",
                                              "-sigalgs", "RSA-PSS+SHA256:RSA-PSS+SHA384"))
        # TLS 1.2: the cipher suites decide too
        self.assertIn("O = rsa", self.subject("-servername", "both.test", "-tls1_2",
                                              "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"))
        self.assertIn("O = ecdsa", self.subject("-servername", "both.test", "-tls1_2",
                                                "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"))
        self.assertIn("O = rsa", self.subject("-servername", "both.test", "-tls1_2",
                                              "-sigalgs", "RSA+SHA256"))

    def test_starttls_listener_chooses_too(self):
        subj, out = s_client(self.mux.plain_port, "-starttls", "imap", "-servername", "a.test")
        self.assertIsNotNone(subj, out[-2000:])
        self.assertIn("CN = a.test", subj)
        subj, out = s_client(self.mux.plain_port, "-starttls", "imap", "-servername",
                             "both.test", "-sigalgs", "RSA-PSS+SHA256")
        self.assertIn("O = rsa", subj or out[-2000:])

    def test_python_ssl_verifies_each_name(self):
        for name, ck in (("a.test", self.a), ("b.test", self.b), ("mail.w.test", self.wild)):
            ctx = ssl.create_default_context(cafile=ck[0])
            with socket.create_connection((LOOPBACK, self.mux.tls_port), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname=name) as t:
                    self.assertEqual(t.getpeercert(binary_form=True), der_of(ck[0]))
                    self.assertTrue(harness.read_line(t).startswith(b"* OK"))

    def test_expiry_warning_at_start_and_reload(self):
        pat = "certificate %s (soon.test) expires in" % self.soon[0]
        self.assertEqual(self.mux.log_text().count(pat), 1, self.mux.log_text()[-3000:])
        self.assertNotIn("certificate %s (a.test) expires" % self.a[0], self.mux.log_text())
        self.mux.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.mux.log_text().count(pat) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.mux.log_text().count(pat), 2)


if __name__ == "__main__":
    unittest.main()

"""Configuration reload on SIGHUP (and `imapmuxctl reload`), against real
Dovecots and Redis: a session open across a reload keeps working on its old
backend while new sessions follow the new route to a second Dovecot; a new
certificate is served to new clients; a broken configuration is refused
(the log says why) and the old one keeps serving; a listener added by a
reload accepts and a removed one stops; a backend named only in Redis
becomes usable when a reload adds a backend_template.  Certificates are made
with the openssl command line."""
import imaplib
import os
import signal
import socket
import ssl
import subprocess
import time
import unittest

import harness
from harness import LOOPBACK, read_line, read_until_tag

WAIT_S = 15  # every wait below is bounded by this


def make_cert(directory, stem):
    cert = os.path.join(directory, stem + ".pem")
    key = os.path.join(directory, stem + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", "/CN=localhost/O=%s" % stem,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def conf_text(listeners, cert, backends, default, workers=2, extra=""):
    lines = ["instance: reload", "workers: %d" % workers, "log: {level: debug, target: stderr}",
             "listeners:"]
    for address, port, tls in listeners:
        lines.append("  - {address: %s, port: %d, tls: %s}" % (address, port, tls))
    lines.append("tls: {cert: %s, key: %s}" % cert)
    lines.append("backends:")
    for b in backends:
        lines.append("  - {%s}" % ", ".join("%s: %s" % (k, harness._yaml_value(v))
                                           for k, v in b.items()))
    lines.append("routes: {default: %s}" % default)
    return "\n".join(lines) + "\n" + extra


class ReloadMux(harness.Imapmux):
    """The harness's imapmux, started with a pid file for imapmuxctl."""

    def start(self):
        self.pid_file = os.path.join(self.dir, "imapmux.pid")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([harness.imapmux_bin(), "-c", self.conf, "--pid-file",
                                      self.pid_file], stdout=self._logf, stderr=subprocess.STDOUT)
        harness._children.append(self.proc)
        for address, port, _ in self.listeners:
            harness.wait_port(port, proc=self.proc, host=address)
        return self


class ReloadBase(unittest.TestCase):
    workers = 2

    def write(self, text):
        with open(self.mux.conf, "w") as f:
            f.write(text)

    def wait_log(self, pred, what):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            log = self.mux.log_text()
            if pred(log):
                return log
            time.sleep(0.05)
        self.fail("%s: not in the log within %ds:\n%s" % (what, WAIT_S, self.mux.log_text()[-3000:]))

    def reload(self, via_ctl=False):
        """SIGHUP; waits until every worker has the new generation."""
        cls = type(self)
        if via_ctl:
            r = harness.imapmuxctl(None, "reload", "--pid-file", self.mux.pid_file)
            self.assertEqual(r.returncode, 0, r.stderr)
        else:
            self.mux.proc.send_signal(signal.SIGHUP)
        cls.gen += 1
        want = ["worker %d: generation %d in force" % (i, cls.gen) for i in range(self.workers)]
        self.wait_log(lambda log: all(w in log for w in want), "generation %d" % cls.gen)

    def reload_refused(self):
        """SIGHUP with a configuration that must be refused; returns the line."""
        before = self.mux.log_text().count("reload refused")
        self.mux.proc.send_signal(signal.SIGHUP)
        log = self.wait_log(lambda log: log.count("reload refused") > before, "a refusal")
        lines = [l for l in log.splitlines() if "reload refused" in l]
        return lines[before]

    @classmethod
    def stop_all(cls):
        mux = getattr(cls, "mux", None)
        if mux is not None and mux.proc is not None:
            rc = mux.stop()
            log = mux.log_text()
            if rc != 0 or any(m in log for m in ("ERROR: AddressSanitizer", "runtime error:",
                                                 "LeakSanitizer")):
                raise AssertionError("imapmux exited with %s; log:\n%s" % (rc, log[-6000:]))


class ReloadTest(ReloadBase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        d = cls.tmp.path
        try:
            cls.cert_a = make_cert(d, "cert-a")
            cls.cert_b = make_cert(d, "cert-b")
            cls.d1 = harness.Dovecot(d, users={"alice": "pw"}, name="d1").start()
            cls.d2 = harness.Dovecot(d, users={"alice": "pw"}, name="d2").start()
            cls.d1.add_message("alice", harness.sample_message("on-d1"))
            cls.d2.add_message("alice", harness.sample_message("on-d2"))
            cls.one = {"name": "one", "host": LOOPBACK, "port": cls.d1.port, "tls": "none",
                       "pool_size": 2}
            cls.two = {"name": "two", "host": LOOPBACK, "port": cls.d2.port, "tls": "none"}
            cls.mux = ReloadMux(d, [cls.one], cls.cert_a)
            cls.listeners = list(cls.mux.listeners)
            with open(cls.mux.conf, "w") as f:
                f.write(conf_text(cls.listeners, cls.cert_a, [cls.one], "one"))
            cls.mux.start()
            cls.gen = 1
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_all()
        finally:
            for dv in ("d1", "d2"):
                if getattr(cls, dv, None) is not None:
                    getattr(cls, dv).stop()
            cls.tmp.close()

    def client(self, cafile):
        return imaplib.IMAP4_SSL(LOOPBACK, self.mux.tls_port,
                                 ssl_context=harness.client_context(cafile), timeout=30)

    def subject_of_first(self, m):
        typ, d = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(typ, "OK")
        return d[0][1].decode().strip()

    def raw_cert(self):
        """A TLS connection past the greeting and the certificate it got."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = socket.create_connection((LOOPBACK, self.mux.tls_port), timeout=10)
        t = ctx.wrap_socket(s, server_hostname="localhost")
        self.assertTrue(read_line(t).startswith(b"* OK"))
        return t, t.getpeercert(binary_form=True)

    def test_1_session_keeps_its_backend_new_sessions_follow_the_new_route(self):
        self.write(conf_text(self.listeners, self.cert_a, [self.one], "one"))
        self.reload()
        old = self.client(self.cert_a[0])
        old.login("alice", "pw")
        old.select("INBOX")
        self.assertEqual(self.subject_of_first(old), "Subject: on-d1")
        d2_logins = self.d2.login_count()

        # a second backend and the default route moved to it
        self.write(conf_text(self.listeners, self.cert_a, [self.one, self.two], "two"))
        self.reload(via_ctl=True)

        self.assertEqual(self.subject_of_first(old), "Subject: on-d1")
        self.assertEqual(old.noop()[0], "OK")
        new = self.client(self.cert_a[0])
        new.login("alice", "pw")
        new.select("INBOX")
        self.assertEqual(self.subject_of_first(new), "Subject: on-d2")
        self.assertEqual(self.d2.login_count(), d2_logins + 1)
        # the old session still runs on the first Dovecot after the new one logged in
        self.assertEqual(self.subject_of_first(old), "Subject: on-d1")
        new.logout()
        old.logout()

    def test_2_new_certificate_for_new_clients(self):
        self.write(conf_text(self.listeners, self.cert_a, [self.one, self.two], "two"))
        self.reload()
        t_old, der = self.raw_cert()
        self.assertEqual(der, der_of(self.cert_a[0]))

        self.write(conf_text(self.listeners, self.cert_b, [self.one, self.two], "two"))
        self.reload()
        t_new, der = self.raw_cert()
        self.assertEqual(der, der_of(self.cert_b[0]))
        # verified against the new certificate only
        m = self.client(self.cert_b[0])
        m.login("alice", "pw")
        m.logout()
        with self.assertRaises(ssl.SSLError):
            self.client(self.cert_a[0])
        # the connection opened before the reload goes on
        t_old.sendall(b"a1 NOOP\r\n")
        self.assertEqual(read_until_tag(t_old, "a1")[-1], b"a1 OK NOOP completed\r\n")
        t_old.close()
        t_new.close()

    def test_3_broken_configuration_is_refused_and_the_old_one_serves(self):
        good = conf_text(self.listeners, self.cert_b, [self.one, self.two], "two")
        self.write(good)
        self.reload()

        cases = [
            (conf_text(self.listeners, (self.cert_b[0] + ".missing", self.cert_b[1]),
                       [self.one, self.two], "two"), "cannot read"),
            (good + "routes2: [\n", "imapmux.yaml:"),
            (conf_text(self.listeners, (self.cert_b[0], self.cert_a[1]), [self.one, self.two],
                       "two"), "cert-a.key: cannot load private key"),
            (conf_text(self.listeners, self.cert_b, [self.one, self.two], "nowhere"),
             "routes.default: unknown backend nowhere"),
            (conf_text(self.listeners, self.cert_b, [self.one, self.two], "two", workers=3),
             "workers changed, which needs a restart"),
        ]
        for text, why in cases:
            self.write(text)
            line = self.reload_refused()
            self.assertIn(why, line)
            self.assertIn("the configuration in force stays", line)
            # still served by the configuration in force: its certificate, its route
            t, der = self.raw_cert()
            self.assertEqual(der, der_of(self.cert_b[0]))
            t.close()
            m = self.client(self.cert_b[0])
            m.login("alice", "pw")
            m.select("INBOX")
            self.assertEqual(self.subject_of_first(m), "Subject: on-d2")
            m.logout()
        # imapmuxctl signals only an imapmux
        r = harness.imapmuxctl(None, "reload", "--pid", str(self.d1.proc.pid))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("not imapmux", r.stderr)
        r = harness.imapmuxctl(None, "reload", "--pid-file", self.mux.pid_file + ".none")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.write(good)
        self.reload()

    def test_4_listener_added_accepts_removed_stops(self):
        implicit = [l for l in self.listeners if l[2] == "implicit"]
        old_plain = [l for l in self.listeners if l[2] == "starttls"][0]
        new_plain = (LOOPBACK, harness.free_port(), "starttls")
        self.write(conf_text(implicit + [new_plain], self.cert_b, [self.one, self.two], "two"))
        self.reload()

        s = socket.create_connection((LOOPBACK, new_plain[1]), timeout=10)
        self.assertIn(b"STARTTLS", read_line(s))
        s.close()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, old_plain[1]), timeout=5).close()
        self.assertIn("no longer listening on %s port %d" % (LOOPBACK, old_plain[1]),
                      self.mux.log_text())
        # the kept listener goes on accepting
        m = self.client(self.cert_b[0])
        m.login("alice", "pw")
        m.logout()

    def test_5_warm_connections_of_unchanged_backends_are_kept(self):
        kept = "kept 2 warm connections to backend one host %s:%d" % (LOOPBACK, self.d1.port)
        ready = "warm connection to backend one host %s:%d ready" % (LOOPBACK, self.d1.port)
        self.wait_log(lambda log: log.count(ready) >= 2 * self.workers, "a full warm pool")
        # the pools refill after each reload: wait until they are full again
        time.sleep(1)
        before_kept, before_ready = (self.mux.log_text().count(kept),
                                     self.mux.log_text().count(ready))
        self.write(conf_text(self.listeners, self.cert_b, [self.one, self.two], "one"))
        self.reload()
        log = self.wait_log(lambda log: log.count(kept) == before_kept + self.workers,
                            "the warm connections kept")
        time.sleep(1)
        self.assertEqual(self.mux.log_text().count(ready), before_ready,
                         "no new warm connection for an unchanged backend")
        # a changed backend gets new ones
        changed = dict(self.one, pool_max_idle_ms=50000)
        self.write(conf_text(self.listeners, self.cert_b, [changed, self.two], "one"))
        self.reload()
        self.wait_log(lambda log: log.count(ready) >= before_ready + 2 * self.workers,
                      "new warm connections")
        self.assertEqual(self.mux.log_text().count(kept), before_kept + self.workers)
        m = self.client(self.cert_b[0])
        m.login("alice", "pw")
        m.select("INBOX")
        self.assertEqual(self.subject_of_first(m), "Subject: on-d1")
        m.logout()


class ReloadTemplateTest(ReloadBase):
    """A backend named only in Redis: refused without a backend_template,
    reachable after a reload adds one."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        d = cls.tmp.path
        try:
            cls.cert = make_cert(d, "cert")
            cls.redis = harness.Redis(d).start()
            cls.d1 = harness.Dovecot(d, users={"alice": "pw"}, name="d1").start()
            cls.d3 = harness.Dovecot(d, users={"carol": "pw3"}, name="d3").start()
            cls.one = {"name": "one", "host": LOOPBACK, "port": cls.d1.port, "tls": "none"}
            cls.mux = ReloadMux(d, [cls.one], cls.cert)
            cls.listeners = list(cls.mux.listeners)
            cls.redis_section = ("redis: {host: %s, port: %d, cache_ttl_ms: 0}\n" %
                                 (LOOPBACK, cls.redis.port))
            with open(cls.mux.conf, "w") as f:
                f.write(conf_text(cls.listeners, cls.cert, [cls.one], "one",
                                  extra=cls.redis_section))
            cls.mux.start()
            cls.gen = 1
            cls.redis.cmd("HSET", "imapmux:user:carol", "backend", "three")
            cls.redis.cmd("HSET", "imapmux:backend:three", "hosts",
                          "%s:%d" % (LOOPBACK, cls.d3.port))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_all()
        finally:
            for dv in ("d1", "d3", "redis"):
                if getattr(cls, dv, None) is not None:
                    getattr(cls, dv).stop()
            cls.tmp.close()

    def login_carol(self):
        m = imaplib.IMAP4_SSL(LOOPBACK, self.mux.tls_port,
                              ssl_context=harness.client_context(self.cert[0]), timeout=30)
        try:
            return m.login("carol", "pw3")[0]
        except imaplib.IMAP4.error as e:
            return str(e)
        finally:
            try:
                m.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    def test_backend_named_only_in_redis(self):
        self.assertIn("UNAVAILABLE", self.login_carol())
        self.assertIn("names backend three, which the configuration does not define",
                      self.mux.log_text())
        self.write(conf_text(self.listeners, self.cert, [self.one], "one",
                             extra=self.redis_section + "backend_template: {tls: none}\n"))
        self.reload()
        logins = self.d3.login_count()
        self.assertEqual(self.login_carol(), "OK")
        self.assertEqual(self.d3.login_count(), logins + 1)
        self.assertIn("backend=three(%s:%d)" % (LOOPBACK, self.d3.port), self.mux.log_text())
        # without hosts in Redis such a backend is unavailable, not a crash
        self.redis.cmd("DEL", "imapmux:backend:three")
        self.assertIn("UNAVAILABLE", self.login_carol())
        self.assertIn("named only in Redis and its record there has no hosts",
                      self.mux.log_text())


class ReloadCacheTest(ReloadBase):
    """The session cache survives a reload that leaves its settings alone."""
    workers = 1  # the cache is per worker: one, so the next login finds it

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        d = cls.tmp.path
        try:
            cls.cert = make_cert(d, "cert")
            cls.d1 = harness.Dovecot(d, users={"alice": "pw"}, name="d1").start()
            cls.one = {"name": "one", "host": LOOPBACK, "port": cls.d1.port, "tls": "none"}
            cls.mux = ReloadMux(d, [cls.one], cls.cert)
            cls.listeners = list(cls.mux.listeners)
            with open(cls.mux.conf, "w") as f:
                f.write(cls.conf(30000))
            cls.mux.start()
            cls.gen = 1
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def conf(cls, ttl_ms):
        return conf_text(cls.listeners, cls.cert, [cls.one], "one", workers=1,
                         extra="session_cache: {enabled: true, park: always, ttl_ms: %d}\n" % ttl_ms)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_all()
        finally:
            if getattr(cls, "d1", None) is not None:
                cls.d1.stop()
            cls.tmp.close()

    def park(self):
        m = imaplib.IMAP4_SSL(LOOPBACK, self.mux.tls_port,
                              ssl_context=harness.client_context(self.cert[0]), timeout=30)
        m.login("alice", "pw")
        m.select("INBOX")
        m.logout()

    def hits(self):
        return self.mux.log_text().count("session cache hit")

    def test_parked_connections_across_reloads(self):
        self.park()
        logins = self.d1.login_count()
        hits = self.hits()
        self.write(self.conf(30000) + "limits: {max_auth_failures: 5}\n")
        self.reload()
        self.park()  # taken from the cache, parked again
        self.assertEqual(self.hits(), hits + 1)
        self.assertEqual(self.d1.login_count(), logins)
        # new cache settings: a new, empty cache
        self.write(self.conf(20000))
        self.reload()
        self.park()
        self.assertEqual(self.hits(), hits + 1)
        self.wait_log(lambda log: self.d1.login_count() == logins + 1, "a backend login")


if __name__ == "__main__":
    unittest.main()

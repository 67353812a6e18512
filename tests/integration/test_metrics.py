"""The admin listener: /metrics scraped by a real Prometheus server (Debian's
prometheus, on loopback with a temporary configuration and storage), linted by
promtool; the alert rules checked by promtool; the Grafana dashboard naming only
metrics that exist; /healthz and /readyz (Redis down, backend down, ready);
the bearer token and the client allow-list."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import harness
from harness import LOOPBACK

TOKEN = "s3cret-admin-token"
DEPLOY = os.path.join(harness.SOURCE_DIR, "deploy")
DASHBOARD = os.path.join(DEPLOY, "grafana", "imapmux-dashboard.json")
RULES = os.path.join(DEPLOY, "prometheus", "imapmux-alerts.yml")


def http_get(port, path, token=None, timeout=10):
    """(status, body text) of GET http://127.0.0.1:port/path."""
    req = urllib.request.Request("http://%s:%d%s" % (LOOPBACK, port, path))
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} of a text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "bad sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(text, metric, **labels):
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == metric and want <= ls)


def add_admin(mux, lines):
    """Appends an admin section to an Imapmux's configuration file."""
    with open(mux.conf, "a") as f:
        f.write("admin:\n" + "".join("  %s\n" % l for l in lines))


def wait_for(fn, timeout=30.0, step=0.2):
    """fn() until it returns a true value (returned) or timeout (None)."""
    end = time.time() + timeout
    while time.time() < end:
        r = fn()
        if r:
            return r
        time.sleep(step)
    return None


class Prometheus:
    """A prometheus server on a free loopback port scraping one target every
    second with a bearer token; stopped by its PID."""

    def __init__(self, tmpdir, target_port, token_file):
        self.dir = os.path.join(tmpdir, "prometheus")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.port = harness.free_port()
        self.conf = os.path.join(self.dir, "prometheus.yml")
        with open(self.conf, "w") as f:
            f.write("global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
                    "scrape_configs:\n"
                    "  - job_name: imapmux\n"
                    "    authorization: {credentials_file: %s}\n"
                    "    static_configs: [{targets: ['%s:%d']}]\n" % (token_file, LOOPBACK,
                                                                      target_port))
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + self.conf,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=%s:%d" % (LOOPBACK, self.port), "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        harness._children.append(self.proc)
        harness.wait_port(self.port, timeout=60, proc=self.proc)

    def query(self, q):
        url = "http://%s:%d/api/v1/query?%s" % (LOOPBACK, self.port,
                                                urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read().decode())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class MetricsTest(unittest.TestCase):
    """One imapmux with an admin listener (token, allow-list of loopback), an
    audit file and a dovecot backend."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.mux = None
        try:
            cls.cert = harness.make_cert(cls.tmp.path)
            cls.dovecot = harness.Dovecot(cls.tmp.path, users={"alice": "pw"}).start()
            backend = {"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none",
                       "pool_size": 1}
            cls.mux = harness.Imapmux(cls.tmp.path, [backend], cls.cert, routes={"default": "main"},
                                      audit={"file": os.path.join(cls.tmp.path, "audit.log")},
                                      session_cache={"enabled": True})
            cls.token_file = os.path.join(cls.tmp.path, "admin-token")
            with open(cls.token_file, "w") as f:
                f.write(TOKEN + "\n")
            cls.admin_port = harness.free_port()
            add_admin(cls.mux, ["listen: \"%s:%d\"" % (LOOPBACK, cls.admin_port),
                                "token_file: %s" % cls.token_file,
                                "allow: [\"127.0.0.0/8\", \"::1\"]"])
            cls.mux.start()
            harness.wait_port(cls.admin_port, proc=cls.mux.proc)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.mux is not None:
            rc = cls.mux.stop()
            log = cls.mux.log_text()
            cls.mux = None
            if rc != 0:
                raise AssertionError("imapmux exited with %s; log:\n%s" % (rc, log[-4000:]))
            if "ERROR: AddressSanitizer" in log or "runtime error:" in log:
                raise AssertionError("sanitizer report in the imapmux log:\n" + log[-8000:])
        if getattr(cls, "dovecot", None) is not None:
            cls.dovecot.stop()
        cls.tmp.close()

    def metrics(self):
        status, body = http_get(self.admin_port, "/metrics", TOKEN)
        self.assertEqual(status, 200, body)
        return body

    def login_once(self, password="pw"):
        m = self.mux.ssl_client()
        try:
            m.login("alice", password)
        except Exception:
            m.logout()
            return False
        m.select("INBOX")
        m.noop()
        m.logout()
        return True

    def test_01_counters_move_with_a_login(self):
        before = self.metrics()
        self.assertTrue(self.login_once())
        self.assertFalse(self.login_once("wrong"))
        after = self.metrics()
        self.assertEqual(value(after, "imapmux_logins_total", result="ok", mechanism="login") -
                         value(before, "imapmux_logins_total", result="ok", mechanism="login"), 1)
        self.assertEqual(value(after, "imapmux_logins_total", result="failed") -
                         value(before, "imapmux_logins_total", result="failed"), 1)
        self.assertGreaterEqual(value(after, "imapmux_login_refusals_total",
                                      reason="backend_refused"), 1)
        self.assertGreaterEqual(value(after, "imapmux_relay_commands_total", command="SELECT"), 1)
        self.assertGreaterEqual(value(after, "imapmux_relay_commands_total", command="NOOP"), 1)
        self.assertGreater(value(after, "imapmux_relay_bytes_total",
                                 direction="backend_to_client"), 0)
        self.assertGreaterEqual(value(after, "imapmux_tls_handshakes_total") -
                                value(before, "imapmux_tls_handshakes_total"), 2)
        self.assertGreaterEqual(value(after, "imapmux_login_duration_seconds_count", result="ok"), 1)
        self.assertGreaterEqual(value(after, "imapmux_login_step_duration_seconds_count",
                                      step="backend"), 1)
        host = "%s:%d" % (LOOPBACK, self.dovecot.port)
        self.assertEqual(value(after, "imapmux_backend_up", backend="main", host=host), 1)
        self.assertGreaterEqual(value(after, "imapmux_backend_login_duration_seconds_count",
                                      backend="main", host=host), 1)
        self.assertGreaterEqual(value(after, "imapmux_warm_pool_hits_total") +
                                value(after, "imapmux_session_cache_hits_total"), 1)
        self.assertGreaterEqual(value(after, "imapmux_audit_records_written_total", sink="file"), 1)
        self.assertGreater(value(after, "imapmux_certificate_expiry_timestamp_seconds",
                                 name="default"), time.time())
        self.assertGreater(value(after, "imapmux_process_open_fds"), 0)
        self.assertEqual(value(after, "imapmux_build_info"), 1)
        # the accepted connections of the listener, none open once logged out
        lst = "%s:%d" % (LOOPBACK, self.mux.tls_port)
        self.assertGreaterEqual(value(after, "imapmux_connections_accepted_total", listener=lst), 2)
        self.assertTrue(wait_for(lambda: value(self.metrics(), "imapmux_connections_open",
                                               listener=lst) == 0, 10))
        # no login name or password in any label or value
        self.assertNotIn("alice", after)
        self.assertNotIn("wrong", after.replace("wrong_password", ""))

    def test_02_promtool_accepts_the_exposition(self):
        self.assertTrue(self.login_once())
        body = self.metrics()
        p = subprocess.run(["promtool", "check", "metrics"], input=body.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        # histograms: cumulative buckets ending in +Inf equal to _count
        s = samples(body)
        for (n, ls), v in s.items():
            if n.endswith("_bucket") and ("le", "+Inf") in ls:
                base = n[:-len("_bucket")]
                rest = frozenset(x for x in ls if x[0] != "le")
                self.assertEqual(s[(base + "_count", rest)], v, n)

    def test_02b_daemon_links_no_openssl(self):
        """libmicrohttpd comes with GnuTLS; OpenSSL's libraries must not meet
        BoringSSL in the daemon."""
        out = subprocess.run(["ldd", harness.imapmux_bin()], capture_output=True,
                             timeout=30).stdout.decode()
        self.assertIn("libmicrohttpd", out)
        self.assertNotRegex(out, r"libssl\.so\.3|libcrypto\.so\.3")

    def test_03_rules_pass_promtool(self):
        p = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())

    def test_04_dashboard_names_only_existing_metrics(self):
        with open(DASHBOARD) as f:
            dash = json.load(f)
        exprs = []

        def walk(x):
            if isinstance(x, dict):
                for k, v in x.items():
                    if k in ("expr", "definition") and isinstance(v, str):
                        exprs.append(v)
                    else:
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
        walk(dash)
        self.assertGreater(len(exprs), 20)
        names = set()
        for e in exprs:
            names.update(re.findall(r"\bimapmux_[a-z0-9_]+", e))
        self.assertGreater(len(names), 20)
        live = {n for n, _ in samples(self.metrics())}
        missing = sorted(n for n in names if n not in live)
        self.assertEqual(missing, [], "dashboard metrics missing from /metrics")
        for needed in ("imapmux_logins_total", "imapmux_login_duration_seconds_bucket",
                       "imapmux_backend_up", "imapmux_warm_pool_connections",
                       "imapmux_audit_queue_bytes", "imapmux_tls_handshake_failures_total"):
            self.assertIn(needed, names)

    def test_05_prometheus_scrapes_the_login_counter(self):
        if shutil.which("prometheus") is None:
            self.fail("prometheus is not installed (Debian package prometheus)")
        prom = Prometheus(self.tmp.path, self.admin_port, self.token_file)
        try:
            self.assertTrue(self.login_once())
            want = value(self.metrics(), "imapmux_logins_total", result="ok")
            self.assertGreaterEqual(want, 1)

            def scraped():
                r = prom.query('sum(imapmux_logins_total{job="imapmux",result="ok"})')
                res = r.get("data", {}).get("result", [])
                return res and float(res[0]["value"][1]) >= want
            self.assertTrue(wait_for(scraped, 60, 0.5), "prometheus never saw the login")
            up = prom.query('up{job="imapmux"}')["data"]["result"]
            self.assertEqual(up[0]["value"][1], "1")
        finally:
            prom.stop()

    def test_06_token_and_allow_list(self):
        self.assertEqual(http_get(self.admin_port, "/metrics")[0], 401)
        self.assertEqual(http_get(self.admin_port, "/metrics", "not-" + TOKEN)[0], 401)
        self.assertEqual(http_get(self.admin_port, "/metrics", TOKEN[:-1])[0], 401)
        self.assertEqual(http_get(self.admin_port, "/readyz")[0], 401)
        self.assertEqual(http_get(self.admin_port, "/healthz"), (200, "ok\n"))
        self.assertEqual(http_get(self.admin_port, "/nothing", TOKEN)[0], 404)
        req = urllib.request.Request("http://%s:%d/metrics" % (LOOPBACK, self.admin_port),
                                     data=b"x=1", method="POST")
        req.add_header("Authorization", "Bearer " + TOKEN)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(cm.exception.code, 405)
        self.assertNotIn(TOKEN, self.mux.log_text())

    def test_07_readyz_ready_then_backend_down(self):
        status, body = http_get(self.admin_port, "/readyz", TOKEN)
        self.assertEqual(status, 200, body)
        self.assertTrue(body.startswith("ready\n"), body)
        # the harness's certificate lives 2 days, within the default warning
        # window of 14: a detail of the answer, not a reason to be unready
        self.assertRegex(body, r"warning: certificate default \(.*cert\.pem\) expires in [01] days")
        self.dovecot.stop()
        try:
            status, body = http_get(self.admin_port, "/readyz", TOKEN)
            self.assertEqual(status, 503, body)
            self.assertIn("backend main: no host reachable", body)
            self.assertNotIn("redis", body)
            host = "%s:%d" % (LOOPBACK, self.dovecot.port)
            self.assertEqual(value(self.metrics(), "imapmux_backend_up", backend="main",
                                   host=host), 0)
        finally:
            self.dovecot.start()
        self.assertTrue(wait_for(lambda: http_get(self.admin_port, "/readyz", TOKEN)[0] == 200, 20))


    def test_07b_reloads_are_counted(self):
        def reloads(result):
            return value(self.metrics(), "imapmux_config_reloads_total", result=result) or 0
        ok0, bad0 = reloads("success"), reloads("failure")
        self.mux.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: reloads("success") == ok0 + 1, 10))
        self.assertEqual(value(self.metrics(), "imapmux_config_last_reload_success"), 1)
        with open(self.mux.conf) as f:
            good = f.read()
        try:
            with open(self.mux.conf, "w") as f:
                f.write(good + "no_such_key: 1\n")
            self.mux.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: reloads("failure") == bad0 + 1, 10))
            self.assertEqual(value(self.metrics(), "imapmux_config_last_reload_success"), 0)
        finally:
            with open(self.mux.conf, "w") as f:
                f.write(good)
        # the certificate in force after the reloads still has its gauge
        self.assertGreater(value(self.metrics(), "imapmux_certificate_expiry_timestamp_seconds",
                                 name="default"), time.time())

    def test_08_readyz_not_ready_while_draining(self):
        """Last: SIGTERM with a logged-in session open; until it leaves, the
        admin listener says the process drains."""
        m = self.mux.ssl_client()
        m.login("alice", "pw")
        self.mux.proc.send_signal(signal.SIGTERM)
        got = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(self.admin_port, "/readyz", TOKEN)), 10)
        self.assertIsNotNone(got)
        self.assertIn("listeners: not serving", got[1])
        self.assertEqual(http_get(self.admin_port, "/healthz"), (200, "ok\n"))
        m.logout()
        self.mux.proc.wait(40)


class ReadyRedisTest(unittest.TestCase):
    """/readyz follows the Redis connection; an allow-list without the
    client's address refuses it."""

    def test_redis_down_then_back(self):
        with harness.TempDir() as tmpd:
            tmp = tmpd.path
            cert = harness.make_cert(tmp)
            dovecot = harness.Dovecot(tmp, users={"alice": "pw"}).start()
            redis = harness.Redis(tmp).start()
            mux = None
            try:
                backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}
                mux = harness.Imapmux(tmp, [backend], cert, routes={"default": "main"},
                                      redis={"host": LOOPBACK, "port": redis.port,
                                             "reconnect_max_ms": 500,
                                             "unknown_users": "passthrough"})
                port = harness.free_port()
                add_admin(mux, ["listen: \"%s:%d\"" % (LOOPBACK, port)])
                mux.start()
                harness.wait_port(port, proc=mux.proc)
                self.assertTrue(wait_for(lambda: http_get(port, "/readyz")[0] == 200, 20),
                                http_get(port, "/readyz"))
                body = http_get(port, "/metrics")[1]
                self.assertEqual(value(body, "imapmux_redis_connections_up", role="commands"), 2)
                self.assertIn("imapmux_password_checks_total", body)
                p = subprocess.run(["promtool", "check", "metrics"], input=body.encode(),
                                   capture_output=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
                redis.stop()
                got = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
                    http_get(port, "/readyz")), 20)
                self.assertIsNotNone(got, "readyz stayed ready with Redis down")
                self.assertIn("redis: not connected", got[1])
                self.assertNotIn("backend", got[1])
                self.assertEqual(value(http_get(port, "/metrics")[1],
                                       "imapmux_redis_connections_up", role="commands"), 0)
                redis.start()
                self.assertTrue(wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30))
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                redis.stop()
                dovecot.stop()

    def test_allow_list_refuses_other_clients(self):
        with harness.TempDir() as tmpd:
            tmp = tmpd.path
            cert = harness.make_cert(tmp)
            dovecot = harness.Dovecot(tmp, users={"alice": "pw"}).start()
            mux = None
            try:
                backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}
                mux = harness.Imapmux(tmp, [backend], cert, routes={"default": "main"})
                port = harness.free_port()
                add_admin(mux, ["listen: \"%s:%d\"" % (LOOPBACK, port),
                                "allow: [\"192.0.2.0/24\"]"])
                mux.start()
                harness.wait_port(port, proc=mux.proc)
                with self.assertRaises((ConnectionError, urllib.error.URLError, socket.timeout,
                                        OSError)):
                    http_get(port, "/healthz", timeout=5)
                self.assertIn("not in admin.allow", mux.log_text())
            finally:
                if mux is not None:
                    self.assertEqual(mux.stop(), 0)
                dovecot.stop()



class UpgradeAdminTest(unittest.TestCase):
    """An upgrade (--takeover): the new process binds the admin address while
    the old one still serves it, and answers alone once the old one left."""

    def test_new_process_takes_the_admin_address(self):
        import test_upgrade
        with harness.TempDir() as tmpd:
            tmp = tmpd.path
            cert = harness.make_cert(tmp)
            dovecot = harness.Dovecot(tmp, users={"alice": "pw"}).start()
            procs = []
            try:
                backend = {"name": "main", "host": LOOPBACK, "port": dovecot.port, "tls": "none"}
                listeners = [(LOOPBACK, harness.free_port(), "implicit")]
                sock = os.path.join(tmp, "takeover.sock")
                port = harness.free_port()
                for name in ("old", "new"):
                    mux = test_upgrade.TakeoverMux(tmp, [backend], cert, routes={"default": "main"},
                                                   listeners=listeners, takeover=sock, name=name)
                    add_admin(mux, ["listen: \"%s:%d\"" % (LOOPBACK, port)])
                    procs.append(mux)
                old, new = procs
                old.start()
                harness.wait_port(port, proc=old.proc)
                self.assertEqual(http_get(port, "/readyz")[0], 200)
                new.start()
                self.assertEqual(old.proc.wait(40), 0, old.log_text()[-3000:])
                self.assertTrue(new.alive(), new.log_text()[-3000:])
                status, body = http_get(port, "/readyz")
                self.assertEqual(status, 200, body)
                self.assertTrue(body.startswith("ready\n"), body)
                m = new.ssl_client()
                m.login("alice", "pw")
                m.logout()
                self.assertGreaterEqual(value(http_get(port, "/metrics")[1], "imapmux_logins_total",
                                              result="ok"), 1)
            finally:
                for mux in procs:
                    if mux.proc is not None:
                        mux.stop()
                dovecot.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)

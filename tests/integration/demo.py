"""The demo: imapmux for real on loopback, the whole product at once.

    python3 tests/integration/demo.py [--for SECONDS] [--selfcheck] [--bin build/imapmux]

It starts a Redis routing table, two Dovecot backends ("east" and "west"),
and imapmux in front of them with its audit log and its admin listener
(metrics, health), then prints what to try:
users landing on two backends, a pass-through user whose password only the
backend knows, moving a user with imapmuxctl and watching the session get
kicked, the audit log and its verification, the metrics endpoint, a
reload.  --selfcheck does all of that
itself and exits 1 when any step fails."""
import argparse
import os
import shlex
import socket
import subprocess
import sys
import time

import harness
from harness import LOOPBACK

MASTER = {"proxy": "demo-master-secret"}
# The backends know every user (a master login needs the user to exist there);
# only carol's password is checked by the backend, the others' by imapmux.
BACKEND_USERS = {"alice": "backend-only", "bob": "backend-only", "carol": "carol"}
USERS = {"alice": ("alice", "east"), "bob": ("bob", "west")}


def _port(preferred):
    return preferred if harness.port_is_free(preferred) else harness.free_port()


def _ctl(conf, *args, input=None):
    r = harness.imapmuxctl(conf, *args, input=input)
    if r.returncode != 0:
        raise RuntimeError("imapmuxctl %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                         (r.stdout + r.stderr).strip()))
    return r.stdout


class Demo:
    def __init__(self, tmpdir, tls_port, plain_port, admin_port):
        self.tmp = tmpdir
        self.cert = harness.make_cert(tmpdir)
        self.redis = harness.Redis(tmpdir).start()
        self.east = harness.Dovecot(tmpdir, users=BACKEND_USERS, name="east",
                                    master_users=MASTER).start()
        self.west = harness.Dovecot(tmpdir, users=BACKEND_USERS, name="west",
                                    master_users=MASTER).start()
        for user in BACKEND_USERS:
            self.east.add_message(user, harness.sample_message("Welcome to east, %s" % user))
            self.west.add_message(user, harness.sample_message("Welcome to west, %s" % user))
        master = {"tls": "none", "auth": "master", "master_user": "proxy",
                  "master_password": MASTER["proxy"], "forward_id": True}
        backends = [
            dict(name="east", host=LOOPBACK, port=self.east.port, **master),
            dict(name="west", host=LOOPBACK, port=self.west.port, **master),
            # pass-through: the backend checks the client's own password
            {"name": "east-pass", "host": LOOPBACK, "port": self.east.port, "tls": "none",
             "forward_id": True},
        ]
        self.audit_path = os.path.join(tmpdir, "audit.log")
        self.mux = harness.Imapmux(
            tmpdir, backends, self.cert, routes={"default": "east-pass"},
            redis={"host": LOOPBACK, "port": self.redis.port},
            audit={"file": self.audit_path}, workers=2, log_level="info",
            listeners=[(LOOPBACK, tls_port, "implicit"), (LOOPBACK, plain_port, "starttls")])
        self.admin_port = admin_port
        with open(self.mux.conf, "a") as f:
            f.write("admin:\n  listen: \"%s:%d\"\n" % (LOOPBACK, admin_port))
        self.mux.start()
        harness.wait_port(admin_port, proc=self.mux.proc)
        conf = self.mux.conf
        for user, (pw, backend) in USERS.items():
            _ctl(conf, "user", "add", user, "--backend", backend, input=pw + "\n")
        # carol has no password in Redis: her backend checks it
        _ctl(conf, "user", "add", "carol", "--backend", "east-pass", "--no-password")

    def url(self):
        return "imaps://%s:%d" % (LOOPBACK, self.mux.tls_port)

    def ctl_cmd(self, *args):
        return " ".join(shlex.quote(a) for a in
                        [harness.imapmuxctl_bin(), "-c", self.mux.conf] + list(args))

    def curl(self, user, pw, path="INBOX;UID=1"):
        return ["curl", "-sS", "--max-time", "20", "--cacert", self.cert[0],
                "%s/%s" % (self.url(), path), "-u", "%s:%s" % (user, pw)]

    def explain(self):
        c = self.cert[0]
        url = self.url()
        print("imapmux demo is running.\n")
        print("  imapmux:  implicit TLS on %s:%d, STARTTLS on %s:%d" % (
            LOOPBACK, self.mux.tls_port, LOOPBACK, self.mux.plain_port))
        print("  backends: dovecot \"east\" on %s:%d, dovecot \"west\" on %s:%d" % (
            LOOPBACK, self.east.port, LOOPBACK, self.west.port))
        print("  routing:  redis-server on %s:%d" % (LOOPBACK, self.redis.port))
        print("  config:   %s" % self.mux.conf)
        print("  log:      %s" % self.mux.log)
        print("  audit:    %s" % self.audit_path)
        print("  metrics:  http://%s:%d/metrics (also /healthz, /readyz)\n" % (
            LOOPBACK, self.admin_port))
        print("Users: alice (password alice) lives on east, bob (password bob) on west;")
        print("imapmux checks their passwords (hashes in Redis) and logs in to the backend")
        print("as its master user. carol (password carol) is passed through: her backend")
        print("checks the password.\n")
        print("Read each user's first message (the subject says which backend):")
        for user, pw in (("alice", "alice"), ("bob", "bob"), ("carol", "carol")):
            print("  curl --cacert %s '%s/INBOX;UID=1' -u %s:%s" % (c, url, user, pw))
        print("\nMove alice to west while she is logged in, and watch her session end:")
        print("  python3 -c 'import imaplib,ssl,time; c=ssl.create_default_context(cafile=\"%s\");"
              " m=imaplib.IMAP4_SSL(\"%s\",%d,ssl_context=c); m.login(\"alice\",\"alice\");"
              " m.select(); print(\"logged in, waiting\"); time.sleep(3600)'" % (
                  c, LOOPBACK, self.mux.tls_port))
        print("  %s" % self.ctl_cmd("user", "move", "alice", "west"))
        print("  (the session gets '* BYE [UNAVAILABLE] Mailbox moved, please reconnect';")
        print("   a new login lands on west)")
        print("  %s" % self.ctl_cmd("user", "show", "alice"))
        print("  %s" % self.ctl_cmd("user", "list"))
        print("\nThe audit log (one JSON record per command) and its hash chain:")
        print("  tail -f %s" % self.audit_path)
        print("  %s" % " ".join([harness.imapmuxctl_bin(), "audit", "verify", self.audit_path]))
        print("\nThe metrics (Prometheus text format) and the readiness check:")
        print("  curl -s http://%s:%d/metrics | grep -E '^imapmux_(logins|kicks|sessions)'" % (
            LOOPBACK, self.admin_port))
        print("  curl -s http://%s:%d/readyz" % (LOOPBACK, self.admin_port))
        print("\nReload the configuration without dropping a session (edit it first):")
        print("  kill -HUP %d" % self.mux.proc.pid)
        print("\nA mail client (Thunderbird, mutt, ...): server 127.0.0.1, port %d, SSL/TLS"
              " (or port %d\nwith STARTTLS), normal password; trust the self-signed"
              " certificate %s\n" % (self.mux.tls_port, self.mux.plain_port, c))
        sys.stdout.flush()

    def check(self, what, ok, detail=""):
        print("selfcheck: %-58s %s%s" % (what, "ok" if ok else "FAILED",
                                         "" if ok or not detail else ": " + detail))
        sys.stdout.flush()
        if not ok:
            raise AssertionError(what)

    def first_subject(self, user, pw):
        r = subprocess.run(self.curl(user, pw), capture_output=True, text=True, timeout=60)
        for line in r.stdout.splitlines():
            if line.startswith("Subject: "):
                return line[len("Subject: "):].strip()
        return "(curl exit %d: %s)" % (r.returncode, (r.stdout + r.stderr).strip()[-300:])

    def selfcheck(self):
        for user, pw, backend in (("alice", "alice", "east"), ("bob", "bob", "west"),
                                  ("carol", "carol", "east")):
            got = self.first_subject(user, pw)
            self.check("%s lands on %s" % (user, backend),
                       got == "Welcome to %s, %s" % (backend, user), got)
        r = subprocess.run(self.curl("alice", "wrong"), capture_output=True, text=True,
                           timeout=60)
        self.check("a wrong password is refused", r.returncode != 0, r.stdout)
        # alice logged in and idle, then moved: her session ends, she lands on west
        s, greeting = self.mux.raw_tls(timeout=20)
        s.sendall(b"a LOGIN alice alice\r\nb SELECT INBOX\r\n")
        harness.read_until_tag(s, "b", timeout=20)
        _ctl(self.mux.conf, "user", "move", "alice", "west")
        end = harness.read_to_eof(s, timeout=10)
        s.close()
        self.check("moving alice ends her open session", b"* BYE [UNAVAILABLE]" in end,
                   end.decode(errors="replace")[-200:])
        got = self.first_subject("alice", "alice")
        self.check("alice now lands on west", got == "Welcome to west, alice", got)
        # the audit log: records for what the clients did, an intact chain
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            with open(self.audit_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if text.count('"command":"SELECT"') >= 1 and text.count('"type":"kick"') >= 1:
                break
            time.sleep(0.1)
        self.check("the audit log has the SELECT and the kick",
                   '"command":"SELECT"' in text and '"type":"kick"' in text)
        self.check("no password in the audit log", '"alice alice' not in text
                   and "demo-master-secret" not in text and "backend-only" not in text)
        r = harness.imapmuxctl(None, "audit", "verify", self.audit_path)
        self.check("imapmuxctl audit verify accepts the file", r.returncode == 0,
                   (r.stdout + r.stderr).strip())
        # the metrics endpoint counted what happened
        base = "http://%s:%d" % (LOOPBACK, self.admin_port)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", base + "/metrics"],
                           capture_output=True, text=True, timeout=60)
        ok = 0
        for line in r.stdout.splitlines():
            if line.startswith("imapmux_logins_total{") and 'result="ok"' in line:
                ok += float(line.rsplit(" ", 1)[1])
        self.check("/metrics counts the successful logins", ok >= 4,
                   "%d; curl exit %d" % (ok, r.returncode))
        self.check("no user name in /metrics", "alice" not in r.stdout and "carol" not in r.stdout)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", base + "/readyz"],
                           capture_output=True, text=True, timeout=60)
        # a ready answer may add warnings (the demo's certificate lives 2 days)
        self.check("/readyz says ready", r.stdout.startswith("ready\n"), r.stdout + r.stderr)

    def stop(self):
        rc = None
        if self.mux is not None and self.mux.alive():
            rc = self.mux.stop()
        for p in (self.east, self.west, self.redis):
            if p is not None:
                p.stop()
        return rc


def main(argv):
    ap = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--for", dest="seconds", type=float, default=0,
                    help="stop after SECONDS (default: run until Ctrl-C)")
    ap.add_argument("--selfcheck", action="store_true",
                    help="try everything the demo describes; exit 1 if a step fails")
    ap.add_argument("--bin", help="imapmux binary (default: $IMAPMUX_BIN or build/imapmux)")
    args = ap.parse_args(argv)
    if args.bin:
        os.environ["IMAPMUX_BIN"] = os.path.abspath(args.bin)
    harness.imapmux_bin()  # fails early with a clear message
    if not os.path.exists(harness.imapmuxctl_bin()):
        print("imapmuxctl not found next to %s" % harness.imapmux_bin(), file=sys.stderr)
        return 1
    tmp = harness.TempDir(prefix="imapmux-demo-")
    demo = None
    try:
        demo = Demo(tmp.path, _port(9993), _port(9143), _port(9180))
        demo.explain()
        if args.selfcheck:
            try:
                demo.selfcheck()
            except (AssertionError, RuntimeError, OSError, socket.timeout) as e:
                print("selfcheck failed (%s); imapmux log ends with:\n%s"
                      % (e, demo.mux.log_text()[-4000:]), file=sys.stderr)
                return 1
        if args.seconds > 0:
            deadline = time.monotonic() + args.seconds
            while demo.mux.alive() and time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        else:
            print("Ctrl-C stops it.")
            sys.stdout.flush()
            try:
                while demo.mux.alive():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        if not demo.mux.alive():
            print("imapmux exited unexpectedly (%s); log:\n%s" % (
                demo.mux.proc.returncode, demo.mux.log_text()[-4000:]), file=sys.stderr)
            return 1
        rc = demo.stop()
        print("imapmux stopped (exit %s)" % rc)
        return 0 if rc == 0 else 1
    finally:
        if demo is not None:
            try:
                demo.stop()
            except RuntimeError:
                pass
        tmp.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

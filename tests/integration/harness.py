"""Integration harness: real dovecot and imapmux processes on free loopback
ports in a temporary directory, stopped by PID at the end.

Used by the tests, the benchmark and the demo (tests/integration/demo.py):
import harness.
"""
import atexit
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("IMAPMUX_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
LOOPBACK = "127.0.0.1"

_children = []


def _kill_leftovers():
    """At exit: whatever a test left running is stopped by its PID (SIGTERM,
    then SIGKILL after a bounded wait)."""
    for p in _children:
        if p.poll() is None:
            p.terminate()
    for p in _children:
        if p.poll() is None:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass


atexit.register(_kill_leftovers)


def imapmux_bin():
    b = os.environ.get("IMAPMUX_BIN")
    if b:
        return b
    for d in ("build", "build-asan"):
        cand = os.path.join(SOURCE_DIR, d, "imapmux")
        if os.path.exists(cand):
            return cand
    raise RuntimeError("set IMAPMUX_BIN to the imapmux binary")


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, proc=None, host=LOOPBACK):
    """Waits (bounded) until host:port accepts TCP; fails early if proc died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not listening after %.0fs" % (port, timeout))


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def make_cert(directory, kind="ec"):
    """A self-signed certificate for localhost and 127.0.0.1: ECDSA P-256
    (cert.pem, key.pem) or, with kind="rsa", RSA 2048 (cert-rsa.pem,
    key-rsa.pem).  Returns (cert, key)."""
    suffix = "" if kind == "ec" else "-" + kind
    cert = os.path.join(directory, "cert%s.pem" % suffix)
    key = os.path.join(directory, "key%s.pem" % suffix)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" \
        else ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509"] + newkey +
                   ["-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o644)  # dovecot reads it after dropping privileges
    return cert, key


class TempDir:
    def __init__(self, prefix="imapmux-test-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o755)

    def close(self):
        if os.environ.get("IMAPMUX_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def _unprivileged():
    for name in ("dovecot", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    raise RuntimeError("no unprivileged user for dovecot's mail")


class Dovecot:
    """A real dovecot IMAP server on a free loopback port."""

    def __init__(self, tmpdir, users=None, ssl_mode="none", cert=None, name="dovecot", ssl=None,
                 master_users=None, extra_conf="", haproxy=False):
        """master_users: {name: password} allowed to log in as any user with
        SASL PLAIN authzid=<user>, authcid=<name>."""
        self.dir = os.path.join(tmpdir, name)
        self.users = users or {"alice": "pw"}
        self.master_users = master_users or {}
        if ssl is not None:  # ssl=False | True (STARTTLS) | "starttls" | "implicit"
            ssl_mode = {False: "none", True: "starttls"}.get(ssl, ssl)
        if ssl_mode not in ("none", "starttls", "implicit"):
            raise ValueError("ssl_mode: none, starttls or implicit")
        self.ssl_mode = ssl_mode
        self.extra_conf = extra_conf  # appended to dovecot.conf (e.g. the benchmark's limits)
        # haproxy: the imap listener wants a PROXY protocol header (from
        # 127.0.0.0/8); a session is secured only by the header's SSL TLV when
        # it does not come from 127.0.0.1 (Dovecot trusts same-address peers)
        self.haproxy = haproxy
        if ssl_mode != "none" and cert is None:
            os.makedirs(self.dir, exist_ok=True)
            cert = make_cert(self.dir)
        self.cert = cert
        self.port = free_port()
        self.proc = None

    def _write_config(self):
        os.makedirs(os.path.join(self.dir, "run"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        mail = os.path.join(self.dir, "mail")
        os.makedirs(mail, exist_ok=True)
        u = _unprivileged()
        os.chown(mail, u.pw_uid, u.pw_gid)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            for user, pw in self.users.items():
                f.write("%s:{PLAIN}%s\n" % (user, pw))
        master_passdb = ""
        if self.master_users:
            with open(os.path.join(self.dir, "masters"), "w") as f:
                for user, pw in self.master_users.items():
                    f.write("%s:{PLAIN}%s\n" % (user, pw))
            # pass = yes: the target user must exist in the normal passdb too
            master_passdb = ("passdb {\n  driver = passwd-file\n  master = yes\n"
                             "  pass = yes\n  args = %s/masters\n}\n" % self.dir)
        if self.ssl_mode == "none":
            ssl_conf = "ssl = no\n"
        else:
            ssl_conf = "ssl = %s\nssl_cert = <%s\nssl_key = <%s\n" % (
                "required" if self.ssl_mode == "implicit" else "yes", self.cert[0], self.cert[1])
        imap_port, imaps_port = (0, self.port) if self.ssl_mode == "implicit" else (self.port, 0)
        haproxy_conf = "    haproxy = yes\n" if self.haproxy else ""
        conf = """protocols = imap
{trusted}listen = {lo}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
# the tests fail logins on purpose, many times from one address
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 0
login_trusted_networks = 127.0.0.0/8
login_log_format_elements = user=<%u> method=%m rip=%r rport=%{{rport}} lip=%l lport=%{{lport}} %c
mail_location = maildir:{d}/mail/%u
{master}passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {lo}
    port = {imap_port}
{haproxy}  }}
  inet_listener imaps {{
    address = {lo}
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
""".format(lo=LOOPBACK, d=self.dir, ssl=ssl_conf, uid=u.pw_uid, gid=u.pw_gid,
           imap_port=imap_port, imaps_port=imaps_port, master=master_passdb,
           haproxy=haproxy_conf,
           trusted="haproxy_trusted_networks = 127.0.0.0/8\n" if self.haproxy else "") + self.extra_conf
        if self.haproxy:
            # only the header's SSL TLV may make a session secured: plaintext
            # logins refused, and the connecting address not trusted as such
            conf = conf.replace("disable_plaintext_auth = no", "disable_plaintext_auth = yes")
            conf = conf.replace("login_trusted_networks = 127.0.0.0/8",
                                "login_trusted_networks = 127.0.0.1/32")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(conf)

    def start(self):
        self._write_config()
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _children.append(self.proc)
        try:
            wait_port(self.port, proc=self.proc)
        except RuntimeError as e:
            raise RuntimeError("%s; dovecot's log ends with:\n%s" % (e, self.log_text()[-2000:]))
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill_logins(self):
        """SIGKILL this Dovecot's imap-login processes only (its own, found by
        parent PID: other tests' Dovecots run on the same machine); the master
        stays up and starts new ones."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-f", "imap-login"],
                             capture_output=True, text=True, check=False).stdout
        pids = [int(x) for x in out.split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def kill(self):
        """SIGKILL the children (imap processes, so no BYE goes out) and then
        the master."""
        if self.proc is not None and self.proc.poll() is None:
            # a stopped master cannot start a child in place of a killed one
            self.proc.send_signal(signal.SIGSTOP)
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                 text=True, check=False).stdout
            children = [int(x) for x in out.split()]
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait(5)
            # SIGKILL takes effect asynchronously: a child still alive keeps
            # its unix sockets in base_dir, and a new master refuses to start
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.02)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "dovecot.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def login_count(self):
        return self.log_text().count("imap-login: Info: Login: ")

    def client(self):
        if self.ssl_mode == "implicit":
            return imaplib.IMAP4_SSL(LOOPBACK, self.port, ssl_context=client_context(self.cert[0]))
        return imaplib.IMAP4(LOOPBACK, self.port)

    def add_message(self, user, message, mailbox="INBOX"):
        """Delivers a message by logging in to dovecot directly."""
        m = self.client()
        if self.ssl_mode == "starttls":
            m.starttls(ssl_context=client_context(self.cert[0]))
        m.login(user, self.users[user])
        typ, _ = m.append(mailbox, None, None, message)
        m.logout()
        if typ != "OK":
            raise RuntimeError("APPEND to dovecot failed")


def _alive(pid):
    """pid runs and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class RespError(Exception):
    """An error reply (-ERR ...) from Redis."""


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by redis")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError("unexpected reply from redis: %r" % line[:50])


def resp_command(port, *args, password=None, timeout=5, host=LOOPBACK):
    """One command to Redis over a fresh connection (RESP2); returns str,
    int, list or None, raises RespError for an error reply."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        f = s.makefile("rb")
        cmds = ([("AUTH", password)] if password else []) + [args]
        out = b""
        for c in cmds:
            out += b"*%d\r\n" % len(c)
            for a in c:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        if password:
            _resp_read(f)
        return _resp_read(f)


class Redis:
    """A real redis-server on a free loopback port, no persistence."""

    def __init__(self, tmpdir, name="redis", password=None, replica_of=None):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.replica_of = replica_of
        self.proc = None

    def _write_config(self):
        lines = ["port %d" % self.port, "bind %s" % LOOPBACK, 'save ""', "appendonly no",
                 "daemonize no", "protected-mode no", "dir %s" % self.dir,
                 "logfile %s/redis.log" % self.dir]
        if self.password:
            lines.append("requirepass %s" % self.password)
        if self.replica_of is not None:
            lines.append("replicaof %s %d" % (LOOPBACK, self.replica_of.port))
            if self.replica_of.password:
                lines.append("masterauth %s" % self.replica_of.password)
        self.conf = os.path.join(self.dir, "redis.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _wait_ping(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s; log:\n%s" % (
                    self.proc.returncode, self.log_text()[-2000:]))
            try:
                if self.cmd("PING") == "PONG":
                    return
            except (OSError, ConnectionError, RespError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    def start(self):
        self._write_config()
        self.proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _children.append(self.proc)
        self._wait_ping()
        return self

    def _argv(self):
        return ["redis-server", self.conf]

    def restart(self):
        """Starts again on the same port (after kill or stop)."""
        self.stop()
        return self.start()

    def cmd(self, *args):
        return resp_command(self.port, *args, password=self.password)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class Sentinel(Redis):
    """A Redis Sentinel watching master (a Redis) with quorum 1."""

    def __init__(self, tmpdir, master, name="sentinel", master_name="mymaster",
                 down_after_ms=1000, failover_timeout_ms=3000, password=None):
        """password: the sentinel's own requirepass (the master's comes from
        master.password)."""
        super().__init__(tmpdir, name=name, password=password)
        self.master = master
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def _write_config(self):
        # Sentinel rewrites its file: write it once, keep it writable
        self.conf = os.path.join(self.dir, "sentinel.conf")
        if os.path.exists(self.conf):
            return
        n = self.master_name
        lines = ["port %d" % self.port, "bind %s" % LOOPBACK, "daemonize no",
                 "protected-mode no", "dir %s" % self.dir, "logfile %s/redis.log" % self.dir,
                 "sentinel monitor %s %s %d 1" % (n, LOOPBACK, self.master.port),
                 "sentinel down-after-milliseconds %s %d" % (n, self.down_after_ms),
                 "sentinel failover-timeout %s %d" % (n, self.failover_timeout_ms),
                 "sentinel parallel-syncs %s 1" % n]
        if self.password:
            lines.append("requirepass %s" % self.password)
        if self.master.password:
            lines.append("sentinel auth-pass %s %s" % (n, self.master.password))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _argv(self):
        return ["redis-server", self.conf, "--sentinel"]

    def master_addr(self):
        r = self.cmd("SENTINEL", "get-master-addr-by-name", self.master_name)
        return (r[0], int(r[1])) if r else None

    def wait_for_master(self, port, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            addr = self.master_addr()
            if addr is not None and addr[1] == port:
                return addr
            if time.monotonic() > deadline:
                raise RuntimeError("sentinel still names %r, not port %d" % (addr, port))
            time.sleep(0.2)


def imapmuxctl_bin():
    b = os.environ.get("IMAPMUXCTL_BIN")
    if b and os.path.exists(b):
        return b
    return os.path.join(os.path.dirname(os.path.abspath(imapmux_bin())), "imapmuxctl")


def imapmuxctl(config_path, *args, input=None, timeout=30):
    """Runs imapmuxctl [-c config_path] args...; returns the CompletedProcess."""
    opts = ["-c", config_path] if config_path is not None else []
    return subprocess.run([imapmuxctl_bin()] + opts + list(args), input=input,
                          capture_output=True, text=True, timeout=timeout)


def client_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def _yaml_value(v):
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (k, _yaml_value(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_yaml_value(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


class Imapmux:
    """imapmux with an implicit TLS and a STARTTLS listener in front of
    backends: a list of dicts {name, host, port, tls, ...}."""

    def __init__(self, tmpdir, backends, cert=None, routes=None, limits=None, workers=2,
                 name="imapmux", extra_listeners=(), listeners=None, redis=None,
                 bruteforce=None, audit=None, session_cache=None, log_level="debug"):
        """listeners: (address, port, tls[, {more keys}]) tuples replacing the default pair
        of an implicit TLS and a STARTTLS listener on free loopback ports;
        extra_listeners are added to either.  cert: (cert, key), made in the
        directory when None."""
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.cert = cert if cert is not None else make_cert(self.dir)
        cert = self.cert
        if listeners is None:
            listeners = [(LOOPBACK, free_port(), "implicit"), (LOOPBACK, free_port(), "starttls")]
        self.listeners = list(listeners) + list(extra_listeners)
        self.tls_port = next((l[1] for l in self.listeners if l[2] == "implicit"), None)
        self.plain_port = next((l[1] for l in self.listeners if l[2] != "implicit"), None)
        lines = ["instance: %s" % name, "workers: %d" % workers,
                 "log: {level: %s, target: stderr}" % log_level, "listeners:"]
        for l in self.listeners:
            more = "".join(", %s: %s" % (k, _yaml_value(v)) for k, v in (l[3] if len(l) > 3 else {}).items())
            lines.append("  - {address: %s, port: %d, tls: %s%s}" % (_yaml_value(l[0]), l[1], l[2], more))
        lines.append("tls: {cert: %s, key: %s}" % (_yaml_value(cert[0]), _yaml_value(cert[1])))
        lines.append("backends:")
        for b in backends:
            lines.append("  - {%s}" % ", ".join("%s: %s" % (k, _yaml_value(v)) for k, v in b.items()))
        if routes:
            lines.append("routes:")
            if "default" in routes:
                lines.append("  default: %s" % _yaml_value(routes["default"]))
            for section in ("domains", "users"):
                if routes.get(section):
                    lines.append("  %s:" % section)
                    for k, v in routes[section].items():
                        lines.append("    %s: %s" % (_yaml_value(k), _yaml_value(v)))
        for section, values in (("limits", limits), ("redis", redis), ("bruteforce", bruteforce),
                                ("audit", audit), ("session_cache", session_cache)):
            if values:
                lines.append("%s:" % section)
                for k, v in values.items():
                    lines.append("  %s: %s" % (k, _yaml_value(v)))
        self.conf = os.path.join(self.dir, "imapmux.yaml")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(self.dir, "imapmux.log")
        self.proc = None

    def start(self):
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([imapmux_bin(), "-c", self.conf], stdout=self._logf,
                                     stderr=subprocess.STDOUT)
        _children.append(self.proc)
        for l in self.listeners:
            wait_port(l[1], proc=self.proc, host=l[0])
        return self

    def stop(self, timeout=40):
        """SIGTERM, wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._logf.close()
                raise RuntimeError("imapmux did not stop within %ds" % timeout)
        self._logf.close()
        return self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def ssl_client(self):
        return imaplib.IMAP4_SSL(LOOPBACK, self.tls_port, ssl_context=client_context(self.cert[0]),
                                 timeout=30)

    def starttls_client(self):
        m = imaplib.IMAP4(LOOPBACK, self.plain_port, timeout=30)
        m.starttls(ssl_context=client_context(self.cert[0]))
        return m

    def raw_tls(self, timeout=10):
        """A TLS socket past the greeting; returns (sock, greeting)."""
        s = socket.create_connection((LOOPBACK, self.tls_port), timeout=timeout)
        t = client_context(self.cert[0]).wrap_socket(s, server_hostname="localhost")
        return t, read_line(t)

    def raw_plain(self, timeout=10):
        s = socket.create_connection((LOOPBACK, self.plain_port), timeout=timeout)
        return s, read_line(s)


def read_line(sock, limit=1 << 20):
    """Reads one CRLF-terminated line (bytes, with CRLF); b'' on EOF."""
    buf = b""
    while not buf.endswith(b"\r\n") and len(buf) < limit:
        c = sock.recv(1)
        if not c:
            break
        buf += c
    return buf


def read_until_tag(sock, tag, timeout=10):
    """Reads lines until one starts with tag + ' '; returns all lines."""
    sock.settimeout(timeout)
    lines = []
    while True:
        line = read_line(sock)
        if not line:
            return lines
        lines.append(line)
        if line.startswith(tag.encode() + b" "):
            return lines


def read_all(sock, timeout=5):
    """Reads until EOF or timeout; returns the bytes."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            c = sock.recv(65536)
            if not c:
                break
            data += c
    except (socket.timeout, ConnectionResetError, ssl.SSLError):
        pass
    return data


def read_to_eof(sock, timeout=10):
    """Reads until the peer closes; returns the bytes, or raises
    AssertionError if the connection is still open after timeout seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %.0fs; got %r" % (timeout, data[:300]))
        sock.settimeout(left)
        try:
            c = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
            return data
        if not c:
            return data
        data += c


def sample_message(subject="hello", body="Hello from the imapmux harness.\r\n"):
    return ("From: Harness <harness@example.com>\r\nTo: demo@example.com\r\n"
            "Subject: %s\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s@harness>\r\n"
            "\r\n%s" % (subject, subject.replace(" ", "."), body)).encode()


def attachment_message():
    import base64
    payload = base64.encodebytes(bytes(range(256)) * 8).decode().replace("\n", "\r\n")
    return ("From: Harness <harness@example.com>\r\nTo: demo@example.com\r\n"
            "Subject: with an attachment\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
            "--b1\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=\"bytes.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n%s--b1--\r\n" % payload).encode()


class ProxyTestCase(unittest.TestCase):
    """Starts a dovecot (users alice/pw, bob/pw2) and imapmux in front of it
    for the whole class; subclasses may override limits or backends."""

    users = {"alice": "pw", "bob": "pw2"}
    limits = None
    backend_extra = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        try:
            cls.cert = make_cert(cls.tmp.path)
            cls.dovecot = Dovecot(cls.tmp.path, users=dict(cls.users)).start()
            backend = {"name": "main", "host": LOOPBACK, "port": cls.dovecot.port, "tls": "none"}
            backend.update(cls.backend_extra)
            cls.mux = Imapmux(cls.tmp.path, [backend], cls.cert, limits=cls.limits).start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        mux = getattr(cls, "mux", None)
        if mux is not None:
            rc = mux.stop()
            cls.mux = None
            if rc != 0:
                raise AssertionError("imapmux exited with %s; log:\n%s" % (rc, mux.log_text()[-4000:]))
            log = mux.log_text()
            if "ERROR: AddressSanitizer" in log or "runtime error:" in log or "LeakSanitizer" in log:
                raise AssertionError("sanitizer report in the imapmux log:\n" + log[-8000:])
        if getattr(cls, "dovecot", None) is not None:
            cls.dovecot.stop()
        cls.tmp.close()

    def assertServing(self):
        """The daemon still answers a new client."""
        s, greeting = self.mux.raw_tls()
        self.assertTrue(greeting.startswith(b"* OK "), greeting)
        s.sendall(b"z NOOP\r\n")
        self.assertEqual(read_line(s), b"z OK NOOP completed\r\n")
        s.close()


if __name__ == "__main__":
    print(__doc__)
    sys.exit(2)

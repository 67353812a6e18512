"""Helpers for the several-instance topology on loopback: HAProxy in TCP mode
with health checks in front of imapmux instances, and whether this imapmux
build takes the PROXY protocol.  Dovecot, Redis and Sentinel come from
harness.py."""
import os
import subprocess
import tempfile

import harness
from harness import LOOPBACK


def proxy_protocol_supported():
    """True when imapmux's configuration knows listeners[].proxy_protocol."""
    with tempfile.TemporaryDirectory(prefix="imapmux-proxy-probe-") as d:
        conf = os.path.join(d, "probe.yaml")
        with open(conf, "w") as f:
            f.write("listeners: []\nbackends: [{name: x, host: h, port: 1}]\n")
        base = subprocess.run([harness.imapmux_bin(), "--check-config", conf],
                              capture_output=True, text=True, timeout=30)
        cert = harness.make_cert(d)
        with open(conf, "w") as f:
            f.write("listeners:\n  - {address: %s, port: %d, tls: implicit, "
                    "proxy_protocol: true, proxy_trusted: [\"127.0.0.1/32\"]}\n"
                    "tls: {cert: %s, key: %s}\nbackends: [{name: x, host: h, port: 1}]\n"
                    % (LOOPBACK, harness.free_port(), cert[0], cert[1]))
        r = subprocess.run([harness.imapmux_bin(), "--check-config", conf],
                           capture_output=True, text=True, timeout=30)
        return base.returncode == 0 and r.returncode == 0


def mark_proxy_listener(mux, port, trusted=("127.0.0.1/32",)):
    """Rewrites mux's configuration so that its listener on port wants a
    PROXY header from trusted sources (before mux.start())."""
    with open(mux.conf) as f:
        text = f.read()
    needle = "port: %d, tls: implicit}" % port
    if needle not in text:
        raise RuntimeError("no implicit listener on port %d in %s" % (port, mux.conf))
    text = text.replace(needle, "port: %d, tls: implicit, proxy_protocol: true, "
                        "proxy_trusted: [%s]}" % (port, ", ".join('"%s"' % t for t in trusted)))
    with open(mux.conf, "w") as f:
        f.write(text)


class HAProxy:
    """HAProxy in TCP mode on a free loopback port, balancing over servers
    ((name, port) pairs on loopback) with health checks every check_ms;
    send_proxy adds a PROXY v2 header to every connection and check."""

    def __init__(self, tmpdir, servers, send_proxy=False, check_ms=200, name="haproxy"):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = harness.free_port()
        self.servers = list(servers)
        self.send_proxy = send_proxy
        self.check_ms = check_ms
        self.proc = None
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        self.log = os.path.join(self.dir, "haproxy.log")

    def _write_config(self):
        proxy = " send-proxy-v2 check-send-proxy" if self.send_proxy else ""
        lines = [
            "global",
            "    maxconn 4096",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 120s",
            "    timeout server 120s",
            # a connect that fails goes to another server
            "    retries 2",
            "    option redispatch",
            "    default-server inter %dms fall 1 rise 1" % self.check_ms,
            "frontend imaps",
            "    bind %s:%d" % (LOOPBACK, self.port),
            "    default_backend muxes",
            "backend muxes",
            "    balance roundrobin",
        ]
        for name, port in self.servers:
            lines.append("    server %s %s:%d check%s" % (name, LOOPBACK, port, proxy))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        self._write_config()
        check = subprocess.run(["haproxy", "-c", "-f", self.conf], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise RuntimeError("haproxy -c: %s%s" % (check.stdout, check.stderr))
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.conf], stdout=self._logf,
                                     stderr=subprocess.STDOUT)
        harness._children.append(self.proc)
        harness.wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._logf.close()

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

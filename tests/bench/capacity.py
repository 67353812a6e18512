#!/usr/bin/env python3
"""Capacity plan for imapmux from measured figures (docs/SCALING.md).

    python3 tests/bench/capacity.py                      # the README's figures
    python3 tests/bench/capacity.py --mailboxes 2e6 --sessions 250e3
    python3 tests/bench/capacity.py --measure-redis      # measure Redis here first
    python3 tests/bench/capacity.py --json               # every figure as JSON

Inputs default to what was measured on the development machine: memory and
CPU per session from tests/bench/bench.py (README, Benchmark), kernel memory
per socket from /proc/slabinfo, Redis memory per key with MEMORY USAGE and
Redis CPU per lease renewal from --measure-redis (which starts a real
redis-server on loopback, writes the routing table's keys as imapmux and
imapmuxctl write them, and times the renewal script imapmux runs).
Everything else (the login rate of a morning peak, instance sizes,
headroom) is an assumption with its own option, printed with the result."""
import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time

KIB = 1024
GIB = 1024 ** 3

# Measured on the development machine (2 cores, Debian 12); see docs/SCALING.md.
MEASURED = {
    # tests/bench/bench.py, README "Benchmark": PSS per logged-in IDLE session,
    # both connections (client and backend), TLS on the client side
    "session_pss_kib": 8.3,
    # the same before login (a connection that has not logged in yet)
    "preauth_pss_kib": 5.8,
    # CPU per churn session, distinct users, OpenSSL 3 client: connect, full
    # TLS 1.3 handshake, LOGIN verified against a SHA512-crypt hash (5000
    # rounds), backend login, SELECT, LOGOUT
    "login_cpu_ms": 4.84,
    # kernel memory per TCP socket, idle: the TCP, sock_inode_cache, filp,
    # dentry and eventpoll (epitem, pwq) slab objects of one socket
    # (/proc/slabinfo object sizes; socket buffers of an idle socket are freed)
    "kernel_socket_kib": 3.62,
    # --measure-redis: MEMORY USAGE of each key, bytes
    "redis_user_bytes": 376,       # user:<login>: password (SHA512-crypt), backend
    "redis_domain_bytes": 120,      # domain:<domain>: backend, auth
    "redis_trusted_bytes": 104,     # bf:ok:<login> <address>, with its TTL
    "redis_sessions_bytes": 152,   # sess:<login> with one lease
    "redis_lease_bytes": 48,       # each further lease in that sorted set
    # --measure-redis: Redis CPU per lease renewed (one script, 256 leases;
    # Redis's own commandstats, on the shared 2-core machine)
    "redis_renew_us": 4.34,
    # --measure-redis: Redis CPU per login (the lookups, counters, lease and
    # its release), µs
    "redis_login_us": 96.3,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resp(sock_file, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock_file.write(out)
    sock_file.flush()
    return read_reply(sock_file)


def read_reply(f):
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if t == b"*":
        n = int(rest)
        return [read_reply(f) for _ in range(max(n, 0))]
    raise RuntimeError("bad reply %r" % line)


# The renewal script of proxy/sesslimit.c, as imapmux sends it.
RENEW_SCRIPT = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', k, lease)
end
return #KEYS
"""


# Of the same shape as proxy/directory.c's and proxy/sesslimit.c's scripts.
BF_COUNT_SCRIPT = """local p = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {p, redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3]) or '0',
        redis.call('GET', KEYS[4]) or '0', redis.call('EXISTS', KEYS[5])}
"""
BF_SETTLE_SCRIPT = """if ARGV[1] == 'ok' then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
end
return 1
"""
ACQUIRE_SCRIPT = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local max = tonumber(redis.call('HGET', KEYS[2], 'max_sessions') or '')
if max == nil and KEYS[3] ~= KEYS[2] then
  max = tonumber(redis.call('HGET', KEYS[3], 'max_sessions') or '')
end
if max == nil then max = tonumber(ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if max > 0 and n >= max then return {1, n, max} end
local maxip = tonumber(ARGV[4])
if maxip > 0 then
  local c, p = 0, ARGV[5]
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(m, 1, #p) == p then c = c + 1 end
  end
  if c >= maxip then return {2, c, maxip} end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
return {0, n + 1, max}
"""


def measure_redis(num_users=20000, batch=256):
    """Starts redis-server on loopback, writes num_users users as imapmuxctl
    does, one lease each, and measures memory per key and CPU per renewal."""
    import crypt  # noqa: the system's libcrypt, as the benchmark uses
    d = tempfile.mkdtemp(prefix="imapmux-capacity-")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", d],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        f = s.makefile("rwb")
        h = crypt.crypt("a password", crypt.mksalt(crypt.METHOD_SHA512))
        for i in range(num_users):
            login = "user%07d@example.test" % i
            resp(f, "HSET", "imapmux:user:" + login, "password", h, "backend", "mail%02d" % (i % 40))
            resp(f, "SET", "imapmux:bf:ok:%s 192.0.2.%d" % (login, i % 250), "1", "EX", "2592000")
            resp(f, "ZADD", "imapmux:sess:" + login, str(int(time.time() * 1000) + 60000),
                 "192.0.2.%d|imapmux-%d/12345/w%d-%d" % (i % 250, i % 20, i % 4, i))
            resp(f, "PEXPIRE", "imapmux:sess:" + login, "60000")
        resp(f, "HSET", "imapmux:domain:example.test", "backend", "mail00", "auth", "local")

        def avg(pattern_fmt, n=200):
            vals = [resp(f, "MEMORY", "USAGE", pattern_fmt % i, "SAMPLES", "0") for i in range(n)]
            return sum(vals) / len(vals)

        user = avg("imapmux:user:user%07d@example.test")
        trusted = sum(resp(f, "MEMORY", "USAGE",
                           "imapmux:bf:ok:user%07d@example.test 192.0.2.%d" % (i, i % 250),
                           "SAMPLES", "0") for i in range(200)) / 200
        sess1 = avg("imapmux:sess:user%07d@example.test")
        # a second and third lease in the same set
        for i in range(200):
            for j in (1, 2):
                resp(f, "ZADD", "imapmux:sess:user%07d@example.test" % i,
                     str(int(time.time() * 1000) + 60000),
                     "198.51.100.%d|imapmux-%d/12345/w%d-%d" % (j, j, j, 10 ** 7 + i))
        sess3 = avg("imapmux:sess:user%07d@example.test")
        domain = resp(f, "MEMORY", "USAGE", "imapmux:domain:example.test", "SAMPLES", "0")
        info = resp(f, "INFO", "memory")
        used = int([l for l in info.split("\r\n") if l.startswith("used_memory:")][0].split(":")[1])
        # CPU of the renewal script, as Redis itself counts it
        resp(f, "CONFIG", "RESETSTAT")
        keys = ["imapmux:sess:user%07d@example.test" % i for i in range(batch)]
        members = ["192.0.2.%d|imapmux-%d/12345/w%d-%d" % (i % 250, i % 20, i % 4, i)
                   for i in range(batch)]
        rounds = 200
        for _ in range(rounds):
            resp(f, "EVAL", RENEW_SCRIPT, str(batch), *keys, "60000", *members)
        stats = resp(f, "INFO", "commandstats")
        line = [l for l in stats.split("\r\n") if l.startswith("cmdstat_eval:")][0]
        fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
        renew_us = float(fields["usec"]) / (rounds * batch)
        # CPU of one login's Redis work: the lookup (user and domain hash,
        # counters, kick generation), the settling of the attempt, the lease and
        # its release, each as imapmux sends it (scripts of the same shape)
        resp(f, "CONFIG", "RESETSTAT")
        logins = 2000
        for i in range(logins):
            login = "user%07d@example.test" % (i + 5000)
            pair = "imapmux:bf:pair:%s 192.0.2.1" % login
            resp(f, "HGETALL", "imapmux:user:" + login)
            resp(f, "HGETALL", "imapmux:domain:example.test")
            resp(f, "EVAL", BF_COUNT_SCRIPT, "5", pair, "imapmux:bf:ip:192.0.2.1",
                 "imapmux:bf:login:" + login, "imapmux:kick:" + login,
                 "imapmux:bf:ok:%s 192.0.2.1" % login, "300")
            resp(f, "EVAL", BF_SETTLE_SCRIPT, "4", pair, "imapmux:bf:ip:192.0.2.1",
                 "imapmux:bf:login:" + login, "imapmux:bf:ok:%s 192.0.2.1" % login, "ok", "300",
                 "2592000")
            member = "192.0.2.1|imapmux-1/12345/w0-%d" % i
            resp(f, "EVAL", ACQUIRE_SCRIPT, "3", "imapmux:sess:" + login, "imapmux:user:" + login,
                 "imapmux:domain:example.test", member, "60000", "20", "10", "192.0.2.1|")
            resp(f, "ZREM", "imapmux:sess:" + login, member)
        stats = resp(f, "INFO", "commandstats")
        total = 0.0
        for l in stats.split("\r\n"):
            if l.startswith("cmdstat_"):
                fields = dict(kv.split("=") for kv in l.split(":", 1)[1].split(","))
                if not l.startswith(("cmdstat_info", "cmdstat_config")):
                    total += float(fields["usec"])
        login_us = total / logins
        s.close()
        return {
            "redis_login_us": round(login_us, 1),
            "redis_user_bytes": round(user),
            "redis_domain_bytes": domain,
            "redis_trusted_bytes": round(trusted),
            "redis_sessions_bytes": round(sess1),
            "redis_lease_bytes": round((sess3 - sess1) / 2),
            "redis_renew_us": round(renew_us, 2),
            "redis_used_per_user_bytes": round(used / num_users),
        }
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["rm", "-rf", d])


SOCKET_SLABS = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq")


def measure_kernel():
    """Kernel memory of one idle TCP socket from /proc/slabinfo object sizes
    (root only); None when it cannot be read."""
    try:
        with open("/proc/slabinfo") as f:
            sizes = {l.split()[0]: int(l.split()[3]) for l in f if not l.startswith(("#", "slab"))}
    except (OSError, ValueError, IndexError):
        return None
    return round(sum(sizes.get(n, 0) for n in SOCKET_SLABS) / KIB, 2)


def plan(a, m):
    """The plan: a dict of figures from arguments a and measured figures m."""
    r = {}
    sessions = a.sessions
    # --- logins at the morning peak -------------------------------------------------
    # the morning ramp: a share of all mailboxes' clients connect within the
    # ramp, its busiest minutes at peak_factor times the ramp's mean
    ramp_logins = a.mailboxes * a.morning_share * a.connections_per_mailbox
    ramp_rate = ramp_logins / (a.ramp_minutes * 60)
    # on top, the sessions alive reconnect (NAT timeouts, mobile networks)
    background_rate = sessions / (a.session_minutes * 60)
    peak = ramp_rate * a.peak_factor + background_rate
    r["peak_logins_per_s"] = peak
    r["peak_login_cores"] = peak * m["login_cpu_ms"] / 1000
    # --- memory ---------------------------------------------------------------------
    per_session = m["session_pss_kib"] * KIB + 2 * m["kernel_socket_kib"] * KIB
    r["memory_per_session_kib"] = per_session / KIB
    r["session_memory_gib"] = sessions * per_session / GIB
    # --- instances ------------------------------------------------------------------
    cores_needed = r["peak_login_cores"] / a.cpu_target
    by_cpu = math.ceil(cores_needed / a.instance_cores)
    by_sessions = math.ceil(sessions / a.max_sessions_per_instance)
    mem_per_instance = (a.max_sessions_per_instance * per_session + a.instance_base_mib * 2 ** 20)
    by_memory = math.ceil(sessions * per_session / (a.instance_memory_gib * GIB * a.memory_target
                                                    - a.instance_base_mib * 2 ** 20))
    needed = max(by_cpu, by_sessions, by_memory, 1)
    # losing a zone (or one instance) must leave enough: spread over zones
    instances = math.ceil(needed * a.zones / (a.zones - 1)) if a.zones > 1 else needed + 1
    r.update({"instances_by_cpu": by_cpu, "instances_by_sessions": by_sessions,
              "instances_by_memory": by_memory, "instances_needed": needed,
              "instances": instances,
              "sessions_per_instance": sessions / instances,
              "sessions_per_instance_after_zone_loss":
                  sessions / (instances - math.ceil(instances / a.zones)) if a.zones > 1
                  else sessions / (instances - 1),
              "memory_per_instance_gib_at_max": mem_per_instance / GIB,
              "descriptors_per_instance_at_max": 2 * a.max_sessions_per_instance})
    # --- Redis -------------------------------------------------------------------------
    users = a.mailboxes
    redis_bytes = (users * m["redis_user_bytes"]
                   + a.domains * m["redis_domain_bytes"]
                   + users * a.trusted_per_user * m["redis_trusted_bytes"])
    logged_in_users = min(sessions / a.sessions_per_user, users)
    redis_sessions = (logged_in_users * m["redis_sessions_bytes"]
                      + (sessions - logged_in_users) * m["redis_lease_bytes"])
    r["redis_table_gib"] = redis_bytes / GIB
    r["redis_sessions_gib"] = redis_sessions / GIB
    # fork for replication and snapshots copies pages being written: twice
    r["redis_memory_gib"] = (redis_bytes + redis_sessions) * a.redis_overhead / GIB
    renewals = sessions / (a.lease_ms / 3000.0)
    r["lease_renewals_per_s"] = renewals
    r["redis_renew_core"] = renewals * m["redis_renew_us"] / 1e6
    r["redis_login_core"] = peak * m["redis_login_us"] / 1e6
    r["redis_core_at_peak"] = r["redis_renew_core"] + r["redis_login_core"]
    # --- events ---------------------------------------------------------------------------
    workers = instances * a.instance_cores
    r["redis_connections"] = workers * 3 + instances  # lookups, events, leases; imapmuxctl
    r["event_deliveries_per_event"] = workers
    sessions_per_worker = sessions / workers
    r["event_scan_ms_per_worker"] = sessions_per_worker * a.scan_ns / 1e6
    r["domain_event_lookups"] = sessions * a.largest_domain_share
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mailboxes", type=float, default=10e6)
    p.add_argument("--sessions", type=float, default=1e6, help="concurrent IDLE sessions")
    p.add_argument("--morning-share", type=float, default=0.5,
                   help="share of mailboxes whose clients log in during the morning ramp")
    p.add_argument("--connections-per-mailbox", type=float, default=1.5,
                   help="logins per mailbox in the ramp (phone and desktop, several folders)")
    p.add_argument("--ramp-minutes", type=float, default=90)
    p.add_argument("--peak-factor", type=float, default=2.0,
                   help="busiest minutes of the ramp against its mean")
    p.add_argument("--session-minutes", type=float, default=30,
                   help="mean life of a session before its client reconnects")
    p.add_argument("--instance-cores", type=int, default=4)
    p.add_argument("--instance-memory-gib", type=float, default=8)
    p.add_argument("--instance-base-mib", type=float, default=200,
                   help="memory of an instance without sessions (pools, caches, audit queue)")
    p.add_argument("--max-sessions-per-instance", type=float, default=150e3)
    p.add_argument("--cpu-target", type=float, default=0.6, help="CPU use at the peak")
    p.add_argument("--memory-target", type=float, default=0.7)
    p.add_argument("--zones", type=int, default=3, help="failure zones; one may be lost")
    p.add_argument("--domains", type=float, default=100e3)
    p.add_argument("--trusted-per-user", type=float, default=2,
                   help="(login, address) pairs trusted at a time (bruteforce.trusted_ttl_s)")
    p.add_argument("--sessions-per-user", type=float, default=1.6,
                   help="logged-in sessions per logged-in user")
    p.add_argument("--lease-ms", type=float, default=60000, help="limits.session_lease_ms")
    p.add_argument("--redis-overhead", type=float, default=2.0,
                   help="Redis memory against its data (fork copy-on-write, fragmentation)")
    p.add_argument("--scan-ns", type=float, default=20,
                   help="a worker's cost per session to find an event's sessions")
    p.add_argument("--largest-domain-share", type=float, default=0.2,
                   help="share of the sessions in the largest domain (a domain event)")
    for k, v in MEASURED.items():
        p.add_argument("--" + k.replace("_", "-"), type=float, default=v,
                       help="measured (default %(default)s)")
    p.add_argument("--measure-redis", action="store_true",
                   help="measure the Redis figures on this machine first")
    p.add_argument("--measure-kernel", action="store_true",
                   help="read the kernel's memory per socket from /proc/slabinfo first")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    m = {k: getattr(a, k) for k in MEASURED}
    if a.measure_redis:
        got = measure_redis()
        m.update({k: v for k, v in got.items() if k in m})
        print("measured: %s" % json.dumps(got), file=sys.stderr)
    if a.measure_kernel:
        k = measure_kernel()
        if k is not None:
            m["kernel_socket_kib"] = k
            print("measured: kernel_socket_kib=%s" % k, file=sys.stderr)
    r = plan(a, m)
    if a.json:
        print(json.dumps({"inputs": vars(a), "measured": m, "plan": r}, indent=1,
                         default=str))
        return 0
    print("inputs: %d mailboxes, %d concurrent sessions" % (a.mailboxes, a.sessions))
    print("measured: " + ", ".join("%s=%s" % kv for kv in m.items()))
    for k, v in r.items():
        print("%-40s %s" % (k, ("%.2f" % v) if isinstance(v, float) else v))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Differential test of the audit log against a real Dovecot 2.3: many
command streams (bare LFs, literals after unknown commands, {n} then a bare
LF, literal8, LITERAL+ and LITERAL- literals, MULTIAPPEND, CATENATE, SEARCH
with literals, FETCH and STORE grammars, quoted strings with escapes, and
seeded random mutations of these, sent in pieces cut at random byte
boundaries) go through imapmux to Dovecot, which logs every command it
executes through its event framework (the imap_command_finished event,
exported as JSON lines into its log).  After each stream the commands
Dovecot executed and the audit's command records of the session must be the
same multiset of (tag, name, UID prefix), and where both have an answer, the
same status: nothing executed without a record, nothing recorded that the
backend did not execute.

What imapmux answers itself is in neither: a command the gate refuses gets a
BAD from imapmux and no record (README "The command gate"), and the LOGIN
before the relay is imapmux's own.  A record whose status is "none" (the
session ended before the answer) says nothing about execution: it may be
missing from Dovecot's list (a command in flight when the backend
connection was closed), and it is counted, not matched.

Environment: IMAPMUX_DIFF_SEED (default: random; printed on failure),
IMAPMUX_DIFF_STREAMS (default 500), IMAPMUX_DIFF_PARALLEL (default 4)."""
import concurrent.futures
import json
import os
import random
import re
import socket
import sys
import threading
import time
import unittest

import harness
from harness import LOOPBACK, read_line

USERS = {"alice": "alice-Diff-Pw1"}
# a user whose Dovecot session announces LITERAL- instead of LITERAL+
# (per-user setting from the passdb's userdb_ extra field)
MINUS_USER, MINUS_PW = "minus", "minus-Diff-Pw2"
LOGIN_TAG = "0L"
VENDOR = "XVENDOR"  # in relay.allowed_commands; Dovecot does not know it
# Dovecot's imap_max_line_length and imapmux's relay.max_line_len, the same
# (smaller than the defaults of 64 KiB, so that the events of commands at the
# limit stay within what Dovecot's stats process takes)
LINE_MAX = 8192

EXPORT_CONF = """
imap_max_line_length = %d
login_log_format_elements = user=<%%u> method=%%m rip=%%r rport=%%{rport} lip=%%l session=<%%{session}> %%c
event_exporter difflog {
  format = json
  format_args = time-rfc3339
  transport = log
}
metric diff_commands {
  exporter = difflog
  exporter_include = name fields
  filter = event=imap_command_finished OR event=mail_user_session_finished
}
passdb {
  driver = passwd-file
  args = %s
}
"""

QUIET_S = 0.6        # no answer for this long after a stream: the stream left the session waiting
STREAM_MAX_S = 6.0   # a stream's answers are awaited at most this long
END_WAIT_S = 20.0    # both logs show the session's end within this


def lit(data, kind="sync"):
    """A literal of data: sync {n}, plus {n+}, binary ~{n} or binary-plus ~{n+}."""
    n = len(data)
    head = {"sync": b"{%d}", "plus": b"{%d+}", "bin": b"~{%d}", "binplus": b"~{%d+}"}[kind] % n
    return head + b"\r\n" + data


MSG = (b"From: a@example.test\r\nSubject: diff\r\n\r\nbody line\r\n")


def templates():
    """Base streams, each a list of byte strings sent in order.  They are
    written for a session logged in, nothing selected."""
    t = []
    add = t.append
    # bare LFs in various places
    add([b"a1 NOOP\n"])
    add([b"a2 SELECT INBOX\r\na3 FETCH 1 FLAGS\na4 NOOP\r\n"])
    add([b"a5 STATUS INBOX\n(MESSAGES)\r\n"])
    add([b"a6 SELECT INBOX\r\na7 STORE 1 +FLAGS (\\Seen)\n\r\na8 CHECK\r\n"])
    add([b"a9 LIST \"\" *\r\n\na10 NOOP\r\n"])
    add([b"a11 APPEND INBOX {%d}\n" % len(MSG), MSG, b"\r\na12 NOOP\r\n"])
    add([b"a13 NOOP\r", b"\na14 NOOP\r\n"])
    add([b"a15 CREATE Tmp\r\r\na16 NOOP\r\n"])
    # literals after unknown commands
    add([b"B1 XFOO {19+}\r\nB2 DELETE Finance\r\n"])
    add([b"B3 XFOO {4}\r\nabcd\r\nB4 NOOP\r\n"])
    add([b"B5 XFOO {5+}\nB6 NOOP\r\n"])
    add([b"B7 " + VENDOR.encode() + b" arg \"q s\" (a b)\r\nB8 NOOP\r\n"])
    add([b"B9 " + VENDOR.encode() + b" {3}\r\nabc\r\nB10 NOOP\r\n"])
    add([b"B11 " + VENDOR.encode() + b" {3+}\r\nabc\r\nB12 NOOP\r\n"])
    # {n} followed by a bare LF
    add([b"C1 SELECT {5}\nINBOX\r\nC2 NOOP\r\n"])
    add([b"C3 SEARCH SUBJECT {4}\ndiff\r\nC4 NOOP\r\n"])
    add([b"C5 CREATE {3+}\nabc\r\nC6 NOOP\r\n"])
    # literal8 (BINARY)
    add([b"D1 APPEND INBOX " + lit(MSG, "bin") + b"\r\n"])
    add([b"D2 APPEND INBOX (\\Seen) " + lit(MSG, "binplus") + b"\r\nD3 NOOP\r\n"])
    add([b"D4 SELECT INBOX\r\nD5 FETCH 1 BINARY.PEEK[1]\r\nD6 SEARCH SUBJECT ~{4}\r\ndiff\r\n"])
    add([b"D7 APPEND INBOX ~{5}\r\n", b"a\x00b\r\n", b"\r\n"])
    # LITERAL+ literals (LITERAL- for the other user: large ones are fatal there)
    add([b"E1 APPEND INBOX (\\Seen) " + lit(MSG, "plus") + b"\r\nE2 NOOP\r\n"])
    add([b"E3 CREATE " + lit(b"Plus Box", "plus") + b"\r\nE4 DELETE " + lit(b"Plus Box", "plus")
         + b"\r\n"])
    add([b"E5 APPEND INBOX " + lit(b"x" * 5000 + b"\r\n", "plus") + b"\r\nE6 NOOP\r\n"])
    add([b"E7 LOGIN a " + lit(b"b", "plus") + b"\r\nE8 NOOP\r\n"])
    # MULTIAPPEND
    add([b"F1 APPEND INBOX " + lit(MSG) + b" (\\Seen) " + lit(MSG) + b"\r\n"])
    add([b"F2 APPEND Archive (\\Flagged) \"01-Jan-2026 10:00:00 +0000\" " + lit(MSG, "plus") +
         b" " + lit(MSG, "plus") + b" " + lit(MSG, "plus") + b"\r\nF3 NOOP\r\n"])
    add([b"F4 APPEND INBOX " + lit(MSG) + b" " + lit(b"", "sync") + b"\r\n"])
    # CATENATE
    add([b"G1 APPEND INBOX CATENATE (TEXT " + lit(MSG) + b" URL \"/INBOX;UID=1/;section=1\")\r\n"])
    add([b"G2 APPEND INBOX CATENATE (URL \"/INBOX;UID=1\" TEXT " + lit(b"tail\r\n", "plus") +
         b")\r\nG3 NOOP\r\n"])
    add([b"G4 APPEND INBOX CATENATE (TEXT " + lit(MSG, "bin") + b")\r\n"])
    # SEARCH with literals
    add([b"H1 SELECT INBOX\r\nH2 SEARCH CHARSET UTF-8 SUBJECT " + lit(b"diff") + b" FROM \"a\"\r\n"])
    add([b"H3 SELECT INBOX\r\nH4 UID SEARCH OR HEADER " + lit(b"Subject") + b" " + lit(b"hi") +
         b" UNSEEN\r\n"])
    add([b"H5 EXAMINE INBOX\r\nH6 SEARCH RETURN (MIN MAX) TEXT " + lit(b"body", "plus") +
         b" NOT BODY \"x\"\r\n"])
    add([b"H7 SELECT INBOX\r\nH8 SEARCH XNOSUCHKEY " + lit(b"v") + b"\r\nH9 NOOP\r\n"])
    add([b"H10 SELECT INBOX\r\nH11 UID SORT (DATE) UTF-8 SUBJECT " + lit(b"diff") + b"\r\n"])
    add([b"H12 SELECT INBOX\r\nH13 THREAD REFERENCES UTF-8 ALL\r\n"])
    # FETCH and STORE grammars
    add([b"I1 SELECT INBOX\r\nI2 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] "
         b"BODY.PEEK[]<0.10>)\r\n"])
    add([b"I3 SELECT INBOX\r\nI4 STORE 1 +FLAGS.SILENT (\\Flagged)\r\nI5 UID STORE 1:* -FLAGS "
         b"(\\Seen)\r\n"])
    add([b"I6 SELECT INBOX\r\nI7 FETCH 1 BODY.PEEK[HEADER.FIELDS (" + lit(b"FROM") + b")]\r\n"])
    add([b"I8 SELECT INBOX\r\nI9 FETCH 1 (UID RFC822.SIZE ENVELOPE) (CHANGEDSINCE 1)\r\n"])
    add([b"I10 SELECT INBOX\r\nI11 STORE 1 FLAGS {6}\r\n\\Seen\r\n"])
    add([b"I12 SELECT INBOX\r\nI13 UID FETCH 1:* FAST\r\nI14 FETCH * BODY[1.MIME]\r\n"])
    add([b"I15 SELECT INBOX\r\nI16 STORE 1 (UNCHANGEDSINCE 5) +FLAGS ($Junk)\r\n"])
    # quoted strings with escapes
    add([b"J1 SELECT \"IN\\\"BOX\"\r\nJ2 STATUS \"a\\\\b\" (MESSAGES)\r\n"])
    add([b"J3 CREATE \"x\\y\"\r\nJ4 NOOP\r\n"])
    add([b"J5 LIST \"\" \"%\\\\\"\r\nJ6 LSUB \"\" \"*\"\r\n"])
    add([b"J7 SELECT \"INBOX\r\nJ8 NOOP\r\n"])
    add([b"J9 STATUS \"\xc3\xa9t\xc3\xa9\" (UIDNEXT)\r\n"])
    # IDLE, tags, names, LOGOUT and assorted commands
    add([b"K1 IDLE\r\n", b"DONE\r\nK2 NOOP\r\n"])
    add([b"K3 IDLE\r\nNOOP\r\nDONE\r\n"])
    add([b"K4 NOOP\r\nK4 NOOP\r\nK5 NOOP\r\n"])
    add([b"K6 CAPABILITY\r\nK7 NAMESPACE\r\nK8 ENABLE CONDSTORE\r\nK9 ID NIL\r\n"])
    add([b"K10 SELECT INBOX\r\nK11 COPY 1 Archive\r\nK12 UID MOVE 1 Archive\r\nK13 EXPUNGE\r\n"
         b"K14 CLOSE\r\n"])
    add([b"K15 UID XFOO\r\nK16 UID NOOP\r\nK17 NOOP extra\r\n"])
    add([b"K18 RENAME Tmp Tmp2\r\nK19 SUBSCRIBE Archive\r\nK20 UNSUBSCRIBE Archive\r\n"])
    add([b"K21 NOOP\r\nK22 LOGOUT\r\nK23 NOOP\r\n"])
    add([b"K24 STARTTLS\r\nK25 AUTHENTICATE PLAIN\r\nK26 UNAUTHENTICATE\r\n"])
    add([b"K27 SELECT INBOX\r\nK28 UNSELECT\r\nK29 GETQUOTAROOT INBOX\r\nK30 MYRIGHTS INBOX\r\n"])
    add([b"\r\n*  NOOP\r\nK31  NOOP\r\nK32 NOOP \r\n+ NOOP\r\nK33 NOOP\r\n"])
    add([b"K34 APPEND NoSuchBox " + lit(MSG) + b"\r\nK35 NOOP\r\n"])
    add([b"K36 APPEND INBOX {99999999999}\r\nK37 NOOP\r\n"])
    add([b"K38 DELETE " + lit(b"Tmp2") + b"\r\nK39 LIST (SUBSCRIBED) \"\" (\"*\" \"%\") RETURN "
         b"(CHILDREN)\r\n"])
    add([b"K40 SELECT INBOX (CONDSTORE)\r\nK41 FETCH 1 (FLAGS) (CHANGEDSINCE 0)\r\n"])
    add([b"K42 COMPRESS DEFLATE\r\n"])
    # tags: "]" is an ASTRING-CHAR, which Dovecot 2.3 refuses in a tag
    add([b"K4]3 NOOP\r\nK44 NOOP\r\n"])
    add([b"K]45 IDLE\r\nDONE\r\nK46 NOOP\r\n"])
    add([b"K47 IDLE\r\ndone\r\nK48 IDLE\r\nDONE\n", b"DONE \r\nDONE\r\n"])
    add([b"K4[9 SELECT INBOX (CONDSTORE)\r\nK[50 FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"])
    # APPEND's flags and date: Dovecot reads them before the message
    add([b"K51 APPEND INBOX \"01-Jan-2026  10:00:00 +0000\" " + lit(MSG, "plus") + b"\r\n"])
    add([b"K52 APPEND INBOX (\\Recent) " + lit(MSG, "plus") + b"\r\nK53 APPEND INBOX (\\Seen \\*) " +
         lit(MSG, "plus") + b"\r\n"])
    add([b"K54 APPEND INBOX \" 1-Jan-2026 10:00:00 -0130\" " + lit(MSG, "plus") + b"\r\n"])
    # a command over Dovecot's line limit (imap_max_line_length) in parts
    # that are each under it: Dovecot answers BAD at the limit and skips to
    # the next LF, which ends the last "{n+}" announcement
    hidden = b"\r\nL9 DELETE Finance\r\n"
    tail = b" TEXT {%d+}\r\n" % len(hidden) + hidden + b"\r\n"
    half = LINE_MAX * 5 // 8
    add([b"L1 SEARCH TEXT \"" + b"x" * half + b"\" TEXT " + lit(b"hello", "plus") + b" TEXT \"" +
         b"q" * half + b"\"" + tail])
    add([b"L2 SELECT INBOX\r\nL3 SEARCH TEXT " + lit(b"y" * (LINE_MAX - 1000), "plus") +
         b" TEXT \"" + b"q" * 1500 + b"\"" + tail])
    for total in range(LINE_MAX - 70, LINE_MAX + 4, 6):
        # total: the bytes of the command before the last literal's data
        head = b"L4 SELECT INBOX\r\nL5 SEARCH TEXT " + lit(b"y" * (LINE_MAX // 2), "plus") + b" TEXT \""
        pad = total - (len(head) - 17) - (len(tail) - len(hidden) - 2) - 1
        add([head + b"q" * pad + b"\"" + tail])
    return t


TOKENS = [b"\n", b"\r", b"\x00", b" ", b"  ", b"{5}\r\n", b"{3+}\r\n", b"~{4}\r\n", b"{0}\r\n",
          b"\"", b"\\", b"(", b")", b"\r\n", b"*", b"%", b"\x80", b"\t", b"[", b"]", b"<0.5>",
          b"UID ", b"NIL", b"\r\nX1 NOOP\r\n", b"DONE\r\n", b"+", b"~", b"{"]
LITERAL_RE = re.compile(rb"(~?)\{(\d+)(\+?)\}")


def mutate(rng, data, pool):
    """One random change of the stream's bytes."""
    op = rng.randrange(11)
    if op == 0 and b"\r\n" in data:  # CRLF to LF
        spots = [m.start() for m in re.finditer(rb"\r\n", data)]
        i = rng.choice(spots)
        return data[:i] + data[i + 1:]
    if op == 1 and b"\r\n" in data:  # CRLF to CR
        spots = [m.start() for m in re.finditer(rb"\r\n", data)]
        i = rng.choice(spots)
        return data[:i + 1] + data[i + 2:]
    if op == 2:  # insert a token
        i = rng.randrange(len(data) + 1)
        return data[:i] + rng.choice(TOKENS) + data[i:]
    if op == 3 and data:  # delete a few bytes
        i = rng.randrange(len(data))
        return data[:i] + data[i + rng.randint(1, 8):]
    if op == 4:  # change a literal's size or kind
        ms = list(LITERAL_RE.finditer(data))
        if ms:
            m = rng.choice(ms)
            n = int(m.group(2))
            n = max(0, n + rng.randint(-3, 3)) if rng.random() < 0.7 else rng.randrange(40)
            tilde = m.group(1) if rng.random() < 0.8 else (b"" if m.group(1) else b"~")
            plus = m.group(3) if rng.random() < 0.7 else (b"" if m.group(3) else b"+")
            return data[:m.start()] + tilde + b"{%d%s}" % (n, plus) + data[m.end():]
    if op == 5:  # duplicate a line
        lines = data.split(b"\n")
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return b"\n".join(lines)
    if op == 6:  # swap two lines
        lines = data.split(b"\n")
        if len(lines) > 2:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            return b"\n".join(lines)
    if op == 7:  # flip the case of a few letters
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b)) if b else 0
            if b and chr(b[i]).isascii() and chr(b[i]).isalpha():
                b[i] ^= 0x20
        return bytes(b)
    if op == 8 and len(data) > 4:  # cut the end off
        return data[:rng.randrange(len(data) // 2, len(data))]
    if op == 9:  # another stream after this one
        return data + b"".join(rng.choice(pool))
    if op == 10:  # a random byte changed
        if data:
            i = rng.randrange(len(data))
            return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice(TOKENS) + data[i:]


def split(rng, data):
    """data cut at random byte boundaries (1 to 6 pieces)."""
    if len(data) < 2:
        return [data]
    cuts = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randint(0, 5))))
    out, prev = [], 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out


class Index:
    """The JSON lines of a growing file, read incrementally (one lock for
    every thread), grouped by session and port."""

    def __init__(self, path, kind):
        self.path = path
        self.kind = kind  # "audit" or "dovecot"
        self.off = 0
        self.rest = b""
        self.lock = threading.Lock()
        self.by_port = {}   # port -> [session id, ...] in order of appearance
        self.commands = {}  # session id -> [dict, ...] in order
        self.ended = set()  # session ids whose end was seen
        self.crashed = set()  # Dovecot sessions whose imap process panicked
        self.logged_in = set()
        self.bad_lines = []

    def _add(self, line):
        if self.kind == "audit":
            r = json.loads(line)
            sid = r.get("session")
            if sid is None:
                return
            if sid not in self.commands:
                self.commands[sid] = []
                self.by_port.setdefault(r.get("client_port"), []).append(sid)
            if r["type"] == "command":
                self.commands[sid].append(r)
            elif r["type"] == "login" and r.get("result") == "ok":
                self.logged_in.add(sid)
            elif r["type"] == "session_end":
                self.ended.add(sid)
            return
        m = DOVECOT_LOGIN_RE.search(line)
        if m:
            sid = m.group(2).decode()
            self.commands.setdefault(sid, [])
            self.by_port.setdefault(int(m.group(1)), []).append(sid)
            return
        m = DOVECOT_PANIC_RE.search(line)
        if m:
            # a Dovecot bug (seen: APPEND CATENATE with a literal8 cut by the
            # disconnect): that process sends no more events
            self.crashed.add(m.group(1).decode())
            self.ended.add(m.group(1).decode())
            return
        i = line.find(b"stats: Info: {")
        if i < 0:
            return
        try:
            e = json.loads(line[i + len(b"stats: Info: "):])
        except ValueError:
            self.bad_lines.append(line[:300])
            return
        f = e.get("fields", {})
        sid = f.get("session")
        if sid is None:
            return
        self.commands.setdefault(sid, [])
        if e.get("event") == "imap_command_finished":
            self.commands[sid].append(f)
        elif e.get("event") == "mail_user_session_finished":
            self.ended.add(sid)

    def poll(self):
        with self.lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.off)
                    data = f.read()
            except FileNotFoundError:
                return
            self.off += len(data)
            data = self.rest + data
            lines = data.split(b"\n")
            self.rest = lines.pop()
            for line in lines:
                if line.strip():
                    self._add(line)

    def session_for(self, port):
        """The newest session of port (ours: the test never reuses a port)."""
        with self.lock:
            sids = self.by_port.get(port, [])
            if self.kind == "audit":
                sids = [s for s in sids if s in self.logged_in]
            return sids[-1] if sids else None

    def wait_end(self, port, deadline):
        while True:
            self.poll()
            sid = self.session_for(port)
            with self.lock:
                if sid is not None and sid in self.ended:
                    return sid, list(self.commands[sid])
            if time.monotonic() > deadline:
                with self.lock:
                    return sid, None
            time.sleep(0.05)


DOVECOT_LOGIN_RE = re.compile(rb"imap-login: Info: Login: .* rport=(\d+),.* session=<([^>]+)>")
DOVECOT_PANIC_RE = re.compile(rb"imap\([^)]*\)<\d+><([^>]+)>: Panic: ")


def dovecot_key(f):
    """(tag, NAME, uid) of a Dovecot command event."""
    name = (f.get("cmd_input_name") or f.get("cmd_name") or "").upper()
    uid = False
    if name.startswith("UID "):
        uid, name = True, name[4:]
    elif name == "UID":
        uid, name = True, ""
    return (f.get("cmd_tag"), name, uid)


def audit_key(r):
    return (r.get("tag"), r.get("command", ""), bool(r.get("uid")))


def answered_by_imapmux(r):
    """A record of a command the backend never saw by design: COMPRESS is
    terminated by imapmux (README "COMPRESS=DEFLATE")."""
    return r.get("command") == "COMPRESS"


def compare(dov_cmds, audit_cmds):
    """Returns (problems, uncertain): the mismatches as text, and the
    records without an answer that Dovecot did not list."""
    problems = []
    dov = [(dovecot_key(f), f.get("tagged_reply_state")) for f in dov_cmds]
    aud = [(audit_key(r), r.get("status")) for r in audit_cmds
           if not answered_by_imapmux(r) and not (r.get("tag") == LOGIN_TAG and
                                                  r.get("command") == "LOGIN")]
    left = list(aud)
    for key, state in dov:
        match = next((i for i, (k, _) in enumerate(left) if k == key), None)
        if match is None:
            problems.append("executed by Dovecot, no audit record: %r (%s)" % (key, state))
            continue
        _, status = left.pop(match)
        if state and status not in (None, "none") and state != status:
            problems.append("status differs for %r: Dovecot %s, audit %s" % (key, state, status))
    uncertain = []
    for key, status in left:
        if status in (None, "none"):
            uncertain.append(key)
        else:
            problems.append("recorded (%s), not executed by Dovecot: %r" % (status, key))
    return problems, uncertain


class DifferentialTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        try:
            minus_passwd = os.path.join(cls.tmp.path, "passwd-minus")
            with open(minus_passwd, "w") as f:
                f.write("%s:{PLAIN}%s::::::userdb_imap_literal_minus=yes\n" % (MINUS_USER, MINUS_PW))
            os.chmod(minus_passwd, 0o644)
            cls.dovecot = harness.Dovecot(cls.tmp.path, users=USERS,
                                          extra_conf=EXPORT_CONF % (LINE_MAX, minus_passwd)).start()
            cls.passwords = dict(USERS)
            cls.passwords[MINUS_USER] = MINUS_PW
            for user, pw in cls.passwords.items():
                cls.prepare_mailbox(user, pw)
            cls.audit = os.path.join(cls.tmp.path, "audit.log")
            backends = [{"name": "local", "host": LOOPBACK, "port": cls.dovecot.port,
                         "tls": "none", "forward_id": True}]
            cls.mux = harness.Imapmux(cls.tmp.path, backends, workers=1, log_level="info",
                                      audit={"file": cls.audit},
                                      session_cache={"enabled": False})
            with open(cls.mux.conf, "a") as f:
                f.write("relay:\n  allowed_commands: [%s]\n  max_line_len: %d\n" % (VENDOR, LINE_MAX))
            cls.mux.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def prepare_mailbox(cls, user, pw):
        m = cls.dovecot.client()
        m.login(user, pw)
        for box in ("Archive", "Finance", "Tmp"):
            m.create(box)
        for i in range(3):
            m.append("INBOX", None, None, harness.sample_message("diff %d" % i))
        m.logout()

    @classmethod
    def tearDownClass(cls):
        mux = getattr(cls, "mux", None)
        if mux is not None and mux.proc is not None:
            rc = mux.stop()
            log = mux.log_text()
            for bad in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
                if bad in log:
                    raise AssertionError("sanitizer report in the imapmux log:\n" + log[-8000:])
            if rc != 0:
                raise AssertionError("imapmux exited with %s" % rc)
        if getattr(cls, "dovecot", None) is not None:
            cls.dovecot.stop()
        cls.tmp.close()

    def setUp(self):
        self.used_ports = set()
        self.ports_lock = threading.Lock()
        self.audit_index = Index(self.audit, "audit")
        self.dov_index = Index(os.path.join(self.dovecot.dir, "dovecot.log"), "dovecot")

    def connect(self):
        """A TLS client on a local port never used before in this run (the
        port ties the audit session to Dovecot's, through forward_id)."""
        for _ in range(50):
            s, greeting = self.mux.raw_tls(timeout=10)
            port = s.getsockname()[1]
            with self.ports_lock:
                if port not in self.used_ports:
                    self.used_ports.add(port)
                    return s, port
            s.close()
        raise AssertionError("no fresh local port in 50 connections")

    def run_stream(self, num, user, pieces, rng):
        """Sends one stream in a fresh session; returns (problems, uncertain,
        summary)."""
        s, port = self.connect()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"%s LOGIN %s %s\r\n" % (LOGIN_TAG.encode(), user.encode(),
                                           self.passwords[user].encode()))
        lines = harness.read_until_tag(s, LOGIN_TAG, timeout=20)
        if not lines or not lines[-1].startswith(b"0L OK"):
            return ["login failed: %r" % lines[-1:]], [], ""
        sentinel = b"Zs%d" % num
        try:
            for p in pieces + [sentinel + b" NOOP\r\n"]:
                s.sendall(p)
                if rng.random() < 0.5:
                    time.sleep(rng.random() * 0.002)
        except OSError:
            pass  # imapmux ended the session (a refusal after part of a command was relayed)
        out = self.read_answers(s, sentinel)
        if out.endswith(b"\n") and (sentinel + b" ") in out:
            try:
                s.sendall(b"Zl%d LOGOUT\r\n" % num)
                out += harness.read_all(s, timeout=3)
            except OSError:
                pass
        s.close()
        deadline = time.monotonic() + END_WAIT_S
        asid, acmds = self.audit_index.wait_end(port, deadline)
        dsid, dcmds = self.dov_index.wait_end(port, deadline)
        if acmds is None or dcmds is None:
            return ["session end not seen within %.0fs (audit %s: %s, Dovecot %s: %s)" % (
                END_WAIT_S, asid, acmds is not None, dsid, dcmds is not None)], [], out
        if dsid in self.dov_index.crashed:
            return [], [], None  # not comparable: the backend crashed
        problems, uncertain = compare(dcmds, acmds)
        return problems, uncertain, out

    def read_answers(self, s, sentinel):
        """The answers until the sentinel's, the end of the connection, or
        QUIET_S without a byte (the stream left the session waiting)."""
        out = b""
        end = time.monotonic() + STREAM_MAX_S
        while time.monotonic() < end:
            s.settimeout(QUIET_S)
            try:
                data = s.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except OSError:
                break
            if not data:
                break
            out += data
            if re.search(rb"(^|\n)" + re.escape(sentinel) + rb" [^\n]*\n", out):
                break
        return out

    def test_streams_agree_with_dovecot(self):
        seed = int(os.environ.get("IMAPMUX_DIFF_SEED", random.randrange(1 << 32)))
        count = int(os.environ.get("IMAPMUX_DIFF_STREAMS", "500"))
        parallel = int(os.environ.get("IMAPMUX_DIFF_PARALLEL", "4"))
        rng = random.Random(seed)
        pool = templates()
        jobs = []
        for num in range(count):
            base = pool[num % len(pool)] if num < 2 * len(pool) else rng.choice(pool)
            data = b"".join(base)
            if num >= len(pool):  # each template once as written, then mutants
                for _ in range(rng.randint(1, 3)):
                    data = mutate(rng, data, pool)
            user = MINUS_USER if num % 3 == 2 else "alice"
            jobs.append((num, user, data, random.Random(rng.randrange(1 << 32))))
        started = time.monotonic()
        failures = []
        uncertain_total = 0
        crashed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as ex:
            futs = {ex.submit(self.run_stream, num, user, split(r, data), r): (num, user, data)
                    for num, user, data, r in jobs}
            for fut in concurrent.futures.as_completed(futs):
                num, user, data = futs[fut]
                try:
                    problems, uncertain, out = fut.result()
                except Exception as e:  # a broken stream is a failure with its seed
                    problems, uncertain, out = ["%s: %s" % (type(e).__name__, e)], [], b""
                uncertain_total += len(uncertain)
                if out is None:
                    crashed += 1
                    sys.stderr.write("stream %d: Dovecot's imap process panicked, not compared: %r\n"
                                     % (num, data[:200]))
                if uncertain and os.environ.get("IMAPMUX_DIFF_VERBOSE"):
                    sys.stderr.write("stream %d: no answer, not in Dovecot's list: %r\n  %r\n"
                                     % (num, uncertain, data[:300]))
                if problems:
                    failures.append((num, user, data, problems, out))
        elapsed = time.monotonic() - started
        sys.stderr.write("differential: %d streams in %.1fs, seed %d, %d records without an answer "
                         "not listed by Dovecot, %d streams not compared (Dovecot panicked)\n"
                         % (count, elapsed, seed, uncertain_total, crashed))
        self.assertLess(crashed, max(3, count // 20), "too many streams not compared")
        self.assertFalse(self.dov_index.bad_lines, "Dovecot event lines that are not JSON: %r"
                         % self.dov_index.bad_lines[:3])
        if failures:
            failures.sort()
            msg = ["%d of %d streams disagree (IMAPMUX_DIFF_SEED=%d):" % (len(failures), count, seed)]
            for num, user, data, problems, out in failures[:8]:
                msg.append("stream %d (%s): %r" % (num, user, data[:400]))
                msg.extend("  " + p for p in problems)
                msg.append("  answers: %r" % out[-600:])
            self.fail("\n".join(msg))


if __name__ == "__main__":
    unittest.main()

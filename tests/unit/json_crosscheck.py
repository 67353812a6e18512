"""Cross-check of json_check against Python's json module: each input line
is "<verdict> <hex>", the verdict json_check gave (1 valid, 0 not) for the
text; Python must agree under the same rules: UTF-8 text, one object, no
NaN/Infinity, no lone surrogate, no member name twice in an object, at most
16 containers deep.  Exits 1 on the first disagreement."""
import json
import sys

MAX_DEPTH = 16


class Bad(Exception):
    pass


def no_dups(pairs):
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise Bad("duplicate name")
    return dict(pairs)


def no_constant(name):
    raise Bad("constant " + name)


def walk(v, depth):
    if isinstance(v, (dict, list)):
        if depth >= MAX_DEPTH:
            raise Bad("too deep")
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            if isinstance(k, str):
                k.encode("utf-8")  # a lone surrogate fails here
            walk(x, depth + 1)
    elif isinstance(v, str):
        v.encode("utf-8")


def python_verdict(raw):
    try:
        text = raw.decode("utf-8")
        v = json.loads(text, object_pairs_hook=no_dups, parse_constant=no_constant)
        if not isinstance(v, dict):
            return 0
        walk(v, 0)
        return 1
    except (ValueError, UnicodeError, Bad, RecursionError):
        return 0


def main():
    n = 0
    with open(sys.argv[1]) as f:
        for line in f:
            want, hexed = line.split()
            raw = b"" if hexed == "-" else bytes.fromhex(hexed)
            got = python_verdict(raw)
            n += 1
            if got != int(want):
                print("json_check says %s, Python says %d: %r" % (want, got, raw))
                return 1
    if n == 0:
        print("no cases")
        return 1
    print("%d cases agree" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""bench/rename-observer.py: watch a directory being renamed.

    rename-observer.py OLD NEW COUNT STOP-FILE

Until STOP-FILE exists, lists NEW and then OLD, over and over, and reads
one file of whichever it finds.  Under an atomic rename, once NEW exists
OLD never exists again, and each holds all COUNT entries whenever it
exists.  So a sample is a half-done rename when it saw NEW and, after
that, OLD (both at once, in the store's eyes), or either with a number of
entries other than COUNT (some already moved, or not yet), or a listed
file that cannot be read.  (NEW missing and then OLD missing is no
evidence: the rename may have happened between the two listings; and the
order matters: OLD then NEW, both full, is what an atomic rename between
the two listings looks like.)  Prints one line:

  samples=N half=M before=B after=A first_half=WHAT

(samples: listings made; before/after: those that saw the whole directory
under its old/new name; first_half: what the first half-done sample saw,
e.g. old:1234+new:766, or "-").
"""
import os
import sys


def entries(d):
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return None


def main():
    old, new, count, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
        sys.argv[4]
    samples = half = before = after = 0
    first = "-"
    while not os.path.exists(stop):
        b = entries(new)
        a = entries(old)
        samples += 1
        what = None
        if a is not None and b is None and len(a) == count:
            before += 1
            d, names = old, a
        elif b is not None and a is None and len(b) == count:
            after += 1
            d, names = new, b
        elif a is None and b is None:
            d, names = None, None       # renamed between the listings
        else:
            what = "old:%s+new:%s" % ("-" if a is None else len(a),
                                      "-" if b is None else len(b))
            d, names = None, None
        if d is not None and names:
            name = sorted(names)[samples % len(names)]
            try:
                with open(os.path.join(d, name), "rb") as f:
                    f.read()
            except OSError as e:
                # (it may have moved between the listing and the open:
                # only a failure under a name that still stands counts)
                if entries(d) is not None and name in entries(d):
                    what = "unreadable:%s:%s" % (name, e.errno)
        if what is not None:
            half += 1
            if first == "-":
                first = what
    print("samples=%d half=%d before=%d after=%d first_half=%s"
          % (samples, half, before, after, first))
    return 0


if __name__ == "__main__":
    sys.exit(main())

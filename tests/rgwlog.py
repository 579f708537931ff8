"""tests/rgwlog.py: read a RADOS Gateway ops log, for tests/ceph.sh and
bench/opslog.py.

radosgw writes one JSON object per request; its concurrent writers
sometimes put two objects on one line, so the objects are decoded one
after the other, not line by line.
"""
import json


def entries(path):
    """Yield each request's object; nothing if the log does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            data = f.read()
    except FileNotFoundError:
        return
    dec = json.JSONDecoder()
    i = 0
    while i < len(data):
        if data[i] != "{":
            i += 1
            continue
        try:
            obj, i = dec.raw_decode(data, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict):
            yield obj

#!/usr/bin/python3
"""bench/opslog.py: count the S3 requests in a RADOS Gateway ops log.

    opslog.py OPS-LOG [BUCKET [T [SIZES]]]

Prints one line of key=value pairs (requests to BUCKET only, if given):
  put put_data put_meta put_bytes  PUTs (data: chunk or block objects;
                                   meta: lock, superblock, s3backer-mounted)
  get get_404 get_bytes head       GETs, those answered 404 (objects that
                                   do not exist), HEADs
  get_404_data                     GETs of data objects answered 404 (chunks
                                   or blocks never written)
  delete list other errors         DELETEs (single or multi), LISTs, the
                                   rest, answers >= 400 other than a GET 404
  first_start last_end             epoch seconds: the first request's start,
                                   the last one's end
  last_put_end                     epoch seconds: end of the last data PUT
  put_p99_end                      epoch seconds: when 99% of the bytes of
                                   the data PUTs had been stored
  put_before put_after             with T (epoch seconds): data PUTs that
  put_after_bytes                  ended by T, and after T (the gateway
                                   logs when it started a request and how
                                   long it took; it answers after that)
  copy copy_bytes                  CopyObject and UploadPartCopy requests
                                   and the bytes the store copied for them
                                   (server side: no bytes on the wire)
  multipart                        initiate/complete/abort of multipart
                                   uploads (also counted in "other")
  n                                all requests

T may be "-" (none).  The ops log does not name a copy's source and logs
a CopyObject with object_size 0, so its bytes are the destination's size:
the last size the log shows for that key (a later HEAD or GET), else its
size in SIZES ("KEY SIZE" lines, e.g. from a bucket listing made after
the phase).  An UploadPartCopy is a PUT with partNumber, no body and
object_size the bytes copied.

radosgw writes one JSON object per request ("time" is when it started,
"total_time" its duration in ms), read by tests/rgwlog.py.
"""
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests"))
from rgwlog import entries  # noqa: E402

# Objects that are not data: the lock, the superblock, the online-grow
# request and answer (the plugin GETs grow-request at each lock renewal,
# a 404 while nobody grows), and s3backer's mount token.
META = ("lock", "superblock", "grow-request", "grow-answer", "s3backer-mounted")


def parse_time(s):
    # 2026-11-21T17:09:57.723825Z
    s = s.rstrip("Z")
    if "+" in s[10:]:
        s = s[: 10 + s[10:].index("+")]
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def main():
    bucket = sys.argv[2] if len(sys.argv) >= 3 else None
    if len(sys.argv) not in (2, 3, 4, 5):
        sys.exit("usage: opslog.py OPS-LOG [BUCKET [T [SIZES]]]")
    after = float(sys.argv[3]) if len(sys.argv) >= 4 and sys.argv[3] != "-" \
        else None
    sizes = {}
    if len(sys.argv) == 5:
        with open(sys.argv[4]) as f:
            for line in f:
                k, _, v = line.rstrip("\n").rpartition(" ")
                if k and v.isdigit():
                    sizes[k] = int(v)
    seen = {}       # key -> last size the log shows
    copies = []     # keys of CopyObject requests
    c = dict.fromkeys(("n", "put", "put_data", "put_meta", "put_bytes", "get",
                       "get_404", "get_404_data", "get_bytes", "head", "delete", "list",
                       "other", "errors", "put_before", "put_after", "put_after_bytes",
                       "copy", "copy_bytes", "multipart"), 0)
    data_puts = []  # (end, bytes)
    first = last = last_put = 0.0
    for e in entries(sys.argv[1]):
        if bucket is not None and e.get("bucket") != bucket:
            continue
        op = e.get("operation", "")
        uri = e.get("uri", "")
        method = uri.split(" ", 1)[0]
        status = int(e.get("http_status") or 0)
        try:
            start = parse_time(e["time"])
        except (KeyError, ValueError):
            start = 0.0
        end = start + float(e.get("total_time") or 0) / 1000.0
        c["n"] += 1
        if start and (not first or start < first):
            first = start
        last = max(last, end)
        path = uri.split(" ")[1] if " " in uri else ""
        key = path.split("?", 1)[0].rsplit("/", 1)[-1]
        objkey = path.split("?", 1)[0].lstrip("/").partition("/")[2]
        osize = int(e.get("object_size") or 0)
        part_copy = op == "put_obj" and method == "PUT" and \
            "partNumber=" in path and not int(e.get("bytes_received") or 0) \
            and osize > 0
        if op in ("get_obj", "put_obj") and osize > 0 and not part_copy \
                and status < 400:
            seen[objkey] = osize
        if part_copy:
            c["copy"] += 1
            c["copy_bytes"] += osize
        if op == "copy_obj":
            c["copy"] += 1
            copies.append(objkey)
        elif op in ("init_multipart", "complete_multipart",
                    "abort_multipart"):
            c["multipart"] += 1
        if part_copy or op == "copy_obj":
            pass
        elif op == "put_obj" and method == "PUT":
            c["put"] += 1
            c["put_bytes"] += int(e.get("bytes_received") or 0)
            if key in META:
                c["put_meta"] += 1
            else:
                c["put_data"] += 1
                if status < 400:
                    size = int(e.get("bytes_received") or 0)
                    last_put = max(last_put, end)
                    data_puts.append((end, size))
                    if after is not None and end > after:
                        c["put_after"] += 1
                        c["put_after_bytes"] += size
                    elif after is not None:
                        c["put_before"] += 1
        elif method == "HEAD":
            c["head"] += 1
        elif op == "get_obj":
            c["get"] += 1
            c["get_bytes"] += int(e.get("bytes_sent") or 0)
            if status == 404:
                c["get_404"] += 1
                if key not in META:
                    c["get_404_data"] += 1
        elif op in ("delete_obj", "multi_object_delete"):
            c["delete"] += 1
        elif op in ("list_bucket", "list_buckets"):
            c["list"] += 1
        else:
            c["other"] += 1
        if status >= 400 and not (status == 404 and op == "get_obj"):
            c["errors"] += 1
    for k in copies:
        c["copy_bytes"] += seen.get(k, sizes.get(k, 0))
    p99 = 0.0
    total = sum(b for _, b in data_puts)
    acc = 0
    for end, size in sorted(data_puts):
        acc += size
        if acc >= 0.99 * total:
            p99 = end
            break
    out = [f"{k}={v}" for k, v in c.items()]
    out += [f"first_start={first:.3f}", f"last_end={last:.3f}",
            f"last_put_end={last_put:.3f}", f"put_p99_end={p99:.3f}"]
    print(" ".join(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reproduce FerretDB 1.24's createIndexes panic ("slice bounds out of range [:2:1]",
logged from the recover() in internal/clientconn/conn.go:174, connection dropped).

    /tmp/dbvenv/bin/python bench/createindexes_crash.py --uri mongodb://127.0.0.1:27117

Cause (internal/handler/msg_createindexes.go, validateIndexesForCreation): every requested
index that already exists is removed with
    filteredToCreate = slices.Delete(filteredToCreate, i, i+1)
where i is the index in the *original* request, but filteredToCreate has already shrunk.
With two requested indexes that both exist: i=0 deletes one (len 1), then i=1 runs
slices.Delete(s, 1, 2) on a 1-element slice, whose bounds check s[1:2:1] panics.
So any createIndexes with >= 2 indexes where an earlier one and a later one already exist
kills the connection; the document count, the backend and the OP_MSG encoding (body
array or kind-1 document sequence, as the Rust driver sends it) do not matter. pymongo's
create_index sends one index per command and never hits it.
"""
import argparse
import socket
import struct

import bson
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, OperationFailure

IDX = [{"key": {"categoryId": 1}, "name": "categoryId_1"},
       {"key": {"name": 1, "_id": 1}, "name": "name_1__id_1"}]


def op_msg_docseq(host, port, db, coll, indexes):
    """createIndexes as an OP_MSG with `indexes` in a kind-1 document sequence (Rust driver style)."""
    body = bson.encode({"createIndexes": coll, "$db": db})
    docs = b"".join(bson.encode(i) for i in indexes)
    ident = b"indexes\x00"
    seq = struct.pack("<i", 4 + len(ident) + len(docs)) + ident + docs
    payload = struct.pack("<I", 0) + b"\x00" + body + b"\x01" + seq
    msg = struct.pack("<iiii", 16 + len(payload), 7, 0, 2013) + payload
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(msg)
        head = s.recv(16)
        if len(head) < 16:
            return "connection closed by server (no reply)"
        length = struct.unpack("<i", head[:4])[0]
        rest = b""
        while len(rest) < length - 16:
            chunk = s.recv(length - 16 - len(rest))
            if not chunk:
                break
            rest += chunk
        return bson.decode(rest[5:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", default="mongodb://127.0.0.1:27117")
    ap.add_argument("--docs", type=int, default=1000)
    a = ap.parse_args()
    c = MongoClient(a.uri, serverSelectionTimeoutMS=5000, retryReads=False, retryWrites=False)
    host, port = next(iter(c.nodes)) if c.nodes else ("127.0.0.1", int(a.uri.rsplit(":", 1)[1].split("/")[0]))
    db = c["crash_probe"]
    coll = db["products"]

    def cmd(label, indexes):
        try:
            r = db.command({"createIndexes": "products", "indexes": indexes})
            print(f"{label}: ok {dict((k, r[k]) for k in r if k != '$clusterTime')}")
        except AutoReconnect as e:
            print(f"{label}: CONNECTION DROPPED ({e.__class__.__name__}: {e})")
        except OperationFailure as e:
            print(f"{label}: error {e.code} {e}")

    def fresh(n):
        coll.drop()
        if n:
            coll.insert_many([{"categoryId": bson.ObjectId(), "name": f"p{i}"} for i in range(n)])

    fresh(a.docs)
    cmd("1. both indexes, none exists yet", IDX)
    cmd("2. both indexes again, both exist (the service's restart)", IDX)
    print("3. same, as OP_MSG kind-1 document sequence:",
          op_msg_docseq("127.0.0.1", int(a.uri.rsplit(":", 1)[1].split("/")[0]), "crash_probe", "products", IDX))
    cmd("4. one index per command, existing (pymongo create_index style) [0]", IDX[:1])
    cmd("   ... [1]", IDX[1:])
    fresh(a.docs)
    cmd("5. only the first exists, then both", IDX[:1])
    cmd("   ... both", IDX)
    fresh(a.docs)
    cmd("6. only the second exists, then both", IDX[1:])
    cmd("   ... both", IDX)
    fresh(0)
    cmd("7. empty collection: both, then both again", IDX)
    cmd("   ... again", IDX)
    coll.drop()


if __name__ == "__main__":
    main()

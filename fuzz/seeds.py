#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ (a few valid and invalid inputs
each). Rerun after changing it; scripts/fuzz.sh never writes there. Files named
regression-* are inputs that once crashed a target, kept as they were found."""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
CATEGORY = "65a1f0c2e4b0a1b2c3d4e5f7"
PRODUCT = {
    "categoryId": CATEGORY, "name": "Coffee mug", "description": "Stoneware, 350 ml",
    "price": 9.5, "imageUrl": "https://img.example.com/mug.png",
    "photos": ["https://img.example.com/1.png"], "quantity": 3, "rating": 7,
}
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def record(payload, *, create=True, timestamp=1767225600000, partition=0, offset=41,
           headers=(), key=None):
    """Framing read by fuzz_targets/kafka_command.rs (Record::parse)."""
    flags = (1 if create else 0) | (2 if timestamp is not None else 0)
    flags |= (4 if key is not None else 0) | (8 if payload is not None else 0)
    flags |= len(headers) << 4
    out = bytes([flags]) + struct.pack(">qiq", timestamp or 0, partition, offset)
    for name, value in headers:
        out += bytes([len(name)]) + name
        out += bytes([255]) if value is None else bytes([len(value)]) + value
    if key is not None:
        out += bytes([len(key)]) + key
    return out + (payload or b"")


def js(value):
    return json.dumps(value).encode()


seeds = {
    "kafka_command": {
        "create": record(js({**PRODUCT, "productId": "65a1f0c2e4b0a1b2c3d4e5f6",
                             "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}),
                         headers=[(b"message-id", b"m-1"), (b"traceparent", TRACEPARENT)],
                         key=b"65a1f0c2e4b0a1b2c3d4e5f6"),
        "create-legacy": record(js(PRODUCT), timestamp=None, partition=2, offset=7),
        "update": record(js({**PRODUCT, "productId": "65a1f0c2e4b0a1b2c3d4e5f6",
                             "updatedAt": "2026-02-03T04:05:06.789Z"}), create=False,
                         headers=[(b"content-type", b"application/json"), (b"message-id", None)]),
        "update-without-id": record(js({"name": 1, "price": "cheap"}), create=False),
        "tombstone": record(None, key=b"65a1f0c2e4b0a1b2c3d4e5f6"),
        "not-json": record(b"\xff{\"name\":", headers=[(b"x", b"\x00\xff")]),
    },
    "rest_product": {
        "valid": js(PRODUCT),
        "minimal": js({k: PRODUCT[k] for k in ("categoryId", "name", "description", "price", "quantity")}),
        "wrong-types": b'{"categoryId":1,"name":["x"],"price":"cheap","quantity":1.5,"photos":[1,"ok"],"rating":null}',
        "out-of-range": js({**PRODUCT, "price": -1, "rating": 11, "name": "x", "imageUrl": "ftp://x"}),
        "unicode": js({**PRODUCT, "name": "  Tasse \u2615 caf\u00e9  ", "description": "line\nbreak\ttab"}),
        "not-an-object": b"[1, 2, 3]",
        "truncated": b'{"name": "Mug", "price": 9.',
        "regression-long-normalised-url": js({**{k: PRODUCT[k] for k in ("categoryId", "quantity")},
                                              "name": "Mug", "description": "A mug", "price": 1,
                                              "imageUrl": "http://a.com/" + "x " * 1000}),
    },
    "search_params": {
        "typical": b"search=mug&page=2&size=20",
        "empty": b"",
        "bad-numbers": b"page=-1&size=x&search=",
        "encoded-and-capped": b"search=%E2%98%95+caf%C3%A9&size=1000&page=0",
        "repeated": b"search=a&search=b&page=1&page=3",
        "huge-page": b"page=9223372036854775807&size=100",
        "malformed": b"search=%zz&&=&page",
    },
}

for target, files in seeds.items():
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    print(f"{directory}: {len(files)} seeds")

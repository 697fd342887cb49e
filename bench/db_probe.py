#!/usr/bin/env python3
"""Probe a MongoDB-protocol server (FerretDB on SQLite / PostgreSQL, or MongoDB) with the
products service's document shape, indexes and command shapes, at several collection sizes.

    python3 -m venv /tmp/dbvenv && /tmp/dbvenv/bin/pip install pymongo
    /tmp/dbvenv/bin/python bench/db_probe.py --uri mongodb://127.0.0.1:27117 --label sqlite \
        --sizes 10000,100000 --reps 200 --json /tmp/sqlite.json

Every operation is sent as the command the Rust driver (mongodb 3.x) sends for the
service's call (see crates/products-service/src/adapters/mongo.rs):

  find_id          find_one({_id})                     -> find {filter:{_id}, limit:1, singleBatch:true}
  fam_updatedAt    find_one_and_update CAS on updatedAt -> findAndModify {query:{_id, updatedAt:{$lte}}, new:true}
  fam_v            find_one_and_update CAS on v        -> findAndModify {query:{_id, v:{$lt:N}}, new:true}
  fam_id           find_one_and_update by _id only     -> findAndModify {query:{_id}, new:true}
  update_id        update_one({_id})                   -> update {updates:[{q:{_id}, multi:false}]}
  update_v         update_one({_id, v:{$lt:N}})        -> update {updates:[{q:{_id, v:{$lt:N}}}]}
  delete_id        delete_one({_id})                   -> delete {deletes:[{q:{_id}, limit:1}]}
  insert_many      insert_many(1000 docs, ordered=false) per batch, while filling the collection
  search_page      find {} sort {name:1,_id:1} skip 50 limit 10 (the service's listing page)

Each op runs --reps times on random existing ids, or until --budget seconds are spent
(at least --min-reps). The collection gets the service's indexes (categoryId_1,
name_1__id_1), created one per createIndexes command (see docs/LOCAL-STACK.md: FerretDB
1.24 panics on a multi-index createIndexes when two of them already exist).
FerretDB's `explain` answer says whether the filter was pushed down (filterPushdown).
"""
import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time

from bson import ObjectId
from pymongo import MongoClient


def pct(samples, p):
    s = sorted(samples)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def make_doc(i, now):
    return {
        "_id": ObjectId(),
        "categoryId": ObjectId(),
        "name": f"Product {i:07d} stoneware mug",
        "description": f"Stoneware, 350 ml, item {i}, dishwasher safe, made to last",
        "price": 9.5 + (i % 100),
        "imageUrl": f"https://img.example.com/p/{i}.png",
        "photos": [f"https://img.example.com/p/{i}-1.png", f"https://img.example.com/p/{i}-2.png"],
        "quantity": i % 1000,
        "rating": i % 11,
        "v": 1,
        "createdAt": now,
        "updatedAt": now,
    }


def set_doc(i, now, v=None):
    s = {
        "name": f"Product {i:07d} stoneware mug (updated)",
        "description": "Stoneware, 350 ml, updated",
        "price": 10.5,
        "photos": ["https://img.example.com/p/u.png"],
        "quantity": 7,
        "rating": 5,
        "updatedAt": now,
    }
    if v is not None:
        s["v"] = v
    return {"$set": s}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default="mongodb://127.0.0.1:27017")
    ap.add_argument("--db", default="db_probe")
    ap.add_argument("--label", default="")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--min-reps", type=int, default=20)
    ap.add_argument("--budget", type=float, default=30.0, help="max seconds per op and size")
    ap.add_argument("--ops", default="find_id,fam_updatedAt,fam_v,fam_id,update_id,update_v,delete_id,search_page")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the collections")
    a = ap.parse_args()

    client = MongoClient(a.uri, appname="db_probe", serverSelectionTimeoutMS=5000)
    db = client[a.db]
    rnd = random.Random(42)
    results = {"label": a.label, "uri": a.uri, "started": dt.datetime.now(dt.timezone.utc).isoformat(), "sizes": {}}
    ops = a.ops.split(",")
    version = [1000]

    for size in [int(s) for s in a.sizes.split(",")]:
        name = f"products_{size}"
        coll = db[name]
        coll.drop()
        # the service's indexes, one createIndexes command per index
        for keys, iname in (([("categoryId", 1)], "categoryId_1"), ([("name", 1), ("_id", 1)], "name_1__id_1")):
            db.command({"createIndexes": name, "indexes": [{"key": dict(keys), "name": iname}]})
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        ids, batch_ms = [], []
        t_fill = time.perf_counter()
        for start in range(0, size, 1000):
            docs = [make_doc(i, now) for i in range(start, min(size, start + 1000))]
            t = time.perf_counter()
            coll.insert_many(docs, ordered=False)
            batch_ms.append((time.perf_counter() - t) * 1000)
            ids.extend(d["_id"] for d in docs)
        fill_s = time.perf_counter() - t_fill
        r = {"insert_many_1000": {"n": len(batch_ms), "p50_ms": pct(batch_ms, 50), "p99_ms": pct(batch_ms, 99),
                                  "docs_per_s": size / fill_s}}
        print(f"[{a.label}] {size}: filled in {fill_s:.1f}s ({size / fill_s:.0f} docs/s), "
              f"batch p50 {pct(batch_ms, 50):.1f} ms p99 {pct(batch_ms, 99):.1f} ms", file=sys.stderr)

        # pushdown as FerretDB reports it (MongoDB answers explain differently: recorded raw)
        explain = {}
        some = ids[0]
        for label, flt in (("{_id}", {"_id": some}),
                           ("{_id, updatedAt:{$lte}}", {"_id": some, "updatedAt": {"$lte": now}}),
                           ("{_id, v:{$lt}}", {"_id": some, "v": {"$lt": 5}}),
                           ("{categoryId}", {"categoryId": some})):
            try:
                e = db.command({"explain": {"find": name, "filter": flt, "limit": 1, "singleBatch": True},
                                "verbosity": "queryPlanner"})
                explain[label] = {k: e.get(k) for k in ("filterPushdown", "sortPushdown", "limitPushdown")}
            except Exception as err:  # noqa: BLE001
                explain[label] = str(err)
        r["explain"] = explain

        deletable = ids[size // 2:]
        rnd.shuffle(deletable)
        live = ids[: size // 2]

        def run(op):
            i = rnd.randrange(len(live))
            _id = live[i]
            t = dt.datetime.now(dt.timezone.utc)
            if op == "find_id":
                db.command({"find": name, "filter": {"_id": _id}, "limit": 1, "singleBatch": True})
            elif op == "fam_updatedAt":
                res = db.command({"findAndModify": name, "query": {"_id": _id, "updatedAt": {"$lte": t}},
                                  "update": set_doc(i, t), "new": True, "upsert": False})
                assert res.get("value") is not None, res
            elif op == "fam_v":
                version[0] += 1
                res = db.command({"findAndModify": name, "query": {"_id": _id, "v": {"$lt": version[0]}},
                                  "update": set_doc(i, t, version[0]), "new": True, "upsert": False})
                assert res.get("value") is not None, res
            elif op == "fam_id":
                res = db.command({"findAndModify": name, "query": {"_id": _id},
                                  "update": set_doc(i, t), "new": True, "upsert": False})
                assert res.get("value") is not None, res
            elif op == "update_id":
                res = db.command({"update": name, "updates": [{"q": {"_id": _id}, "u": set_doc(i, t),
                                                                "multi": False, "upsert": False}], "ordered": True})
                assert res["n"] == 1, res
            elif op == "update_v":
                version[0] += 1
                res = db.command({"update": name, "updates": [{"q": {"_id": _id, "v": {"$lt": version[0]}},
                                                                "u": set_doc(i, t, version[0]),
                                                                "multi": False, "upsert": False}], "ordered": True})
                assert res["n"] == 1, res
            elif op == "delete_id":
                res = db.command({"delete": name, "deletes": [{"q": {"_id": deletable.pop()}, "limit": 1}],
                                  "ordered": True})
                assert res["n"] == 1, res
            elif op == "search_page":
                db.command({"find": name, "filter": {}, "sort": {"name": 1, "_id": 1}, "skip": 50, "limit": 10})
            else:
                raise SystemExit(f"unknown op {op}")

        for op in ops:
            samples = []
            t_op = time.perf_counter()
            while len(samples) < a.reps:
                t = time.perf_counter()
                run(op)
                samples.append((time.perf_counter() - t) * 1000)
                if len(samples) >= a.min_reps and time.perf_counter() - t_op > a.budget:
                    break
            r[op] = {"n": len(samples), "p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99),
                     "mean_ms": statistics.fmean(samples)}
            print(f"[{a.label}] {size:>7} {op:<14} n={len(samples):>4} p50 {pct(samples, 50):9.2f} ms"
                  f"  p99 {pct(samples, 99):9.2f} ms", file=sys.stderr)
        results["sizes"][str(size)] = r
        if not a.keep:
            coll.drop()

    # table
    sizes = list(results["sizes"])
    print(f"\n{a.label}: p50 / p99 ms")
    print(f"{'op':<18}" + "".join(f"{s:>24}" for s in sizes))
    for op in ["insert_many_1000"] + ops:
        row = f"{op:<18}"
        for s in sizes:
            x = results["sizes"][s].get(op)
            row += f"{x['p50_ms']:>11.2f} / {x['p99_ms']:>9.2f}" if x else f"{'-':>24}"
        print(row)
    for s in sizes:
        print(f"explain @{s}: {json.dumps(results['sizes'][s]['explain'], default=str)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()

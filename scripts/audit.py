#!/usr/bin/env python3
"""Live audit of the widget store: checks invariants 1-7 of ARCHITECTURE.md
across the services' own databases and reports each one, with the offending
ids when one fails.

Usage: scripts/audit.py                 check once; exit 1 if any invariant fails
       scripts/audit.py --json          the same, as JSON
       scripts/audit.py --serve PORT    serve GET /audit (JSON; 200 all hold, 409 not)

Database URLs come from <SERVICE>_DATABASE_URL, else from .local/secrets.env.
Orders younger than --grace seconds (default: 60 s payment timeout + 30 s)
are still allowed to be in flight. Invariant 5 (replays change nothing) is a
property of the code, proven by the replay tests; live, the audit checks its
precondition: every consumed message is recorded once in an inbox and no
outbox row is stuck.
"""

import argparse
import http.server
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SERVICES = ["api", "checkout", "inventory", "payment", "dispatch"]


def database_urls():
    urls = {}
    secrets = os.path.join(ROOT, ".local", "secrets.env")
    if os.path.exists(secrets):
        with open(secrets) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                urls[key] = value
    return {s: os.environ.get(f"{s.upper()}_DATABASE_URL", urls.get(f"{s.upper()}_DATABASE_URL"))
            for s in SERVICES}


def query(url, sql):
    out = subprocess.run(["psql", url, "-X", "-q", "-A", "-t", "-F", "\t", "-v",
                          "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True,
                         timeout=60, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def audit(urls, grace):
    q = {s: (lambda sql, s=s: query(urls[s], sql)) for s in SERVICES}
    old = f"last_update_time < now() - interval '{int(grace)} seconds'"
    results = []

    def report(number, name, offending):
        results.append({"invariant": number, "name": name, "holds": not offending,
                        "offending": offending[:100]})

    bad = [r[0] for r in q["inventory"](
        "SELECT product_id FROM products p WHERE initial + restocked <> available + reserved + sold "
        "OR least(available, reserved, sold) < 0 OR reserved <> (SELECT count(*) FROM "
        "reservations r WHERE r.product_id = p.product_id AND r.status = 'reserved')")]
    report(1, "stock conserved: initial + restocked = available + reserved + sold", bad)

    orders = {o: (k, st) for o, k, st in q["checkout"](
        "SELECT order_id, idempotency_key, order_status FROM orders")}
    payments = q["payment"]("SELECT payment_id, order_id, status FROM payments")
    per_order = {}
    for pid, order_id, _ in payments:
        per_order.setdefault(order_id, []).append(pid)
    bad = [f"order {o}: payments {p}" for o, p in per_order.items() if len(p) > 1]
    bad += [f"payment {pid}: unknown order {o}" for pid, o, _ in payments if o not in orders]
    report(2, "one order and one payment per idempotency key", bad)

    settled = {o for (o,) in q["checkout"](f"SELECT order_id FROM orders WHERE {old}")}
    reservations = dict(q["inventory"]("SELECT order_id, status FROM reservations"))
    shipments = dict(q["dispatch"]("SELECT order_id, status FROM shipments"))
    bad = []
    for order_id, (_, status) in orders.items():
        if order_id not in settled:
            continue
        if status not in ("-1", "1"):
            bad.append(f"order {order_id}: status {status} after the grace period")
        if status == "-1" and reservations.get(order_id) == "reserved":
            bad.append(f"order {order_id}: cancelled but stock still reserved")
        if status in ("1", "2") and order_id not in shipments:
            bad.append(f"order {order_id}: paid but not dispatched")
    report(3, "every order ends CANCELLED or DISPATCHED, paid ones dispatched, "
              "cancelled ones' stock returned", bad)

    bad = []
    for pid, order_id, status in payments:
        order_status = orders.get(order_id, (None, None))[1]
        if status == "captured" and order_status not in ("1", "2"):
            bad.append(f"payment {pid}: captured for order {order_id} in status {order_status}")
    report(4, "no payment captured twice; every capture belongs to a paid order or is refunded",
           bad)

    bad = []
    for service in SERVICES:
        stuck = q[service]("SELECT count(*) FROM outbox WHERE created_at < now() - "
                           "interval '60 seconds'")[0][0]
        if stuck != "0":
            bad.append(f"{service}: {stuck} outbox rows older than 60 s")
    report(5, "duplicates and replays have no effect (inbox or versioned snapshots, outbox "
              "draining)", bad)

    bad = [f"order {o}: shipment {s}" for o, s in q["dispatch"](
        "SELECT order_id, status || ' ' || progress_remaining || '/' || steps FROM shipments "
        "WHERE (status = 'dispatched') <> (progress_remaining = 0) "
        "OR progress_remaining > steps")]
    bad += [f"order {o}: shipment but order status {orders.get(o, (0, 'unknown'))[1]}"
            for o in shipments if orders.get(o, (0, None))[1] not in ("1", "2")]
    report(6, "dispatch progress goes 10 to 0 once per paid order", bad)

    read_model = {o: st for o, st in q["api"]("SELECT order_id, order_status FROM orders")}
    bad = [f"order {o}: read model {read_model.get(o)} owner {st}"
           for o, (_, st) in orders.items() if o in settled and read_model.get(o) != st]
    owner_stock = q["inventory"]("SELECT available FROM products WHERE product_id = 1")
    model_stock = q["api"]("SELECT inventory FROM products WHERE product_id = 1")
    if owner_stock != model_stock:
        bad.append(f"product 1: read model {model_stock} owner {owner_stock}")
    report(7, "the api read model equals the owners' data", bad)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=int, metavar="PORT")
    parser.add_argument("--grace", type=float, default=90.0)
    args = parser.parse_args()
    urls = database_urls()
    missing = [s for s, u in urls.items() if not u]
    if missing:
        sys.exit(f"audit: no database URL for {', '.join(missing)}")
    if args.serve:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/audit":
                    self.send_error(404)
                    return
                results = audit(urls, args.grace)
                body = json.dumps(results, indent=2).encode()
                self.send_response(200 if all(r["holds"] for r in results) else 409)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        http.server.ThreadingHTTPServer(("127.0.0.1", args.serve), Handler).serve_forever()
    results = audit(urls, args.grace)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{'OK  ' if r['holds'] else 'FAIL'} {r['invariant']}. {r['name']}")
            for item in r["offending"]:
                print(f"       {item}")
    sys.exit(0 if all(r["holds"] for r in results) else 1)


if __name__ == "__main__":
    main()

"""A database restart under traffic, as an operator's `scripts/pg.sh restart`
or a failover does it: the server ends every session of every service
(SQLSTATE 57P01), stays away for a few seconds, and comes back. While it is
away the services retry their connections with backoff instead of spinning;
once it is back each replaces the connections it had, and every purchase
ends right."""

import os
import subprocess
import threading
import time

from harness import ROOT, wait_until
from stack import SERVICES, Stack

OUTAGE_S = 5
# Each connection's owner (relay, consumer, tickers, the api's listener)
# retries with backoff from 100 ms, and an idle consumer checks its
# connection every 200 ms: a few dozen attempts per service in 5 s. A relay
# woken as its connection died once retried without waiting, about 30,000
# times a second (151,667 attempts in 5 s).
RECONNECT_ATTEMPTS_MAX = 100
PG = os.path.join(ROOT, "scripts", "pg.sh")


def reconnect_attempts(stack, service):
    with open(stack.processes[service].log_path, errors="replace") as log:
        return sum("cannot connect" in line for line in log)


def test_a_database_restart_under_traffic_is_ridden_out_and_every_purchase_ends_right():
    stack = Stack(PAYMENT_TIMEOUT_MS=60000)
    stop = threading.Event()
    orders, failures = [], []

    def shopper(name):
        n = 0
        while not stop.is_set():
            n += 1
            status, payment_id = stack.call_retrying("POST", f"/checkout/outage-{name}-{n}",
                                                     timeout=120)
            if status != 200:
                failures.append(f"checkout {status} {payment_id}")
                continue
            status, order_id = stack.call_retrying(
                "POST", f"/payment_webhook/{payment_id}/paid", timeout=120)
            if status != 200:
                failures.append(f"webhook {status} {order_id}")
                continue
            orders.append(int(order_id))

    shoppers = [threading.Thread(target=shopper, args=(i,), daemon=True) for i in range(4)]
    try:
        stack.start()
        stack.supervise()
        for thread in shoppers:
            thread.start()
        wait_until(lambda: len(orders) >= 20, 60, "purchases to flow")

        before = {s: reconnect_attempts(stack, s) for s in SERVICES}
        subprocess.run(["bash", PG, "stop"], check=True)
        time.sleep(OUTAGE_S)  # the outage itself is the point
        attempts = {s: reconnect_attempts(stack, s) - before[s] for s in SERVICES}
        subprocess.run(["bash", PG, "start"], check=True)
        print(f"reconnect attempts in {OUTAGE_S} s: {attempts}")
        assert all(n <= RECONNECT_ATTEMPTS_MAX for n in attempts.values()), attempts
        assert sum(attempts.values()) > 0, "the services never noticed the outage"

        bought = len(orders)
        wait_until(lambda: len(orders) >= bought + 20, 120, "purchases to flow again")
        stop.set()
        for thread in shoppers:
            thread.join(timeout=150)
        assert not failures, failures[:5]
        assert stack.restarts == {}, f"services exited: {dict(stack.restarts)}"
        # Every order, those in flight during the outage included, is
        # dispatched: no service was left on a connection it cannot use.
        for order_id in orders:
            stack.wait_order_status(order_id, 1, timeout=60)
        stack.check_invariants(replay=False)
    finally:
        stop.set()
        stack.close()

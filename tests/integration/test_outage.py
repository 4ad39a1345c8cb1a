"""Database outages. A restart under traffic, as an operator's
`scripts/pg.sh restart` or a failover does it: the server ends every session
of every service (SQLSTATE 57P01), stays away for a few seconds, and comes
back. While it is away the services retry their connections with backoff
instead of spinning; once it is back each replaces the connections it had,
and every purchase ends right. And a database host that vanishes without a
word (a partition): nothing is reset, so only the services' own TCP
deadlines end the wait."""

import datetime
import os
import re
import statistics
import subprocess
import threading
import time

import pytest

from harness import (BROKERS, BUILD_DIR, ROOT, DatabaseForwarder, Process, delete_topics,
                     free_port, partitioned, unique_name, wait_until)
from stack import SERVICES, Stack, http

OUTAGE_S = 5
# Each connection's owner (relay, consumer, tickers, the api's listener)
# retries with backoff from 100 ms, and an idle consumer checks its
# connection every 200 ms: a few dozen attempts per service in 5 s. A relay
# woken as its connection died once retried without waiting, about 30,000
# times a second (151,667 attempts in 5 s).
RECONNECT_ATTEMPTS_MAX = 100
PG = os.path.join(ROOT, "scripts", "pg.sh")


def log_lines(log_path):
    with open(log_path, errors="replace") as log:
        return log.readlines()


def reconnect_attempts(stack, service):
    return sum("cannot connect" in line for line in log_lines(stack.processes[service].log_path))


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


# db_connect's TCP defaults: data unacknowledged for 10 s ends a connection;
# an idle one is probed after 10 s of silence, so it ends within about 20 s.
# The kernel's own limits are about 15 minutes and never, respectively.
ANSWER_WITHIN_S = 25
IDLE_LOST_WITHIN_S = 45


def test_a_database_host_that_vanishes_costs_the_api_seconds_not_minutes():
    if os.geteuid() != 0:
        pytest.skip("cutting a TCP path needs root (nftables)")
    stack = Stack()
    forwarder = DatabaseForwarder(stack.dbs["api"].url)

    def listener_lost():
        return any("read-model listener lost its connection" in line
                   for line in log_lines(stack.processes["api"].log_path))

    def listeners_since(when):
        return int(stack.scalar("api", "SELECT count(*) FROM pg_stat_activity WHERE "
                                f"application_name = 'api-listener' AND backend_start > '{when}'"))

    try:
        stack.service_env["api"] = {"DATABASE_URL": forwarder.url}
        stack.start()
        # This read leaves an idle pooled connection over TCP, which the next
        # read takes; the listener holds another, idle between notifications.
        assert http(stack.base, "GET", "/orders", timeout=10)[0] == 200
        assert forwarder.connections >= 2
        with partitioned(forwarder.port):
            started = time.monotonic()
            try:
                status, body = http(stack.base, "GET", "/orders", timeout=ANSWER_WITHIN_S + 20)
            except OSError as err:
                pytest.fail(f"GET /orders not answered after the database vanished: {err}")
            waited = time.monotonic() - started
            print(f"GET /orders answered {status} after {waited:.1f} s")
            assert status == 503, body
            assert waited < ANSWER_WITHIN_S
            # Liveness does not touch the database, so it answers at once; a
            # check that did would wait out db_connect's 10 s TCP timeout. 8 s
            # leaves room for a stalled host and stays below that.
            assert http(stack.base, "GET", "/healthz", timeout=8)[0] == 200
            wait_until(listener_lost, IDLE_LOST_WITHIN_S, "the listener to give up its connection")
            healed_at = stack.scalar("api", "SELECT now()")
        # Back: a new pooled connection reads, a new listener wakes the
        # waiting calls, and a purchase goes through end to end.
        wait_until(lambda: http(stack.base, "GET", "/orders", timeout=10)[0] == 200, 30,
                   "reads to work again")
        wait_until(lambda: listeners_since(healed_at) >= 1, 30, "the listener to reconnect")
        status, payment_id = stack.checkout("vanished-host-1")
        assert status == 200, payment_id
        status, order_id = stack.webhook(payment_id, "paid")
        assert status == 200, order_id
        stack.wait_order_status(int(order_id), 1, timeout=60)
        assert stack.restarts == {}
        stack.check_invariants(replay=False)
    finally:
        stack.close()
        forwarder.close()


def test_an_idle_service_stops_saying_ready_while_its_database_is_down():
    # /readyz means "the database answers". With no message to handle, nothing
    # reads a consumer's connection, so the service must look at it itself.
    stack = Stack()
    services = SERVICES
    try:
        stack.start()
        wait_until(lambda: all(stack.ready(s) for s in services), 60, "every service ready")
        subprocess.run(["bash", PG, "stop"], check=True, stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: not any(stack.ready(s) for s in services), 15,
                       "every idle service to say it is not ready")
        finally:
            subprocess.run(["bash", PG, "start"], check=True, stdout=subprocess.DEVNULL)
        wait_until(lambda: all(stack.ready(s) for s in services), 30, "every service ready again")
        assert stack.restarts == {}
    finally:
        stack.close()


def attempt_times(log_path, message):
    """The times (seconds) of the log lines carrying msg="message"."""
    times = []
    for line in log_lines(log_path):
        match = re.match(r"ts=(\S+)Z .*msg=\"" + re.escape(message) + '"', line)
        if match:
            times.append(datetime.datetime.fromisoformat(match.group(1)).timestamp())
    return times


def test_a_service_without_its_database_retries_each_connection_about_once_a_second():
    # Nothing listens on the port: every attempt fails at once. Each owner of
    # a connection backs off to about one attempt a second (jitter: 0.5-1 s)
    # instead of trying on every poll, and logs each attempt on one line.
    prefix = unique_name("nodb")
    env = dict(os.environ, DATABASE_URL=f"postgresql://nobody:x@127.0.0.1:{free_port()}/none",
               KAFKA_BROKERS=BROKERS, KAFKA_TOPIC_PREFIX=f"{prefix}.",
               KAFKA_GROUP=f"{prefix}-inventory", ADMIN_PORT=str(free_port()))
    proc = Process(f"{prefix}-inventory", [os.path.join(BUILD_DIR, "services", "inventory")],
                   env).start()
    owners = ("consumer cannot connect", "relay cannot connect")
    try:
        wait_until(lambda: all(len(attempt_times(proc.log_path, m)) >= 10 for m in owners), 60,
                   "ten attempts by each owner")
        for message in owners:
            times = attempt_times(proc.log_path, message)[:10]
            gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
            print(message, "gaps:", gaps)
            # Never faster than the backoff; about a second apart, judged by
            # the median so that one stall of the host does not decide it.
            assert all(gap >= 0.4 for gap in gaps[-3:]), (message, gaps)
            assert statistics.median(gaps[-3:]) <= 1.5, (message, gaps)
        assert all(line.startswith(("ts=", "--- start")) for line in log_lines(proc.log_path))
    finally:
        proc.stop()
        delete_topics(f"{prefix}.")

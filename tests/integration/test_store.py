"""End-to-end tests of the widget store over HTTP against the real stack (five
service processes, PostgreSQL, Kafka). Every test ends by checking invariants
1 to 6 of ARCHITECTURE.md against the services' own data, replay included."""

import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from harness import BROKERS, BUILD_DIR, ROOT, wait_until
from stack import DISPATCH_STEPS, PAYMENT_TIMEOUT_MS, Stack, http


@pytest.fixture(scope="module")
def stack():
    stack = Stack()
    stack.start()
    yield stack
    stack.close()


@pytest.fixture
def store(stack):
    yield stack
    stack.check_invariants()


def new_key():
    return f"test-{uuid.uuid4()}"


def inventory(store):
    return store.get_json("/product")["inventory"]


def buy(store, outcome="paid"):
    """Checkout then webhook; returns (payment_id, order_id)."""
    status, payment_id = store.checkout(new_key())
    assert status == 200, payment_id
    status, order_id = store.webhook(payment_id, outcome)
    assert status == 200, order_id
    return payment_id, int(order_id)


def test_happy_path_reaches_dispatched_with_progress_moving(store):
    before = inventory(store)
    status, payment_id = store.checkout(new_key())
    assert status == 200 and uuid.UUID(payment_id)
    status, order_id = store.webhook(payment_id, "paid")
    assert status == 200 and order_id.isdigit()
    order = store.get_json(f"/order/{order_id}")
    assert order["order_status"] == 2 and order["product_id"] == 1
    seen = set()

    def dispatched():
        order = store.get_json(f"/order/{order_id}")
        seen.add(order["progress_remaining"])
        return order["order_status"] == 1
    wait_until(dispatched, 30, "DISPATCHED", interval=0.05)
    assert store.get_json(f"/order/{order_id}")["progress_remaining"] == 0
    assert any(0 < p < DISPATCH_STEPS for p in seen), f"progress never moved: {seen}"
    assert inventory(store) == before - 1
    orders = store.get_json("/orders")
    assert orders[0]["order_id"] == int(order_id)
    assert set(orders[0]) == {"order_id", "order_status", "last_update_time",
                              "progress_remaining", "product_id"}


def test_cancelled_payment_cancels_the_order_and_returns_the_stock(store):
    before = inventory(store)
    _, order_id = buy(store, "failed")
    assert store.get_json(f"/order/{order_id}")["order_status"] == -1
    wait_until(lambda: inventory(store) == before, 20, "the stock to come back")


def payment_status(store, payment_id):
    return store.dbs["payment"].scalar(
        f"SELECT status FROM payments WHERE payment_id = '{payment_id}'")


def test_payment_timeout_cancels_the_order_and_returns_the_stock(store):
    before = inventory(store)
    status, payment_id = store.checkout(new_key())
    assert status == 200
    order_id = store.dbs["checkout"].scalar(
        f"SELECT order_id FROM orders WHERE payment_id = '{payment_id}'")
    store.wait_order_status(order_id, -1, timeout=PAYMENT_TIMEOUT_MS / 1000 + 20)
    wait_until(lambda: inventory(store) == before, 20, "the stock to come back")
    assert payment_status(store, payment_id) == "cancelled"


def saga_version(store, key):
    return store.dbs["checkout"].scalar(
        f"SELECT definition_version FROM sagas WHERE saga_id = '{key}'")


def checkout_and_version(store):
    key = new_key()
    status, body = store.checkout(key)
    return status, body, saga_version(store, key)


def test_the_payment_is_opened_with_the_reservation_once_the_price_is_known(store):
    # After a restart checkout knows no price: the first saga reserves, then
    # opens (version 1); it learns the price from that reservation, and the
    # next one asks for both at once (version 2). Both end dispatched.
    store.stop(["checkout"])
    store.start(["checkout"])
    orders = []
    for expected in ("1", "2"):
        status, payment_id, version = checkout_and_version(store)
        assert status == 200 and version == expected
        status, order_id = store.webhook(payment_id, "paid")
        assert status == 200
        orders.append(order_id)
    for order_id in orders:
        store.wait_order_status(order_id, 1)
        assert store.dbs["payment"].scalar(
            f"SELECT amount::text FROM payments WHERE order_id = {order_id}") == "99.99"


def order_of(store, key):
    return store.dbs["checkout"].scalar(
        f"SELECT order_id FROM orders WHERE idempotency_key = '{key}'")


def wait_payment_voided(store, order_id, which):
    """Waits until the order has exactly one payment, and it is cancelled."""
    wait_until(lambda: store.dbs["payment"].query(
        f"SELECT status FROM payments WHERE order_id = {order_id}") == [["cancelled"]],
        20, f"the payment {which} to be voided")


def set_price(store, price):
    store.dbs["inventory"].query(f"UPDATE products SET price = {price} WHERE product_id = 1")


def test_a_price_change_cancels_the_checkout_opened_at_the_old_price(store):
    buy(store)  # checkout knows the price
    try:
        set_price(store, "5.00")
        for price in ("5.00", "99.99"):
            before = inventory(store)
            key = new_key()
            status, body = store.checkout(key)
            assert status == 409 and "price changed" in body, body
            wait_payment_voided(store, order_of(store, key), "at the old price")
            wait_until(lambda: inventory(store) == before, 20, "the stock to come back")
            # The next checkout opens at the price it has just learnt.
            status, payment_id, version = checkout_and_version(store)
            assert status == 200 and version == "2", payment_id
            assert store.dbs["payment"].scalar(
                f"SELECT amount::text FROM payments WHERE payment_id = '{payment_id}'") == price
            assert store.webhook(payment_id, "failed")[0] == 200
            if price == "5.00":
                set_price(store, "99.99")
    finally:
        set_price(store, "99.99")


def test_after_selling_out_the_next_checkout_fails_clearly_and_charges_nothing(store):
    store.wait_quiet()
    status, _ = http(store.base, "POST", "/restock")
    assert status == 200
    assert inventory(store) == 100
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: buy(store), range(100)))
    wait_until(lambda: inventory(store) == 0, 20, "the stock to reach 0")
    # The price is known, so the payment is asked for with the reservation
    # (version 2). With payment down, the refusal comes first and the saga
    # voids a payment whose id it never heard: the one opened later for the
    # order. It is never offered nor charged.
    store.stop(["payment"])
    key = new_key()
    status, body = store.checkout(key)
    assert status == 409
    assert "out of stock" in body.lower()
    store.start(["payment"])
    order_id = order_of(store, key)
    assert saga_version(store, key) == "2"
    wait_payment_voided(store, order_id, "opened for the refused order")
    assert store.dbs["checkout"].scalar(
        f"SELECT payment_id IS NULL FROM orders WHERE order_id = {order_id}") == "t"
    # The refusal made checkout forget the price: while sold out, the next
    # checkouts reserve first (version 1) and open no payment at all.
    for _ in range(2):
        key = new_key()
        status, body = store.checkout(key)
        assert status == 409 and "out of stock" in body.lower(), body
        assert saga_version(store, key) == "1"
        wait_until(lambda: store.dbs["checkout"].scalar(
            f"SELECT state FROM sagas WHERE saga_id = '{key}'") == "cancelled", 20,
            "the saga to be cancelled")
        # Nothing was taken nor asked for, so nothing is left to undo.
        assert saga_of(store, key)["compensation"] == {
            "stock_released": True, "payment_voided": True, "attempts": 0}
        assert store.dbs["payment"].scalar(
            f"SELECT count(*) FROM payments WHERE order_id = {order_of(store, key)}") == "0"
    # Restocked, the first checkout learns the price again, and the next one
    # opens with the reservation.
    status, _ = http(store.base, "POST", "/restock")
    assert status == 200 and inventory(store) == 100
    for expected in ("1", "2"):
        status, payment_id, version = checkout_and_version(store)
        assert status == 200 and version == expected, payment_id
        assert store.webhook(payment_id, "failed")[0] == 200


def test_one_key_sent_20_times_concurrently_gives_one_order_and_one_payment(store):
    key = new_key()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: store.checkout(key), range(20)))
    assert {a[0] for a in answers} == {200}
    assert len({a[1] for a in answers}) == 1
    assert store.dbs["checkout"].scalar(
        f"SELECT count(*) FROM orders WHERE idempotency_key = '{key}'") == "1"
    assert store.dbs["payment"].scalar(
        f"SELECT count(*) FROM payments WHERE saga_id = '{key}'") == "1"
    store.webhook(answers[0][1], "paid")


def test_one_webhook_sent_5_times_has_one_effect(store):
    status, payment_id = store.checkout(new_key())
    assert status == 200
    # A UUID written in upper case is the same payment id.
    spellings = [payment_id, payment_id.upper()] * 2 + [payment_id]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda spelling: store.webhook(spelling, "paid"), spellings))
    assert {a[0] for a in answers} == {200} and len({a[1] for a in answers}) == 1
    order_id = answers[0][1]
    # A later "failed" for the same payment changes nothing: the first result won.
    assert store.webhook(payment_id, "failed") == (200, order_id)
    store.wait_order_status(order_id, 1)
    saga = store.dbs["checkout"].scalar(
        f"SELECT saga_id FROM sagas WHERE order_id = {int(order_id)}")
    succeeded = store.dbs["checkout"].scalar(
        f"SELECT count(*) FROM saga_steps WHERE saga_id = '{saga}' "
        f"AND event = 'payment_succeeded'")
    assert succeeded == "1"
    assert store.dbs["payment"].query(
        f"SELECT status, provider_result FROM payments WHERE payment_id = '{payment_id}'") == \
        [["captured", "paid"]]


def test_payment_success_after_the_timeout_is_refunded(store):
    status, payment_id = store.checkout(new_key())
    assert status == 200
    order_id = store.dbs["checkout"].scalar(
        f"SELECT order_id FROM orders WHERE payment_id = '{payment_id}'")
    store.wait_order_status(order_id, -1, timeout=PAYMENT_TIMEOUT_MS / 1000 + 20)
    assert store.webhook(payment_id, "paid") == (200, order_id)
    wait_until(lambda: payment_status(store, payment_id) == "refunded",
               20, "the late payment to be refunded")
    assert store.get_json(f"/order/{order_id}")["order_status"] == -1


def saga_events(store, key):
    return [step for (step,) in store.dbs["checkout"].query(
        f"SELECT event FROM saga_steps WHERE saga_id = '{key}' ORDER BY step_id")]


@pytest.mark.parametrize("down", [["checkout"], ["checkout", "payment"]],
                         ids=["checkout-down", "checkout-and-payment-down"])
def test_a_payment_made_in_time_is_kept_when_an_outage_delays_it_past_the_timeout(store, down):
    # The customer pays in time, but the success cannot reach the saga before
    # its payment timeout falls due: checkout is down (and, in the second
    # case, payment too, so the timeout fires before payment has read the
    # provider's result). Payment decides the race, in the order it got the
    # result and the cancel: the money came first, so the order is
    # dispatched and the payment stays captured, not refunded.
    key = new_key()
    status, payment_id = store.checkout(key)
    assert status == 200, payment_id
    order_id = order_of(store, key)
    store.stop(down)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            answer = pool.submit(store.webhook, payment_id, "paid")
            if "payment" in down:
                wait_until(lambda: any(
                    m["type"] == "provider_result" and m["payload"]["payment_id"] == payment_id
                    for m in store.dump("payment.commands")), 20,
                    "the provider's result to wait in payment.commands")
            else:
                wait_until(lambda: payment_status(store, payment_id) == "captured", 20,
                           "the payment to be captured")
            wait_until(lambda: store.dbs["checkout"].scalar(
                f"SELECT count(*) FROM timers WHERE saga_id = '{key}' "
                f"AND kind = 'payment_timeout' AND fire_at < now()") == "1",
                PAYMENT_TIMEOUT_MS / 1000 + 10, "the payment timeout to fall due")
            store.start(["checkout"])
            if "payment" in down:
                wait_until(lambda: "payment_timeout" in saga_events(store, key), 20,
                           "the timeout to fire while payment is down")
        finally:
            store.start([service for service in down if service not in store.wanted])
        assert answer.result() == (200, order_id)
    store.wait_order_status(order_id, 2)
    assert payment_status(store, payment_id) == "captured"
    wait_until(lambda: saga_of(store, key)["state"] == "completed", 20, "the saga to complete")


BAD_REQUESTS = [
    ("GET", "/order/abc", 400),
    ("GET", "/order/-3", 400),
    ("GET", "/order/0", 404),
    ("GET", "/order/99999999", 404),
    ("GET", "/order/1/extra", 400),
    ("POST", "/checkout/" + "k" * 101, 400),
    ("POST", "/checkout/bad%20key", 400),
    ("POST", "/checkout/semi;colon", 400),
    ("POST", "/payment_webhook/not-a-uuid/paid", 400),
    ("POST", f"/payment_webhook/{uuid.uuid4()}/paid", 404),
    ("POST", f"/payment_webhook/{uuid.uuid4()}/PAID!", 400),
    ("POST", f"/payment_webhook/{uuid.uuid4()}/" + "x" * 40, 400),
    ("POST", f"/payment_webhook/{uuid.uuid4()}/" + "x" * 200, 400),
    ("POST", "/payment_webhook/" + "a" * 200 + "/paid", 400),
    ("POST", "/payment_webhook/only-one-segment", 404),
    ("GET", "/checkout/some-key", 405),
    ("DELETE", "/orders", 405),
    ("GET", "/restock", 405),
    ("POST", "/product", 405),
    ("GET", "/no/such/path", 404),
    # An id past bigint is well formed and names no order.
    ("GET", "/order/9223372036854775807", 404),
    ("GET", "/order/99999999999999999999", 404),
    ("GET", "/order/" + "9" * 300, 404),
    ("GET", "/order/" + "9" * 300 + "x", 400),
    # %00 must not cut the path short: not order 1, not key "abc".
    ("GET", "/order/1%00junk", 400),
    ("POST", "/checkout/abc%00x", 400),
    ("GET", "/product%00", 404),
    # A wrong method is told before anything about the path.
    ("POST", "/order/abc", 405),
    ("GET", "/checkout/", 405),
    ("GET", "/payment_webhook/x", 405),
]


def count_rows(store):
    return {s: store.dbs[s].scalar("SELECT count(*) FROM inbox") for s in store.dbs} | {
        "orders": store.dbs["checkout"].scalar("SELECT count(*) FROM orders"),
        "payments": store.dbs["payment"].scalar("SELECT count(*) FROM payments"),
        "requests": store.dbs["api"].scalar("SELECT count(*) FROM checkout_requests")}


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(store):
    store.wait_quiet()
    before = count_rows(store)
    for method, path, expected in BAD_REQUESTS:
        status, body = http(store.base, method, path)
        assert status == expected, f"{method} {path}: {status} {body}"
        assert body.strip(), f"{method} {path}: empty error body"
    status, body = http(store.base, "POST", f"/checkout/{new_key()}", body=b"x" * 70000)
    assert status == 413, body
    for method, path, allow in (("POST", "/product", "GET, HEAD"), ("GET", "/restock", "POST"),
                                ("DELETE", "/order/1", "GET, HEAD")):
        req = urllib.request.Request(store.base + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 405 and refused.value.headers["Allow"] == allow
    store.wait_quiet()
    assert count_rows(store) == before


def test_an_oversized_body_is_refused_before_it_is_read(store):
    # A declared length over the limit gets 413 at once, without the body;
    # a chunked body that runs on is cut off, not read for ever.
    with socket.create_connection(("127.0.0.1", store.http_port), timeout=10) as sock:
        sock.sendall(f"POST /checkout/{new_key()} HTTP/1.1\r\nHost: t\r\n"
                     "Content-Length: 20000000\r\n\r\n".encode())
        answer = sock.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer

    sent = 0
    with socket.create_connection(("127.0.0.1", store.http_port), timeout=10) as sock:
        sock.sendall(f"POST /checkout/{new_key()} HTTP/1.1\r\nHost: t\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
        deadline = time.monotonic() + 20
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += len(chunk)
            raise AssertionError(f"the api was still reading after {sent} bytes")
    print(f"chunked body cut off after {sent} bytes sent")
    assert store.get_json("/product")["product_id"] == 1


def metric(store, service, name):
    status, text = http(f"http://127.0.0.1:{store.admin_ports[service]}", "GET", "/metrics")
    assert status == 200, text
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_the_api_counts_its_answers_by_status_class_and_times_them(store):
    def counts():
        return {c: metric(store, "api", f'http_responses_total{{class="{c}"}}')
                for c in ("2xx", "4xx", "5xx")} | {
            "timed": metric(store, "api", "http_request_duration_ms_count")}
    before = counts()
    buy(store)  # two 2xx
    for method, path, _ in BAD_REQUESTS[:5]:  # five 4xx
        http(store.base, method, path)
    after = counts()
    # Other clients (the harness's readiness polls) may add 2xx meanwhile.
    assert after["4xx"] - before["4xx"] == 5, (before, after)
    assert after["2xx"] - before["2xx"] >= 2 and after["5xx"] == before["5xx"]
    assert after["timed"] - before["timed"] >= 7


def test_a_service_that_cannot_reach_the_broker_is_alive_but_not_ready(store):
    # Ready is what compose and Kubernetes wait for and route by: a service
    # still making sure of its topics, its relay and consumers not set up,
    # handles nothing. Its admin port answers from the start, so /healthz
    # says alive, but /readyz must not say ready.
    admin = f"http://127.0.0.1:{store.admin_ports['dispatch']}"
    store.stop(["dispatch"])
    process = store.processes["dispatch"]
    try:
        process.env = dict(store.env("dispatch"), KAFKA_BROKERS="127.0.0.1:1")
        process.start()

        def alive():
            try:
                return http(admin, "GET", "/healthz", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(alive, 20, "dispatch's admin port to answer")
        status, body = http(admin, "GET", "/readyz", timeout=2)
        assert (status, body) == (503, "starting: topics, relay and consumers not set up yet\n")
    finally:
        store.stop(["dispatch"])
        store.start(["dispatch"])
    assert http(admin, "GET", "/readyz", timeout=2) == (200, "ready\n")


def test_a_saga_lookup_held_by_a_lock_holds_back_no_probe_and_gives_up_in_time(store):
    # Checkout's admin port serves the probes Kubernetes restarts a pod by,
    # and the operator's saga lookups. A lookup stuck behind a lock (an
    # operator's transaction, a migration) must not hold the probes, nor wait
    # for as long as the lock: it is cancelled after 5 s, and the caller is
    # told to try again.
    key = new_key()
    assert store.checkout(key)[0] == 200
    checkout_db = store.dbs["checkout"]
    session = subprocess.Popen(["psql", checkout_db.owner_url, "-X", "-q", "-A", "-t",
                                "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        session.stdin.write("BEGIN; LOCK TABLE saga_steps IN ACCESS EXCLUSIVE MODE; "
                            "SELECT 'locked';\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == "locked"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            lookup = pool.submit(saga_admin, store, "GET", f"/sagas/{key}")
            wait_until(lambda: checkout_db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'checkout-inspect'") == "1", 10,
                "the lookup to wait on the lock")
            admin = f"http://127.0.0.1:{store.admin_ports['checkout']}"
            for path in ("/healthz", "/readyz", "/metrics"):
                try:
                    status, _ = http(admin, "GET", path, timeout=2)
                except OSError as err:
                    pytest.fail(f"GET {path} not answered while a lookup waited: {err}")
                assert status == 200, path
            assert lookup.result(timeout=30) == \
                (503, "database busy (query timed out), try again\n")
            assert session.poll() is None, "the lock went before the lookup gave up"
        session.stdin.write("ROLLBACK;\n")
        session.stdin.flush()
    finally:
        session.stdin.close()
        session.wait(timeout=10)
    assert saga_of(store, key)["saga_id"] == key


def test_the_admin_port_answers_head_and_refuses_other_methods_and_bodies(store):
    admin = f"http://127.0.0.1:{store.admin_ports['inventory']}"
    for path in ("/healthz", "/readyz", "/metrics"):
        for method in ("GET", "HEAD"):
            assert http(admin, method, path)[0] == 200, (method, path)
        req = urllib.request.Request(admin + path, method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD"
    with socket.create_connection(("127.0.0.1", store.admin_ports["inventory"]), timeout=10) as s:
        s.sendall(b"POST /crash HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        answer = s.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer
    # A chunked body could run on for ever: refused before it is read.
    with socket.create_connection(("127.0.0.1", store.admin_ports["inventory"]), timeout=10) as s:
        s.sendall(b"POST /crash HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"1000\r\n" + b"x" * 4096 + b"\r\n")
        answer = s.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 411"), answer
    assert http(admin, "GET", "/healthz")[0] == 200


def aged_inbox_row(store, days):
    """Inserts a row into payment's inbox as if handled `days` ago; returns
    its message id."""
    message_id = f"aged-{days}d-{uuid.uuid4()}"
    store.dbs["payment"].scalar(
        "INSERT INTO inbox (message_id, topic, kafka_partition, kafka_offset, handled_at) "
        f"VALUES ('{message_id}', 'payment.commands', 0, 0, now() - interval '{days} days') "
        "RETURNING message_id")
    return message_id


def inbox_ids(store):
    return {row[0] for row in store.dbs["payment"].query("SELECT message_id FROM inbox")}


def alter_topic(store, topic, *change):
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "kafka.sh"), "tool",
                    "kafka.admin.ConfigCommand", "--bootstrap-server", BROKERS, "--alter",
                    "--entity-type", "topics", "--entity-name", store.prefix + topic, *change],
                   check=True, capture_output=True, timeout=60)


def test_the_inbox_keeps_a_row_while_its_topic_may_still_hold_the_message(store):
    # payment consumes one topic, which keeps messages 7 days (retention.ms)
    # in segments closed at the latest 7 days after their first message
    # (segment.ms): a message may be read again for 14 days, so its inbox row
    # is kept that long plus an hour's margin, and then deleted.
    buy(store)
    handled = inbox_ids(store)
    old, needed = aged_inbox_row(store, 15), aged_inbox_row(store, 13)
    store.stop(["payment"])
    store.start(["payment"])  # the pruner's first run is at start
    wait_until(lambda: old not in inbox_ids(store), 30, "the 15-day-old row to be pruned")
    assert handled | {needed} <= inbox_ids(store)
    assert metric(store, "payment", "inbox_keep_seconds") == (14 * 24 + 1) * 3600
    assert metric(store, "payment", "inbox_pruned_total") == 1

    # While a consumed topic keeps messages for ever, no row goes.
    ancient = aged_inbox_row(store, 400)
    alter_topic(store, "payment.commands", "--add-config", "retention.ms=-1")
    try:
        store.stop(["payment"])
        store.start(["payment"])
        wait_until(lambda: metric(store, "payment", "inbox_keep_seconds") == -1, 30,
                   "pruning to stop for a topic kept for ever")
        assert {ancient, needed} <= inbox_ids(store)
        assert metric(store, "payment", "inbox_pruned_total") == 0
    finally:
        alter_topic(store, "payment.commands", "--delete-config", "retention.ms")
        store.dbs["payment"].scalar(
            "WITH gone AS (DELETE FROM inbox WHERE message_id LIKE 'aged-%' RETURNING 1) "
            "SELECT count(*) FROM gone")


def dead_letters(store, service, *args):
    """Runs `SERVICE dead-letters ARGS` with the service's environment."""
    return subprocess.run([os.path.join(BUILD_DIR, "services", service), "dead-letters", *args],
                          env=store.env(service), capture_output=True, text=True, timeout=120)


def letter_statuses(store, service, message_id):
    out = dead_letters(store, service, "--json")
    assert out.returncode == 0, out.stderr
    return [letter["status"] for letter in map(json.loads, out.stdout.splitlines())
            if letter["message_id"] == message_id]


def wait_dead_letter(store, service, message_type):
    """Waits for service's one dead letter of message_type; returns it."""
    def dead():
        out = dead_letters(store, service, "--json")
        assert out.returncode == 0, out.stderr
        return [letter for letter in map(json.loads, out.stdout.splitlines())
                if letter["type"] == message_type and letter["status"] == "dead"]
    [letter] = wait_until(dead, 60, f"{service}'s {message_type} dead letter")
    return letter


def wait_dead_letters(store, service, message_ids):
    """Waits up to 90 s until service has a dead letter for each of
    message_ids; returns them by message id."""
    def letters():
        out = dead_letters(store, service, "--json")
        assert out.returncode == 0, out.stderr
        found = {letter["message_id"]: letter for letter in map(json.loads, out.stdout.splitlines())
                 if letter["message_id"] in message_ids}
        return found if len(found) == len(message_ids) else None
    return wait_until(letters, 90, f"{len(message_ids)} dead letters in {service}")


@contextlib.contextmanager
def blocked(db, table, check):
    """A CHECK constraint on table while the block runs, standing in for a bug
    or a bad deploy that fails some messages every time."""
    db.query(f"ALTER TABLE {table} ADD CONSTRAINT test_blocks CHECK ({check}) NOT VALID",
             as_owner=True)
    try:
        yield
    finally:
        db.query(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS test_blocks", as_owner=True)


def failing_step(db, saga_id, event):
    """Recording event in saga_id's step history fails every time while the
    block runs, and so does the transition that records it (a constraint on
    checkout's saga_steps stands in for a bug)."""
    return blocked(db, "saga_steps", f"saga_id <> '{saga_id}' OR event <> '{event}'")


@contextlib.contextmanager
def restarted_with(store, service, **env):
    """service runs with env added for the block's duration, then as before."""
    store.stop([service])
    store.start([service], extra_env={k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        store.stop([service])
        store.start([service])


@contextlib.contextmanager
def shipments_insert_revoked(store):
    """Dispatch's role may not insert shipments while the block runs: a grant
    lost in a deployment, failing every start_dispatch alike."""
    dispatch = store.dbs["dispatch"]
    dispatch.query(f'REVOKE INSERT ON shipments FROM "{dispatch.name}"', as_owner=True)
    try:
        yield
    finally:
        dispatch.query(f'GRANT INSERT ON shipments TO "{dispatch.name}"', as_owner=True)


def checkout_order(store):
    """Checks out a new key; returns (payment_id, order_id)."""
    key = new_key()
    status, payment_id = store.checkout(key)
    assert status == 200, payment_id
    return payment_id, int(order_of(store, key))


def shipments_of(store, order_id):
    return store.dbs["dispatch"].scalar(
        f"SELECT count(*) FROM shipments WHERE order_id = {order_id}")


def wait_dispatched_once(store, order_id):
    store.wait_order_status(order_id, 1, timeout=60)
    assert shipments_of(store, order_id) == "1"


def test_a_dead_lettered_message_is_handled_once_when_redriven_after_the_fix(store):
    # Dispatch cannot store this one order's shipment (a constraint stands in
    # for a bug or a bad deploy), so its start_dispatch fails every attempt
    # and goes to the dead-letter topic while the order stays PAID. Once the
    # cause is gone, the operator lists the dead letters and redrives it.
    payment_id, order_id = checkout_order(store)
    with blocked(store.dbs["dispatch"], "shipments", f"order_id <> {order_id}"):
        status, answer = store.webhook(payment_id, "paid")
        assert status == 200 and int(answer) == order_id
        letter = wait_dead_letter(store, "dispatch", "start_dispatch")
        assert letter["topic"] == "dispatch.commands" and letter["attempts"] == 5
        assert "23514" in letter["error"], letter
        assert store.get_json(f"/order/{order_id}")["order_status"] == 2
        assert shipments_of(store, order_id) == "0"
        listing = dead_letters(store, "dispatch")
        assert listing.returncode == 0 and letter["message_id"] in listing.stdout
        # Redriven before the cause is gone, the copy fails like the original
        # and is dead-lettered again, not taken for handled.
        dead = metric(store, "dispatch", "messages_dead_lettered_total")
        out = dead_letters(store, "dispatch", "redrive", letter["message_id"])
        assert out.returncode == 0 and "redriven" in out.stdout, out.stderr
        wait_dead_lettered(store, "dispatch", dead, 1)
        assert letter_statuses(store, "dispatch", letter["message_id"]) == ["dead", "dead"]
        assert shipments_of(store, order_id) == "0"

    out = dead_letters(store, "dispatch", "redrive", letter["message_id"])
    assert out.returncode == 0 and "redriven" in out.stdout, out.stderr
    wait_dispatched_once(store, order_id)
    wait_until(lambda: letter_statuses(store, "dispatch", letter["message_id"]) ==
               ["handled", "handled"], 30, "the dead letter to show as handled")

    # Redriving again changes nothing and sends no other copy.
    again = dead_letters(store, "dispatch", "redrive", letter["message_id"])
    assert again.returncode == 0 and "already handled" in again.stdout, again.stderr
    copies = [m for m in store.dump("dispatch.commands")
              if m["type"] == "start_dispatch" and m["payload"]["order_id"] == order_id]
    assert [m["id"] for m in copies] == [letter["message_id"]] * 3

    # Unknown ids and bad usage are refused clearly.
    unknown = dead_letters(store, "dispatch", "redrive", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "no dead letter" in unknown.stderr
    assert dead_letters(store, "dispatch", "bogus").returncode == 2


def test_an_api_dead_letter_shows_handled_once_redriven(store):
    # The api's projections keep no inbox row (a snapshot applied twice
    # changes nothing), but a redriven copy gets one, so the operator sees
    # the dead letter handled rather than on its way for ever.
    payment_id, order_id = checkout_order(store)
    with blocked(store.dbs["api"], "orders", f"order_id <> {order_id} OR order_status <> 1"):
        assert store.webhook(payment_id, "paid")[0] == 200
        letter = wait_dead_letter(store, "api", "order_updated")
        assert letter["topic"] == "checkout.events" and "23514" in letter["error"], letter
        assert store.get_json(f"/order/{order_id}")["order_status"] == 2

    out = dead_letters(store, "api", "redrive", letter["message_id"])
    assert out.returncode == 0 and "redriven" in out.stdout, out.stderr
    store.wait_order_status(order_id, 1, timeout=30)
    assert letter_statuses(store, "api", letter["message_id"]) == ["handled"]
    again = dead_letters(store, "api", "redrive", letter["message_id"])
    assert again.returncode == 0 and "already handled" in again.stdout, again.stderr


def test_a_second_redriven_copy_to_the_api_is_skipped_as_a_duplicate(store):
    # Redriven twice while the api is down, a dead letter has two copies on
    # their way. The api applies the first; the second finds its inbox row
    # and is skipped at once, not failed five times into a new dead letter.
    payment_id, order_id = checkout_order(store)
    with blocked(store.dbs["api"], "orders", f"order_id <> {order_id} OR order_status <> 1"):
        assert store.webhook(payment_id, "paid")[0] == 200
        letter = wait_dead_letter(store, "api", "order_updated")
    store.stop(["api"])
    try:
        for _ in range(2):
            out = dead_letters(store, "api", "redrive", letter["message_id"])
            assert out.returncode == 0 and "redriven" in out.stdout, out.stderr
    finally:
        store.start(["api"])
    store.wait_order_status(order_id, 1, timeout=30)
    wait_until(lambda: metric(store, "api", "messages_duplicate_total") >= 1, 30,
               "the second copy to be skipped")
    assert metric(store, "api", "messages_dead_lettered_total") == 0
    assert letter_statuses(store, "api", letter["message_id"]) == ["handled"]


def test_a_forged_order_snapshot_is_dead_lettered_and_changes_nothing(store):
    # Only the checkout service writes checkout.events, but a snapshot that
    # could not come from it (a status no order has, a key or payment id that
    # would break the waiters' "KEY ANSWER" notification) must not reach the
    # read model: it is refused with its reason and dead-lettered.
    payment_id, order_id = buy(store)
    store.wait_order_status(order_id, 1, timeout=60)
    key = store.dbs["checkout"].scalar(
        f"SELECT idempotency_key FROM orders WHERE order_id = {order_id}")
    before = store.get_json(f"/order/{order_id}")
    forged = {}

    def forge(reason, **changes):
        payload = {"order_id": order_id, "idempotency_key": key, "product_id": 1,
                   "order_status": 1, "payment_id": payment_id, "reason": None,
                   "last_update_time": "2026-01-01T00:00:00Z", "version": 1000000, **changes}
        message_id = str(uuid.uuid4())
        store.produce("checkout.events", key, {
            "id": message_id, "type": "order_updated", "version": 1, "saga_id": key,
            "causation_id": None, "correlation_id": key, "occurred_at": "2026-01-01T00:00:00Z",
            "producer": "forger", "payload": payload})
        forged[message_id] = reason

    forge("order_status is not an order status", order_status=123456789)
    forge("idempotency_key is not a valid key", idempotency_key=f"{key} {payment_id}|2|1|")
    forge("payment_id is not a UUID", payment_id=f"{payment_id}|1")
    forge("out of range", order_id=0)

    for message_id, letter in wait_dead_letters(store, "api", forged).items():
        assert letter["topic"] == "checkout.events" and letter["status"] == "dead"
        assert forged[message_id] in letter["error"], letter
    assert store.get_json(f"/order/{order_id}") == before
    assert store.dbs["api"].scalar(
        f"SELECT count(*) FROM orders WHERE idempotency_key LIKE '{key}%'") == "1"
    # The partition keeps flowing: a new purchase still reaches DISPATCHED.
    _, next_order = buy(store)
    store.wait_order_status(next_order, 1, timeout=60)


def forge(store, topic, key, msg_type, payload):
    """Publishes a well-formed envelope of msg_type with payload on topic, as
    a forged or buggy producer would; returns its message id."""
    message_id = str(uuid.uuid4())
    store.produce(topic, key, {
        "id": message_id, "type": msg_type, "version": 1, "saga_id": key,
        "causation_id": None, "correlation_id": key,
        "occurred_at": "2026-01-01T00:00:00Z", "producer": "forger", "payload": payload})
    return message_id


def test_a_restock_the_inventory_cannot_apply_is_dead_lettered_and_stock_keeps_moving(store):
    # Only the api sends restocks, and always within range; one that is not
    # (a forged or buggy producer) must not hold its partition, where every
    # reservation of the product waits behind it.
    bad = {}
    for reason, payload in (("an inventory level", {"product_id": 1, "inventory": 2000000}),
                            ("an inventory level", {"product_id": 1, "inventory": -5}),
                            ("an inventory level", {"product_id": 1}),
                            ("a valid product_id", {"product_id": 0, "inventory": 100}),
                            ("a restock_id that is not a UUID",
                             {"product_id": 1, "inventory": 100, "restock_id": "1' OR 1=1"})):
        bad[forge(store, "inventory.commands", "product-1", "restock", payload)] = reason

    for message_id, letter in wait_dead_letters(store, "inventory", bad).items():
        assert letter["status"] == "dead" and bad[message_id] in letter["error"], letter
    # Nor does the api take a snapshot's restock_id that could not come from
    # inventory (it is the id a waiting restock looks up).
    snapshot = {"product_id": 1, "product": "x", "description": "x", "price": "1.00",
                "inventory": 1, "version": 1, "restock_id": "1' OR 1=1"}
    forged = forge(store, "inventory.events", "product-1", "product_updated", snapshot)
    letter = wait_dead_letters(store, "api", {forged})[forged]
    assert letter["status"] == "dead" and "restock_id is not a UUID" in letter["error"], letter
    assert http(store.base, "POST", "/restock")[0] == 200
    _, order_id = buy(store)
    store.wait_order_status(order_id, 1, timeout=60)


def test_a_payment_command_missing_what_it_needs_is_dead_lettered_and_decides_nothing(store):
    # A provider result must say paid or failed, and a payment is opened only
    # for an amount: a forged or buggy message saying less must neither fail
    # a customer's payment nor open one for nothing.
    key = new_key()
    status, payment_id = store.checkout(key)
    assert status == 200, payment_id
    order_id = order_of(store, key)
    unknown_order = 2000000000 + int(order_id)
    bad = {
        forge(store, "payment.commands", key, "provider_result", {"payment_id": payment_id}):
            "a status paid or failed",
        forge(store, "payment.commands", key, "provider_result",
              {"payment_id": payment_id, "status": "PAID"}): "a status paid or failed",
        forge(store, "payment.commands", key, "create_payment", {"order_id": unknown_order}):
            "an amount",
    }
    for message_id, letter in wait_dead_letters(store, "payment", bad).items():
        assert letter["status"] == "dead" and bad[message_id] in letter["error"], letter
    assert payment_status(store, payment_id) == "pending"
    assert store.dbs["payment"].scalar(
        f"SELECT count(*) FROM payments WHERE order_id = {unknown_order}") == "0"
    # The customer's own result still decides the order.
    assert store.webhook(payment_id, "paid") == (200, order_id)
    assert payment_status(store, payment_id) == "captured"


def behind(store, service, topic):
    """Partitions of topic where service's consumer group has not committed
    everything, as the operator's `scripts/kafka.sh lag GROUP` shows them:
    {partition: (committed offset or None, end offset)}."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "kafka.sh"), "lag",
                          store.group(service)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lagging = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == store.prefix + topic:
            committed = None if fields[3] == "-" else int(fields[3])
            end = int(fields[4])
            if (committed or 0) < end:
                lagging[int(fields[2])] = (committed, end)
    return lagging


def test_a_missing_grant_holds_messages_until_it_is_fixed_instead_of_dead_lettering_them(store):
    # A privilege lost in a deployment fails every message alike: the consumer
    # keeps retrying (with backoff) rather than sending them all to the
    # dead-letter topic, and carries on once the grant is back.
    payment_id, order_id = checkout_order(store)
    retries = metric(store, "dispatch", "handler_retries_total")
    dead = metric(store, "dispatch", "messages_dead_lettered_total")
    with shipments_insert_revoked(store):
        assert store.webhook(payment_id, "paid")[0] == 200
        wait_until(lambda: metric(store, "dispatch", "handler_retries_total") >= retries + 7, 60,
                   "dispatch to retry more often than MAX_ATTEMPTS (5)")
        assert metric(store, "dispatch", "messages_dead_lettered_total") == dead
        assert store.get_json(f"/order/{order_id}")["order_status"] == 2
        # The operator sees the held message as lag, with the broker's tool
        # and on /metrics.
        assert behind(store, "dispatch", "dispatch.commands")
        wait_until(lambda: metric(store, "dispatch", "consumer_lag_messages") >= 1, 30,
                   "the lag gauge to count the held message")
    wait_dispatched_once(store, order_id)
    assert metric(store, "dispatch", "messages_dead_lettered_total") == dead
    wait_until(lambda: not behind(store, "dispatch", "dispatch.commands"), 30,
               "dispatch to catch up")
    wait_until(lambda: metric(store, "dispatch", "consumer_lag_messages") == 0, 30,
               "the lag gauge to fall back to 0")


def test_an_outage_longer_than_the_poll_interval_ends_with_the_consumer_back_in_its_group(store):
    # A database fault that outlasts KAFKA_MAX_POLL_INTERVAL_MS (5 minutes by
    # default; 3 s here) makes the group count the stuck consumer gone. Once
    # the fault is fixed, the message is applied, the consumer rejoins, the
    # redelivery that follows is skipped by the inbox, and later messages flow.
    with restarted_with(store, "dispatch", KAFKA_MAX_POLL_INTERVAL_MS=3000):
        payment_id, order_id = checkout_order(store)
        retries = metric(store, "dispatch", "handler_retries_total")
        with shipments_insert_revoked(store):
            assert store.webhook(payment_id, "paid")[0] == 200
            # Eight retries with backoff from 50 ms take over 6 s.
            wait_until(lambda: metric(store, "dispatch", "handler_retries_total") >= retries + 8,
                       60, "dispatch to stay on the message past its poll interval")
        wait_dispatched_once(store, order_id)
        payment_id, later = checkout_order(store)
        assert store.webhook(payment_id, "paid")[0] == 200
        wait_dispatched_once(store, later)
        wait_until(lambda: not behind(store, "dispatch", "dispatch.commands"), 30,
                   "dispatch to commit everything")
        assert shipments_of(store, order_id) == "1"


def test_a_connection_left_read_only_is_replaced_once_writes_are_possible_again(store):
    # As after a failover, dispatch's new connections land where writes are
    # refused (SQLSTATE 25006). It retries; once writes are possible again,
    # it must not stay on the connection it had, but take a new one.
    payment_id, order_id = checkout_order(store)
    dispatch = store.dbs["dispatch"]
    retries = metric(store, "dispatch", "handler_retries_total")
    dispatch.query(f'ALTER DATABASE "{dispatch.name}" SET default_transaction_read_only = on',
                   as_owner=True)
    try:
        dispatch.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert store.webhook(payment_id, "paid")[0] == 200
        wait_until(lambda: metric(store, "dispatch", "handler_retries_total") >= retries + 3, 60,
                   "dispatch to be refused writes and retry")
        assert store.get_json(f"/order/{order_id}")["order_status"] == 2
    finally:
        dispatch.query(f'BEGIN READ WRITE; ALTER DATABASE "{dispatch.name}" '
                       "RESET default_transaction_read_only; COMMIT", as_owner=True)
    wait_dispatched_once(store, order_id)


ROLE_CANNOT = {
    "common": ["UPDATE inbox SET outcome = outcome WHERE false",
               "UPDATE outbox SET topic = topic WHERE false",
               "INSERT INTO schema_migrations (version) VALUES ('intruder')",
               "DELETE FROM schema_migrations WHERE false"],
    "checkout": ["UPDATE saga_steps SET attempt = attempt WHERE false",
                 "DELETE FROM saga_steps WHERE false", "DELETE FROM sagas WHERE false",
                 "DELETE FROM orders WHERE false"],
    "api": ["DELETE FROM orders WHERE false", "DELETE FROM products WHERE false",
            "UPDATE checkout_requests SET idempotency_key = idempotency_key WHERE false"],
    "inventory": ["DELETE FROM products WHERE false", "DELETE FROM reservations WHERE false",
                  "INSERT INTO products SELECT * FROM products WHERE false"],
    "payment": ["DELETE FROM payments WHERE false"],
    "dispatch": ["DELETE FROM shipments WHERE false"],
}


def test_each_service_role_may_only_read_and_write_rows_of_its_own_database(store):
    for service, db in store.dbs.items():
        for sql in ("DROP TABLE inbox", "TRUNCATE inbox", "ALTER TABLE inbox ADD COLUMN x int",
                    "CREATE TABLE intruder (id int)"):
            with pytest.raises(subprocess.CalledProcessError) as refused:
                db.query(sql)
            assert re.search(r"must be owner|permission denied", refused.value.stderr), \
                f"{service}: {sql}: {refused.value.stderr}"
        assert db.scalar("SELECT count(*) >= 0 FROM inbox") == "t"
        # Within its tables, only what the service does (sql/*/privileges.sql):
        # an audit trail cannot be rewritten, nor a row deleted that never is.
        for sql in ROLE_CANNOT["common"] + ROLE_CANNOT[service]:
            with pytest.raises(subprocess.CalledProcessError) as refused:
                db.query(sql)
            assert "permission denied" in refused.value.stderr, f"{service}: {sql}"
        other = store.dbs["api" if service != "api" else "checkout"]
        url = db.url.rsplit("/", 1)[0] + "/" + other.url.rsplit("/", 1)[1]
        denied = subprocess.run(["psql", url, "-X", "-c", "SELECT 1"], capture_output=True,
                                text=True, timeout=30)
        assert denied.returncode != 0 and "permission denied" in denied.stderr, denied.stderr


def test_provisioning_again_gives_no_service_role_back_what_it_may_not_do(store):
    # scripts/pg.sh provisions on every start, and Kubernetes' db-setup Job
    # on every apply, while the services run on: that must not give a
    # service's role back the rights its privileges.sql took away.
    for service, db in store.dbs.items():
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "pg.sh"), "createdb", db.name],
                       check=True, stdout=subprocess.DEVNULL)
        for sql in ROLE_CANNOT["common"] + ROLE_CANNOT[service]:
            with pytest.raises(subprocess.CalledProcessError) as refused:
                db.query(sql)
            assert "permission denied" in refused.value.stderr, f"{service}: {sql}"
    # What each service does, it still may.
    _, order_id = buy(store)
    store.wait_order_status(order_id, 1, timeout=60)


def listening_addresses(port):
    """Local addresses with a TCP socket listening on port, from /proc/net."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port and len(address) == width:
                    found.add(address)
    return found


def test_admin_ports_listen_on_loopback_only_by_default(store):
    # They can crash a service and resume sagas: not for other hosts unless
    # ADMIN_ADDRESS says so (k8s/ does, behind its network policies).
    loopback = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
    for service in ("api", "checkout", "inventory", "payment", "dispatch"):
        assert listening_addresses(store.admin_ports[service]) == {loopback}, service
    # The api's store port is for everyone.
    assert listening_addresses(store.http_port) != {loopback}


def test_writers_wake_the_relay_and_waiting_requests_by_notification(store):
    # Waits must not depend on the fallback polls: the notification sent after
    # each outbox writer's commit wakes its relay, and the one sent after each
    # read-model change wakes the waiting request, carrying the order's answer
    # so that the request need not read the row again.
    before = {s: metric(store, s, "outbox_notifications_total") for s in ("api", "checkout")}
    model_before = metric(store, "api", "read_model_notifications_total")
    answers_before = metric(store, "api", "read_model_notified_answers_total")
    buy(store)
    for service, count in before.items():
        assert metric(store, service, "outbox_notifications_total") > count, service
    assert metric(store, "api", "read_model_notifications_total") > model_before
    assert metric(store, "api", "read_model_notified_answers_total") > answers_before


class Listener:
    """A psql session LISTENing on channel; lines holds what it printed."""

    def __init__(self, url, channel):
        self.proc = subprocess.Popen(["psql", url, "-X", "-q", "-A", "-t"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        self.send(f"LISTEN {channel};")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def send(self, sql):
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()

    def payloads(self):
        """The payloads received so far (psql prints them after each command)."""
        self.send("SELECT 1;")
        return [m.group(1) for m in map(re.compile(r'with payload "(.*)" received').search,
                                        list(self.lines)) if m]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def test_notified_answers_are_what_the_waits_read_from_the_row(store):
    # A woken request trusts the answer in the notification instead of the
    # row, so the projection must write it exactly as ORDER_ANSWER_SQL reads
    # it: "payment_id|order_status|order_id|reason".
    answer_sql = ("SELECT coalesce(payment_id, '') || '|' || order_status || '|' || order_id "
                  "|| '|' || coalesce(reason, '') FROM orders WHERE idempotency_key = '{}'")
    listener = Listener(store.dbs["api"].url, "read_model")
    try:
        key = new_key()
        status, payment_id = store.checkout(key)
        assert status == 200, payment_id
        status, order_id = store.webhook(payment_id, "paid")
        assert status == 200, order_id
        store.wait_order_status(order_id, 1)  # dispatched: the last snapshot
        row_answer = store.scalar("api", answer_sql.format(key))
        assert row_answer == f"{payment_id}|1|{order_id}|"
        prefix = f"order:{key} "
        answers = []

        def row_answer_notified():
            answers[:] = [p[len(prefix):] for p in listener.payloads() if p.startswith(prefix)]
            return row_answer in answers

        wait_until(row_answer_notified, 10, "the notification of the dispatched order")
        # Every earlier snapshot's answer has the same shape and order.
        for answer in answers:
            paid, status_text, order_text, reason = answer.split("|", 3)
            assert paid in ("", payment_id) and status_text in ("0", "2", "1"), answer
            assert order_text == order_id and reason == "", answer
    finally:
        listener.close()


def test_restock_is_confirmed_while_purchases_take_stock(store):
    # The restock answers once its command is applied, even if concurrent
    # purchases have already taken the level below what it set (the read
    # model may never show the level itself).
    with concurrent.futures.ThreadPoolExecutor(max_workers=9) as pool:
        buys = [pool.submit(store.checkout, new_key()) for _ in range(8)]
        restock = pool.submit(http, store.base, "POST", "/restock")
        buys += [pool.submit(store.checkout, new_key()) for _ in range(8)]
        status, body = restock.result()
        assert status == 200, body
        assert json.loads(body) == {"message": "Restocked successfully"}
        for buy in buys:
            assert buy.result()[0] in (200, 409)


def test_a_restock_is_confirmed_only_once_inventory_has_applied_it(store):
    # The read model already showing the level a restock sets is not
    # inventory applying it: with inventory down the restock is not
    # confirmed, however the read model looks, and inventory applies it (and
    # acknowledges it) once it is back.
    assert http(store.base, "POST", "/restock")[0] == 200
    level = max(store.get_json("/product")["inventory"], 1)
    api_db = store.dbs["api"]
    old_ack = str(uuid.uuid4())
    api_db.query(f"INSERT INTO restock_acks VALUES ('{old_ack}', now() - interval '25 hours')",
                 as_owner=True)
    acks = int(api_db.scalar("SELECT count(*) FROM restock_acks"))
    store.stop(["inventory"])
    try:
        with restarted_with(store, "api", API_WAIT_MS=2000, API_RESTOCK_LEVEL=level):
            status, body = http(store.base, "POST", "/restock")
            assert (status, body) == (504, "Restock sent but not confirmed yet\n")
            store.start(["inventory"])
            wait_until(lambda: http(store.base, "POST", "/restock")[0] == 200, 60,
                       "a restock confirmed with inventory back", interval=0)
    finally:
        if not store.processes["inventory"].alive():
            store.start(["inventory"])
    # Both restocks were applied and acknowledged, the unconfirmed one too;
    # an ack no call can still be waiting for went.
    assert api_db.scalar(f"SELECT count(*) FROM restock_acks WHERE restock_id = '{old_ack}'") == "0"
    assert int(api_db.scalar("SELECT count(*) FROM restock_acks")) >= acks - 1 + 2


def test_a_replayed_restock_snapshot_brings_no_pruned_ack_back(store):
    # Invariant 5: a replay changes no row. Acks over a day old are pruned,
    # and a snapshot that old is what a replay of inventory.events hands the
    # api: it must not leave its ack again, where only the next ack would
    # prune it.
    restock_id = str(uuid.uuid4())
    snapshot = {"product_id": 1, "product": "x", "description": "x", "price": "1.00",
                "inventory": 1, "version": 1, "restock_id": restock_id}
    before = store.get_json("/product")
    forge(store, "inventory.events", "product-1", "product_updated", snapshot)
    # A restock confirmed is a snapshot projected after the forged one, on
    # the same partition (key product-1).
    assert http(store.base, "POST", "/restock")[0] == 200
    api_db = store.dbs["api"]
    assert api_db.scalar(
        f"SELECT count(*) FROM restock_acks WHERE restock_id = '{restock_id}'") == "0"
    assert api_db.scalar("SELECT product FROM products WHERE product_id = 1") == before["product"]


def test_an_order_not_in_dispatch_yet_shows_every_dispatch_step_to_go(store):
    # Before dispatch starts, an order has DISPATCH_STEPS steps to go, as the
    # api is told, not a fixed 10; the page's bar counts as many.
    with restarted_with(store, "api", DISPATCH_STEPS=4):
        key = new_key()
        status, payment_id = store.checkout(key)
        assert status == 200, payment_id
        order_id = order_of(store, key)
        assert store.get_json(f"/order/{order_id}")["progress_remaining"] == 4
        listed = [o for o in store.get_json("/orders") if o["order_id"] == int(order_id)]
        assert [o["progress_remaining"] for o in listed] == [4]
        status, page = http(store.base, "GET", "/")
        assert status == 200 and 'const STEPS = Number("4") || 10,' in page, page[:200]
    assert store.webhook(payment_id, "failed")[0] == 200


def saga_admin(store, method, path):
    return http(f"http://127.0.0.1:{store.admin_ports['checkout']}", method, path)


def saga_of(store, key):
    status, body = saga_admin(store, "GET", f"/sagas/{key}")
    assert status == 200, body
    return json.loads(body)


def parking_after_one_round(store):
    """Checkout, for the block's duration, parks a saga whose compensations
    are still unconfirmed at the first resend."""
    return restarted_with(store, "checkout", COMPENSATION_MAX_ROUNDS=1)


PARKED = 'sagas{state="compensation_failed"}'


def wait_dead_lettered(store, service, before, count):
    """Waits until service has dead-lettered count messages since its
    messages_dead_lettered_total read before. A test that parks a saga behind
    a blocked table waits for this before lifting the block: a command still
    in its consumer's retries would otherwise succeed and close the saga."""
    wait_until(lambda: metric(store, service, "messages_dead_lettered_total") >= before + count,
               30, f"{count} message(s) dead-lettered by {service}")


def wait_parked(store, key):
    def parked():
        status, body = saga_admin(store, "GET", "/sagas/state/compensation_failed")
        assert status == 200, body
        return [saga for saga in json.loads(body) if saga["saga_id"] == key]
    [saga] = wait_until(parked, 60, "the saga to be parked")
    return saga


def test_a_parked_saga_is_visible_and_an_operator_resumes_it(store):
    # Inventory cannot release this one order's stock (a constraint stands in
    # for a bug), so its release_stock commands are dead-lettered and, after
    # its round of resends, checkout parks the saga as compensation_failed.
    # Once the cause is fixed, the operator resumes it: the release is sent
    # again and the saga ends cancelled with its stock returned.
    with parking_after_one_round(store):
        key = new_key()
        status, payment_id = store.checkout(key)
        assert status == 200, payment_id
        order_id = int(order_of(store, key))
        dead = metric(store, "inventory", "messages_dead_lettered_total")
        with blocked(store.dbs["inventory"], "reservations",
                     f"order_id <> {order_id} OR status <> 'released'"):
            status, answer = store.webhook(payment_id, "failed")
            assert status == 200 and int(answer) == order_id
            saga = wait_parked(store, key)
            assert saga["compensation"]["stock_released"] is False
            assert store.get_json(f"/order/{order_id}")["order_status"] == -1
            # Parked for an operator, and staying so: nothing is resent.
            assert saga_of(store, key)["timers"] == []
            # ... and counted on /metrics, for an alert.
            wait_until(lambda: metric(store, "checkout", PARKED) == 1, 30,
                       "the parked saga to be counted")
            # Its one release_stock (no resend in one round) is given up.
            wait_dead_lettered(store, "inventory", dead, 1)

        status, body = saga_admin(store, "POST", f"/sagas/{key}/resume")
        assert status == 200, body
        resumed = json.loads(body)
        assert resumed["state"] == "compensating" and resumed["compensation"]["attempts"] == 0
        assert resumed["steps"][-1]["event"] == "operator_resume"
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 60,
                   "the resumed saga to end cancelled")
        saga = saga_of(store, key)
        assert saga["compensation"]["stock_released"] and saga["compensation"]["payment_voided"]
        wait_until(lambda: metric(store, "checkout", PARKED) == 0, 30,
                   "the parked count to fall back")

        # Only a parked saga can be resumed, and an unknown one is named so.
        status, body = saga_admin(store, "POST", f"/sagas/{key}/resume")
        assert status == 409 and "not parked" in body
        assert saga_admin(store, "POST", f"/sagas/{new_key()}/resume")[0] == 404
        assert saga_admin(store, "POST", f"/sagas/{key}/bogus")[0] == 404


def test_a_parked_saga_ends_cancelled_when_its_confirmation_comes_late(store):
    # Inventory is down past the saga's rounds of resends, so the saga is
    # parked; once inventory is back, the release commands waiting in its
    # topic are handled and the late confirmation closes the saga, with no
    # operator.
    with parking_after_one_round(store):
        key = new_key()
        status, payment_id = store.checkout(key)
        assert status == 200, payment_id
        store.stop(["inventory"])
        try:
            assert store.webhook(payment_id, "failed")[0] == 200
            assert wait_parked(store, key)["compensation"]["stock_released"] is False
        finally:
            store.start(["inventory"])
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 60,
                   "the late confirmation to close the saga")
        assert saga_of(store, key)["compensation"]["stock_released"] is True


def test_a_compensation_after_a_long_expiry_gets_its_own_round_of_resends(store):
    # Payment is down when the provider's failure comes, and stays down while
    # the payment timeout falls due and checkout resends its expiry a few
    # times. When payment is back it reads the failure first, so the saga
    # compensates; that compensation must get its full round of resends (here
    # COMPENSATION_MAX_ROUNDS=2: one resend, then parked), not inherit the
    # count the expiry ran up and be parked at its first timer.
    retries = {"COMPENSATION_MAX_ROUNDS": "2", "COMPENSATION_RETRY_MS": "200"}
    with restarted_with(store, "checkout", **retries):
        key = new_key()
        status, payment_id = store.checkout(key)
        assert status == 200, payment_id
        order_id = int(order_of(store, key))
        # Checkout stays down until the failure waits in payment.commands, so
        # its payment timeout cannot queue the expiry ahead of the failure
        # however long the host stalls (the timer is a row; it fires late).
        store.stop(["payment", "checkout"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                answer = pool.submit(store.webhook, payment_id, "failed")
                wait_until(lambda: any(
                    m["type"] == "provider_result" and m["payload"]["payment_id"] == payment_id
                    for m in store.dump("payment.commands")), 20,
                    "the provider's failure to wait in payment.commands")
                store.start(["checkout"], extra_env=retries)
                def expiry_resent_twice():
                    saga = saga_of(store, key)
                    return saga["state"] == "expiring_payment" and \
                        saga["compensation"]["attempts"] >= 2
                wait_until(expiry_resent_twice, PAYMENT_TIMEOUT_MS / 1000 + 20,
                           "the expiry to be resent twice")
                dead = metric(store, "inventory", "messages_dead_lettered_total")
                with blocked(store.dbs["inventory"], "reservations",
                             f"order_id <> {order_id} OR status <> 'released'"):
                    store.start(["payment"])
                    saga = wait_parked(store, key)
                    # The release_stock and its one resend are both given up.
                    wait_dead_lettered(store, "inventory", dead, 2)
            finally:
                store.start([service for service in ["payment"] if service not in store.wanted])
            assert answer.result() == (200, str(order_id))
        steps = [tuple(step) for step in store.dbs["checkout"].query(
            "SELECT event, state_from, state_to FROM saga_steps "
            f"WHERE saga_id = '{key}' ORDER BY step_id")]
        events = [event for (event, _, _) in steps]
        compensation = steps[events.index("payment_failed"):]
        assert compensation[0][1:] == ("expiring_payment", "compensating"), steps
        assert [step for step in compensation if step[0] == "compensation_retry"] == [
            ("compensation_retry", "compensating", "compensating"),
            ("compensation_retry", "compensating", "compensation_failed")], steps
        assert saga["compensation"]["attempts"] == 2

        status, body = saga_admin(store, "POST", f"/sagas/{key}/resume")
        assert status == 200, body
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 60,
                   "the resumed saga to end cancelled")
        assert store.get_json(f"/order/{order_id}")["order_status"] == -1


STEP_TIMEOUT = {"STEP_TIMEOUT_MS": "3000"}


def test_a_checkout_inventory_never_answers_is_cancelled_at_the_step_timeout(store):
    # Inventory is down past checkout's step timeout: the order is cancelled,
    # and the waiting call answers 409 with the reason, instead of the order
    # staying pending for ever. Once inventory is back it handles the
    # reservation, then the release that followed it, so the stock ends where
    # it was.
    before = inventory(store)
    with restarted_with(store, "checkout", **STEP_TIMEOUT):
        key = new_key()
        store.stop(["inventory"])
        try:
            status, body = store.checkout(key)
            assert status == 409, body
            assert "inventory did not answer in time" in body
            assert saga_of(store, key)["state"] == "compensating"
        finally:
            store.start(["inventory"])
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 30,
                   "the release to be confirmed")
        wait_until(lambda: inventory(store) == before, 20, "the stock to come back")
        events = [step["event"] for step in saga_of(store, key)["steps"]]
        assert "step_timeout" in events and "stock_reserved" in events, events


def test_a_checkout_payment_never_answers_is_cancelled_and_the_late_payment_voided(store):
    # Checkout has just restarted, so it knows no price: it reserves, then
    # asks payment, which is down past the step timeout. The order is
    # cancelled and its stock returned; when payment is back it opens the
    # payment and voids it at once, as the cancel came after the create.
    before = inventory(store)
    with restarted_with(store, "checkout", **STEP_TIMEOUT):
        key = new_key()
        store.stop(["payment"])
        try:
            status, body = store.checkout(key)
            assert status == 409, body
            assert "payment did not answer in time" in body
            wait_until(lambda: inventory(store) == before, 20, "the stock to come back")
        finally:
            store.start(["payment"])
        wait_payment_voided(store, order_of(store, key), "opened after the cancellation")
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 30,
                   "the void to be confirmed")
        assert store.dbs["checkout"].scalar(
            f"SELECT payment_id IS NULL FROM orders WHERE idempotency_key = '{key}'") == "t"


def test_a_payment_opened_by_a_redrive_after_the_saga_gave_up_is_cancelled_from_the_start(store):
    # Payment cannot open this checkout's payment (a constraint stands in for
    # a bug), so its create_payment is dead-lettered and checkout gives up at
    # the step timeout: the cancel reaches payment before any payment exists,
    # and payment remembers it. When the operator redrives the create after
    # the fix, it finds that cancelled payment: nothing is left pending, and
    # payable, for an order that was cancelled.
    before = inventory(store)
    with restarted_with(store, "checkout", **STEP_TIMEOUT):
        key = new_key()
        with blocked(store.dbs["payment"], "payments",
                     f"saga_id <> '{key}' OR status <> 'pending'"):
            status, body = store.checkout(key)
            assert status == 409 and "payment did not answer in time" in body, body
            order_id = int(order_of(store, key))
            [create] = [m["id"] for m in store.dump("payment.commands")
                        if m["type"] == "create_payment" and m["payload"]["order_id"] == order_id]
            wait_until(lambda: letter_statuses(store, "payment", create) == ["dead"], 60,
                       "the create_payment to be dead-lettered")
            wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 30,
                       "the cancel to be confirmed")
        payments = f"SELECT status, amount::text FROM payments WHERE order_id = {order_id}"
        assert store.dbs["payment"].query(payments) == [["cancelled", "0.00"]]
        out = dead_letters(store, "payment", "redrive", create)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: letter_statuses(store, "payment", create) == ["handled"], 30,
                   "the redriven create to be handled")
        assert store.dbs["payment"].query(payments) == [["cancelled", "0.00"]]
        assert saga_of(store, key)["state"] == "cancelled"
        wait_until(lambda: inventory(store) == before, 20, "the stock to come back")


def test_answers_that_piled_up_while_checkout_was_down_beat_its_step_timeout(store):
    # The reservation is made while checkout is down, for longer than the
    # step timeout. Restarted, checkout reads the answer waiting in its topic
    # before it gives up on any step, so the order goes on to be paid.
    with restarted_with(store, "checkout", **STEP_TIMEOUT):
        key = new_key()
        store.stop(["inventory"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                pool.submit(store.checkout, key)
                wait_until(lambda: store.dbs["checkout"].scalar(
                    f"SELECT count(*) FROM sagas WHERE saga_id = '{key}'") == "1", 20,
                    "the saga to start")
                store.stop(["checkout"])
                order_id = int(order_of(store, key))
                store.start(["inventory"])
                wait_until(lambda: store.dbs["inventory"].scalar(
                    f"SELECT count(*) FROM reservations WHERE order_id = {order_id} "
                    "AND status = 'reserved'") == "1", 20, "the stock to be reserved")
                wait_until(lambda: store.dbs["checkout"].scalar(
                    "SELECT updated_at < now() - interval '4 seconds' FROM sagas "
                    f"WHERE saga_id = '{key}'") == "t", 20, "the step to be overdue")
            finally:
                for service in ["inventory", "checkout"]:
                    if service not in store.wanted:
                        store.start([service], extra_env=STEP_TIMEOUT)
        wait_until(lambda: saga_of(store, key)["state"] == "awaiting_payment", 30,
                   "the saga to read the reservation")
        # The same key asked again answers the order's payment.
        status, payment_id = store.checkout(key)
        assert status == 200, payment_id
        assert store.webhook(payment_id, "paid")[0] == 200
        store.wait_order_status(order_id, 1)
        events = [step["event"] for step in saga_of(store, key)["steps"]]
        assert "step_timeout" not in events, events


BACKLOG_KEYS = "LIKE 'backlog-%'"  # the backlog's saga ids, which are its orders' keys
BACKLOG = f"saga_id {BACKLOG_KEYS}"


@contextlib.contextmanager
def due_timer_backlog(db, sagas=20000):
    """Two due timers for each of sagas finished sagas, which checkout's
    timer thread only clears: a backlog of timers, for the block's duration."""
    try:
        # Each table analysed once filled: planned for the few rows of a
        # fresh database, the foreign-key checks would scan it for every row.
        db.query("INSERT INTO orders (idempotency_key, product_id, order_status) "
                 f"SELECT 'backlog-' || i, 1, 2 FROM generate_series(1, {sagas}) i; "
                 "ANALYZE orders", as_owner=True)
        db.query("INSERT INTO sagas (saga_id, order_id, definition_version, state) "
                 "SELECT idempotency_key, order_id, 2, 'completed' FROM orders "
                 f"WHERE idempotency_key {BACKLOG_KEYS}; ANALYZE sagas", as_owner=True)
        db.query("INSERT INTO timers (saga_id, kind, fire_at) "
                 "SELECT saga_id, kind, now() - interval '1 hour' FROM sagas, "
                 "(VALUES ('payment_timeout'), ('compensation_retry')) AS k (kind) "
                 f"WHERE {BACKLOG}", as_owner=True)
        yield
    finally:
        # Sagas first, then their timers: checkout's lock order.
        db.query(f"WITH locked AS (SELECT 1 FROM sagas WHERE {BACKLOG} FOR UPDATE) "
                 "SELECT count(*) FROM locked; "
                 f"DELETE FROM timers WHERE {BACKLOG}; DELETE FROM sagas WHERE {BACKLOG}; "
                 f"DELETE FROM orders WHERE idempotency_key {BACKLOG_KEYS}", as_owner=True)


def backlog_left(db):
    return int(db.scalar(f"SELECT count(*) FROM timers WHERE {BACKLOG}"))


def test_a_backlog_of_due_timers_does_not_hold_back_the_step_timeout(store):
    # Tens of thousands of durable timers are due at once while inventory is
    # down. Checkout takes turns between the backlog and the overdue step, so
    # the order is cancelled at the step timeout, not after the last timer.
    db = store.dbs["checkout"]
    with restarted_with(store, "checkout", **STEP_TIMEOUT), due_timer_backlog(db):
        key = new_key()
        store.stop(["inventory"])
        try:
            status, body = store.checkout(key)
            left = backlog_left(db)
        finally:
            store.start(["inventory"])
        assert status == 409 and "inventory did not answer in time" in body, body
        assert left > 0, "the backlog was gone before the order was cancelled"
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 30,
                   "the release to be confirmed")


def test_a_step_timeout_that_keeps_failing_does_not_hold_back_due_timers(store):
    # Giving up on an overdue saga fails every time (a constraint on its step
    # history stands in for a bug). The due timers behind it still fire, and
    # once the cause is gone the order is cancelled.
    db = store.dbs["checkout"]
    key = new_key()
    with restarted_with(store, "checkout", **STEP_TIMEOUT), due_timer_backlog(db, 50000):
        store.stop(["inventory"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                with failing_step(db, key, "step_timeout"):
                    call = pool.submit(store.checkout, key)
                    wait_until(lambda: db.scalar(
                        f"SELECT updated_at < now() - interval '4 seconds' FROM sagas "
                        f"WHERE saga_id = '{key}'") == "t", 20, "the saga to be overdue")
                    before = backlog_left(db)
                    wait_until(lambda: backlog_left(db) < before - 1000, 20,
                               "due timers to fire behind the failing step timeout")
                    assert saga_of(store, key)["state"] == "reserving"
                wait_until(lambda: saga_of(store, key)["state"] != "reserving", 20,
                           "the step timeout to go through once it can")
            finally:
                store.start(["inventory"])
            wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 30,
                       "the release to be confirmed")
            call.result()
    events = [step["event"] for step in saga_of(store, key)["steps"]]
    assert "step_timeout" in events, events


def test_a_payment_timeout_that_keeps_failing_does_not_hold_back_later_ones(store):
    # Firing one saga's payment timeout fails every time (a constraint on its
    # step history stands in for a bug). Checkout passes that saga over for
    # a while after each failure, so the payment timeout of a saga due after
    # it still fires; once the cause is gone, the first one fires too.
    db = store.dbs["checkout"]
    first, second = new_key(), new_key()
    with failing_step(db, first, "payment_timeout"):
        for key in (first, second):
            status, body = store.checkout(key)
            assert status == 200, body
        wait_until(lambda: saga_of(store, second)["state"] == "cancelled",
                   PAYMENT_TIMEOUT_MS / 1000 + 20, "the later payment timeout to fire")
        assert saga_of(store, first)["state"] == "awaiting_payment"
        assert db.scalar("SELECT count(*) FROM timers WHERE kind = 'payment_timeout' "
                         f"AND saga_id = '{first}' AND fire_at <= now()") == "1"
    wait_until(lambda: saga_of(store, first)["state"] == "cancelled", 20,
               "the first payment timeout to fire once it can")


def test_a_step_timeout_that_keeps_failing_does_not_hold_back_other_overdue_steps(store):
    # Giving up on one overdue saga fails every time (as above). Another saga
    # overdue after it is still given up on at its step timeout, and its
    # call answered 409, not left waiting behind the first.
    db = store.dbs["checkout"]
    first, second = new_key(), new_key()
    with restarted_with(store, "checkout", **STEP_TIMEOUT):
        store.stop(["inventory"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                with failing_step(db, first, "step_timeout"):
                    call = pool.submit(store.checkout, first)
                    wait_until(lambda: db.scalar(
                        f"SELECT count(*) FROM sagas WHERE saga_id = '{first}'") == "1", 20,
                        "the first saga to start")
                    status, body = store.checkout(second)
                    assert status == 409 and "inventory did not answer in time" in body, body
                    assert saga_of(store, first)["state"] == "reserving"
                wait_until(lambda: saga_of(store, first)["state"] != "reserving", 20,
                           "the first step timeout to go through once it can")
            finally:
                store.start(["inventory"])
            status, body = call.result()
            assert status == 409 and "inventory did not answer in time" in body, body
    for key in (first, second):
        wait_until(lambda: saga_of(store, key)["state"] == "cancelled", 30,
                   "the release to be confirmed")


def test_a_locked_table_holds_only_its_readers_and_them_only_until_the_timeout(store):
    # The api's HTTP threads never wait on the database: requests that need
    # it queue for a database worker (API_DB_POOL of them). So while a table
    # is locked, more readers of it than there are HTTP threads (4) hold
    # nothing but workers: the page, /healthz and /metrics are answered at
    # once. And a worker is held no longer than API_DB_TIMEOUT_MS (5 s): the
    # server cancels the statement and the reader gets 503 + Retry-After,
    # saying the database is busy (not gone), while the lock is still there; the 4 readers queued behind the 8
    # workers get theirs one timeout later.
    session = subprocess.Popen(["psql", store.dbs["api"].owner_url, "-X", "-q", "-A", "-t",
                                "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    session.stdin.write("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
    session.stdin.flush()
    assert session.stdout.readline().strip() == "locked"

    def waiting_on_the_lock():
        return int(store.scalar("api", "SELECT count(*) FROM pg_stat_activity WHERE "
                                "datname = current_database() AND wait_event_type = 'Lock'"))

    def timed_read():
        started = time.monotonic()
        status, body = http(store.base, "GET", "/orders", None, 60)
        return status, body, time.monotonic() - started

    readers = 12
    try:
        with concurrent.futures.ThreadPoolExecutor(readers) as pool:
            held = [pool.submit(timed_read) for _ in range(readers)]
            wait_until(lambda: waiting_on_the_lock() >= 4, 30, "readers to wait on the lock")
            for path in ("/", "/healthz", "/metrics"):
                try:
                    status, _ = http(store.base, "GET", path, timeout=3)
                except OSError as err:
                    pytest.fail(f"GET {path} not answered while the table was locked: {err}")
                assert status == 200, path
            assert not any(f.done() for f in held)
            answers = [f.result(timeout=40) for f in held]
            print("readers answered after", sorted(round(a[2], 1) for a in answers), "s")
            assert [(a[0], a[1]) for a in answers] == \
                [(503, "Database busy (query timed out), try again\n")] * readers
            assert session.poll() is None and waiting_on_the_lock() == 0
        session.stdin.write("ROLLBACK;\n")
        session.stdin.flush()
        assert http(store.base, "GET", "/orders", timeout=10)[0] == 200
    finally:
        session.stdin.close()
        session.wait(timeout=10)

"""Crash points: for each named fault-injection point, the service is killed
there (SIGKILL, from inside, at exactly that instant) during a purchase, is
restarted like a supervisor would, and the purchase still ends correctly with
every effect exactly once (invariants 1-4 and 6 checked after each; replay
checked once at the end)."""

import uuid

import pytest

from harness import wait_until
from stack import Stack

# (service, crash point, how the purchase goes)
CRASH_POINTS = [
    ("api", "consumer.after_commit", "paid"),
    ("api", "relay.after_publish", "paid"),
    ("checkout", "consumer.before_commit", "paid"),
    ("checkout", "consumer.after_commit", "paid"),
    ("checkout", "relay.after_publish", "paid"),
    ("checkout", "checkout.in_compensation", "failed"),
    ("checkout", "checkout.timer_before_commit", "timeout"),
    ("inventory", "consumer.after_commit", "paid"),
    ("inventory", "relay.after_publish", "paid"),
    ("inventory", "inventory.after_reserve", "paid"),
    ("payment", "consumer.after_commit", "paid"),
    ("payment", "relay.after_publish", "paid"),
    ("payment", "payment.after_capture", "paid"),
    ("dispatch", "consumer.after_commit", "paid"),
    ("dispatch", "relay.after_publish", "paid"),
    ("dispatch", "dispatch.step_before_commit", "paid"),
]


@pytest.fixture(scope="module")
def stack():
    # Recovery from a kill takes a second or two; keep the payment timeout
    # well above it so a paid purchase is not cancelled meanwhile.
    stack = Stack(PAYMENT_TIMEOUT_MS=15000)
    stack.start()
    stack.supervise()
    yield stack
    stack.check_replay_changes_nothing()
    stack.close()


@pytest.mark.parametrize("service,point,outcome", CRASH_POINTS,
                         ids=[f"{s}-{p}" for s, p, _ in CRASH_POINTS])
def test_kill_at_crash_point_during_a_purchase_still_ends_right_exactly_once(
        stack, service, point, outcome):
    stack.wait_quiet()
    before_stock = stack.get_json("/product")["inventory"]
    restarts = stack.restarts[service]
    stack.stop([service])
    stack.start([service], extra_env={"CRASH_AT": point})

    status, payment_id = stack.call_retrying("POST", f"/checkout/crash-{uuid.uuid4()}")
    assert status == 200, payment_id
    order_id = stack.dbs["checkout"].scalar(
        f"SELECT order_id FROM orders WHERE payment_id = '{payment_id}'")
    if outcome == "timeout":
        stack.wait_order_status(order_id, -1, timeout=45)
    else:
        status, answer = stack.call_retrying("POST", f"/payment_webhook/{payment_id}/{outcome}")
        assert (status, answer) == (200, order_id)
    final = 1 if outcome == "paid" else -1
    stack.wait_order_status(order_id, final, timeout=60)

    wait_until(lambda: stack.restarts[service] > restarts, 30,
               f"{service} to have crashed at {point} and been restarted")
    stack.check_invariants(replay=False)
    expected_stock = before_stock - 1 if outcome == "paid" else before_stock
    assert stack.get_json("/product")["inventory"] == expected_stock

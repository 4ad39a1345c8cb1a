"""Replay and rebuild: rewinding every consumer group to offset 0 changes no
row anywhere, and the api read model dropped and rebuilt from the topics alone
equals the owners' data (invariant 7)."""

import os
import subprocess
import uuid

from harness import ROOT, wait_until
from stack import BROKERS, Stack


def read_model(stack):
    return {
        "orders": stack.dbs["api"].query(
            "SELECT order_id, idempotency_key, order_status, payment_id, reason, version "
            "FROM orders ORDER BY order_id"),
        "products": stack.dbs["api"].query(
            "SELECT product_id, product, description, price, inventory FROM products"),
        "progress": stack.dbs["api"].query(
            "SELECT order_id, progress_remaining FROM order_progress ORDER BY order_id"),
    }


def owners(stack):
    return {
        "orders": stack.dbs["checkout"].query(
            "SELECT order_id, idempotency_key, order_status, payment_id, reason, version "
            "FROM orders ORDER BY order_id"),
        "products": stack.dbs["inventory"].query(
            "SELECT product_id, name, description, price, available FROM products"),
        "progress": stack.dbs["dispatch"].query(
            "SELECT order_id, progress_remaining FROM shipments ORDER BY order_id"),
    }


def test_replay_from_offset_zero_changes_nothing_and_rebuilt_read_model_equals_owners():
    stack = Stack()
    try:
        stack.start()
        for outcome in ["paid", "paid", "failed", "paid", "failed"]:
            status, payment_id = stack.checkout(f"replay-{uuid.uuid4()}")
            assert status == 200
            assert stack.webhook(payment_id, outcome)[0] == 200
        stack.wait_quiet()
        stack.check_invariants(replay=True)
        assert read_model(stack) == owners(stack)

        stack.stop(["api"])
        env = dict(os.environ, API_DATABASE_URL=stack.dbs["api"].url,
                   API_OWNER_DATABASE_URL=stack.dbs["api"].owner_url,
                   KAFKA_GROUP=stack.group("api"), KAFKA_TOPIC_PREFIX=stack.prefix,
                   KAFKA_BROKERS=BROKERS, SKIP_SUPERVISOR="1")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "rebuild-read-model.sh")],
                       env=env, check=True, capture_output=True, timeout=120)
        assert stack.dbs["api"].scalar("SELECT count(*) FROM orders") == "0"
        stack.start(["api"])
        wait_until(lambda: read_model(stack) == owners(stack), 60,
                   "the rebuilt read model to equal the owners' data")
        stack.wait_quiet()
        assert read_model(stack) == owners(stack)
    finally:
        stack.close()

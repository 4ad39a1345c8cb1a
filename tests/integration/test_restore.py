"""Restore from backup: a service's database dumped mid-run, then lost and
restored from the dump, catches up by replaying its topics from the dump's
time, and every invariant holds afterwards."""

import os
import subprocess
import uuid

from harness import ROOT
from stack import BROKERS, Stack, http


def purchases(stack, outcomes):
    for outcome in outcomes:
        status, payment_id = stack.checkout(f"restore-{uuid.uuid4()}")
        assert status == 200, payment_id
        assert stack.webhook(payment_id, outcome)[0] == 200


def test_database_restored_from_a_mid_run_dump_catches_up_and_invariants_hold():
    stack = Stack()
    try:
        stack.start()
        purchases(stack, ["paid", "failed", "paid"])
        stack.wait_quiet()
        env = dict(os.environ, INVENTORY_DATABASE_URL=stack.dbs["inventory"].url,
                   INVENTORY_OWNER_DATABASE_URL=stack.dbs["inventory"].owner_url,
                   KAFKA_GROUP=stack.group("inventory"), KAFKA_TOPIC_PREFIX=stack.prefix,
                   KAFKA_BROKERS=BROKERS, SKIP_SUPERVISOR="1")
        dump = subprocess.run(["bash", os.path.join(ROOT, "scripts", "backup.sh"), "inventory"],
                              env=env, check=True, capture_output=True, text=True).stdout.strip()
        # Life goes on after the dump: sales, a cancellation, a restock.
        purchases(stack, ["paid", "paid", "failed", "paid"])
        assert http(stack.base, "POST", "/restock")[0] == 200
        stack.wait_quiet()
        sold_before = stack.dbs["inventory"].scalar("SELECT sold FROM products")

        stack.stop(["inventory"])
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "restore.sh"), "inventory", dump],
                       env=env, check=True, capture_output=True, timeout=180)
        assert stack.dbs["inventory"].scalar("SELECT sold FROM products") != sold_before
        # The service's role has its usual rights, no more (sql/*/privileges.sql).
        denied = subprocess.run(["psql", stack.dbs["inventory"].url, "-X", "-c",
                                 "DELETE FROM products WHERE false"], capture_output=True,
                                text=True, timeout=30)
        assert "permission denied" in denied.stderr, denied.stderr
        stack.start(["inventory"])
        stack.wait_quiet(timeout=90)
        assert stack.dbs["inventory"].scalar("SELECT sold FROM products") == sold_before
        purchases(stack, ["paid"])
        stack.check_invariants(replay=True)
    finally:
        stack.close()

"""Restore from backup: a service's database dumped mid-run, then lost and
restored from the dump, catches up by replaying its topics from the dump's
time, and every invariant holds afterwards."""

import os
import subprocess
import uuid

import pytest

from harness import ROOT, wait_until
from stack import BROKERS, Stack, http


def purchases(stack, outcomes):
    for outcome in outcomes:
        status, payment_id = stack.checkout(f"restore-{uuid.uuid4()}")
        assert status == 200, payment_id
        assert stack.webhook(payment_id, outcome)[0] == 200


# What each restorable service owns, read the same way before and after.
# Inventory's stock level is left out: a restock is "back to 100", and the
# replay may take it before or after a sale that came first on another
# partition, so only what each order got must be the same (and stock stays
# conserved, which check_invariants sees).
SNAPSHOTS = {
    "api": ("orders", "SELECT order_id, order_status, payment_id, version FROM orders "
            "ORDER BY order_id"),
    "inventory": ("products", "SELECT order_id::text, status FROM reservations UNION ALL "
                  "SELECT 'sold', sold::text FROM products ORDER BY 1"),
    "payment": ("payments", "SELECT payment_id, order_id, status, amount FROM payments "
                "ORDER BY order_id"),
}


@pytest.mark.parametrize("service", sorted(SNAPSHOTS))
def test_database_restored_from_a_mid_run_dump_catches_up_and_invariants_hold(service):
    table, snapshot = SNAPSHOTS[service]
    stack = Stack()
    try:
        stack.start()
        purchases(stack, ["paid", "failed", "paid"])
        stack.wait_quiet()
        db = stack.dbs[service]
        env = dict(os.environ, KAFKA_GROUP=stack.group(service), KAFKA_TOPIC_PREFIX=stack.prefix,
                   KAFKA_BROKERS=BROKERS, SKIP_SUPERVISOR="1")
        env[f"{service.upper()}_DATABASE_URL"] = db.url
        env[f"{service.upper()}_OWNER_DATABASE_URL"] = db.owner_url
        dump = subprocess.run(["bash", os.path.join(ROOT, "scripts", "backup.sh"), service],
                              env=env, check=True, capture_output=True, text=True).stdout.strip()
        # Life goes on after the dump: sales, a cancellation, a restock.
        purchases(stack, ["paid", "paid", "failed", "paid"])
        assert http(stack.base, "POST", "/restock")[0] == 200
        stack.wait_quiet()
        before = db.query(snapshot)

        stack.stop([service])
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "restore.sh"), service, dump],
                       env=env, check=True, capture_output=True, timeout=180)
        assert db.query(snapshot) != before, "the dump should be older than the end of the run"
        # The service's role has its usual rights, no more (sql/*/privileges.sql).
        denied = subprocess.run(["psql", db.url, "-X", "-c", f"DELETE FROM {table} WHERE false"],
                                capture_output=True, text=True, timeout=30)
        assert "permission denied" in denied.stderr, denied.stderr
        stack.start([service])
        stack.wait_quiet(timeout=90)
        # Caught up from the topics to the very same rows: a payment opened
        # again by the replay has the id the customer was shown; a shipment
        # the dump caught mid-way finishes its steps again.
        wait_until(lambda: db.query(snapshot) == before, 60, f"{table} as before the restore")
        purchases(stack, ["paid"])
        stack.check_invariants(replay=True)
    finally:
        stack.close()


@pytest.mark.parametrize("service", ["checkout", "dispatch"])
def test_restoring_checkout_or_dispatch_from_a_dump_is_refused(service):
    # Checkout numbers orders from its own sequence: a replay would number the
    # orders after the dump afresh, and they would no longer match the
    # reservations and payments the others hold under the first numbers.
    # Dispatch's steps follow its clock, not messages: a replay would run the
    # steps of every shipment since the dump again (invariant 6).
    dump = os.path.join(ROOT, ".local", "backups", f"{service}-2026-01-01T00:00:00Z.dump")
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "restore.sh"), service, dump],
                         env=dict(os.environ, SKIP_SUPERVISOR="1"), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert f"restore: {service} cannot be restored from a dump" in out.stderr, out.stderr

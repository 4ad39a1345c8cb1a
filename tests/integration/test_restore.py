"""Restore from backup: a service's database dumped mid-run, then lost and
restored from the dump, catches up by replaying its topics from the dump's
time, and every invariant holds afterwards."""

import json
import os
import stat
import subprocess
import uuid

import pytest

from harness import BUILD_DIR, ROOT, wait_until
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


def operator_env(stack, service):
    """The environment scripts/backup.sh and restore.sh run with."""
    db = stack.dbs[service]
    env = dict(os.environ, KAFKA_GROUP=stack.group(service), KAFKA_TOPIC_PREFIX=stack.prefix,
               KAFKA_BROKERS=BROKERS, SKIP_SUPERVISOR="1")
    env[f"{service.upper()}_DATABASE_URL"] = db.url
    env[f"{service.upper()}_OWNER_DATABASE_URL"] = db.owner_url
    return env


def backup(stack, service):
    """Dumps service's database; returns the dump's path. A dump holds the
    whole database: only its owner may read it, or the directory."""
    dump = subprocess.run(["bash", os.path.join(ROOT, "scripts", "backup.sh"), service],
                          env=operator_env(stack, service), check=True, capture_output=True,
                          text=True).stdout.strip()
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600, oct(os.stat(dump).st_mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(dump)).st_mode) == 0o700
    return dump


def restore(stack, service, dump):
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "restore.sh"), service, dump],
                   env=operator_env(stack, service), check=True, capture_output=True,
                   timeout=180)


@pytest.mark.parametrize("service", sorted(SNAPSHOTS))
def test_database_restored_from_a_mid_run_dump_catches_up_and_invariants_hold(service):
    table, snapshot = SNAPSHOTS[service]
    stack = Stack()
    try:
        stack.start()
        purchases(stack, ["paid", "failed", "paid"])
        stack.wait_quiet()
        db = stack.dbs[service]
        dump = backup(stack, service)
        # Life goes on after the dump: sales, a cancellation, a restock.
        purchases(stack, ["paid", "paid", "failed", "paid"])
        assert http(stack.base, "POST", "/restock")[0] == 200
        stack.wait_quiet()
        before = db.query(snapshot)

        stack.stop([service])
        restore(stack, service, dump)
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


def dead_creates(stack):
    """The message ids of payment's dead letters of type create_payment."""
    out = subprocess.run([os.path.join(BUILD_DIR, "services", "payment"), "dead-letters",
                          "--json"], env=stack.env("payment"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [letter["message_id"] for letter in map(json.loads, out.stdout.splitlines())
            if letter["type"] == "create_payment" and letter["status"] == "dead"]


def test_a_dead_letter_redriven_after_the_dump_is_applied_again_by_the_catch_up():
    # Payment cannot open one checkout's payment (a constraint stands in for
    # a bug), so its create_payment is dead-lettered, and the database is
    # dumped. Then the cause is fixed, the dead letter redriven and the
    # payment paid. Restored from the dump, payment has the message's
    # dead_letter inbox row again: the redriven copy, replayed, takes that
    # row's place and opens the same payment, which the provider's result
    # then captures, as before the restore.
    table, snapshot = SNAPSHOTS["payment"]
    stack = Stack(API_WAIT_MS=3000)
    try:
        stack.start()
        db = stack.dbs["payment"]
        key = f"restore-{uuid.uuid4()}"
        db.query(f"ALTER TABLE payments ADD CONSTRAINT test_blocks CHECK (saga_id <> '{key}') "
                 "NOT VALID", as_owner=True)
        assert stack.checkout(key)[0] == 504
        [create] = wait_until(lambda: dead_creates(stack), 60,
                              "the create_payment to be dead-lettered")
        dump = backup(stack, "payment")
        db.query("ALTER TABLE payments DROP CONSTRAINT test_blocks", as_owner=True)
        out = subprocess.run([os.path.join(BUILD_DIR, "services", "payment"), "dead-letters",
                              "redrive", create], env=stack.env("payment"), capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        # The same key asked again answers the payment, once it is offered.
        payment_id = wait_until(lambda: (lambda r: r[1] if r[0] == 200 else None)(
            stack.checkout(key)), 30, "the payment to be offered")
        assert stack.webhook(payment_id, "paid")[0] == 200
        stack.wait_quiet()
        before = db.query(snapshot)
        assert [payment_id, "captured"] in [[row[0], row[2]] for row in before], before

        stack.stop(["payment"])
        restore(stack, "payment", dump)
        assert payment_id not in [row[0] for row in db.query(snapshot)]
        # The dump holds the constraint that stood in for the bug: fixed again.
        db.query("ALTER TABLE payments DROP CONSTRAINT test_blocks", as_owner=True)
        stack.start(["payment"])
        stack.wait_quiet(timeout=90)
        wait_until(lambda: db.query(snapshot) == before, 60, f"{table} as before the restore")
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

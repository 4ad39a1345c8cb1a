"""The live audit (scripts/audit.py) reports every invariant holding on a
healthy system, and names the invariant and the offending id when data is
corrupted behind its back."""

import json
import os
import subprocess
import uuid

from harness import ROOT
from stack import SERVICES, Stack


def run_audit(stack, *args):
    env = dict(os.environ)
    env.update({f"{s.upper()}_DATABASE_URL": stack.dbs[s].url for s in SERVICES})
    return subprocess.run(["python3", os.path.join(ROOT, "scripts", "audit.py"), "--grace", "0",
                           *args], env=env, capture_output=True, text=True, timeout=120)


def test_audit_reports_each_invariant_and_names_the_offending_ids():
    stack = Stack()
    try:
        stack.start()
        orders = []
        for outcome in ["paid", "failed", "paid"]:
            status, payment_id = stack.checkout(f"audit-{uuid.uuid4()}")
            assert status == 200
            orders.append(stack.webhook(payment_id, outcome)[1])
        stack.wait_quiet()

        healthy = run_audit(stack, "--json")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        results = json.loads(healthy.stdout)
        assert [r["invariant"] for r in results] == [1, 2, 3, 4, 5, 6, 7]
        assert all(r["holds"] for r in results)

        paid = orders[0]
        stack.dbs["api"].query(f"UPDATE orders SET order_status = 2 WHERE order_id = {paid}")
        broken = run_audit(stack)
        assert broken.returncode == 1
        failing = [line for line in broken.stdout.splitlines() if line.startswith("FAIL")]
        assert failing == ["FAIL 7. the api read model equals the owners' data"]
        assert f"order {paid}: read model 2 owner 1" in broken.stdout
    finally:
        stack.close()

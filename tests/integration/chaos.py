"""Chaos run: a steady load of purchases (paid, failed and abandoned) while
random service processes are SIGKILLed at random moments, the broker and
PostgreSQL are restarted, and for part of the run every service has a second
replica. Then the faults stop, the business timeouts pass, and every invariant
must hold, replay included.

Long run (documented in the README):
    python3 tests/integration/chaos.py --duration 600 --kills 200
The CI runs a short version through test_chaos.py.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))

from harness import ROOT  # noqa: E402
from stack import SERVICES, Stack, http  # noqa: E402

PAYMENT_TIMEOUT_MS = 5000


class Load:
    """Client threads buying widgets through the api, retrying with the same
    key while the api restarts, as the page does."""

    def __init__(self, stack, threads, stop):
        self.stack = stack
        self.stop = stop
        self.lock = threading.Lock()
        self.completed = 0
        self.successes = []  # (start, end) of successful checkouts
        self.failures = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def call(self, path):
        deadline = time.monotonic() + 60
        while not self.stop.is_set() or time.monotonic() < deadline:
            try:
                status, body = http(self.stack.base, "POST", path, timeout=30)
                if status not in (502, 503, 504):
                    return status, body
            except OSError:
                pass
            if time.monotonic() > deadline:
                return None, None
            time.sleep(0.1)
        return None, None

    def run(self, index):
        rng = random.Random(index)
        while not self.stop.is_set():
            started = time.monotonic()
            status, payment_id = self.call(f"/checkout/chaos-{uuid.uuid4()}")
            if status == 409:  # sold out: restock and go on
                self.call("/restock")
                continue
            if status != 200:
                with self.lock:
                    self.failures += 1
                continue
            with self.lock:
                self.successes.append((started, time.monotonic()))
            roll = rng.random()
            if roll < 0.1:
                with self.lock:
                    self.completed += 1
                continue  # abandoned: the payment times out
            outcome = "failed" if roll < 0.2 else "paid"
            status, _ = self.call(f"/payment_webhook/{payment_id}/{outcome}")
            with self.lock:
                if status == 200:
                    self.completed += 1
                else:
                    self.failures += 1

    def recovery_after(self, moment):
        """Seconds from moment to the end of the first checkout started after it."""
        with self.lock:
            ends = [end for start, end in self.successes if start >= moment]
        return min(ends) - moment if ends else None


def chaos(duration, kills_wanted, infra_restarts, threads=4):
    stack = Stack(PAYMENT_TIMEOUT_MS=PAYMENT_TIMEOUT_MS, API_WAIT_MS=15000)
    report = {}
    try:
        stack.start()
        stack.supervise()
        stop = threading.Event()
        load = Load(stack, threads, stop)
        for thread in load.threads:
            thread.start()
        rng = random.Random(42)
        began = time.monotonic()
        kill_times, infra_done, replicas_on, replicas_off = [], 0, False, False
        infra_at = [duration * (i + 1) / (infra_restarts + 1) for i in range(infra_restarts)]
        while time.monotonic() - began < duration:
            elapsed = time.monotonic() - began
            # Pace the kills so the wanted number fits in the time left.
            interval = (duration - elapsed) / max(kills_wanted - len(kill_times), 1)
            if not replicas_on and elapsed > duration / 3:
                stack.start([f"{s}#2" for s in SERVICES])
                replicas_on = True
            if replicas_on and not replicas_off and elapsed > 2 * duration / 3:
                stack.stop([f"{s}#2" for s in SERVICES])
                replicas_off = True
            if infra_done < len(infra_at) and elapsed > infra_at[infra_done]:
                for script in ("kafka.sh", "pg.sh"):
                    subprocess.run(["bash", os.path.join(ROOT, "scripts", script), "restart"],
                                   check=True, capture_output=True, timeout=120)
                infra_done += 1
                continue
            victims = [k for k in stack.wanted if stack.processes[k].alive()]
            if victims:
                stack.processes[rng.choice(victims)].kill(signal.SIGKILL)
                kill_times.append(time.monotonic())
            time.sleep(rng.uniform(0.2 * interval, 1.8 * interval))
        faults_stopped = time.monotonic()
        stop.set()
        for thread in load.threads:
            thread.join(timeout=120)
        stack.wait_quiet(timeout=PAYMENT_TIMEOUT_MS / 1000 + 120)
        settled = time.monotonic() - faults_stopped
        recoveries = [r for r in (load.recovery_after(t) for t in kill_times) if r is not None]
        report = {
            "duration_s": round(duration),
            "kills": len(kill_times),
            "broker_restarts": infra_done,
            "postgres_restarts": infra_done,
            "purchases_completed": load.completed,
            "client_calls_given_up": load.failures,
            "kill_to_next_checkout_s": {
                "p50": round(statistics.median(recoveries), 2) if recoveries else None,
                "max": round(max(recoveries), 2) if recoveries else None},
            "last_fault_to_all_sagas_finished_s": round(settled, 1),
            "payment_timeout_s": PAYMENT_TIMEOUT_MS / 1000,
        }
        stack.check_invariants(replay=True)
        env = dict(os.environ)
        env.update({f"{s.upper()}_DATABASE_URL": stack.dbs[s].url for s in SERVICES})
        audit = subprocess.run(["python3", os.path.join(ROOT, "scripts", "audit.py"), "--grace",
                                "0"], env=env, capture_output=True, text=True, timeout=120)
        report["audit"] = audit.stdout.strip().splitlines()
        assert audit.returncode == 0, audit.stdout
        report["invariants"] = "all hold, replay included"
        return report
    finally:
        print(json.dumps(report, indent=2))
        stack.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--infra-restarts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    chaos(args.duration, args.kills, args.infra_restarts, args.threads)


if __name__ == "__main__":
    main()

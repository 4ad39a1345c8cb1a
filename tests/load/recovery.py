#!/usr/bin/env python3
"""recovery.py - what a crash costs under load: for each part of the system in
turn (each service, PostgreSQL, the Kafka broker), runs build/tests/loadgen in
open loop with --follow and --retry (a client that calls again with the same
idempotency key when the api does not answer), kills that part a third of the
way in, and reports how long it took to be back, how many purchases failed
(none should), how many calls were retried, and how much the purchases in
flight were delayed (to their decision, the webhook's answer, and to
DISPATCHED), against what was over before the kill. After each run every purchase must be DISPATCHED or
CANCELLED, and scripts/audit.py must find invariants 1-7 holding.

    python3 tests/load/recovery.py [--rate 25] [--duration 40] [--kill-at 15]
        [--targets api,checkout,inventory,payment,dispatch,postgres,kafka]
        [--json FILE] [--no-up]

A service is killed with SIGKILL and restarted by the supervisor of `make up`;
PostgreSQL gets an immediate shutdown (every process stops at once with no
checkpoint, as in a crash; crash recovery replays the WAL on start) and is
started again at once; the broker is killed with SIGKILL and started again at
once, as a supervisor would.
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ladder import LOADGEN, ROOT, URL, bring_up  # noqa: E402
from sample import SERVICES  # noqa: E402

ADMIN_PORTS = {s: 9100 + i for i, s in enumerate(SERVICES)}
LOCAL = os.path.join(ROOT, ".local")


def script(name, *args):
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", name), *args],
                          capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        sys.exit(f"recovery: scripts/{name} {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def service_pid(name):
    try:
        return int(script("services.sh", "ctl", "pid", name).strip() or 0)
    except ValueError:
        return 0


def ready(name):
    try:
        url = f"http://127.0.0.1:{ADMIN_PORTS[name]}/readyz"
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"recovery: {what} not within {timeout} s")
        time.sleep(0.02)


def gone(pid):
    """True once pid has exited with all its threads (a zombie counts: its
    sockets are closed once its last thread is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(") ", 1)[1].startswith("Z")
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def read_pid(path):
    with open(path) as f:
        return int(f.readline().strip())


def crash(target):
    """Kills target and waits until it serves again; returns the seconds that
    took from the kill (the restarts included)."""
    if target in SERVICES:
        old = service_pid(target)
        began = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: gone(old), 60, f"{target} gone")
        wait_for(lambda: ready(target), 120, f"{target} back")
    elif target == "postgres":
        pid_file = os.path.join(LOCAL, "pg", "data", "postmaster.pid")
        pid = read_pid(pid_file)
        began = time.monotonic()
        # SIGQUIT to the postmaster is pg_ctl's immediate shutdown.
        os.kill(pid, signal.SIGQUIT)
        wait_for(lambda: not os.path.exists(pid_file), 60, "postgres gone")
        script("pg.sh", "start")
    elif target == "kafka":
        pid = read_pid(os.path.join(LOCAL, "kafka", "kafka.pid"))
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), 60, "broker gone")
        script("kafka.sh", "start")
    else:
        sys.exit(f"recovery: unknown target {target}")
    back = time.monotonic() - began
    wait_for(lambda: all(ready(s) for s in SERVICES), 120, "every service ready")
    return back


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def one_run(target, args):
    with tempfile.TemporaryDirectory() as tmp:
        samples_path = os.path.join(tmp, "samples.csv")
        json_path = os.path.join(tmp, "result.json")
        loadgen = subprocess.Popen(
            [LOADGEN, "--url", URL, "--rate", str(args.rate), "--duration", str(args.duration),
             "--follow", "--poll-ms", "1000", "--retry", "120", "--samples", samples_path,
             "--json", json_path], stdout=subprocess.DEVNULL)
        try:
            began = time.monotonic()
            time.sleep(args.kill_at)
            killed_at_ms = (time.monotonic() - began) * 1000.0
            back_s = crash(target) if target != "none" else 0.0
            if loadgen.wait(timeout=args.duration + 300) != 0:
                sys.exit("recovery: loadgen failed")
        finally:
            if loadgen.poll() is None:
                loadgen.kill()
        with open(json_path) as f:
            result = json.load(f)
        with open(samples_path) as f:
            samples = list(csv.DictReader(f))
    for s in samples:
        for k in ("due_ms", "checkout_ms", "decided_ms", "total_ms"):
            s[k] = float(s[k])
    # What was over before the kill is the baseline; the rest was in flight
    # at the kill or started after it. Orders are decided (the webhook's
    # answer) long before they are DISPATCHED, so each has its own baseline.
    def split(key, rows):
        before = [s[key] for s in rows if s["due_ms"] + s[key] < killed_at_ms]
        after = [s[key] for s in rows if s["due_ms"] + s[key] >= killed_at_ms]
        return before, after

    # Only purchases whose order was decided have a time to a decision: one
    # that failed or sold out first (decided_ms 0) is counted under "failed"
    # or not at all, never as a 0 ms decision.
    decided_before, decided_after = split(
        "decided_ms", [s for s in samples if s["decided_ms"] > 0])
    dispatched_before, dispatched_after = split(
        "total_ms", [s for s in samples if s["paid"] == "1" and s["outcome"] == "completed"])
    audit = subprocess.run(["python3", os.path.join(ROOT, "scripts", "audit.py"), "--grace",
                            "0"], capture_output=True, text=True, timeout=300)
    series = result["series"]
    return {
        "target": target,
        "back_s": round(back_s, 2),
        "purchases": len(samples),
        "failed": sum(1 for s in samples if s["outcome"] == "failed"),
        "retried_calls": sum(v["retries"] for v in series.values()),
        "decided_p99_before_ms": round(percentile(decided_before, 0.99), 1),
        "decided_max_after_ms": round(max(decided_after, default=0.0), 1),
        "dispatched_p99_before_ms": round(percentile(dispatched_before, 0.99), 1),
        "dispatched_max_after_ms": round(max(dispatched_after, default=0.0), 1),
        "decided_over_1s": sum(1 for d in decided_after if d > 1000.0),
        "audit_ok": audit.returncode == 0,
        "audit": audit.stdout.strip().splitlines(),
    }


HEADER = ["killed", "back after s", "purchases", "failed", "retried calls",
          "decided p99 before / max after ms", "DISPATCHED p99 before / max after ms",
          "decided after > 1 s", "invariants"]


def row(r):
    return [r["target"], f"{r['back_s']:.2f}", str(r["purchases"]), str(r["failed"]),
            str(r["retried_calls"]),
            f"{r['decided_p99_before_ms']:.0f} / {r['decided_max_after_ms']:.0f}",
            f"{r['dispatched_p99_before_ms']:.0f} / {r['dispatched_max_after_ms']:.0f}",
            str(r["decided_over_1s"]), "hold" if r["audit_ok"] else "BROKEN"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=25)
    parser.add_argument("--duration", type=float, default=40)
    parser.add_argument("--kill-at", type=float, default=15)
    parser.add_argument("--targets", default=",".join([*SERVICES, "postgres", "kafka"]))
    parser.add_argument("--no-up", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not os.path.exists(LOADGEN):
        sys.exit(f"{LOADGEN} missing: run make first")
    if not 0 < args.kill_at < args.duration:
        sys.exit("recovery: --kill-at must fall inside --duration")
    if not args.no_up:
        bring_up()
    results = []
    for target in args.targets.split(","):
        result = one_run(target, args)
        results.append(result)
        print("  ".join(row(result)), flush=True)
        if not result["audit_ok"]:
            print("\n".join(result["audit"]), flush=True)
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for result in results:
        print("| " + " | ".join(row(result)) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    sys.exit(0 if all(r["failed"] == 0 and r["audit_ok"] for r in results) else 1)


if __name__ == "__main__":
    main()

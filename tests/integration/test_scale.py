"""Scale-out: every service runs as two replicas against the same database
and consumer group. Purchases go through both api replicas (a checkout on one,
its webhook on the other), both replicas of each consumer do work, one replica
of each service is killed mid-run, and every invariant still holds."""

import concurrent.futures
import signal
import time
import uuid

from harness import metrics, wait_until
from stack import SERVICES, Stack, http


# Each topic has 4 partitions (service.c creates them so); a service consumes
# the topics its main.c lists.
CONSUMED_PARTITIONS = {"inventory": 4, "payment": 4, "dispatch": 4, "checkout": 16, "api": 12}


def partitions(stack, key):
    return metrics(stack.admin_ports[key]).get("consumer_partitions_assigned", 0)


def handled(stack, key):
    return metrics(stack.admin_ports[key]).get("messages_handled_total", 0)


def test_a_single_replica_is_ready_holding_every_partition_it_consumes():
    """Readiness means the service works its whole share: alone in its group,
    a replica's first assignment holds every partition of every topic it
    consumes, even for topics created a moment before it subscribed."""
    stack = Stack()
    try:
        stack.start()
        for service in SERVICES:
            # The gauge follows the assignment within a poll of the consumer.
            held = wait_until(lambda: partitions(stack, service), 5,
                              f"{service}'s partitions on its gauge", interval=0.05)
            assert held == CONSUMED_PARTITIONS[service], (
                f"{service} was ready holding {held:g} of its "
                f"{CONSUMED_PARTITIONS[service]} partitions")
    finally:
        stack.close()


def test_two_replicas_of_every_service_share_the_work_and_stay_correct():
    stack = Stack(PAYMENT_TIMEOUT_MS=15000)
    try:
        stack.start()
        stack.start([f"{s}#2" for s in SERVICES])
        # The group settles with both replicas holding a share, and the
        # shares adding up to every partition the service consumes.
        for service in SERVICES:
            def shared():
                shares = [partitions(stack, key) for key in (service, f"{service}#2")]
                return all(shares) and sum(shares) == CONSUMED_PARTITIONS[service] and shares
            wait_until(shared, 60, f"{service}'s {CONSUMED_PARTITIONS[service]} partitions "
                       f"shared by both replicas")
        stack.supervise()
        bases = [stack.base, f"http://127.0.0.1:{stack.http_ports['api#2']}"]

        def purchase(i):
            key = f"scale-{uuid.uuid4()}"
            status, payment_id = http(bases[i % 2], "POST", f"/checkout/{key}")
            assert status == 200, payment_id
            # The webhook goes to the other replica than the checkout.
            status, order_id = http(bases[(i + 1) % 2], "POST",
                                    f"/payment_webhook/{payment_id}/"
                                    f"{'failed' if i % 5 == 0 else 'paid'}")
            assert status == 200, order_id
            return int(order_id)

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            # Purchases in rounds of 30 until both replicas of every service
            # have handled messages: a group that rebalances in between (a
            # heartbeat late on a busy host) delays that, never prevents it.
            first = []
            deadline = time.monotonic() + 60
            while True:
                first += pool.map(purchase, range(len(first), len(first) + 30))
                work = {s: [handled(stack, key) for key in (s, f"{s}#2")] for s in SERVICES}
                if all(all(h) for h in work.values()) or time.monotonic() > deadline:
                    break
            for service, counts in work.items():
                shares = [partitions(stack, key) for key in (service, f"{service}#2")]
                assert all(counts), (f"{service} replicas handled {counts} messages in "
                                     f"{len(first)} purchases; partitions now {shares}")
            # Kill one replica of every service while purchases run.
            futures = [pool.submit(purchase, i) for i in range(len(first), len(first) + 30)]
            for key in [f"{s}#2" for s in SERVICES if s != "api"]:
                stack.processes[key].kill(signal.SIGKILL)
            second = [f.result() for f in futures]
        assert len(set(first + second)) == len(first) + 30

        stack.wait_quiet(timeout=90)
        stack.check_invariants(replay=True)
    finally:
        stack.close()

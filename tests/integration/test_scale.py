"""Scale-out: every service runs as two replicas against the same database
and consumer group. Purchases go through both api replicas (a checkout on one,
its webhook on the other), both replicas of each consumer do work, one replica
of each service is killed mid-run, and every invariant still holds."""

import concurrent.futures
import signal
import uuid

from harness import metrics
from stack import SERVICES, Stack, http


def test_two_replicas_of_every_service_share_the_work_and_stay_correct():
    stack = Stack(PAYMENT_TIMEOUT_MS=15000)
    try:
        stack.start()
        stack.start([f"{s}#2" for s in SERVICES])
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
            first = list(pool.map(purchase, range(30)))
            for service in SERVICES:
                handled = [metrics(stack.admin_ports[key]).get("messages_handled_total", 0)
                           for key in (service, f"{service}#2")]
                assert all(h > 0 for h in handled), f"{service} replicas handled {handled}"
            # Kill one replica of every service while purchases run.
            futures = [pool.submit(purchase, i) for i in range(30, 60)]
            for key in [f"{s}#2" for s in SERVICES if s != "api"]:
                stack.processes[key].kill(signal.SIGKILL)
            second = [f.result() for f in futures]
        assert len(set(first + second)) == 60

        stack.wait_quiet(timeout=90)
        stack.check_invariants(replay=True)
    finally:
        stack.close()

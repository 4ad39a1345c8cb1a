"""The whole widget store for end-to-end tests: the five real service
binaries, each with a fresh database of its own, on the real Kafka under a
topic prefix of their own (so a running `make up` system is not disturbed),
with short business timeouts. Also the checks of ARCHITECTURE.md's
invariants against the services' own data."""

import collections
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

from harness import (BUILD_DIR, BROKERS, MSGTEST, ROOT, Database, Process, delete_topics,
                     free_port, unique_name, wait_until)

SERVICES = ["inventory", "payment", "dispatch", "checkout", "api"]
CONSUMES = {
    "api": ["checkout.events", "inventory.events", "dispatch.events"],
    "checkout": ["checkout.commands", "inventory.events", "payment.events", "dispatch.events"],
    "inventory": ["inventory.commands"],
    "payment": ["payment.commands"],
    "dispatch": ["dispatch.commands"],
}
DISPATCH_STEPS = 10
# Long enough that a host stall between a checkout and its webhook (CI has
# stalled for 3 s) cannot let the payment timeout win the race; the tests of
# the timeout wait for it.
PAYMENT_TIMEOUT_MS = 10000


def http(base, method, path, body=None, timeout=60):
    """Returns (status, body text) of one request; never raises on 4xx/5xx."""
    req = urllib.request.Request(base + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Stack:
    def __init__(self, **env_overrides):
        self.name = unique_name("e2e")
        self.prefix = f"{self.name}."
        self.dbs = {s: Database(f"{self.name}_{s}", schema=s) for s in SERVICES}
        self.admin_ports = {s: free_port() for s in SERVICES}
        self.http_ports = {"api": free_port()}
        self.http_port = self.http_ports["api"]
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.env_overrides = {k: str(v) for k, v in env_overrides.items()}
        self.service_env = {}  # service name -> variables of its own, e.g. DATABASE_URL
        self.processes = {}
        self.wanted = set()
        self.restarts = collections.Counter()
        self.supervisor = None

    @staticmethod
    def service_of(key):
        """Process keys are a service name ("checkout") for the first replica
        and "checkout#2" for a second one, against the same database and
        consumer group."""
        return key.split("#")[0]

    def env(self, key):
        service = self.service_of(key)
        self.admin_ports.setdefault(key, free_port())
        self.http_ports.setdefault(key, free_port())
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.dbs[service].url,
            "KAFKA_BROKERS": BROKERS,
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "KAFKA_GROUP": self.group(service),
            "ADMIN_PORT": str(self.admin_ports[key]),
            "HTTP_PORT": str(self.http_ports[key]),
            "API_PAGE_PATH": os.path.join(ROOT, "services", "api", "page.html"),
            "PAYMENT_TIMEOUT_MS": str(PAYMENT_TIMEOUT_MS),
            "COMPENSATION_RETRY_MS": "1000",
            "DISPATCH_STEPS": str(DISPATCH_STEPS),
            "DISPATCH_INTERVAL_MS": "250",
            "API_WAIT_MS": "20000",
        })
        env.update(self.env_overrides)
        env.update(self.service_env.get(service, {}))
        return env

    def group(self, service):
        return f"{self.name}-{service}"

    def start(self, services=SERVICES, extra_env=None):
        """Starts services (with extra_env added, e.g. CRASH_AT) and waits
        until they are ready."""
        for key in services:
            proc = self.processes.get(key)
            if proc is None:
                proc = Process(f"{self.name}-{key.replace('#', '-')}",
                               [os.path.join(BUILD_DIR, "services", self.service_of(key))],
                               self.env(key))
                self.processes[key] = proc
            proc.env = dict(self.env(key), **(extra_env or {}))
            proc.start()
            self.wanted.add(key)
        for service in services:
            wait_until(lambda: self.ready(service), 60, f"{service} to be ready", interval=0.2)
        # The first api (which the tests call) and every api replica started
        # serve the product.
        for api in sorted({"api"} | {s for s in services if self.service_of(s) == "api"}):
            wait_until(lambda: self.product_served(api), 60, f"the product on {api}")
        # A service that exited after answering (a port it could not bind
        # after all) fails here, by name, not in a later call.
        for service in services:
            assert self.processes[service].alive(), f"{service} exited after it was ready"

    def product_served(self, api="api"):
        try:
            return http(f"http://127.0.0.1:{self.http_ports[api]}", "GET", "/product",
                        timeout=5)[0] == 200
        except OSError:
            return False

    def ready(self, service):
        """The service's own process answers /readyz (whatever else may
        listen on its admin port)."""
        if not self.processes[service].alive():
            return False
        try:
            return http(f"http://127.0.0.1:{self.admin_ports[service]}", "GET", "/readyz",
                        timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self, services=None):
        for service in list(self.processes) if services is None else services:
            self.wanted.discard(service)
            if service in self.processes:
                self.processes[service].stop()

    def supervise(self):
        """Like supervisord: restarts any wanted service that died, with its
        normal environment (so an armed crash point does not fire again)."""
        def loop():
            while self.supervisor is not None:
                for service in list(self.wanted):
                    proc = self.processes[service]
                    if not proc.alive():
                        proc.env = self.env(service)
                        proc.start()
                        self.restarts[service] += 1
                time.sleep(0.05)
        self.supervisor = threading.Thread(target=loop, daemon=True)
        self.supervisor.start()

    def close(self):
        thread, self.supervisor = self.supervisor, None
        if thread:
            thread.join()
        self.stop()
        for db in self.dbs.values():
            db.drop()
        delete_topics(self.prefix)

    # --- HTTP helpers -------------------------------------------------------

    def call_retrying(self, method, path, timeout=60):
        """Like a careful client: repeats the same request (same idempotency
        key) while the api is restarting or answers 503/504."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = http(self.base, method, path)
                if status not in (502, 503, 504) or time.monotonic() > deadline:
                    return status, body
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def get_json(self, path):
        status, body = self.call_retrying("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return json.loads(body)

    def checkout(self, key):
        return http(self.base, "POST", f"/checkout/{key}")

    def webhook(self, payment_id, status):
        return http(self.base, "POST", f"/payment_webhook/{payment_id}/{status}")

    def wait_order_status(self, order_id, status, timeout=30):
        return wait_until(lambda: self.get_json(f"/order/{order_id}")["order_status"] == status,
                          timeout, f"order {order_id} to reach status {status}", interval=0.1)

    # --- Quiescence and invariants --------------------------------------------

    def scalar(self, service, sql):
        return self.dbs[service].scalar(sql)

    def lag(self, service):
        total = 0
        env = dict(os.environ, MSGTEST_DATABASE_URL="unused", KAFKA_BROKERS=BROKERS)
        for topic in CONSUMES[service]:
            out = subprocess.run([MSGTEST, "lag", self.group(service), self.prefix + topic],
                                 env=env, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                return None
            total += int(out.stdout.strip())
        return total

    def quiet(self):
        """True once every saga finished, every outbox is empty and every
        consumer has read everything."""
        open_sagas = self.scalar("checkout", "SELECT count(*) FROM sagas "
                                 "WHERE state NOT IN ('completed', 'cancelled')")
        if open_sagas != "0":
            return False
        for service in SERVICES:
            if self.scalar(service, "SELECT count(*) FROM outbox") != "0":
                return False
        return all(self.lag(s) == 0 for s in SERVICES)

    def wait_quiet(self, timeout=60):
        wait_until(self.quiet, timeout, "all sagas finished and all messages handled",
                   interval=0.3)

    def check_invariants(self, replay=True):
        """Checks invariants 1-6 of ARCHITECTURE.md once the system is quiet."""
        self.wait_quiet()
        self.check_stock_conserved()
        self.check_one_order_and_payment_per_key()
        self.check_orders_ended_right()
        self.check_payments()
        self.check_dispatch_once()
        if replay:
            self.check_replay_changes_nothing()

    def check_stock_conserved(self):
        """1. initial + restocked = available + reserved + sold, never negative;
        reserved and sold match the reservations."""
        rows = self.dbs["inventory"].query(
            "SELECT initial, restocked, available, reserved, sold, "
            "(SELECT count(*) FROM reservations r WHERE r.product_id = p.product_id "
            " AND status = 'reserved'), "
            "(SELECT coalesce(sum(quantity), 0) FROM reservations r "
            " WHERE r.product_id = p.product_id AND status = 'committed') FROM products p")
        for initial, restocked, available, reserved, sold, n_reserved, n_sold in map(
                lambda r: map(int, r), rows):
            assert min(available, reserved, sold) >= 0
            assert initial + restocked == available + reserved + sold, "stock not conserved"
            assert reserved == n_reserved and sold == n_sold

    def check_one_order_and_payment_per_key(self):
        """2. One order and one payment per idempotency key."""
        orders = self.dbs["checkout"].query("SELECT idempotency_key, order_id FROM orders")
        keys = [k for k, _ in orders]
        assert len(keys) == len(set(keys)), "two orders for one key"
        payments = self.dbs["payment"].query("SELECT order_id FROM payments")
        paid_orders = [o for (o,) in payments]
        assert len(paid_orders) == len(set(paid_orders)), "two payments for one order"
        assert set(paid_orders) <= {o for _, o in orders}, "payment for an unknown order"

    def check_orders_ended_right(self):
        """3. Every order ends CANCELLED or DISPATCHED; a cancelled order's
        stock is back; a paid order is dispatched."""
        statuses = dict(self.dbs["checkout"].query("SELECT order_id, order_status FROM orders"))
        assert set(statuses.values()) <= {"-1", "1"}, f"unfinished orders: {statuses}"
        reservations = dict(self.dbs["inventory"].query(
            "SELECT order_id, status FROM reservations"))
        for order_id, status in statuses.items():
            if status == "-1":
                assert reservations.get(order_id) in (None, "released", "rejected"), \
                    f"cancelled order {order_id} still holds stock"
            else:
                assert reservations.get(order_id) == "committed", \
                    f"dispatched order {order_id} not sold"

    def check_payments(self):
        """4. No payment captured twice; every captured payment belongs to a
        paid (here: dispatched) order or is refunded."""
        statuses = dict(self.dbs["checkout"].query("SELECT order_id, order_status FROM orders"))
        for order_id, status, captured, refunded in self.dbs["payment"].query(
                "SELECT order_id, status, captured_at IS NOT NULL, refunded_at IS NOT NULL "
                "FROM payments"):
            if status == "captured":
                assert statuses[order_id] == "1", f"captured payment of order {order_id}"
            if statuses[order_id] == "1":
                assert status == "captured", f"dispatched order {order_id} not captured"
            if status == "refunded":
                assert captured == "t" and refunded == "t"
            if statuses[order_id] == "-1":
                assert status in ("cancelled", "failed", "refunded"), \
                    f"cancelled order {order_id} has payment {status}"

    def check_dispatch_once(self):
        """6. Progress goes 10 to 0 exactly once per paid order."""
        dispatched = {o for o, s in self.dbs["checkout"].query(
            "SELECT order_id, order_status FROM orders") if s == "1"}
        shipments = self.dbs["dispatch"].query(
            "SELECT order_id, progress_remaining, status FROM shipments")
        assert {o for o, _, _ in shipments} == dispatched
        assert all(p == "0" and st == "dispatched" for _, p, st in shipments)
        # The relay may publish a message twice (a crash between the broker's
        # acknowledgement and the delete); it is the same message, with the
        # same id, which consumers apply once. Count distinct messages.
        events = {e["id"]: e for e in self.dump("dispatch.events")
                  if e["type"] == "dispatch_progress"}
        steps = collections.defaultdict(list)
        for event in events.values():
            payload = event["payload"]
            steps[str(payload["order_id"])].append(payload["progress_remaining"])
        for order_id in dispatched:
            assert sorted(steps[order_id]) == list(range(DISPATCH_STEPS)), \
                f"order {order_id} progress events {steps[order_id]}"

    def produce(self, topic, key, message):
        """Publishes message (a dict, as JSON) on topic with key, as a
        producer outside the services would."""
        env = dict(os.environ, MSGTEST_DATABASE_URL="unused", KAFKA_BROKERS=BROKERS)
        out = subprocess.run([MSGTEST, "produce", self.prefix + topic, key], env=env,
                             input=json.dumps(message).encode(), capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr[-1000:]

    def dump(self, topic):
        env = dict(os.environ, MSGTEST_DATABASE_URL="unused", KAFKA_BROKERS=BROKERS)
        out = subprocess.run([MSGTEST, "dump", self.prefix + topic], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-1000:]
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    def snapshot(self):
        """A digest of every table of every service database."""
        digests = {}
        for service, db in self.dbs.items():
            tables = [t for (t,) in db.query(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations' ORDER BY 1")]
            for table in tables:
                digests[f"{service}.{table}"] = db.scalar(
                    f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                    f"FROM {table} t")
        return digests

    def check_replay_changes_nothing(self):
        """5. Rewinding every consumer group to offset 0 changes no row."""
        before = self.snapshot()
        running = sorted(self.wanted)
        self.stop()
        self.rewind_all()
        self.start(running)
        wait_until(lambda: all(self.lag(s) == 0 for s in SERVICES), 120,
                   "every group to re-read its topics")
        self.wait_quiet()
        after = self.snapshot()
        changed = [table for table in before if before[table] != after[table]]
        assert not changed, f"replay changed {changed}"

    def rewind_all(self):
        args = []
        for service in SERVICES:
            args += ["--group", self.group(service)]
        topics = sorted({t for ts in CONSUMES.values() for t in ts})
        for topic in topics:
            args += ["--topic", self.prefix + topic]

        def attempt():
            out = subprocess.run(
                ["bash", os.path.join(ROOT, "scripts", "kafka.sh"), "tool",
                 "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                 "--bootstrap-server", BROKERS, *args, "--reset-offsets", "--to-earliest",
                 "--execute"], capture_output=True, text=True, timeout=60)
            return out.returncode == 0 and "Error" not in out.stdout + out.stderr
        wait_until(attempt, 60, "the groups to accept the rewind", interval=1)

"""Helpers for integration tests that run against the real PostgreSQL and
Kafka started by scripts/up-infra.sh: per-test databases and topics, child
processes that can be SIGKILLed and restarted, SQL queries through psql, and
waiting for a condition with a deadline (never a bare sleep)."""

import contextlib
import json
import os
import random
import re
import signal
import socket
import string
import subprocess
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.path.join(ROOT, os.environ.get("BUILD_DIR", "build"))
MSGTEST = os.path.join(BUILD_DIR, "tests", "msgtest")
BROKERS = os.environ.get("KAFKA_BROKERS", "localhost:9092")
LOG_DIR = os.path.join(ROOT, ".local", "test-logs")


def read_secrets():
    """Returns the NAME_DATABASE_URL and NAME_OWNER_DATABASE_URL values
    written by scripts/pg.sh."""
    values = {}
    path = os.path.join(ROOT, ".local", "secrets.env")
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                values[key] = value
    return values


def unique_name(prefix):
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(6))
    return f"{prefix}_{suffix}"


_PORTS_HANDED_OUT = set()


def free_port():
    """A port nothing listens on, for a process about to be started. It lies
    below the kernel's ephemeral range, so no outgoing connection (the
    services hold dozens) takes it before the process binds it, and it is
    never handed out twice by this run."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    while True:
        port = random.randrange(10000, ephemeral_low)
        if port in _PORTS_HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_HANDED_OUT.add(port)
        return port


def wait_until(condition, timeout, what, interval=0.1):
    """Polls condition() until it returns a truthy value, which is returned.
    Fails with what after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Database:
    """A throwaway database and role created through scripts/pg.sh."""

    def __init__(self, name, schema=None):
        """Creates database name with its own role, and applies the
        migrations of service schema (default: only sql/common)."""
        self.name = name
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "pg.sh"), "createdb", name],
                       check=True, stdout=subprocess.DEVNULL)
        secrets = read_secrets()
        self.url = secrets[f"{name.upper()}_DATABASE_URL"]  # rows only, as a service
        self.owner_url = secrets[f"{name.upper()}_OWNER_DATABASE_URL"]  # DDL, migrations
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "migrate.sh"), schema or name,
                        self.owner_url], check=True, stdout=subprocess.DEVNULL)

    def query(self, sql, as_owner=False):
        """Runs sql (as the owner role if as_owner) and returns the rows as
        lists of strings."""
        url = self.owner_url if as_owner else self.url
        out = subprocess.run(["psql", url, "-X", "-q", "-A", "-t", "-F", "\t",
                              "-v", "ON_ERROR_STOP=1", "-c", sql],
                             check=True, capture_output=True, text=True, timeout=30)
        return [line.split("\t") for line in out.stdout.splitlines() if line != ""]

    def scalar(self, sql, as_owner=False):
        rows = self.query(sql, as_owner)
        return rows[0][0] if rows else None

    def try_scalar(self, sql, as_owner=False):
        """Like scalar, but None while the database is unreachable."""
        try:
            return self.scalar(sql, as_owner)
        except subprocess.CalledProcessError:
            return None

    def drop(self):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "pg.sh"), "dropdb", self.name],
                       check=False, stdout=subprocess.DEVNULL)


class Process:
    """A child process with its own log file, restartable after a kill."""

    def __init__(self, name, args, env):
        self.name = name
        self.args = args
        self.env = env
        self.proc = None
        self.starts = 0
        os.makedirs(LOG_DIR, exist_ok=True)
        self.log_path = os.path.join(LOG_DIR, f"{name}.log")

    def start(self):
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts} ---\n")
        log.flush()
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)
        log.close()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        """Graceful stop: SIGTERM, then SIGKILL after 15 s."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.kill()
        return self.start()


class DatabaseForwarder:
    """A TCP port on 127.0.0.1 that forwards each connection to the server
    of a service's DATABASE_URL (its Unix socket), so that the service can
    be given a database reached over TCP, and that path cut with
    partitioned(). url is a postgresql://user:pw@host:port/db URL whose host
    is the percent-encoded socket directory, as scripts/pg.sh writes it."""

    def __init__(self, url):
        match = re.fullmatch(r"(postgresql://[^@/]+@)([^/]+):(\d+)(/.*)", url)
        assert match, "DATABASE_URL is not a postgresql://user:pw@host:port/db URL"
        prefix, host, port, rest = match.groups()
        self.socket_path = os.path.join(urllib.parse.unquote(host), f".s.PGSQL.{port}")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"{prefix}127.0.0.1:{self.port}{rest}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            try:
                server.connect(self.socket_path)
            except OSError:
                client.close()
                continue
            self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.listener.close()


@contextlib.contextmanager
def partitioned(port):
    """Drops every TCP packet to or from a local port, as a network
    partition or a host that vanished does: no reset, no answer, the sender
    retransmits into silence. Needs root (nftables)."""
    table = f"widget_store_partition_{port}"
    rules = (f"table inet {table} {{\n  chain out {{\n"
             "    type filter hook output priority 0;\n"
             f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)


def delete_topics(prefix):
    """Deletes the broker's topics named PREFIX..., best effort: a test's
    topics are useless once it ends, and hundreds of them slow the broker
    for the tests and benchmarks that follow."""
    env = dict(os.environ, MSGTEST_DATABASE_URL="unused", KAFKA_BROKERS=BROKERS)
    try:
        subprocess.run([MSGTEST, "delete-topics", prefix], env=env, capture_output=True,
                       timeout=60)
    except subprocess.TimeoutExpired:
        pass


class MsgTest:
    """A test bed for the messaging core: one database, one topic, one group,
    and msgtest relay / consumer / writer processes on them."""

    def __init__(self, label, partitions_hint=None):
        self.db = Database(unique_name("mt"))
        self.topic = f"{self.db.name}.in"
        self.group = f"{self.db.name}-group"
        self.label = label
        self.processes = []

    def env(self, **extra):
        env = dict(os.environ)
        # msgtest makes its own tables, so it needs the owner role.
        env.update({"MSGTEST_DATABASE_URL": self.db.owner_url, "KAFKA_BROKERS": BROKERS,
                    "MSGTEST_TOPIC": self.topic, "MSGTEST_GROUP": self.group})
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def spawn(self, role, *args, **extra):
        name = f"{self.label}-{self.db.name}-{role}-{len(self.processes)}"
        proc = Process(name, [MSGTEST, role, *map(str, args)], self.env(**extra))
        self.processes.append(proc)
        return proc.start()

    def run(self, *args, input_bytes=None, timeout=120):
        out = subprocess.run([MSGTEST, *map(str, args)], env=self.env(), input=input_bytes,
                             capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"msgtest {args} failed: {out.stderr.decode()[-2000:]}")
        return out.stdout.decode()

    def effects(self):
        """(distinct seqs applied, highest applied count) among committed seqs."""
        # msgtest's own table, made by its owner role (msgtest runs as it):
        # the service role gets rows of the tables privileges.sql lists only.
        row = self.db.query("SELECT count(*), coalesce(max(applied), 0) FROM effects "
                            "WHERE seq < 1000000000", as_owner=True)[0]
        return int(row[0]), int(row[1])

    def effect_count(self):
        value = self.db.try_scalar("SELECT count(*) FROM effects", as_owner=True)
        return int(value) if value is not None else -1

    def rewind(self):
        """Moves the group back to the first offset (scripts/replay.sh waits
        until the broker has noticed that the group's consumers left)."""
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "replay.sh"), self.group,
                        self.topic, "--to-earliest"], check=True, capture_output=True, timeout=90)

    def lag(self):
        try:
            return int(self.run("lag", self.group, self.topic).strip())
        except AssertionError:
            return None

    def dump(self, topic):
        return [json.loads(line) if line.startswith("{") else line
                for line in self.run("dump", topic).splitlines()]

    def close(self):
        for proc in self.processes:
            proc.stop()
        self.db.drop()
        delete_topics(f"{self.db.name}.")
        for proc in self.processes:
            assert_no_sanitizer_report(proc.log_path)


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def assert_no_sanitizer_report(log_path):
    """Fails if a sanitizer build reported a memory error, leak or undefined
    behaviour in a process log."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    for marker in SANITIZER_MARKERS:
        assert marker not in text, f"{marker} in {log_path}"


def metrics(port):
    """Parses a /metrics page into {series: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def try_metric(port, series):
    try:
        return metrics(port).get(series)
    except OSError:
        return None

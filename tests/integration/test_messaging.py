"""Integration tests of the messaging core (shared/: outbox, relay,
idempotent consumer, dead-letter topic) against the real PostgreSQL and Kafka.
Each test proves one claim of ARCHITECTURE.md's messaging rules."""

import datetime
import json
import random
import re
import signal
import subprocess
import os
import time
import uuid

import pytest

from harness import MSGTEST as MSGTEST_PATH, MsgTest, free_port, try_metric, wait_until, ROOT

ROLLED_BACK_BASE = 1000000000


@pytest.fixture
def bed(request):
    bed = MsgTest(request.node.name[:20])
    yield bed
    bed.close()


def wait_for_effects(bed, expected, timeout):
    wait_until(lambda: bed.effect_count() == expected, timeout,
               f"{expected} effects in {bed.db.name}", interval=0.2)


def test_committed_outbox_row_is_handled_exactly_once_and_rolled_back_one_never_published(bed):
    bed.spawn("relay")
    bed.spawn("consume")
    bed.run("write", 1, 300, 10)  # 300 committed, 30 rolled back

    wait_for_effects(bed, 300, 60)
    applied, worst = bed.effects()
    assert applied == 300 and worst == 1
    assert bed.db.scalar(f"SELECT count(*) FROM effects WHERE seq >= {ROLLED_BACK_BASE}",
                         as_owner=True) == "0"
    wait_until(lambda: bed.db.scalar("SELECT count(*) FROM outbox") == "0", 30, "empty outbox")
    published = bed.dump(bed.topic)
    assert len(published) == 300
    assert not any(m["payload"].get("rolled_back") for m in published)


def test_queued_statements_fail_their_transaction_and_leave_the_connection_usable(bed):
    """db.c sends BEGIN and db_exec_later() statements with the next statement
    that needs a result, or with the COMMIT; a failure among them must fail
    that call and roll the whole transaction back, as if run one by one. A
    session the server ended, or a pipeline libpq could not leave, must make
    the connection read as broken, so that its owner replaces it."""
    out = subprocess.run([MSGTEST_PATH, "pipeline"], env=bed.env(), capture_output=True,
                         timeout=60)
    lines = out.stdout.decode().splitlines()
    assert out.returncode == 0 and all(line.startswith("ok ") for line in lines), \
        out.stdout.decode() + out.stderr.decode()[-2000:]
    assert len(lines) == 19


def test_message_delivered_twice_or_replayed_from_offset_zero_has_one_effect(bed):
    port = free_port()
    bed.spawn("relay")
    consumer = bed.spawn("consume", ADMIN_PORT=port)
    bed.run("write", 1, 200)
    wait_for_effects(bed, 200, 60)

    # Published again: the same envelopes, produced a second time.
    published = bed.dump(bed.topic)
    for message in published[:50]:
        bed.run("produce", bed.topic, message["saga_id"],
                input_bytes=json.dumps(message).encode())
    # At least: a consumer expelled from its group by a stall reads its
    # uncommitted messages again, and skips them too.
    wait_until(lambda: try_metric(port, "messages_duplicate_total") >= 50, 60,
               "50 duplicates skipped")
    assert bed.effects() == (200, 1)

    # Rewound to offset 0: every message is read again and changes nothing.
    consumer.stop()
    inbox_before = bed.db.scalar("SELECT count(*) FROM inbox")
    bed.rewind()
    assert bed.lag() == 250
    port2 = free_port()
    bed.spawn("consume", ADMIN_PORT=port2)
    wait_until(lambda: bed.lag() == 0, 60, "the rewound consumer to catch up")
    assert try_metric(port2, "messages_duplicate_total") >= 250
    assert try_metric(port2, "messages_handled_total") == 0
    assert bed.effects() == (200, 1)
    assert bed.db.scalar("SELECT count(*) FROM inbox") == inbox_before


def test_sigkill_of_relay_and_consumer_mid_batch_loses_nothing_and_doubles_nothing(bed):
    total = 10000
    relay = bed.spawn("relay", RELAY_BATCH_SIZE=500)
    consumer = bed.spawn("consume")
    writer = bed.spawn("write", 1, total, 0, MSGTEST_WRITE_DELAY_MS=0)
    kills = {"relay": 0, "consume": 0}
    rng = random.Random(7)
    # Kill while there is work in flight, alternating victims at random.
    while bed.effect_count() < total and sum(kills.values()) < 40:
        time.sleep(rng.uniform(0.2, 0.8))
        victim = relay if rng.random() < 0.5 else consumer
        victim.kill(signal.SIGKILL)
        kills["relay" if victim is relay else "consume"] += 1
        victim.start()
    print(f"kills: {kills}, effects at end of kills: {bed.effect_count()}")
    assert kills["relay"] >= 3 and kills["consume"] >= 3
    wait_until(lambda: not writer.alive(), 120, "the writer to finish")
    wait_for_effects(bed, total, 180)
    applied, worst = bed.effects()
    assert applied == total, "a message was lost"
    assert worst == 1, "a message had two effects"
    assert bed.db.scalar("SELECT count(*) FROM inbox") == str(total)


def test_poison_message_goes_to_dead_letter_topic_and_partition_keeps_flowing(bed):
    bed.spawn("relay")
    bed.spawn("consume")
    poison_seq = 1000005  # same key (k5) as seqs 5, 69, 133, 197 written after it
    bed.run("poison", poison_seq)
    bed.run("produce", bed.topic, "k5", input_bytes=b"\x00not json at all")
    # Valid JSON, but not UTF-8: PostgreSQL would refuse these strings in the
    # inbox, the dead letter or any handler's row, for ever.
    not_utf8 = ('{"id":"%s","type":"test_event","version":1,"saga_id":"k5\xff",'
                '"causation_id":null,"correlation_id":"c\xc0\xaf","occurred_at":'
                '"2026-01-01T00:00:00Z","producer":"p","payload":{"poison":true}}'
                % uuid.uuid4()).encode("latin-1")
    bed.run("produce", bed.topic, "k5", input_bytes=not_utf8)
    bed.run("write", 1, 200)

    wait_for_effects(bed, 200, 60)
    assert bed.effects() == (200, 1)
    dead = wait_until(lambda: _dead_letters(bed, 3), 60, "three dead letters")
    letters = [d["payload"] for d in dead]
    rejected, = [p for p in letters if p["error"].startswith("poison payload rejected")]
    assert rejected["attempts"] == 3
    assert rejected["topic"] == bed.topic
    assert rejected["group"] == bed.group
    assert rejected["offset"] >= 0 and rejected["partition"] >= 0
    assert rejected["original_type"] == "test_event"
    undecodable, = [p for p in letters if p["original_value"].endswith("not json at all")]
    assert undecodable["error"].startswith("cannot decode")
    assert undecodable["attempts"] == 1
    not_utf8_letter, = [p for p in letters if "UTF-8" in p["error"]]
    assert not_utf8_letter["error"].startswith("cannot decode")
    assert not_utf8_letter["attempts"] == 1
    assert '"saga_id":"k5?"' in not_utf8_letter["original_value"]
    outcomes = bed.db.query("SELECT outcome, count(*) FROM inbox GROUP BY 1 ORDER BY 1")
    assert outcomes == [["dead_letter", "3"], ["handled", "200"]]


def test_a_dead_letter_the_database_refuses_is_written_minimal_and_the_partition_keeps_flowing(
        bed):
    """A constraint or trigger an operator adds to the outbox may refuse a
    dead letter for good. Retrying it would block its partition for ever; a
    minimal letter (no quoted value) is written instead."""
    bed.spawn("relay")
    bed.spawn("consume")
    wait_until(lambda: bed.db.try_scalar("SELECT to_regclass('outbox') IS NOT NULL") == "t",
               30, "the outbox table")
    bed.db.query("ALTER TABLE outbox ADD CONSTRAINT small_dead_letters "
                 "CHECK (msg_type <> 'dead_letter' OR length(value) < 2000)", as_owner=True)
    big_id = str(uuid.uuid4())
    big = json.dumps({"id": big_id, "type": "test_event", "version": 1, "saga_id": "k5",
                      "causation_id": None, "correlation_id": "k5",
                      "occurred_at": "2026-01-01T00:00:00Z", "producer": "p",
                      "payload": {"poison": True, "padding": "x" * 3000}})
    bed.run("produce", bed.topic, "k5", input_bytes=big.encode())
    bed.run("poison", 1000005)  # small enough for a full dead letter
    bed.run("write", 1, 200)

    wait_for_effects(bed, 200, 60)
    assert bed.effects() == (200, 1)
    dead = wait_until(lambda: _dead_letters(bed, 2), 60, "two dead letters")
    letters = [d["payload"] for d in dead]
    minimal, = [p for p in letters if p["original_id"] == big_id]
    assert "original_value" not in minimal
    assert minimal["error"] == ("poison payload rejected by handler; "
                                "the full dead letter was refused (SQLSTATE 23514)")
    assert minimal["original_bytes"] == len(big) and minimal["attempts"] == 3
    assert minimal["topic"] == bed.topic and minimal["group"] == bed.group
    full, = [p for p in letters if p["original_id"] != big_id]
    assert full["error"] == "poison payload rejected by handler"
    assert '"poison":true' in full["original_value"]
    outcomes = bed.db.query("SELECT outcome, count(*) FROM inbox GROUP BY 1 ORDER BY 1")
    assert outcomes == [["dead_letter", "2"], ["handled", "200"]]


def test_a_dead_letter_whose_inbox_row_is_refused_holds_its_partition_and_says_why(bed):
    """A dead letter's inbox row that the database refuses (a trigger an
    operator added) cannot be left out, minimal letter or not: without it
    the message could not be told apart from one never handled. The
    partition waits, the log says why with the refusal's SQLSTATE, and once
    the trigger is gone the letter is written and the partition flows."""
    bed.spawn("relay")
    consumer = bed.spawn("consume")
    wait_until(lambda: bed.db.try_scalar("SELECT to_regclass('inbox') IS NOT NULL") == "t",
               30, "the inbox table")
    bed.db.query("CREATE FUNCTION refuse_dead_letters() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$ BEGIN RAISE EXCEPTION 'no dead letters here' USING ERRCODE = 'P0001'; "
                 "END $$; CREATE TRIGGER refuse_dead_letters BEFORE INSERT ON inbox "
                 "FOR EACH ROW WHEN (NEW.outcome = 'dead_letter') "
                 "EXECUTE FUNCTION refuse_dead_letters()", as_owner=True)

    def refusals():
        with open(consumer.log_path, errors="replace") as log:
            return [line for line in log
                    if 'msg="dead letter refused, writing a minimal one"' in line]
    try:
        bed.run("poison", 1000007)
        wait_until(lambda: len(refusals()) >= 2, 60, "the dead letter to be refused twice")
        assert all(line.rstrip().endswith("sqlstate=P0001") for line in refusals()), refusals()
        assert bed.db.scalar("SELECT count(*) FROM inbox WHERE outcome = 'dead_letter'") == "0"
    finally:
        bed.db.query("DROP TRIGGER refuse_dead_letters ON inbox", as_owner=True)
    bed.run("write", 1, 50)
    wait_for_effects(bed, 50, 60)
    [letter] = wait_until(lambda: _dead_letters(bed, 1), 60, "the dead letter")
    assert letter["payload"]["error"] == "poison payload rejected by handler"
    assert bed.effects() == (50, 1)


def _dead_letters(bed, expected):
    try:
        letters = bed.dump(f"{bed.topic}.dlq")
    except AssertionError:
        return None
    return letters if len(letters) == expected else None


def test_two_relays_on_one_database_only_one_publishes_and_the_other_takes_over(bed):
    port_a, port_b = free_port(), free_port()
    relay_a = bed.spawn("relay", ADMIN_PORT=port_a)
    wait_until(lambda: try_metric(port_a, "outbox_relay_active") == 1, 30, "relay a active")
    relay_b = bed.spawn("relay", ADMIN_PORT=port_b)
    bed.spawn("consume")
    bed.run("write", 1, 500)
    wait_for_effects(bed, 500, 60)
    assert try_metric(port_a, "outbox_published_total") == 500
    assert try_metric(port_b, "outbox_relay_active") == 0
    assert try_metric(port_b, "outbox_published_total") == 0

    relay_a.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: try_metric(port_b, "outbox_relay_active") == 1, 10, "relay b to take over")
    takeover = time.monotonic() - killed_at
    print(f"takeover after {takeover:.2f} s")
    bed.run("write", 501, 100)
    wait_for_effects(bed, 600, 60)
    assert try_metric(port_b, "outbox_published_total") == 100
    assert bed.effects() == (600, 1)
    assert relay_b.alive()


def _failed_lock_queries(log_path):
    """The times (seconds) at which the relay's lock query failed."""
    times = []
    with open(log_path, errors="replace") as log:
        for line in log:
            match = re.match(r'ts=(\S+)Z .*msg="query failed" what=relay lock ', line)
            if match:
                times.append(datetime.datetime.fromisoformat(match.group(1)).timestamp())
    return times


def test_a_relay_whose_lock_query_fails_retries_with_backoff_and_takes_the_lock_after(bed):
    """The lock query can fail on a connection that is fine (a full lock
    table; here EXECUTE on the function revoked). The relay then reconnects
    with backoff, as after any failure, not as fast as the server accepts
    connections, and takes the lock once the cause is gone."""
    def as_superuser(sql):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "pg.sh"), "psql", "-d",
                        bed.db.name, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       check=True, stdout=subprocess.DEVNULL)

    port = free_port()
    as_superuser("REVOKE EXECUTE ON FUNCTION pg_try_advisory_lock(bigint) FROM PUBLIC")
    try:
        relay = bed.spawn("relay", ADMIN_PORT=port)
        wait_until(lambda: len(_failed_lock_queries(relay.log_path)) >= 5, 30,
                   "five failed lock queries")
        times = _failed_lock_queries(relay.log_path)[:5]
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        print("gaps between failed lock queries:", gaps)
        # The backoff's shortest waits (jittered) are 50, 100, 200, 400 ms.
        assert all(gap >= 0.04 for gap in gaps) and gaps[-1] >= 0.3, gaps
        assert try_metric(port, "outbox_relay_active") == 0
    finally:
        as_superuser("GRANT EXECUTE ON FUNCTION pg_try_advisory_lock(bigint) TO PUBLIC")
    wait_until(lambda: try_metric(port, "outbox_relay_active") == 1, 10,
               "the relay to take the lock")
    assert relay.alive()


def _first_seqs_by_key(messages):
    """The seqs of each key in the order they first appear on the topic (a
    message published again after a failure may appear twice)."""
    seen, by_key = set(), {}
    for m in messages:
        seq = m["payload"]["seq"]
        if seq not in seen:
            seen.add(seq)
            by_key.setdefault(m["saga_id"], []).append(seq)
    return by_key


def test_a_relay_producer_that_fails_for_good_is_replaced_and_nothing_is_lost_or_reordered(bed):
    """A fatal error of the idempotent producer (injected: FAULT_AT) leaves it
    unable to deliver anything; the relay must replace it and publish what it
    had not delivered, in each key's order, and not sit on its lock."""
    port = free_port()
    relay = bed.spawn("relay", ADMIN_PORT=port, RELAY_BATCH_SIZE=20,
                      FAULT_AT="relay.producer_fatal:3")
    bed.spawn("consume")
    bed.run("write", 1, 300)

    wait_for_effects(bed, 300, 60)
    assert bed.effects() == (300, 1)
    wait_until(lambda: bed.db.scalar("SELECT count(*) FROM outbox") == "0", 30, "empty outbox")
    assert try_metric(port, "outbox_producer_replaced_total") == 1
    assert relay.alive()
    with open(relay.log_path) as log:
        assert "relay producer failed for good; replacing it" in log.read()
    by_key = _first_seqs_by_key(bed.dump(bed.topic))
    assert sum(len(seqs) for seqs in by_key.values()) == 300
    assert all(seqs == sorted(seqs) for seqs in by_key.values()), "a key's order broke"


def test_published_rows_the_database_will_not_delete_are_not_published_again(bed):
    """While the outbox refuses the relay's delete (a missing grant here; a
    full disk in life), what the broker acknowledged is kept and only its
    delete retried: the same rows are not produced again each round."""
    bed.db.query("REVOKE DELETE ON outbox FROM CURRENT_USER", as_owner=True)
    bed.run("write", 1, 50)  # before the relay starts: one batch
    relay = bed.spawn("relay")
    bed.spawn("consume")
    wait_for_effects(bed, 50, 60)

    def refused_deletes():
        with open(relay.log_path) as log:
            return log.read().count("what=outbox delete")
    wait_until(lambda: refused_deletes() >= 4, 30, "the relay to retry its delete")
    assert len(bed.dump(bed.topic)) == 50
    assert bed.db.scalar("SELECT count(*) FROM outbox") == "50"

    bed.db.query("GRANT DELETE ON outbox TO CURRENT_USER", as_owner=True)
    wait_until(lambda: bed.db.scalar("SELECT count(*) FROM outbox") == "0", 30, "empty outbox")
    bed.run("write", 51, 10)
    wait_for_effects(bed, 60, 60)
    assert len(bed.dump(bed.topic)) == 60
    assert bed.effects() == (60, 1)


def test_broker_down_10s_and_postgres_restart_under_traffic_lose_nothing(bed):
    total = 5000
    bed.spawn("relay")
    bed.spawn("consume")
    writer = bed.spawn("write", 1, total, 0, MSGTEST_WRITE_DELAY_MS=8)
    wait_until(lambda: bed.effect_count() > 200, 60, "traffic to flow")

    kafka = os.path.join(ROOT, "scripts", "kafka.sh")
    pg = os.path.join(ROOT, "scripts", "pg.sh")
    subprocess.run(["bash", kafka, "stop"], check=True)
    time.sleep(10)  # the outage itself is the point: the broker stays down 10 s
    subprocess.run(["bash", kafka, "start"], check=True)
    assert writer.alive(), "the database restart must happen under traffic"

    subprocess.run(["bash", pg, "restart"], check=True)
    wait_until(lambda: not writer.alive(), 180, "the writer to finish")
    wait_for_effects(bed, total, 180)
    assert bed.effects() == (total, 1)

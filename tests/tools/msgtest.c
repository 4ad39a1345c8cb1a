/*
 * msgtest.c - a generic test service built only on shared/, used by the
 * integration tests and the benchmark to exercise the messaging core against a
 * real PostgreSQL and Kafka. Each sub-command is one process the tests can
 * start, kill and restart on its own:
 *
 *   msgtest relay                    run an outbox relay until SIGTERM
 *   msgtest consume                  run the idempotent consumer until SIGTERM
 *   msgtest write FIRST COUNT [ROLLBACK_EVERY]
 *                                    enqueue messages seq FIRST..FIRST+COUNT-1,
 *                                    one transaction each, retrying through
 *                                    database outages; every ROLLBACK_EVERY-th
 *                                    extra transaction is rolled back
 *   msgtest poison SEQ               enqueue one message its handler rejects
 *   msgtest produce TOPIC KEY        produce stdin as one raw message
 *   msgtest dump TOPIC               print every message of TOPIC, one per line
 *   msgtest lag GROUP TOPIC          print GROUP's total lag on TOPIC
 *   msgtest delete-topics PREFIX     delete every topic whose name starts with
 *                                    PREFIX (tests clean up after themselves)
 *   msgtest pipeline                 check db.c's queued statements (lazy BEGIN,
 *                                    db_exec_later) against the database; prints
 *                                    "ok NAME" or "FAIL NAME" per check
 *
 * Environment: MSGTEST_DATABASE_URL, KAFKA_BROKERS (default localhost:9092),
 * MSGTEST_TOPIC (default msgtest.in), MSGTEST_GROUP (default msgtest),
 * ADMIN_PORT (0 = no admin server), MSGTEST_HANDLER_DELAY_US, MSGTEST_WRITE_DELAY_MS,
 * RELAY_BATCH_SIZE, CRASH_AT and FAULT_AT (shared/crashpoint.h).
 *
 * The consumer's effect is a row per seq in table effects with an applied
 * counter that a second application would raise to 2, so the tests can see a
 * double effect instead of it being hidden by a primary key.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin_http.h"
#include "backoff.h"
#include "config.h"
#include "consumer.h"
#include "crashpoint.h"
#include "db.h"
#include "envelope.h"
#include "kafka.h"
#include "log.h"
#include "outbox.h"
#include "relay.h"

static char database_url[512];
static char brokers[256];
static char topic[128];
static char group[128];
static char instance_id[128];
static long admin_port;
static long handler_delay_us;
static long batch_size;
static long write_delay_ms;
static volatile sig_atomic_t stopping;

static const struct config_entry config_table[] = {
    {"MSGTEST_DATABASE_URL", CONFIG_STRING, database_url, sizeof(database_url), NULL, 0, 0,
     "PostgreSQL URL of the test database"},
    {"KAFKA_BROKERS", CONFIG_STRING, brokers, sizeof(brokers), "localhost:9092", 0, 0,
     "Kafka bootstrap servers"},
    {"MSGTEST_TOPIC", CONFIG_STRING, topic, sizeof(topic), "msgtest.in", 0, 0, "topic used"},
    {"MSGTEST_GROUP", CONFIG_STRING, group, sizeof(group), "msgtest", 0, 0, "consumer group"},
    {"MSGTEST_INSTANCE_ID", CONFIG_STRING, instance_id, sizeof(instance_id), "", 0, 0,
     "static group membership id"},
    {"ADMIN_PORT", CONFIG_INT, &admin_port, 0, "0", 0, 65535, "admin HTTP port, 0 for none"},
    {"MSGTEST_HANDLER_DELAY_US", CONFIG_INT, &handler_delay_us, 0, "0", 0, 1000000,
     "extra time spent in each handler (ms resolution)"},
    {"MSGTEST_WRITE_DELAY_MS", CONFIG_INT, &write_delay_ms, 0, "0", 0, 10000,
     "pause between two writes"},
    {"RELAY_BATCH_SIZE", CONFIG_INT, &batch_size, 0, "2000", 1, 100000, "relay batch size"},
};

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void wait_for_signal(void)
{
    struct sigaction sa = {.sa_handler = on_signal};

    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!stopping)
        pause();
}

static PGconn *connect_retrying(void)
{
    struct backoff retry;
    char err[512];
    PGconn *conn;

    backoff_init(&retry, 100, 2000, 0);
    while ((conn = db_connect(database_url, "msgtest", err, sizeof(err))) == NULL) {
        log_warn("msg=\"connect failed, retrying\" error=\"%s\"", err);
        backoff_sleep_ms(backoff_next(&retry));
    }
    return conn;
}

static int ensure_schema(PGconn *conn)
{
    return db_exec(conn, "effects table",
                   "CREATE TABLE IF NOT EXISTS effects (seq bigint PRIMARY KEY, "
                   "applied integer NOT NULL, message_id uuid NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                   0, NULL);
}

static int handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                  size_t errlen)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(msg->env->payload, "seq");
    char seq_text[32];
    const char *params[] = {seq_text, msg->env->id};

    (void)arg;
    if (strcmp(msg->env->type, "test_event") != 0)
        return CONSUMER_SKIP;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(msg->env->payload, "poison"))) {
        snprintf(err, errlen, "poison payload rejected by handler");
        return CONSUMER_FAIL;
    }
    if (!cJSON_IsNumber(seq)) {
        snprintf(err, errlen, "payload.seq missing");
        return CONSUMER_FAIL;
    }
    snprintf(seq_text, sizeof(seq_text), "%.0f", seq->valuedouble);
    if (handler_delay_us > 0)
        backoff_sleep_ms(handler_delay_us / 1000);
    if (db_exec(conn, "apply effect",
                "INSERT INTO effects (seq, applied, message_id) VALUES ($1::bigint, 1, $2) "
                "ON CONFLICT (seq) DO UPDATE SET applied = effects.applied + 1",
                2, params) != 0)
        return CONSUMER_RETRY;
    return CONSUMER_OK;
}

static struct kafka_settings kafka_settings(const char *client_id)
{
    return (struct kafka_settings){.brokers = brokers,
                                   .client_id = client_id,
                                   .linger_ms = 1,
                                   .group_id = group,
                                   .instance_id = instance_id,
                                   .session_timeout_ms = 6000};
}

static struct admin_http *maybe_admin(admin_ready_fn ready, void *arg)
{
    char err[256];
    struct admin_http *admin;

    if (admin_port == 0)
        return NULL;
    admin =
        admin_http_start("127.0.0.1", (int)admin_port, ready, arg, NULL, NULL, err, sizeof(err));
    if (admin == NULL) {
        log_error("msg=\"admin server failed\" error=\"%s\"", err);
        exit(1);
    }
    return admin;
}

static int relay_ready(void *arg, char *why, size_t whylen)
{
    (void)arg;
    (void)why;
    (void)whylen;
    return 1;
}

static int cmd_relay(void)
{
    struct relay_config cfg = {.db_url = database_url,
                               .name = "msgtest-relay",
                               .kafka = kafka_settings("msgtest-relay"),
                               .batch_size = batch_size,
                               .poll_interval_ms = 500,
                               .standby_check_ms = 500};
    char err[512];
    struct admin_http *admin = maybe_admin(relay_ready, NULL);
    struct relay *relay = relay_start(&cfg, err, sizeof(err));

    if (relay == NULL) {
        log_error("msg=\"relay failed to start\" error=\"%s\"", err);
        return 1;
    }
    log_info("msg=\"relay started\"");
    wait_for_signal();
    relay_stop(relay);
    admin_http_stop(admin);
    return 0;
}

static int consumer_ready(void *arg, char *why, size_t whylen)
{
    if (consumer_is_ready(arg))
        return 1;
    snprintf(why, whylen, "consumer not connected or not assigned");
    return 0;
}

static int cmd_consume(void)
{
    const char *topics[] = {topic, NULL};
    struct consumer_config cfg = {.db_url = database_url,
                                  .name = "msgtest",
                                  .kafka = kafka_settings("msgtest-consumer"),
                                  .topics = topics,
                                  .max_attempts = 3,
                                  .retry_base_ms = 20,
                                  .retry_max_ms = 2000,
                                  .handler = handle};
    char err[512];
    PGconn *conn = connect_retrying();
    struct consumer *consumer;
    struct admin_http *admin;

    char dlq[160];
    const char *needed[] = {topic, dlq, NULL};

    snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
    if (ensure_schema(conn) != 0) {
        PQfinish(conn);
        return 1;
    }
    PQfinish(conn);
    while (kafka_ensure_topics(brokers, needed, 4, 5000, err, sizeof(err)) != 0) {
        log_warn("msg=\"cannot create topics yet\" error=\"%s\"", err);
        backoff_sleep_ms(500);
    }
    consumer = consumer_start(&cfg, err, sizeof(err));
    if (consumer == NULL) {
        log_error("msg=\"consumer failed to start\" error=\"%s\"", err);
        return 1;
    }
    admin = maybe_admin(consumer_ready, consumer);
    log_info("msg=\"consumer started\" topic=%s group=%s", topic, group);
    wait_for_signal();
    consumer_stop(consumer);
    admin_http_stop(admin);
    return 0;
}

/* A deterministic envelope id per seq, so a retried write whose first commit
 * did in fact succeed produces a duplicate the inbox recognises. */
static void seq_uuid(long long seq, char out[ENVELOPE_UUID_LEN + 1])
{
    unsigned long long tail = (unsigned long long)seq % 1000000000000ULL;

    snprintf(out, ENVELOPE_UUID_LEN + 1, "00000000-0000-4000-8000-%012llu", tail);
}

/* Writes one message in its own transaction; commit=0 rolls it back.
 * Returns 0 or -1 (transient; the caller retries). */
static int write_one(PGconn *conn, long long seq, int poison, int commit)
{
    struct envelope env;
    cJSON *payload = cJSON_CreateObject();
    char key[32];
    int rc = -1;

    cJSON_AddNumberToObject(payload, "seq", (double)seq);
    if (poison)
        cJSON_AddBoolToObject(payload, "poison", 1);
    if (!commit)
        cJSON_AddBoolToObject(payload, "rolled_back", 1);
    snprintf(key, sizeof(key), "k%lld", seq % 64);
    if (envelope_build(&env, "test_event", key, "msgtest", NULL, payload) != 0)
        return -1;
    seq_uuid(seq, env.id);
    if (db_begin(conn) != 0)
        goto out;
    if (outbox_enqueue(conn, topic, key, &env, NULL) != 0) {
        db_rollback(conn);
        goto out;
    }
    rc = commit ? db_commit(conn) : db_rollback(conn);
out:
    envelope_free(&env);
    return rc;
}

static int write_retrying(PGconn **conn, long long seq, int poison, int commit)
{
    struct backoff retry;

    backoff_init(&retry, 50, 1000, 0);
    while (write_one(*conn, seq, poison, commit) != 0) {
        if (db_is_broken(*conn)) {
            PQfinish(*conn);
            *conn = connect_retrying();
        } else {
            backoff_sleep_ms(backoff_next(&retry));
        }
    }
    return 0;
}

static int cmd_write(long long first, long long count, long long rollback_every)
{
    PGconn *conn = connect_retrying();

    for (long long i = 0; i < count; i++) {
        write_retrying(&conn, first + i, 0, 1);
        if (write_delay_ms > 0)
            backoff_sleep_ms(write_delay_ms);
        /* Rolled-back messages use seqs far above any committed one. */
        if (rollback_every > 0 && i % rollback_every == 0)
            write_retrying(&conn, 1000000000LL + first + i, 0, 0);
    }
    PQfinish(conn);
    return 0;
}

static int cmd_poison(long long seq)
{
    PGconn *conn = connect_retrying();

    write_retrying(&conn, seq, 1, 1);
    PQfinish(conn);
    return 0;
}

static int cmd_produce(const char *to_topic, const char *key)
{
    static char value[2 * ENVELOPE_MAX_BYTES];
    size_t len = fread(value, 1, sizeof(value), stdin);
    struct kafka_settings settings = kafka_settings("msgtest-produce");
    char err[512];
    rd_kafka_t *rk = kafka_producer_new(&settings, NULL, err, sizeof(err));
    rd_kafka_resp_err_t rerr;

    if (rk == NULL) {
        fprintf(stderr, "producer: %s\n", err);
        return 1;
    }
    rerr = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(to_topic), RD_KAFKA_V_KEY(key, strlen(key)),
                             RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END);
    if (rerr) {
        fprintf(stderr, "produce: %s\n", rd_kafka_err2str(rerr));
        rd_kafka_destroy(rk);
        return 1;
    }
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "produce: not acknowledged within 30 s\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    rd_kafka_destroy(rk);
    return 0;
}

static rd_kafka_t *group_client(const char *group_id)
{
    struct kafka_settings settings = kafka_settings("msgtest-admin");
    const char *no_topics[] = {NULL};
    char err[512];
    rd_kafka_t *rk;

    settings.group_id = group_id;
    settings.instance_id = NULL;
    rk = kafka_consumer_new(&settings, no_topics, err, sizeof(err));
    if (rk == NULL)
        fprintf(stderr, "consumer: %s\n", err);
    return rk;
}

static void print_value(const rd_kafka_message_t *msg, void *arg)
{
    (void)arg;
    printf("%.*s\n", (int)msg->len, (const char *)msg->payload);
}

static int cmd_dump(const char *name)
{
    rd_kafka_t *rk = group_client("msgtest-dump");
    int rc;

    if (rk == NULL)
        return 1;
    rc = kafka_read_topic(rk, name, 10000, print_value, NULL);
    if (rc != 0)
        fprintf(stderr, "dump: topic %s unknown, or timed out\n", name);
    rd_kafka_destroy(rk);
    return rc == 0 ? 0 : 1;
}

static int cmd_lag(const char *group_id, const char *name)
{
    rd_kafka_t *rk = group_client(group_id);
    int32_t ids[KAFKA_MAX_PARTITIONS];
    int64_t low[KAFKA_MAX_PARTITIONS], high[KAFKA_MAX_PARTITIONS];
    rd_kafka_topic_partition_list_t *list;
    long long lag = 0;
    int n;

    if (rk == NULL)
        return 1;
    n = kafka_topic_watermarks(rk, name, ids, low, high, KAFKA_MAX_PARTITIONS, 10000);
    if (n < 0) {
        rd_kafka_destroy(rk);
        return 1;
    }
    list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(list, name, ids[i]);
    if (rd_kafka_committed(rk, list, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(list);
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        int64_t committed = list->elems[i].offset < 0 ? 0 : list->elems[i].offset;

        lag += high[i] - committed;
    }
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_destroy(rk);
    printf("%lld\n", lag);
    return 0;
}

static int cmd_delete_topics(const char *prefix)
{
    rd_kafka_t *rk = group_client("msgtest-admin");
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_DeleteTopic_t **doomed = NULL;
    rd_kafka_queue_t *queue = NULL;
    rd_kafka_event_t *event;
    size_t count = 0;
    int rc = 1;

    if (rk == NULL)
        return 1;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "delete-topics: no metadata\n");
        goto out;
    }
    doomed = calloc((size_t)md->topic_cnt + 1, sizeof(*doomed));
    if (doomed == NULL)
        goto out;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strncmp(md->topics[i].topic, prefix, strlen(prefix)) == 0)
            doomed[count++] = rd_kafka_DeleteTopic_new(md->topics[i].topic);
    }
    if (count == 0) {
        rc = 0;
        goto out;
    }
    queue = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopics(rk, doomed, count, NULL, queue);
    event = rd_kafka_queue_poll(queue, 30000);
    if (event != NULL && rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        printf("deleted %zu topics\n", count);
        rc = 0;
    } else {
        fprintf(stderr, "delete-topics: %s\n",
                event ? rd_kafka_event_error_string(event) : "timed out");
    }
    if (event)
        rd_kafka_event_destroy(event);
out:
    if (doomed)
        rd_kafka_DeleteTopic_destroy_array(doomed, count);
    free(doomed);
    if (queue)
        rd_kafka_queue_destroy(queue);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}

/* Rows of table pipeline_check, or -1 on failure. */
static long pipeline_rows(PGconn *conn)
{
    PGresult *res = db_query(conn, "count", "SELECT count(*) FROM pipeline_check", 0, NULL);
    long rows = res ? atol(PQgetvalue(res, 0, 0)) : -1;

    PQclear(res);
    return rows;
}

static int pipeline_insert_later(PGconn *conn, const char *id)
{
    const char *params[] = {id};

    return db_exec_later(conn, "check insert", "INSERT INTO pipeline_check (id) VALUES ($1::int)",
                         1, params);
}

static int check(const char *name, int ok)
{
    printf("%s %s\n", ok ? "ok" : "FAIL", name);
    return ok ? 0 : 1;
}

/* Ends victim's server session from conn, as a fast shutdown or
 * pg_terminate_backend() would, and waits until it is gone. */
static int terminate_session(PGconn *conn, PGconn *victim)
{
    char pid[16];
    const char *params[] = {pid};

    snprintf(pid, sizeof(pid), "%d", PQbackendPID(victim));
    if (db_exec(conn, "terminate", "SELECT pg_terminate_backend($1::int)", 1, params) != 0)
        return -1;
    for (int i = 0; i < 100; i++) {
        PGresult *res =
            db_query(conn, "session gone",
                     "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1, params);
        int gone = res != NULL && strcmp(PQgetvalue(res, 0, 0), "0") == 0;

        PQclear(res);
        if (gone)
            return 0;
        backoff_sleep_ms(50);
    }
    return -1;
}

static int cmd_pipeline(void)
{
    PGconn *conn = connect_retrying();
    const char *bad[] = {"x"};
    int failures = 0;

    if (db_exec(conn, "check table drop", "DROP TABLE IF EXISTS pipeline_check", 0, NULL) != 0 ||
        db_exec(conn, "check table",
                "CREATE TABLE pipeline_check (id integer PRIMARY KEY CHECK (id > 0))", 0,
                NULL) != 0)
        return 1;

    /* Queued inserts travel with the COMMIT and all land. */
    db_begin(conn);
    pipeline_insert_later(conn, "1");
    pipeline_insert_later(conn, "2");
    failures += check("queued_statements_commit", db_commit(conn) == 0 && pipeline_rows(conn) == 2);

    /* A read in the transaction sees the queued writes before it. */
    db_begin(conn);
    pipeline_insert_later(conn, "3");
    failures += check("read_sees_queued_writes", pipeline_rows(conn) == 3);
    failures += check("rollback_discards_them",
                      db_rollback(conn) == 0 && db_idle(conn) && pipeline_rows(conn) == 2);

    /* A queued statement that fails makes the COMMIT fail, with its SQLSTATE;
     * nothing of the transaction stays, and the connection is usable. */
    db_begin(conn);
    pipeline_insert_later(conn, "4");
    pipeline_insert_later(conn, "1"); /* duplicate key */
    pipeline_insert_later(conn, "5");
    failures += check("failed_queued_statement_fails_commit",
                      db_commit(conn) != 0 && strcmp(db_last_sqlstate(), "23505") == 0 &&
                          !db_last_failure_transient(conn));
    failures += check("nothing_of_it_committed", db_idle(conn) && pipeline_rows(conn) == 2);

    /* ... and makes the next statement that needs a result fail too. */
    db_begin(conn);
    pipeline_insert_later(conn, "-1"); /* check constraint */
    failures += check("failed_queued_statement_fails_next_query",
                      pipeline_rows(conn) == -1 && strcmp(db_last_sqlstate(), "23514") == 0);
    failures += check("rollback_after_failure", db_rollback(conn) == 0 && db_idle(conn));

    /* A failed statement whose caller went on anyway fails the COMMIT: an
     * aborted transaction's COMMIT is answered by a ROLLBACK that reads as
     * success, and nothing of the transaction may count as done. */
    db_begin(conn);
    pipeline_insert_later(conn, "9");
    db_exec(conn, "bad cast", "SELECT $1::int", 1, bad);
    failures += check("commit_after_a_failure_fails",
                      db_commit(conn) != 0 && db_idle(conn) && pipeline_rows(conn) == 2);

    /* A statement first prepared in a pipeline that failed before it is
     * prepared again next time (bad input aborts the pipeline first). */
    db_begin(conn);
    db_exec_later(conn, "bad cast", "SELECT $1::int", 1, bad);
    db_exec_later(conn, "check update",
                  "UPDATE pipeline_check SET id = id + 100 WHERE id = $1::int", 1,
                  (const char *[]){"2"});
    failures += check("prepare_skipped_by_failure", db_commit(conn) != 0);
    db_begin(conn);
    db_exec_later(conn, "check update",
                  "UPDATE pipeline_check SET id = id + 100 WHERE id = $1::int", 1,
                  (const char *[]){"2"});
    failures += check("prepared_again_after_skip", db_commit(conn) == 0);
    {
        PGresult *res = db_query(conn, "check max", "SELECT max(id) FROM pipeline_check", 0, NULL);

        failures += check("update_applied", res && strcmp(PQgetvalue(res, 0, 0), "102") == 0);
        PQclear(res);
    }

    /* Outside a transaction a queued statement runs at once. */
    failures += check("autocommit_runs_at_once", pipeline_insert_later(conn, "7") == 0 &&
                                                     db_idle(conn) && pipeline_rows(conn) == 3);

    /* An empty transaction costs nothing and leaves the connection idle. */
    db_begin(conn);
    failures += check("empty_transaction", db_commit(conn) == 0 && db_idle(conn));
    db_begin(conn);
    failures += check("empty_rollback", db_rollback(conn) == 0 && db_idle(conn));

    /* More statements than one pipeline holds are sent along the way. */
    db_begin(conn);
    for (int i = 1000; i < 1400; i++) {
        char id[16];

        snprintf(id, sizeof(id), "%d", i);
        pipeline_insert_later(conn, id);
    }
    failures += check("long_pipeline", db_commit(conn) == 0 && pipeline_rows(conn) == 403);

    /* A session the server ended while the connection was idle fails the
     * next transaction, whether it ends in a COMMIT or in a read, and the
     * connection then reads as broken, so that its owner replaces it. */
    for (int ends_in_read = 0; ends_in_read <= 1; ends_in_read++) {
        PGconn *victim = connect_retrying();
        int failed;

        if (terminate_session(conn, victim) != 0) {
            failures += check("session_terminated", 0);
            PQfinish(victim);
            continue;
        }
        db_begin(victim);
        pipeline_insert_later(victim, "8");
        if (ends_in_read) {
            failed = pipeline_rows(victim) == -1;
            db_rollback(victim);
        } else {
            failed = db_commit(victim) != 0;
        }
        failures += check(ends_in_read ? "ended_session_fails_read_and_is_broken"
                                       : "ended_session_fails_commit_and_is_broken",
                          failed && db_last_failure_transient(victim) && db_is_broken(victim));
        PQfinish(victim);
    }
    failures += check("nothing_of_ended_sessions_committed", pipeline_rows(conn) == 403);

    /* A connection libpq is left in pipeline mode on, with results it cannot
     * hand over (as after a session ended mid-pipeline), reads as broken
     * instead of failing every call that follows. */
    {
        PGconn *stuck = connect_retrying();

        failures +=
            check("stuck_pipeline_is_broken",
                  !db_is_broken(stuck) && PQenterPipelineMode(stuck) == 1 &&
                      PQsendQueryParams(stuck, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
                      db_is_broken(stuck));
        PQfinish(stuck);
    }
    PQfinish(conn);
    return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    char errors[2048];
    const char *command = argc > 1 ? argv[1] : "";

    log_init("msgtest", LOG_LEVEL_INFO);
    if (config_load(config_table, sizeof(config_table) / sizeof(config_table[0]), errors,
                    sizeof(errors)) != 0) {
        fprintf(stderr, "msgtest: bad configuration:\n%s", errors);
        return 2;
    }
    crashpoint_init();
    if (strcmp(command, "relay") == 0)
        return cmd_relay();
    if (strcmp(command, "consume") == 0)
        return cmd_consume();
    if (strcmp(command, "write") == 0 && argc >= 4)
        return cmd_write(atoll(argv[2]), atoll(argv[3]), argc > 4 ? atoll(argv[4]) : 0);
    if (strcmp(command, "poison") == 0 && argc == 3)
        return cmd_poison(atoll(argv[2]));
    if (strcmp(command, "produce") == 0 && argc == 4)
        return cmd_produce(argv[2], argv[3]);
    if (strcmp(command, "dump") == 0 && argc == 3)
        return cmd_dump(argv[2]);
    if (strcmp(command, "lag") == 0 && argc == 4)
        return cmd_lag(argv[2], argv[3]);
    if (strcmp(command, "pipeline") == 0)
        return cmd_pipeline();
    if (strcmp(command, "delete-topics") == 0 && argc == 3 && argv[2][0] != '\0')
        return cmd_delete_topics(argv[2]);
    fprintf(stderr, "usage: msgtest relay|consume|write FIRST COUNT [ROLLBACK_EVERY]|poison SEQ|"
                    "produce TOPIC KEY|dump TOPIC|lag GROUP TOPIC|pipeline|delete-topics PREFIX\n");
    return 2;
}

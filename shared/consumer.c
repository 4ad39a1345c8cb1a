/*
 * consumer.c - poll, deduplicate through the inbox, handle, commit, then store
 * the offset; retry transient failures and dead-letter poison messages.
 */
#define _POSIX_C_SOURCE 200809L
#include "consumer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "crashpoint.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"

#define DLQ_ORIGINAL_MAX 16384 /* bytes of the original value kept in a dead letter */

struct consumer {
    struct consumer_config cfg;
    rd_kafka_t *rk;
    PGconn *conn;
    pthread_t thread, lag_thread;
    int lag_thread_started;
    atomic_int stop;
    atomic_int db_ready;
    atomic_llong handled;
    struct backoff retry;
    struct backoff reconnect; /* while idle without a connection */
    double reconnect_at_ms;   /* the idle consumer's next attempt */
    struct metric *m_consumed, *m_duplicates, *m_skipped, *m_dead, *m_retries, *m_handle_ms;
    struct metric *m_lag;
    struct metric *m_partitions;
};

/* How often the lag gauge is sampled, and how long the broker may take. */
#define LAG_SAMPLE_MS  5000
#define LAG_TIMEOUT_MS 1000

/* Outcome of one attempt at a message. */
enum attempt_result { ATTEMPT_DONE, ATTEMPT_TRANSIENT, ATTEMPT_FAILED };

/* The topic of msg without the deployment's prefix. */
static const char *logical_topic(const struct consumer *consumer, const rd_kafka_message_t *msg)
{
    return kafka_logical_topic(&consumer->cfg.kafka, rd_kafka_topic_name(msg->rkt));
}

/* Returns 0 when msg's "type" header names a type the handler ignores. */
static int consumer_wants(const struct consumer *consumer, const rd_kafka_message_t *msg)
{
    char type[ENVELOPE_TYPE_MAX];

    if (consumer->cfg.handled_types == NULL || kafka_header(msg, "type", type, sizeof(type)) != 0)
        return 1;
    for (const char *const *t = consumer->cfg.handled_types; *t != NULL; t++) {
        if (strcmp(*t, type) == 0)
            return 1;
    }
    return 0;
}

/* The handler's view of msg: key and traceparent are copied into the
 * caller's buffers (ENVELOPE_KEY_MAX and 64 bytes), "" when absent. */
static struct consumer_message message_view(const struct consumer *consumer,
                                            const rd_kafka_message_t *msg,
                                            const struct envelope *env, char *key,
                                            char *traceparent)
{
    key[0] = '\0';
    if (msg->key && msg->key_len < ENVELOPE_KEY_MAX) {
        memcpy(key, msg->key, msg->key_len);
        key[msg->key_len] = '\0';
    }
    traceparent[0] = '\0';
    kafka_header(msg, "traceparent", traceparent, 64);
    return (struct consumer_message){.env = env,
                                     .topic = logical_topic(consumer, msg),
                                     .partition = msg->partition,
                                     .offset = msg->offset,
                                     .key = key,
                                     .traceparent = traceparent};
}

static int consumer_ensure_db(struct consumer *consumer)
{
    char err[512];

    if (!db_is_broken(consumer->conn))
        return 0;
    PQfinish(consumer->conn);
    consumer->conn = db_connect(consumer->cfg.db_url, consumer->cfg.name, err, sizeof(err));
    if (consumer->conn == NULL) {
        atomic_store(&consumer->db_ready, 0);
        log_warn("msg=\"consumer cannot connect\" error=\"%s\"", err);
        return -1;
    }
    atomic_store(&consumer->db_ready, 1);
    return 0;
}

/* Whether msg is a dead letter's copy produced by `dead-letters redrive`. */
static int is_redriven(const rd_kafka_message_t *msg)
{
    char redriven_from[8];

    return kafka_header(msg, "redriven_from", redriven_from, sizeof(redriven_from)) == 0;
}

/* Whether msg gets an inbox row (see claim_for_handler). */
static int keeps_inbox_row(const struct consumer *consumer, const rd_kafka_message_t *msg)
{
    return !consumer->cfg.handler_idempotent || is_redriven(msg);
}

/* For a redriven copy, queues the delete of its message's "dead_letter"
 * inbox row, which the copy's own row then replaces in the same
 * transaction. Returns 0 or -1. */
static int redriven_replaces_dead_row(PGconn *conn, const rd_kafka_message_t *msg,
                                      const char *message_id)
{
    const char *params[] = {message_id};

    if (!is_redriven(msg))
        return 0;
    return db_exec_later(conn, "inbox dead letter redriven",
                         "DELETE FROM inbox WHERE message_id = $1 AND outcome = 'dead_letter'", 1,
                         params);
}

/*
 * Inserts a dead letter's inbox row. Returns 1 if it was new, 0 if the
 * message was handled (or dead-lettered) before, -1 on failure. A redriven
 * copy that failed like its original takes the place of the original's row
 * (the role may delete inbox rows, not update them) and is dead-lettered
 * again, so it is not dropped unseen.
 */
static int inbox_claim_dead(PGconn *conn, const char *message_id, const char *topic,
                            const rd_kafka_message_t *msg)
{
    char partition[16], offset[32];
    const char *params[] = {message_id, topic, partition, offset};
    PGresult *res;
    int inserted;

    snprintf(partition, sizeof(partition), "%d", (int)msg->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    if (redriven_replaces_dead_row(conn, msg, message_id) != 0)
        return -1;
    res = db_query(conn, "inbox insert",
                   "INSERT INTO inbox (message_id, topic, kafka_partition, kafka_offset, outcome) "
                   "VALUES ($1, $2, $3::int, $4::bigint, 'dead_letter') "
                   "ON CONFLICT (message_id) DO NOTHING",
                   4, params);
    if (res == NULL)
        return -1;
    inserted = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    return inserted;
}

/*
 * Queues the inbox row of a message about to be handled (nothing when the
 * handler is idempotent by itself and keeps no inbox row, unless the message
 * is a redriven dead letter: its row shows the dead letter handled, and
 * skips a second copy). A redriven copy first takes the place of the
 * message's "dead_letter" row, in the same transaction: so the copy is
 * applied even when that row is back (a database restored from a dump
 * taken before the redrive), and a failed attempt leaves the row as it was.
 * The rows travel with the handler's first statement, saving a round trip;
 * when the message was handled before, its primary key fails the
 * transaction, and message_was_handled() tells that apart from a real
 * failure. Returns 0 or -1.
 */
static int claim_for_handler(const struct consumer *consumer, const struct consumer_message *cmsg,
                             const rd_kafka_message_t *msg)
{
    char partition[16], offset[32];
    const char *params[] = {cmsg->env->id, cmsg->topic, partition, offset};

    if (!keeps_inbox_row(consumer, msg))
        return 0;
    snprintf(partition, sizeof(partition), "%d", (int)msg->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    if (redriven_replaces_dead_row(consumer->conn, msg, cmsg->env->id) != 0)
        return -1;
    return db_exec_later(consumer->conn, "inbox insert",
                         "INSERT INTO inbox (message_id, topic, kafka_partition, kafka_offset, "
                         "outcome) VALUES ($1, $2, $3::int, $4::bigint, 'handled')",
                         4, params);
}

/* After a failed attempt (rolled back): 1 if the message's inbox row exists,
 * so it was handled (or dead-lettered) before, 0 if not, -1 on failure. For
 * a redriven copy only a "handled" row counts: the dead letter's own row is
 * still there after the copy failed too, which must then be retried and
 * dead-lettered again, not skipped. A second redriven copy to an idempotent
 * handler is found here too. */
static int message_was_handled(const struct consumer *consumer, const struct consumer_message *cmsg,
                               const rd_kafka_message_t *msg)
{
    const char *params[] = {cmsg->env->id};
    PGresult *res;
    int found;

    if (!keeps_inbox_row(consumer, msg))
        return 0;
    /* Literals, not a formatted buffer: db.c prepares statements by address. */
    res = db_query(consumer->conn, "inbox check",
                   is_redriven(msg) ? "SELECT 1 FROM inbox WHERE message_id = $1 "
                                      "AND outcome <> 'dead_letter'"
                                    : "SELECT 1 FROM inbox WHERE message_id = $1",
                   1, params);
    if (res == NULL)
        return -1;
    found = PQntuples(res) == 1;
    PQclear(res);
    return found;
}

/* Copies at most max bytes of data, replacing bytes that are not printable
 * ASCII, so what a dead letter quotes is valid text whatever it came from. */
static char *printable_copy(const void *data, size_t len, size_t max)
{
    const unsigned char *src = data;
    char *copy;

    if (len > max)
        len = max;
    copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        copy[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
    copy[len] = '\0';
    return copy;
}

/*
 * Writes a poison message's record: inbox row (outcome dead_letter) plus a
 * "dead_letter" envelope in the outbox for <topic>.dlq, in one transaction.
 * A minimal letter leaves out the original value and takes the inbox id as
 * its key, which leaves little for the database to refuse. Returns
 * ATTEMPT_DONE, ATTEMPT_FAILED if the database refused it for good (its
 * SQLSTATE in refused_sqlstate), or ATTEMPT_TRANSIENT.
 */
static enum attempt_result write_dead_letter(struct consumer *consumer,
                                             const rd_kafka_message_t *msg,
                                             const struct envelope *env, const char *inbox_id,
                                             const char *error, int attempts, int minimal,
                                             char refused_sqlstate[6])
{
    const char *topic = logical_topic(consumer, msg);
    const char *key = env && !minimal ? env->saga_id : inbox_id;
    char dlq_topic[300], traceparent[64] = "";
    struct envelope dead;
    cJSON *payload = cJSON_CreateObject();
    char *original = minimal ? NULL : printable_copy(msg->payload, msg->len, DLQ_ORIGINAL_MAX);
    /* A handler's reason may quote the message or end inside a character. */
    char *reason = printable_copy(error, strlen(error), 1024);
    int claimed, refused;

    if (payload == NULL || (original == NULL && !minimal) || reason == NULL) {
        cJSON_Delete(payload);
        free(original);
        free(reason);
        return ATTEMPT_TRANSIENT;
    }
    snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
    cJSON_AddStringToObject(payload, "error", reason);
    free(reason);
    cJSON_AddStringToObject(payload, "topic", topic);
    cJSON_AddNumberToObject(payload, "partition", msg->partition);
    cJSON_AddNumberToObject(payload, "offset", (double)msg->offset);
    cJSON_AddNumberToObject(payload, "attempts", attempts);
    cJSON_AddStringToObject(payload, "group", consumer->cfg.kafka.group_id);
    cJSON_AddStringToObject(payload, "original_id", env ? env->id : "");
    cJSON_AddStringToObject(payload, "original_type", env ? env->type : "");
    cJSON_AddNumberToObject(payload, "original_bytes", (double)msg->len);
    if (original != NULL)
        cJSON_AddStringToObject(payload, "original_value", original);
    free(original);
    if (envelope_build(&dead, "dead_letter", env && !minimal ? env->saga_id : "",
                       consumer->cfg.name, minimal ? NULL : env, payload) != 0)
        return ATTEMPT_TRANSIENT;
    kafka_header(msg, "traceparent", traceparent, sizeof(traceparent));

    if (db_begin(consumer->conn) != 0)
        goto failed;
    claimed = inbox_claim_dead(consumer->conn, inbox_id, topic, msg);
    if (claimed < 0)
        goto failed;
    if (claimed == 1 && outbox_enqueue(consumer->conn, dlq_topic, key, &dead, traceparent) != 0)
        goto failed;
    if (db_commit(consumer->conn) != 0)
        goto failed;
    envelope_free(&dead);
    if (claimed == 1) {
        char quoted[1024];

        metrics_inc(consumer->m_dead);
        log_error("msg=\"message dead-lettered\" topic=%s partition=%d offset=%lld "
                  "message_id=%s attempts=%d error=\"%s\"",
                  topic, (int)msg->partition, (long long)msg->offset, inbox_id, attempts,
                  log_quote(quoted, sizeof(quoted), error, strlen(error)));
    }
    return ATTEMPT_DONE;
failed:
    /* Read before the rollback, which clears the SQLSTATE. */
    refused = !db_last_failure_transient(consumer->conn);
    snprintf(refused_sqlstate, 6, "%s", db_last_sqlstate());
    db_rollback(consumer->conn);
    envelope_free(&dead);
    return refused && !db_is_broken(consumer->conn) ? ATTEMPT_FAILED : ATTEMPT_TRANSIENT;
}

/*
 * Records a poison message (write_dead_letter). Should the database refuse
 * that record for good, say by a constraint or trigger an operator added, a
 * minimal one is written instead, so that the partition keeps flowing and
 * the message can still be redriven while the topic holds it. The minimal
 * letter has the same inbox row: one the database refuses holds the
 * partition (without it the message could not be told apart from one never
 * handled) until the cause is gone. Returns ATTEMPT_DONE or
 * ATTEMPT_TRANSIENT.
 */
static enum attempt_result consumer_dead_letter(struct consumer *consumer,
                                                const rd_kafka_message_t *msg,
                                                const struct envelope *env, const char *inbox_id,
                                                const char *error, int attempts)
{
    char sqlstate[6] = "", minimal_error[700];
    enum attempt_result result =
        write_dead_letter(consumer, msg, env, inbox_id, error, attempts, 0, sqlstate);

    if (result != ATTEMPT_FAILED)
        return result;
    log_error("msg=\"dead letter refused, writing a minimal one\" topic=%s partition=%d "
              "offset=%lld message_id=%s sqlstate=%s",
              logical_topic(consumer, msg), (int)msg->partition, (long long)msg->offset, inbox_id,
              sqlstate);
    snprintf(minimal_error, sizeof(minimal_error),
             "%.512s; the full dead letter was refused (SQLSTATE %s)", error, sqlstate);
    result = write_dead_letter(consumer, msg, env, inbox_id, minimal_error, attempts, 1, sqlstate);
    return result == ATTEMPT_DONE ? ATTEMPT_DONE : ATTEMPT_TRANSIENT;
}

/* One attempt: inbox row, handler, commit. */
static enum attempt_result consumer_attempt(struct consumer *consumer,
                                            const rd_kafka_message_t *msg,
                                            const struct consumer_message *cmsg, char *err,
                                            size_t errlen)
{
    enum attempt_result failure;
    int handled, rc;
    double started = backoff_now_ms();

    if (db_begin(consumer->conn) != 0 || claim_for_handler(consumer, cmsg, msg) != 0) {
        db_rollback(consumer->conn);
        return ATTEMPT_TRANSIENT;
    }
    rc = consumer->cfg.handler(consumer->conn, cmsg, consumer->cfg.handler_arg, err, errlen);
    if (rc == CONSUMER_OK || rc == CONSUMER_SKIP) {
        crashpoint("consumer.before_commit");
        if (db_commit(consumer->conn) == 0) {
            crashpoint("consumer.after_commit");
            metrics_inc(rc == CONSUMER_OK ? consumer->m_consumed : consumer->m_skipped);
            metrics_observe_ms(consumer->m_handle_ms, backoff_now_ms() - started);
            return ATTEMPT_DONE;
        }
        /* The commit also ran the queued statements (db_exec_later): one of
         * them failing for good counts as the handler failing. */
        failure = db_last_failure_transient(consumer->conn) ? ATTEMPT_TRANSIENT : ATTEMPT_FAILED;
        if (failure == ATTEMPT_FAILED)
            snprintf(err, errlen, "commit failed (SQLSTATE %s)", db_last_sqlstate());
    } else {
        failure = rc == CONSUMER_RETRY || db_is_broken(consumer->conn) ? ATTEMPT_TRANSIENT
                                                                       : ATTEMPT_FAILED;
        if (failure == ATTEMPT_FAILED && err[0] == '\0')
            snprintf(err, errlen, "handler failed");
    }
    db_rollback(consumer->conn);
    if (db_is_broken(consumer->conn))
        return ATTEMPT_TRANSIENT;
    handled = message_was_handled(consumer, cmsg, msg);
    if (handled == 1) {
        /* Handled before (a duplicate or a replay): nothing to do. */
        metrics_inc(consumer->m_duplicates);
        log_debug("msg=\"duplicate skipped\" message_id=%s", cmsg->env->id);
        return ATTEMPT_DONE;
    }
    return handled < 0 ? ATTEMPT_TRANSIENT : failure;
}

/* Handles msg until it is done (applied, duplicate or dead-lettered), or the
 * consumer is stopping. Returns 1 when done, 0 when interrupted. */
static int consumer_process(struct consumer *consumer, const rd_kafka_message_t *msg)
{
    struct envelope env;
    char decode_err[256], err[512], key[ENVELOPE_KEY_MAX], traceparent[64];
    char inbox_id[320], last_error[512] = "", quoted_type[160], quoted_err[1024];
    struct consumer_message cmsg;
    int decoded, failures = 0;

    if (!consumer_wants(consumer, msg)) {
        metrics_inc(consumer->m_skipped);
        return 1;
    }
    decoded = envelope_decode(msg->payload, msg->len, &env, decode_err, sizeof(decode_err)) == 0;
    snprintf(inbox_id, sizeof(inbox_id), "%s/%d/%lld", logical_topic(consumer, msg),
             (int)msg->partition, (long long)msg->offset);
    cmsg = message_view(consumer, msg, &env, key, traceparent);
    backoff_reset(&consumer->retry);
    while (!atomic_load(&consumer->stop)) {
        enum attempt_result result;

        if (consumer_ensure_db(consumer) != 0) {
            backoff_sleep_ms(backoff_next(&consumer->retry));
            continue;
        }
        err[0] = '\0';
        if (!decoded) {
            snprintf(err, sizeof(err), "cannot decode: %s", decode_err);
            result = consumer_dead_letter(consumer, msg, NULL, inbox_id, err, 1);
        } else if (failures >= consumer->cfg.max_attempts) {
            result = consumer_dead_letter(consumer, msg, &env, env.id, last_error, failures);
        } else {
            result = consumer_attempt(consumer, msg, &cmsg, err, sizeof(err));
        }
        if (result == ATTEMPT_DONE) {
            envelope_free(&env);
            return 1;
        }
        if (result == ATTEMPT_FAILED) {
            failures++;
            snprintf(last_error, sizeof(last_error), "%s", err);
            log_warn("msg=\"handler failed\" topic=%s offset=%lld message_id=%s type=\"%s\" "
                     "attempt=%d error=\"%s\"",
                     cmsg.topic, (long long)msg->offset, env.id,
                     log_quote(quoted_type, sizeof(quoted_type), env.type, strlen(env.type)),
                     failures, log_quote(quoted_err, sizeof(quoted_err), err, strlen(err)));
            /* Keep the reason for the dead letter written on the last round. */
            if (failures >= consumer->cfg.max_attempts) {
                result = consumer_dead_letter(consumer, msg, &env, env.id, last_error, failures);
                if (result == ATTEMPT_DONE) {
                    envelope_free(&env);
                    return 1;
                }
            }
        }
        metrics_inc(consumer->m_retries);
        backoff_sleep_ms(backoff_next(&consumer->retry));
    }
    envelope_free(&env);
    return 0;
}

int consumer_db_failure(PGconn *conn)
{
    return db_last_failure_transient(conn) ? CONSUMER_RETRY : CONSUMER_FAIL;
}

static void consumer_store_offset(struct consumer *consumer, const rd_kafka_message_t *msg)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;

    rd_kafka_topic_partition_list_add(list, rd_kafka_topic_name(msg->rkt), msg->partition)->offset =
        msg->offset + 1;
    err = rd_kafka_offsets_store(consumer->rk, list);
    /* A revoked partition refuses the store; its next owner re-reads the
     * message and the inbox makes that harmless. */
    if (err)
        log_debug("msg=\"offset store refused\" error=\"%s\"", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Tries the whole batch in one transaction: inbox row and handler for each
 * message in order, then one commit (one WAL flush instead of n). Returns 1 if
 * committed; 0 if anything failed or could not be decoded, after rolling back,
 * so the caller handles the messages one by one with the usual retries and
 * dead-lettering.
 */
static int consumer_attempt_batch(struct consumer *consumer, rd_kafka_message_t **batch, int n)
{
    struct envelope envs[CONSUMER_BATCH_MAX];
    enum { NOT_OURS, APPLIED, SKIPPED } outcome[CONSUMER_BATCH_MAX];
    int decoded = 0, wanted = 0, ok = 0;
    double started = backoff_now_ms();

    for (; decoded < n; decoded++) {
        char ignored[8];

        outcome[decoded] = consumer_wants(consumer, batch[decoded]) ? APPLIED : NOT_OURS;
        if (outcome[decoded] == NOT_OURS) {
            envs[decoded].payload = NULL;
            continue;
        }
        wanted++;
        if (envelope_decode(batch[decoded]->payload, batch[decoded]->len, &envs[decoded], ignored,
                            sizeof(ignored)) != 0)
            goto out;
    }
    if (wanted > 0 && (consumer_ensure_db(consumer) != 0 || db_begin(consumer->conn) != 0))
        goto out;
    for (int i = 0; i < n && wanted > 0; i++) {
        char key[ENVELOPE_KEY_MAX], traceparent[64], err[512] = "";
        struct consumer_message cmsg;
        int rc;

        if (outcome[i] == NOT_OURS)
            continue;
        cmsg = message_view(consumer, batch[i], &envs[i], key, traceparent);
        /* A duplicate among them fails the batch: then one by one. */
        if (claim_for_handler(consumer, &cmsg, batch[i]) != 0)
            goto rollback;
        rc = consumer->cfg.handler(consumer->conn, &cmsg, consumer->cfg.handler_arg, err,
                                   sizeof(err));
        if (rc != CONSUMER_OK && rc != CONSUMER_SKIP)
            goto rollback;
        outcome[i] = rc == CONSUMER_OK ? APPLIED : SKIPPED;
    }
    if (wanted > 0) {
        crashpoint("consumer.before_commit");
        if (db_commit(consumer->conn) != 0)
            goto out;
        crashpoint("consumer.after_commit");
        metrics_observe_ms(consumer->m_handle_ms, backoff_now_ms() - started);
    }
    for (int i = 0; i < n; i++)
        metrics_inc(outcome[i] == APPLIED ? consumer->m_consumed : consumer->m_skipped);
    ok = 1;
    goto out;
rollback:
    db_rollback(consumer->conn);
out:
    for (int i = 0; i < decoded; i++) {
        if (outcome[i] != NOT_OURS)
            envelope_free(&envs[i]);
    }
    return ok;
}

/*
 * Messages on the partitions assigned to this consumer past the group's
 * committed offsets (from the low watermark where nothing is committed): the
 * lag an operator sees with `scripts/kafka.sh lag`. The ends come from the
 * fetcher's cache, so usually only the committed offsets ask the broker; a
 * partition not fetched from yet asks it for its ends too. Returns -1 when
 * the broker does not answer.
 */
static long long assigned_lag(struct consumer *consumer)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    long long lag = 0;

    if (rd_kafka_assignment(consumer->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (parts->cnt > 0 &&
        rd_kafka_committed(consumer->rk, parts, LAG_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        lag = -1;
    for (int i = 0; lag >= 0 && i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t low, high, from;

        if ((rd_kafka_get_watermark_offsets(consumer->rk, p->topic, p->partition, &low, &high) !=
                 RD_KAFKA_RESP_ERR_NO_ERROR ||
             high < 0) &&
            rd_kafka_query_watermark_offsets(consumer->rk, p->topic, p->partition, &low, &high,
                                             LAG_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            lag = -1; /* not fetched yet and the broker does not answer */
            break;
        }
        from = p->offset >= 0 ? p->offset : low;
        if (high > from)
            lag += high - from;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return lag;
}

/* Samples the lag into the process-wide gauge (each consumer adds its own
 * part), also while the consumer thread is held on one message. */
static void *lag_sampler_main(void *arg)
{
    struct consumer *consumer = arg;
    long long reported = 0;

    while (!atomic_load(&consumer->stop)) {
        long long lag = assigned_lag(consumer);

        if (lag >= 0) {
            metrics_gauge_add(consumer->m_lag, lag - reported);
            reported = lag;
        }
        for (int slept = 0; slept < LAG_SAMPLE_MS && !atomic_load(&consumer->stop); slept += 100)
            backoff_sleep_ms(100);
    }
    metrics_gauge_add(consumer->m_lag, -reported);
    return NULL;
}

/* How many partitions the group has given this consumer; -1 when
 * librdkafka cannot say. */
static int assignment_size(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    int count;

    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    count = parts->cnt;
    rd_kafka_topic_partition_list_destroy(parts);
    return count;
}

/* Brings this consumer's part of the process-wide partitions gauge to its
 * current assignment; returns the part now reported. */
static int report_partitions(struct consumer *consumer, int reported)
{
    int count = assignment_size(consumer->rk);

    if (count < 0)
        return reported;
    metrics_gauge_add(consumer->m_partitions, count - reported);
    return count;
}

static void *consumer_main(void *arg)
{
    struct consumer *consumer = arg;
    rd_kafka_message_t *batch[CONSUMER_BATCH_MAX];
    int partitions_reported = 0;

    while (!atomic_load(&consumer->stop)) {
        int n = 0, batched;
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer->rk, 200);

        partitions_reported = report_partitions(consumer, partitions_reported);

        /* Take what has already arrived, without waiting for more: a batch
         * grows only under load, so it adds no latency when idle. */
        while (msg != NULL) {
            if (msg->err) {
                if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_warn("msg=\"consume error\" error=\"%s\"", rd_kafka_message_errstr(msg));
                rd_kafka_message_destroy(msg);
            } else {
                batch[n++] = msg;
            }
            if (n == consumer->cfg.batch_max)
                break;
            msg = rd_kafka_consumer_poll(consumer->rk, 0);
        }
        if (n == 0) {
            /* Idle, a lost connection is replaced with backoff (about one
             * attempt a second in a long outage), not on every poll. */
            if (backoff_now_ms() < consumer->reconnect_at_ms)
                continue;
            /* Nothing else reads an idle connection, so a server that went
             * away would go unseen and /readyz would still say ready; the
             * probe's reads mark it broken, and consumer_ensure_db() then
             * replaces it. */
            (void)db_probe_idle(consumer->conn);
            if (consumer_ensure_db(consumer) == 0) {
                backoff_reset(&consumer->reconnect);
                consumer->reconnect_at_ms = 0;
            } else {
                consumer->reconnect_at_ms =
                    backoff_now_ms() + (double)backoff_next(&consumer->reconnect);
            }
            continue;
        }
        batched = n > 1 && consumer_attempt_batch(consumer, batch, n);
        for (int i = 0; i < n; i++) {
            /* Stopping mid-batch: the rest is read again by the next owner. */
            if (!batched && !consumer_process(consumer, batch[i]))
                break;
            atomic_fetch_add(&consumer->handled, 1);
            consumer_store_offset(consumer, batch[i]);
        }
        for (int i = 0; i < n; i++)
            rd_kafka_message_destroy(batch[i]);
    }
    metrics_gauge_add(consumer->m_partitions, -partitions_reported);
    return NULL;
}

struct consumer *consumer_start(const struct consumer_config *cfg, char *err, size_t errlen)
{
    struct consumer *consumer = calloc(1, sizeof(*consumer));

    if (consumer == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    consumer->cfg = *cfg;
    if (consumer->cfg.max_attempts <= 0)
        consumer->cfg.max_attempts = 5;
    if (consumer->cfg.retry_base_ms <= 0)
        consumer->cfg.retry_base_ms = 50;
    if (consumer->cfg.batch_max <= 0 || consumer->cfg.batch_max > CONSUMER_BATCH_MAX)
        consumer->cfg.batch_max = CONSUMER_BATCH_MAX;
    if (consumer->cfg.retry_max_ms <= 0)
        consumer->cfg.retry_max_ms = BACKOFF_RECONNECT_MAX_MS;
    backoff_init(&consumer->retry, consumer->cfg.retry_base_ms, consumer->cfg.retry_max_ms, 0);
    backoff_init(&consumer->reconnect, 100, BACKOFF_RECONNECT_MAX_MS, 0);
    consumer->rk = kafka_consumer_new(&consumer->cfg.kafka, consumer->cfg.topics, err, errlen);
    if (consumer->rk == NULL) {
        free(consumer);
        return NULL;
    }
    consumer->m_consumed = metrics_counter("messages_handled_total", NULL,
                                           "Messages applied by a handler and committed");
    consumer->m_duplicates = metrics_counter("messages_duplicate_total", NULL,
                                             "Messages skipped because the inbox had them");
    consumer->m_skipped = metrics_counter("messages_skipped_total", NULL,
                                          "Messages of unknown type, skipped and counted");
    consumer->m_dead = metrics_counter("messages_dead_lettered_total", NULL,
                                       "Messages sent to a dead-letter topic");
    consumer->m_retries = metrics_counter("handler_retries_total", NULL,
                                          "Retries after transient or handler failures");
    consumer->m_handle_ms =
        metrics_histogram("handler_duration_ms", NULL, "Time from inbox insert to commit");
    consumer->m_lag = metrics_gauge("consumer_lag_messages", NULL,
                                    "Messages on this process's partitions past its group's "
                                    "committed offsets, sampled every 5 s");
    consumer->m_partitions = metrics_gauge("consumer_partitions_assigned", NULL,
                                           "Partitions of the consumed topics that the group "
                                           "has given this process's consumers");
    if (pthread_create(&consumer->thread, NULL, consumer_main, consumer) != 0) {
        snprintf(err, errlen, "cannot start the consumer thread");
        rd_kafka_destroy(consumer->rk);
        free(consumer);
        return NULL;
    }
    /* Without it the consumer still works; only the gauge stays still. */
    consumer->lag_thread_started =
        pthread_create(&consumer->lag_thread, NULL, lag_sampler_main, consumer) == 0;
    if (!consumer->lag_thread_started)
        log_warn("msg=\"cannot start the lag sampler; consumer_lag_messages stays 0\"");
    return consumer;
}

int consumer_partitions(const struct consumer *consumer)
{
    int count;

    if (consumer == NULL || !atomic_load(&((struct consumer *)consumer)->db_ready))
        return -1;
    count = assignment_size(consumer->rk);
    return count < 0 ? 0 : count;
}

int consumer_is_ready(const struct consumer *consumer)
{
    return consumer_partitions(consumer) > 0;
}

long long consumer_handled(const struct consumer *consumer)
{
    return consumer ? atomic_load(&((struct consumer *)consumer)->handled) : 0;
}

void consumer_stop(struct consumer *consumer)
{
    if (consumer == NULL)
        return;
    atomic_store(&consumer->stop, 1);
    pthread_join(consumer->thread, NULL);
    if (consumer->lag_thread_started)
        pthread_join(consumer->lag_thread, NULL);
    rd_kafka_consumer_close(consumer->rk);
    rd_kafka_destroy(consumer->rk);
    PQfinish(consumer->conn);
    free(consumer);
}

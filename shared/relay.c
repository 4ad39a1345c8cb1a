/*
 * relay.c - outbox relay thread: lock, wait for NOTIFY or the poll interval,
 * read a batch in id order, produce it, wait for every delivery report, delete
 * what was acknowledged.
 *
 * What was acknowledged is deleted before anything new is read: a delete that
 * fails is retried on its own, so rows already published are not published
 * again while the database refuses the delete. A producer that fails for good
 * (a fatal error of the idempotent producer) is replaced, and the rows it did
 * not deliver are read again, in order.
 */
#define _POSIX_C_SOURCE 200809L
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "crashpoint.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"

#define RELAY_DEFAULT_LOCK_KEY 0x6f7574626f78LL /* "outbox" */
#define RELAY_MAX_TOPICS       16

/* Delivery state of one row of the current batch. */
enum slot_state { SLOT_PENDING = 0, SLOT_ACKED = 1, SLOT_FAILED = -1 };

struct relay {
    struct relay_config cfg;
    rd_kafka_t *producer;
    PGconn *conn;
    pthread_t thread;
    int wake_pipe[2];
    atomic_int stop;
    atomic_int active;
    atomic_llong published;
    int *slots;       /* batch_size entries, written by the delivery callback */
    char *delete_ids; /* "{1,2,...}" buffer for the delete */
    size_t delete_cap;
    int undeleted; /* rows in delete_ids, acknowledged and not yet deleted */
    struct metric *m_published, *m_failed, *m_active, *m_batch_ms, *m_notified, *m_replaced;
    rd_kafka_topic_t *known[RELAY_MAX_TOPICS]; /* cfg.topics, kept for their metadata */
    int known_count;
};

static void relay_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    int *slot = msg->_private;

    (void)rk;
    (void)opaque;
    if (msg->err) {
        log_warn("msg=\"outbox publish failed\" topic=%s error=\"%s\"",
                 rd_kafka_topic_name(msg->rkt), rd_kafka_err2str(msg->err));
        *slot = SLOT_FAILED;
    } else {
        *slot = SLOT_ACKED;
    }
}

/* Reads the wake pipe empty: the wake-ups it holds are being acted on. */
static void relay_drain_wake_pipe(struct relay *relay)
{
    char buf[64];

    while (read(relay->wake_pipe[0], buf, sizeof(buf)) > 0)
        ;
}

/* Waits until the database socket is readable (a NOTIFY), the wake pipe is
 * written (a writer in this process, or relay_stop()), or timeout_ms passes.
 * A wake-up is consumed by the wait it ends: left in the pipe, it would end
 * every later wait at once, and a relay retrying its connection would spin. */
static void relay_wait(struct relay *relay, long timeout_ms)
{
    struct pollfd fds[2] = {{.fd = relay->wake_pipe[0], .events = POLLIN}, {.fd = -1}};
    int nfds = 1;

    if (!db_is_broken(relay->conn)) {
        PGnotify *notify;

        /* A notification that came in with a query's result is already
         * read off the socket: it is queued in libpq, and counts now. */
        if (PQconsumeInput(relay->conn) && (notify = PQnotifies(relay->conn)) != NULL) {
            metrics_inc(relay->m_notified);
            PQfreemem(notify);
            return;
        }
        fds[1].fd = PQsocket(relay->conn);
        fds[1].events = POLLIN;
        nfds = 2;
    }
    if (poll(fds, (nfds_t)nfds, (int)timeout_ms) < 0) {
        if (errno != EINTR)
            log_warn("msg=\"relay poll failed\" errno=%d", errno);
        return;
    }
    if (fds[0].revents & POLLIN)
        relay_drain_wake_pipe(relay);
}

/* Reads pending notifications so they do not wake us again. */
static void relay_drain_notifies(struct relay *relay)
{
    PGnotify *notify;

    relay_drain_wake_pipe(relay);
    if (PQconsumeInput(relay->conn) == 0)
        return;
    while ((notify = PQnotifies(relay->conn)) != NULL) {
        metrics_inc(relay->m_notified);
        PQfreemem(notify);
    }
}

static void relay_disconnect(struct relay *relay)
{
    if (atomic_load(&relay->active))
        log_warn("msg=\"relay lost its database connection; giving up the active role\"");
    PQfinish(relay->conn);
    relay->conn = NULL;
    atomic_store(&relay->active, 0);
    metrics_set(relay->m_active, 0);
}

/* Connects and LISTENs. Returns 0 or -1. */
static int relay_connect(struct relay *relay)
{
    char err[512];

    relay->conn = db_connect(relay->cfg.db_url, relay->cfg.name, err, sizeof(err));
    if (relay->conn == NULL) {
        log_warn("msg=\"relay cannot connect\" error=\"%s\"", err);
        return -1;
    }
    /* Losing a delete of published rows in a server crash only publishes
     * them again, which consumers absorb; so the relay's own commits need not
     * wait for the WAL flush. Business transactions keep synchronous commit.
     * The outbox is a queue, usually empty when autovacuum samples it, so its
     * statistics invite a sequential scan and sort of every page the table
     * ever grew to; the relay only ever wants the primary key's order. */
    if (db_exec(relay->conn, "listen", "LISTEN " OUTBOX_CHANNEL, 0, NULL) != 0 ||
        db_exec(relay->conn, "relay commits", "SET synchronous_commit = off", 0, NULL) != 0 ||
        db_exec(relay->conn, "relay scans", "SET enable_seqscan = off", 0, NULL) != 0) {
        relay_disconnect(relay);
        return -1;
    }
    return 0;
}

/* Tries the advisory lock once. Returns 1 if held, 0 if another holds it,
 * -1 on failure. */
static int relay_try_lock(struct relay *relay)
{
    char key[32];
    const char *params[] = {key};
    PGresult *res;
    int held;

    snprintf(key, sizeof(key), "%lld", relay->cfg.lock_key);
    res = db_query(relay->conn, "relay lock", "SELECT pg_try_advisory_lock($1::bigint)", 1, params);
    if (res == NULL)
        return -1;
    held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return held;
}

static int append_id(struct relay *relay, size_t *len, const char *id)
{
    size_t need = strlen(id) + 2;

    if (*len + need + 2 > relay->delete_cap) {
        size_t cap = relay->delete_cap * 2 + need + 2;
        char *grown = realloc(relay->delete_ids, cap);

        if (grown == NULL)
            return -1;
        relay->delete_ids = grown;
        relay->delete_cap = cap;
    }
    relay->delete_ids[*len] = *len == 0 ? '{' : ',';
    (*len)++;
    memcpy(relay->delete_ids + *len, id, need - 2);
    *len += need - 2;
    return 0;
}

/* Produces one row; retries while the local queue is full. Returns 0 or -1. */
static int relay_produce(struct relay *relay, PGresult *res, int row)
{
    char topic[256];
    const char *key = PQgetvalue(res, row, 2);
    const char *msg_id = PQgetvalue(res, row, 3);
    const char *msg_type = PQgetvalue(res, row, 4);
    const char *traceparent = PQgetvalue(res, row, 5);
    const char *value = PQgetvalue(res, row, 6);
    rd_kafka_resp_err_t err;

    kafka_wire_topic(topic, sizeof(topic), relay->cfg.kafka.topic_prefix, PQgetvalue(res, row, 1),
                     NULL);
    relay->slots[row] = SLOT_PENDING;
    for (;;) {
        err = rd_kafka_producev(relay->producer, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(key, (size_t)PQgetlength(res, row, 2)),
                                RD_KAFKA_V_VALUE((void *)value, (size_t)PQgetlength(res, row, 6)),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_HEADER("id", msg_id, -1),
                                RD_KAFKA_V_HEADER("type", msg_type, -1),
                                RD_KAFKA_V_HEADER("traceparent", traceparent, -1),
                                RD_KAFKA_V_OPAQUE(&relay->slots[row]), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(relay->producer, 10);
    }
    if (err) {
        log_warn("msg=\"produce refused\" topic=%s error=\"%s\"", topic, rd_kafka_err2str(err));
        relay->slots[row] = SLOT_FAILED;
        return -1;
    }
    return 0;
}

/* 1 once the producer has raised a fatal error: it delivers nothing more. */
static int relay_producer_failed(struct relay *relay)
{
    char reason[256];

    return rd_kafka_fatal_error(relay->producer, reason, sizeof(reason)) !=
           RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Deletes the rows in delete_ids, which the broker acknowledged. Returns 0,
 * or -1 with them kept for the next try. */
static int relay_delete_published(struct relay *relay)
{
    const char *params[] = {relay->delete_ids};

    if (relay->undeleted == 0)
        return 0;
    if (db_exec(relay->conn, "outbox delete", "DELETE FROM outbox WHERE id = ANY($1::bigint[])", 1,
                params) != 0)
        return -1;
    atomic_fetch_add(&relay->published, relay->undeleted);
    metrics_add(relay->m_published, (uint64_t)relay->undeleted);
    relay->undeleted = 0;
    return 0;
}

/*
 * Publishes one batch. Returns the number of rows read (0 when the outbox is
 * empty), or -1 when the database or the broker failed.
 */
static int relay_publish_batch(struct relay *relay)
{
    char limit[32];
    const char *params[] = {limit};
    PGresult *res;
    int rows, acked = 0, failed = 0;
    size_t len = 0;
    double started = backoff_now_ms();

    /* Rows published before must go first, or the read would find them. */
    if (relay_delete_published(relay) != 0)
        return -1;
    snprintf(limit, sizeof(limit), "%ld", relay->cfg.batch_size);
    res = db_query(relay->conn, "outbox read",
                   "SELECT id, topic, msg_key, msg_id::text, msg_type, traceparent, value "
                   "FROM outbox ORDER BY id LIMIT $1::int",
                   1, params);
    if (res == NULL)
        return -1;
    rows = PQntuples(res);
    if (rows == 0) {
        PQclear(res);
        return 0;
    }
    for (int i = 0; i < rows; i++)
        relay_produce(relay, res, i);
    if (faultpoint("relay.producer_fatal"))
        rd_kafka_test_fatal_error(relay->producer, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                  "injected by FAULT_AT");
    /* Every report must be in before the slots can be read. librdkafka
     * retries without a deadline (the producer is gapless), so this ends when
     * the broker answers, the relay stops, or the producer fails for good; in
     * the last case what is not acknowledged counts as failed, and the
     * producer is replaced (destroyed) before the slots are used again. */
    while (rd_kafka_outq_len(relay->producer) > 0 && !atomic_load(&relay->stop) &&
           !relay_producer_failed(relay))
        rd_kafka_flush(relay->producer, 200);
    for (int i = 0; i < rows; i++) {
        if (relay->slots[i] == SLOT_ACKED) {
            if (append_id(relay, &len, PQgetvalue(res, i, 0)) != 0)
                break;
            acked++;
        } else {
            failed++;
        }
    }
    PQclear(res);
    if (acked > 0) {
        relay->delete_ids[len++] = '}';
        relay->delete_ids[len] = '\0';
        relay->undeleted = acked;
        crashpoint("relay.after_publish");
        if (relay_delete_published(relay) != 0)
            return -1;
    }
    metrics_observe_ms(relay->m_batch_ms, backoff_now_ms() - started);
    if (failed > 0) {
        metrics_add(relay->m_failed, (uint64_t)failed);
        return -1;
    }
    return rows;
}

/*
 * Fetches the metadata of cfg.topics, so that the first message to each goes
 * out at once. Best effort: a broker that does not answer within 2 s ends it
 * (the relay must not wait longer to start), which only costs the first
 * messages their second.
 */
static void relay_learn_topics(struct relay *relay)
{
    for (const char *const *t = relay->cfg.topics; t && *t; t++) {
        char wire[256];
        const struct rd_kafka_metadata *metadata = NULL;
        rd_kafka_topic_t *rkt;

        if (relay->known_count == RELAY_MAX_TOPICS)
            break;
        kafka_wire_topic(wire, sizeof(wire), relay->cfg.kafka.topic_prefix, *t, NULL);
        rkt = rd_kafka_topic_new(relay->producer, wire, NULL);
        if (rkt == NULL)
            continue;
        relay->known[relay->known_count++] = rkt;
        if (rd_kafka_metadata(relay->producer, 0, rkt, &metadata, 2000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        rd_kafka_metadata_destroy(metadata);
    }
}

/* Stops the producer: undelivered messages are dropped (their rows stay in
 * the outbox), and no delivery report comes after this. */
static void relay_drop_producer(struct relay *relay)
{
    rd_kafka_purge(relay->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(relay->producer, 1000);
    for (int i = 0; i < relay->known_count; i++)
        rd_kafka_topic_destroy(relay->known[i]);
    relay->known_count = 0;
    rd_kafka_destroy(relay->producer);
    relay->producer = NULL;
}

/* Replaces a producer that raised a fatal error; keeps it (and tries again
 * after the next batch) if a new one cannot be made. */
static void relay_replace_producer(struct relay *relay)
{
    char reason[256] = "", err[512];
    rd_kafka_resp_err_t code = rd_kafka_fatal_error(relay->producer, reason, sizeof(reason));
    rd_kafka_t *fresh;

    log_error("msg=\"relay producer failed for good; replacing it\" error=%s reason=\"%s\"",
              rd_kafka_err2name(code), reason);
    fresh = kafka_producer_new(&relay->cfg.kafka, relay_delivered, err, sizeof(err));
    if (fresh == NULL) {
        log_error("msg=\"relay cannot make a new producer\" error=\"%s\"", err);
        return;
    }
    relay_drop_producer(relay);
    relay->producer = fresh;
    metrics_inc(relay->m_replaced);
    relay_learn_topics(relay);
}

static void *relay_main(void *arg)
{
    struct relay *relay = arg;
    struct backoff retry;

    relay_learn_topics(relay);
    backoff_init(&retry, 100, BACKOFF_RECONNECT_MAX_MS, 0);
    while (!atomic_load(&relay->stop)) {
        if (db_is_broken(relay->conn)) {
            if (relay->conn)
                relay_disconnect(relay);
            if (relay_connect(relay) != 0) {
                relay_wait(relay, backoff_next(&retry));
                continue;
            }
        }
        if (!atomic_load(&relay->active)) {
            int held = relay_try_lock(relay);

            if (held < 0) {
                /* The connection may be fine and the server not (a full
                 * lock table): reconnect with backoff, not at once. */
                relay_disconnect(relay);
                relay_wait(relay, backoff_next(&retry));
                continue;
            }
            backoff_reset(&retry);
            if (held == 0) {
                relay_wait(relay, relay->cfg.standby_check_ms);
                relay_drain_notifies(relay);
                continue;
            }
            log_info("msg=\"relay is active\" lock_key=%lld", relay->cfg.lock_key);
            atomic_store(&relay->active, 1);
            metrics_set(relay->m_active, 1);
        }
        relay_drain_notifies(relay);
        int rows = relay_publish_batch(relay);

        if (rows < 0) {
            if (relay_producer_failed(relay))
                relay_replace_producer(relay);
            if (db_is_broken(relay->conn))
                relay_disconnect(relay);
            relay_wait(relay, backoff_next(&retry));
            continue;
        }
        backoff_reset(&retry);
        /* A short batch took every row committed before it was read; a row
         * committed since has woken us (writers notify after committing),
         * so without a wake-up another read would find nothing. */
        if (rows < relay->cfg.batch_size)
            relay_wait(relay, relay->cfg.poll_interval_ms);
    }
    return NULL;
}

/* Local listener for "outbox": a writer in this process committed. Wakes
 * this relay if it is the active one; otherwise the notification must go
 * through PostgreSQL to whichever process holds the relay lock. */
static int relay_local_wake(const char *payload, void *arg)
{
    struct relay *relay = arg;

    (void)payload;
    if (!atomic_load(&relay->active))
        return 0;
    metrics_inc(relay->m_notified);
    /* A full pipe already holds a wake-up: nothing to add. */
    if (write(relay->wake_pipe[1], "w", 1) < 0 && errno != EAGAIN)
        return 0;
    return 1;
}

struct relay *relay_start(const struct relay_config *cfg, char *err, size_t errlen)
{
    struct relay *relay = calloc(1, sizeof(*relay));

    if (relay == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    relay->cfg = *cfg;
    relay->cfg.kafka.gapless = 1;
    if (relay->cfg.batch_size <= 0)
        relay->cfg.batch_size = 2000;
    if (relay->cfg.poll_interval_ms <= 0)
        relay->cfg.poll_interval_ms = 500;
    if (relay->cfg.standby_check_ms <= 0)
        relay->cfg.standby_check_ms = 1000;
    if (relay->cfg.lock_key == 0)
        relay->cfg.lock_key = RELAY_DEFAULT_LOCK_KEY;
    relay->wake_pipe[0] = relay->wake_pipe[1] = -1;
    relay->slots = calloc((size_t)relay->cfg.batch_size, sizeof(int));
    relay->delete_cap = (size_t)relay->cfg.batch_size * 12 + 16;
    relay->delete_ids = malloc(relay->delete_cap);
    if (relay->slots == NULL || relay->delete_ids == NULL || pipe(relay->wake_pipe) != 0) {
        snprintf(err, errlen, "out of memory or file descriptors");
        goto fail;
    }
    fcntl(relay->wake_pipe[0], F_SETFL, O_NONBLOCK);
    fcntl(relay->wake_pipe[1], F_SETFL, O_NONBLOCK);
    relay->producer = kafka_producer_new(&relay->cfg.kafka, relay_delivered, err, errlen);
    if (relay->producer == NULL)
        goto fail;
    relay->m_notified = metrics_counter("outbox_notifications_total", NULL,
                                        "Wake-up notifications received from outbox writers");
    relay->m_published = metrics_counter("outbox_published_total", NULL,
                                         "Outbox rows published and acknowledged by the broker");
    relay->m_failed = metrics_counter("outbox_publish_failures_total", NULL,
                                      "Outbox rows whose publication failed and will be retried");
    relay->m_active =
        metrics_gauge("outbox_relay_active", NULL, "1 while this process holds the relay lock");
    relay->m_replaced = metrics_counter("outbox_producer_replaced_total", NULL,
                                        "Relay producers replaced after a fatal error");
    relay->m_batch_ms =
        metrics_histogram("outbox_batch_duration_ms", NULL, "Time to publish one outbox batch");
    if (pthread_create(&relay->thread, NULL, relay_main, relay) != 0) {
        snprintf(err, errlen, "cannot start the relay thread");
        goto fail;
    }
    db_set_local_listener(OUTBOX_CHANNEL, relay_local_wake, relay);
    return relay;
fail:
    if (relay->producer)
        rd_kafka_destroy(relay->producer);
    if (relay->wake_pipe[0] >= 0) {
        close(relay->wake_pipe[0]);
        close(relay->wake_pipe[1]);
    }
    free(relay->slots);
    free(relay->delete_ids);
    free(relay);
    return NULL;
}

int relay_is_active(const struct relay *relay)
{
    return relay ? atomic_load(&((struct relay *)relay)->active) : 0;
}

long long relay_published(const struct relay *relay)
{
    return relay ? atomic_load(&((struct relay *)relay)->published) : 0;
}

void relay_stop(struct relay *relay)
{
    if (relay == NULL)
        return;
    db_set_local_listener(OUTBOX_CHANNEL, NULL, NULL);
    atomic_store(&relay->stop, 1);
    if (write(relay->wake_pipe[1], "x", 1) < 0)
        log_warn("msg=\"cannot wake the relay\" errno=%d", errno);
    pthread_join(relay->thread, NULL);
    /* Undelivered messages stay in the outbox and are published later. */
    relay_drop_producer(relay);
    PQfinish(relay->conn);
    close(relay->wake_pipe[0]);
    close(relay->wake_pipe[1]);
    free(relay->slots);
    free(relay->delete_ids);
    free(relay);
}

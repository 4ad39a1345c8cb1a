/*
 * consumer.h - the idempotent consumer (inbox pattern). A thread polls Kafka
 * and, for each message, runs one local transaction:
 *
 *   INSERT INTO inbox (message id)  -- the primary key admits it once
 *   handler(conn, message)          -- state change + outbox_enqueue() calls
 *   COMMIT
 *
 * and only then stores the offset for commit. Redeliveries, duplicates and
 * replays from offset 0 therefore change nothing. The inbox row is queued
 * (db_exec_later) and travels with the handler's first statement, so it
 * costs no round trip of its own; for a message handled before, it fails the
 * transaction, which is rolled back, and finding the inbox row then marks the
 * message done (a duplicate: counted, nothing applied).
 *
 * Under load, the messages already fetched (up to batch_max) share one such
 * transaction, each with its own inbox row, so a burst costs one commit; if
 * any of them fails, the batch is rolled back and handled one by one.
 *
 * Failures: a transient one (database or broker down, serialization failure)
 * is retried with exponential backoff and jitter, forever, without moving on.
 * A handler that fails the same message max_attempts times, and a message that
 * cannot be parsed, is sent to "<topic>.dlq" (through the outbox, in the same
 * transaction that records it in the inbox) with the error, origin topic,
 * partition, offset and attempt count, and the partition moves on.
 */
#ifndef SHARED_CONSUMER_H
#define SHARED_CONSUMER_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "kafka.h"

/* What a handler returns. */
enum consumer_result {
    CONSUMER_OK = 0,     /* applied; commit */
    CONSUMER_SKIP = 1,   /* unknown type or nothing to do; commit, count as skipped */
    CONSUMER_RETRY = -1, /* transient failure; roll back and retry later */
    CONSUMER_FAIL = -2,  /* this message failed; counts towards the dead-letter limit */
};

struct consumer_message {
    const struct envelope *env;
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key;         /* "" when the message had none */
    const char *traceparent; /* "" when the message had none */
};

/*
 * Handles one message inside the open transaction on conn. Must not commit or
 * roll back. On CONSUMER_FAIL it may write a reason into err.
 */
typedef int (*consumer_handler_fn)(PGconn *conn, const struct consumer_message *msg, void *arg,
                                   char *err, size_t errlen);

/* For a handler whose database statement failed on conn: CONSUMER_RETRY when
 * the failure is transient (connection lost, serialization failure), else
 * CONSUMER_FAIL, so a bug or a constraint violation ends in the dead-letter
 * topic instead of blocking its partition forever. */
int consumer_db_failure(PGconn *conn);

#define CONSUMER_BATCH_MAX 64

struct consumer_config {
    const char *db_url;
    const char *name;            /* service name: logs, application_name, DLQ producer */
    struct kafka_settings kafka; /* group_id required */
    const char *const *topics;   /* NULL-terminated */
    int max_attempts;            /* failures before the dead-letter topic; default 5 */
    int batch_max;               /* messages per transaction; default and cap CONSUMER_BATCH_MAX */
    long retry_base_ms;          /* backoff start; default 50 */
    long retry_max_ms;           /* backoff cap; default BACKOFF_RECONNECT_MAX_MS */
    consumer_handler_fn handler;
    void *handler_arg;
    /* Message types the handler acts on (NULL-terminated), or NULL for all.
     * Others, recognised by their "type" header, change nothing here, so
     * they are acknowledged in order without a transaction or inbox row. */
    const char *const *handled_types;
    /* Set when applying a message twice changes nothing by construction
     * (versioned snapshots, monotonic values): the inbox row is then skipped.
     * Dead letters, and redriven copies of them, are still recorded in the
     * inbox. */
    int handler_idempotent;
};

struct consumer; /* opaque */

/*
 * Starts the consumer thread. cfg's strings and topics must outlive the
 * consumer. Returns NULL with the reason in err if Kafka cannot be configured;
 * an unreachable database or broker is retried by the thread instead.
 */
struct consumer *consumer_start(const struct consumer_config *cfg, char *err, size_t errlen);

/* Returns 1 once the thread has a database connection and a Kafka assignment. */
int consumer_is_ready(const struct consumer *consumer);

/* Partitions assigned to this consumer now, or -1 while it has no database
 * connection. */
int consumer_partitions(const struct consumer *consumer);

/* Messages handled (committed, duplicates included) so far. */
long long consumer_handled(const struct consumer *consumer);

/* Stops the thread after the message in hand, commits stored offsets, frees
 * everything. Accepts NULL. */
void consumer_stop(struct consumer *consumer);

#endif

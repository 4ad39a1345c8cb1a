/*
 * kafka.h - librdkafka wrappers with the project's settings baked in:
 * idempotent producer (acks=all, small linger), consumers that never commit an
 * offset on their own before the application stored it, librdkafka's log
 * routed to the logger, and topic creation at start-up.
 */
#ifndef SHARED_KAFKA_H
#define SHARED_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

struct kafka_settings {
    const char *brokers;       /* bootstrap servers, "host:port[,host:port]" */
    const char *client_id;     /* shown in broker logs */
    double linger_ms;          /* producer batching delay; <= 1 keeps latency low */
    const char *group_id;      /* consumers only */
    const char *instance_id;   /* static membership; NULL or "" to disable */
    long session_timeout_ms;   /* consumers: how fast a dead member is evicted */
    long max_poll_interval_ms; /* consumers: how long one message may be retried before the
                                  group counts the member gone; 0 for librdkafka's 300000 */
    const char *topic_prefix;  /* prepended to every topic name on the wire; NULL or "" for
                                  none (lets test runs share a broker without crosstalk) */
    int gapless;               /* producers: never time a message out, and make any failure
                                  that could leave a gap in a partition a fatal error (the
                                  outbox relay, which must keep each key's order) */
};

/* Returns the topic name without settings' prefix (the logical name). */
const char *kafka_logical_topic(const struct kafka_settings *settings, const char *wire_name);

/* Writes the name of topic logical on the wire, prefix + logical + suffix
 * (prefix and suffix may be NULL), into out. Returns 0, or -1 when it does not
 * fit in cap (out then holds a truncated name). */
int kafka_wire_topic(char *out, size_t cap, const char *prefix, const char *logical,
                     const char *suffix);

/*
 * Creates an idempotent producer. dr_cb, if not NULL, receives one delivery
 * report per message (served by rd_kafka_poll/rd_kafka_flush). Returns the
 * handle (release with rd_kafka_destroy after rd_kafka_flush) or NULL with the
 * reason in err.
 */
rd_kafka_t *kafka_producer_new(const struct kafka_settings *settings,
                               void (*dr_cb)(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                                             void *opaque),
                               char *err, size_t errlen);

/*
 * Creates a consumer in settings->group_id subscribed to topics (logical
 * names, prefixed with settings->topic_prefix; a
 * NULL-terminated array; an empty array subscribes to nothing, for callers that
 * assign partitions themselves). Offsets are committed automatically, but only those
 * the application stored with rd_kafka_offsets_store() after its database
 * commit. A new group starts from the earliest offset. Returns the handle
 * (close with rd_kafka_consumer_close, then rd_kafka_destroy) or NULL.
 */
rd_kafka_t *kafka_consumer_new(const struct kafka_settings *settings, const char *const *topics,
                               char *err, size_t errlen);

/*
 * Creates each topic of the NULL-terminated array that does not exist yet,
 * with partitions partitions and the broker's default replication factor
 * (default.replication.factor: 1 on the single local broker, more on a
 * cluster). Existing topics are left
 * alone. Returns 0, or -1 with the reason in err (e.g. broker unreachable
 * within timeout_ms).
 */
int kafka_ensure_topics(const char *brokers, const char *const *topics, int partitions,
                        int timeout_ms, char *err, size_t errlen);

/*
 * Waits until the broker's metadata shows each topic of the NULL-terminated
 * array with every partition led, so that a consumer subscribing next is
 * given all of them in its first assignment (a topic created a moment ago
 * may be missing from the first answers). Returns 0, or -1 once timeout_ms
 * has passed, with err naming the topic still missing, or saying that the
 * broker never answered.
 */
int kafka_await_topics(const char *brokers, const char *const *topics, int timeout_ms, char *err,
                       size_t errlen);

/* Whether the metadata shows topic without error, with at least one
 * partition and a leader for each. Returns 1 if so, else 0. */
int kafka_topic_is_led(const struct rd_kafka_metadata *md, const char *topic);

/*
 * How long a topic may still hold a message, from its configuration: a
 * segment is deleted once its newest message is older than retention_ms, and
 * a segment is closed at the latest segment_ms after its first message, so
 * retention_ms + segment_ms. Sets *keep_ms to that, or to -1 when messages
 * are kept for ever (retention.ms -1, cleanup.policy "compact" without
 * "delete", or a sum past KAFKA_KEEP_FOREVER_MS). Returns 0, or -1 when a
 * value is missing or not a number.
 */
#define KAFKA_KEEP_FOREVER_MS (100LL * 365 * 24 * 3600 * 1000) /* a century */
int kafka_keep_ms(const char *retention_ms, const char *segment_ms, const char *cleanup_policy,
                  long long *keep_ms);

/*
 * Asks the broker for the configuration of each topic of the NULL-terminated
 * array (wire names) and sets *keep_ms to the longest kafka_keep_ms among
 * them, or -1 if any keeps messages for ever. Returns 0, or -1 with the
 * reason in err (broker unreachable within timeout_ms, unknown topic).
 */
int kafka_topics_keep_ms(const char *brokers, const char *const *topics, int timeout_ms,
                         long long *keep_ms, char *err, size_t errlen);

#define KAFKA_MAX_PARTITIONS 256 /* per topic, for the readers below */

/*
 * Partition ids, low and high watermarks (the first offset the partition
 * keeps, the next one to be written) of topic (wire name), for at most max
 * partitions. Returns the number of partitions, or -1 if the topic is unknown
 * or the broker did not answer within timeout_ms.
 */
int kafka_topic_watermarks(rd_kafka_t *rk, const char *topic, int32_t *ids, int64_t *low,
                           int64_t *high, int max, int timeout_ms);

/*
 * Calls fn for every message topic (wire name) keeps, from each partition's
 * first offset to its end as of the call. rk is a consumer subscribed to
 * nothing (kafka_consumer_new with no topics), whose assignment this uses.
 * Returns 0, or -1 if the topic is unknown or a message did not come within
 * timeout_ms.
 */
int kafka_read_topic(rd_kafka_t *rk, const char *topic, int timeout_ms,
                     void (*fn)(const rd_kafka_message_t *msg, void *arg), void *arg);

/*
 * The message at offset in topic's partition (rk as for kafka_read_topic), or
 * NULL if the partition no longer keeps that offset (retention), never had
 * it, or it did not come within timeout_ms. Free with
 * rd_kafka_message_destroy().
 */
rd_kafka_message_t *kafka_read_at(rd_kafka_t *rk, const char *topic, int32_t partition,
                                  int64_t offset, int timeout_ms);

/* Returns the value of header name in msg as a NUL-terminated copy in out
 * (truncated to cap), or -1 if absent. */
int kafka_header(const rd_kafka_message_t *msg, const char *name, char *out, size_t cap);

#endif

/*
 * outbox_bench.c - micro-benchmark of the messaging core against the real
 * PostgreSQL and Kafka. Prints figures; asserts nothing about speed.
 *
 *   latency:  one message per transaction at a light, fixed rate; time from
 *             the writer's COMMIT returning to the consumer's handler running
 *             (relay NOTIFY wake-up, produce, broker ack, fetch, inbox insert).
 *   drain:    100,000 rows already in the outbox, relay started; time until
 *             the broker acknowledged and the relay deleted them all.
 *   hops:     the cost of one saga hand-off with no business work in it. N
 *             chains run at once (closed loop): each handler, in its inbox
 *             transaction, writes the chain's next message to the outbox,
 *             which the relay publishes and the consumer takes again. Prints
 *             hand-offs per second and the whole machine's CPU per hand-off
 *             (PostgreSQL, broker and this process: run it with nothing else
 *             busy), for 1, 16 and 256 chains.
 *
 * Environment: BENCH_DATABASE_URL (required), KAFKA_BROKERS, BENCH_TOPIC,
 * BENCH_LATENCY_MESSAGES (default 2000), BENCH_RATE (messages/s, default 200),
 * BENCH_DRAIN_MESSAGES (default 100000), BENCH_HOP_SECONDS (per chain count,
 * default 15; 0 skips the hops).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "config.h"
#include "consumer.h"
#include "db.h"
#include "log.h"
#include "outbox.h"
#include "relay.h"

static char database_url[512];
static char brokers[256];
static char topic_base[128];
static long latency_messages;
static long rate;
static long drain_messages;
static long hop_seconds;

static const struct config_entry config_table[] = {
    {"BENCH_DATABASE_URL", CONFIG_STRING, database_url, sizeof(database_url), NULL, 0, 0,
     "PostgreSQL URL of the benchmark database"},
    {"KAFKA_BROKERS", CONFIG_STRING, brokers, sizeof(brokers), "localhost:9092", 0, 0,
     "Kafka bootstrap servers"},
    {"BENCH_TOPIC", CONFIG_STRING, topic_base, sizeof(topic_base), "bench", 0, 0, "topic prefix"},
    {"BENCH_LATENCY_MESSAGES", CONFIG_INT, &latency_messages, 0, "2000", 10, 1000000, "count"},
    {"BENCH_RATE", CONFIG_INT, &rate, 0, "200", 1, 100000, "messages per second"},
    {"BENCH_DRAIN_MESSAGES", CONFIG_INT, &drain_messages, 0, "100000", 1, 10000000, "count"},
    {"BENCH_HOP_SECONDS", CONFIG_INT, &hop_seconds, 0, "15", 0, 3600,
     "seconds measured per chain count in the hops phase"},
};

static double *commit_ms;          /* per seq: when COMMIT returned */
static _Atomic double *handled_ms; /* per seq: when the handler ran */
static atomic_long handled_count;
static atomic_long warmup_count;

static double now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}

static int handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                  size_t errlen)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(msg->env->payload, "seq");

    (void)conn;
    (void)arg;
    (void)err;
    (void)errlen;
    if (cJSON_IsNumber(seq) && seq->valueint >= 0 && seq->valueint < latency_messages) {
        atomic_store(&handled_ms[seq->valueint], now_ms());
        atomic_fetch_add(&handled_count, 1);
    } else {
        atomic_fetch_add(&warmup_count, 1);
    }
    return CONSUMER_OK;
}

/* Writes a bench_event with payload {"seq": seq} (and "generation" unless
 * negative) to the outbox, keyed by seq. */
static int enqueue_in(PGconn *conn, const char *topic, long seq, long generation)
{
    struct envelope env;
    cJSON *payload = cJSON_CreateObject();
    char key[32];
    int rc;

    cJSON_AddNumberToObject(payload, "seq", (double)seq);
    if (generation >= 0)
        cJSON_AddNumberToObject(payload, "generation", (double)generation);
    snprintf(key, sizeof(key), "k%ld", seq % 256);
    if (envelope_build(&env, "bench_event", key, "bench", NULL, payload) != 0)
        return -1;
    rc = outbox_enqueue(conn, topic, key, &env, NULL);
    envelope_free(&env);
    return rc;
}

static int enqueue(PGconn *conn, const char *topic, long seq)
{
    return enqueue_in(conn, topic, seq, -1);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static struct kafka_settings settings(const char *group)
{
    return (struct kafka_settings){.brokers = brokers,
                                   .client_id = "bench",
                                   .linger_ms = 1,
                                   .group_id = group,
                                   .session_timeout_ms = 6000};
}

/* The relay and a consumer of topics (NULL-terminated, one topic) in group,
 * handled by handler, started and ready (partitions owned, relay active).
 * topics must outlive them. Returns 0, or -1 with the reason printed. */
static int start_pipeline(const char *const *topics, const char *group, consumer_handler_fn handler,
                          struct relay **relay, struct consumer **consumer)
{
    struct relay_config relay_cfg = {
        .db_url = database_url, .name = "bench-relay", .kafka = settings(group)};
    struct consumer_config consumer_cfg = {.db_url = database_url,
                                           .name = "bench",
                                           .topics = topics,
                                           .handler = handler,
                                           .kafka = settings(group)};
    char err[512];
    double started = now_ms();

    if (kafka_ensure_topics(brokers, topics, 4, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "topics: %s\n", err);
        return -1;
    }
    *relay = relay_start(&relay_cfg, err, sizeof(err));
    *consumer = consumer_start(&consumer_cfg, err, sizeof(err));
    if (!*relay || !*consumer) {
        fprintf(stderr, "start: %s\n", err);
        return -1;
    }
    while (!consumer_is_ready(*consumer) || !relay_is_active(*relay)) {
        if (now_ms() - started > 30000) {
            fprintf(stderr, "consumer or relay not ready after 30 s\n");
            return -1;
        }
        backoff_sleep_ms(50);
    }
    return 0;
}

static int bench_latency(PGconn *conn)
{
    char topic[160], group[160];
    const char *topics[] = {topic, NULL};
    struct relay *relay;
    struct consumer *consumer;
    double *latencies, interval = 1000.0 / (double)rate, next, started;
    long n = latency_messages;

    snprintf(topic, sizeof(topic), "%s.latency", topic_base);
    snprintf(group, sizeof(group), "%s-latency", topic_base);
    commit_ms = calloc((size_t)n, sizeof(double));
    handled_ms = calloc((size_t)n, sizeof(*handled_ms));
    latencies = calloc((size_t)n, sizeof(double));
    if (start_pipeline(topics, group, handle, &relay, &consumer) != 0)
        return -1;
    /* Warm-up: the first messages also pay for the producer's idempotence
     * handshake and the fetchers' start; they are not measured. */
    for (long seq = n; seq < n + 50; seq++) {
        if (db_begin(conn) != 0 || enqueue(conn, topic, seq) != 0 || db_commit(conn) != 0)
            return -1;
    }
    started = now_ms();
    while (atomic_load(&warmup_count) < 50) {
        if (now_ms() - started > 30000) {
            fprintf(stderr, "warm-up messages not handled after 30 s\n");
            return -1;
        }
        backoff_sleep_ms(10);
    }
    next = now_ms();
    for (long seq = 0; seq < n; seq++) {
        while (now_ms() < next)
            backoff_sleep_ms(1);
        next += interval;
        if (db_begin(conn) != 0 || enqueue(conn, topic, seq) != 0 || db_commit(conn) != 0)
            return -1;
        commit_ms[seq] = now_ms();
    }
    started = now_ms();
    while (atomic_load(&handled_count) < n && now_ms() - started < 60000)
        backoff_sleep_ms(10);
    consumer_stop(consumer);
    relay_stop(relay);
    if (atomic_load(&handled_count) < n) {
        fprintf(stderr, "only %ld of %ld messages handled\n", atomic_load(&handled_count), n);
        return -1;
    }
    for (long i = 0; i < n; i++)
        latencies[i] = atomic_load(&handled_ms[i]) - commit_ms[i];
    qsort(latencies, (size_t)n, sizeof(double), compare_double);
    printf("latency: %ld messages at %ld/s, commit-to-handler p50 %.2f ms, p90 %.2f ms, "
           "p99 %.2f ms, max %.2f ms\n",
           n, rate, latencies[n / 2], latencies[n * 90 / 100], latencies[n * 99 / 100],
           latencies[n - 1]);
    free(latencies);
    free(commit_ms);
    free((void *)handled_ms);
    return 0;
}

static int bench_drain(PGconn *conn)
{
    char topic[160], err[512];
    const char *topics[] = {topic, NULL};
    struct relay_config relay_cfg = {
        .db_url = database_url, .name = "bench-relay", .batch_size = 5000};
    struct relay *relay;
    double started, elapsed;
    long n = drain_messages;

    snprintf(topic, sizeof(topic), "%s.drain", topic_base);
    if (kafka_ensure_topics(brokers, topics, 4, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "topics: %s\n", err);
        return -1;
    }
    relay_cfg.kafka = settings("bench-drain");
    /* Build the backlog in transactions of 5,000 rows. */
    for (long seq = 0; seq < n; seq++) {
        if (seq % 5000 == 0 && db_begin(conn) != 0)
            return -1;
        if (enqueue(conn, topic, seq) != 0)
            return -1;
        if ((seq % 5000 == 4999 || seq == n - 1) && db_commit(conn) != 0)
            return -1;
    }
    started = now_ms();
    relay = relay_start(&relay_cfg, err, sizeof(err));
    if (relay == NULL) {
        fprintf(stderr, "relay: %s\n", err);
        return -1;
    }
    while (relay_published(relay) < n && now_ms() - started < 300000)
        backoff_sleep_ms(5);
    elapsed = now_ms() - started;
    long long published = relay_published(relay);

    relay_stop(relay);
    if (published < n) {
        fprintf(stderr, "drain did not finish\n");
        return -1;
    }
    printf("drain: %ld messages published from the outbox in %.2f s: %.0f messages/s\n", n,
           elapsed / 1000.0, (double)n / (elapsed / 1000.0));
    return 0;
}

static char hop_topic[160];
static atomic_long hop_generation;

/* Hands the chain on: its next message goes out in this transaction, unless
 * the chain belongs to an earlier round, which ends here. */
static int handle_hop(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                      size_t errlen)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(msg->env->payload, "seq");
    const cJSON *generation = cJSON_GetObjectItemCaseSensitive(msg->env->payload, "generation");

    (void)arg;
    (void)err;
    (void)errlen;
    if (!cJSON_IsNumber(seq) || !cJSON_IsNumber(generation))
        return CONSUMER_SKIP;
    if ((long)generation->valuedouble != atomic_load(&hop_generation))
        return CONSUMER_OK;
    if (enqueue_in(conn, hop_topic, (long)seq->valuedouble, (long)generation->valuedouble) != 0)
        return consumer_db_failure(conn);
    return CONSUMER_OK;
}

/* Busy time of all CPUs so far, in clock ticks (/proc/stat: all but idle
 * and iowait). */
static long long machine_busy_ticks(void)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    long long busy = 0;

    if (f == NULL)
        return -1;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 8)
        busy = -1;
    fclose(f);
    if (busy < 0)
        return -1;
    for (int i = 0; i < 8; i++)
        busy += (i == 3 || i == 4) ? 0 : (long long)v[i];
    return busy;
}

static int bench_hops(PGconn *conn)
{
    static const long chain_counts[] = {1, 16, 256};
    char group[160];
    const char *topics[] = {hop_topic, NULL};
    struct relay *relay;
    struct consumer *consumer;
    double tick_ms = 1000.0 / (double)sysconf(_SC_CLK_TCK), started;

    snprintf(hop_topic, sizeof(hop_topic), "%s.hops", topic_base);
    snprintf(group, sizeof(group), "%s-hops", topic_base);
    if (start_pipeline(topics, group, handle_hop, &relay, &consumer) != 0)
        return -1;
    for (size_t c = 0; c < sizeof(chain_counts) / sizeof(chain_counts[0]); c++) {
        long chains = chain_counts[c], generation = atomic_fetch_add(&hop_generation, 1) + 1;

        if (db_begin(conn) != 0)
            return -1;
        for (long seq = 0; seq < chains; seq++) {
            if (enqueue_in(conn, hop_topic, seq, generation) != 0)
                return -1;
        }
        if (db_commit(conn) != 0)
            return -1;
        backoff_sleep_ms(3000); /* warm-up; the previous round's chains end */
        long long handled = consumer_handled(consumer), busy = machine_busy_ticks();
        started = now_ms();
        backoff_sleep_ms(hop_seconds * 1000);
        double elapsed = now_ms() - started;
        long long hops = consumer_handled(consumer) - handled;
        double busy_ms = (double)(machine_busy_ticks() - busy) * tick_ms;

        if (hops <= 0 || busy < 0) {
            fprintf(stderr, "hops: no hand-off in %ld s with %ld chains\n", hop_seconds, chains);
            return -1;
        }
        printf("hops: %ld chains, %.0f hand-offs/s, %.2f ms each end to end, "
               "%.3f ms of CPU each (all processes)\n",
               chains, (double)hops * 1000.0 / elapsed, (double)chains * elapsed / (double)hops,
               busy_ms / (double)hops);
    }
    atomic_fetch_add(&hop_generation, 1);
    consumer_stop(consumer);
    relay_stop(relay);
    return 0;
}

int main(void)
{
    char errors[2048];
    PGconn *conn;
    int rc;

    log_init("bench", LOG_LEVEL_WARN);
    if (config_load(config_table, sizeof(config_table) / sizeof(config_table[0]), errors,
                    sizeof(errors)) != 0) {
        fprintf(stderr, "outbox_bench: bad configuration:\n%s", errors);
        return 2;
    }
    conn = db_connect(database_url, "bench", errors, sizeof(errors));
    if (conn == NULL) {
        fprintf(stderr, "database: %s\n", errors);
        return 1;
    }
    rc = bench_latency(conn) == 0 && bench_drain(conn) == 0 &&
                 (hop_seconds == 0 || bench_hops(conn) == 0)
             ? 0
             : 1;
    PQfinish(conn);
    return rc;
}

/*
 * dead_letters.c - list a service's dead letters and redrive one (see
 * dead_letters.h). The dead letters are read from the <topic>.dlq of each
 * topic the service consumes; each says where its original message is
 * (topic, partition, offset), which group gave up on it and why.
 */
#define _POSIX_C_SOURCE 200809L
#include "dead_letters.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "envelope.h"
#include "kafka.h"
#include "payload.h"

#define READ_TIMEOUT_MS 10000

/* One dead letter of this service's group. */
struct letter {
    char inbox_id[320]; /* the message id, or topic/partition/offset if it had none */
    char type[ENVELOPE_TYPE_MAX];
    char topic[160]; /* logical name of the original's topic */
    long long partition;
    long long offset;
    long long attempts;
    char at[ENVELOPE_TIME_MAX];
    char error[512];
    const char *status; /* from the inbox: see letter_status() */
};

struct letters {
    const char *group;
    struct letter *items;
    size_t count, capacity;
};

static void copy(char *out, size_t cap, const char *text)
{
    snprintf(out, cap, "%s", text ? text : "");
}

/* kafka_read_topic callback: keeps the dead letters of our group. */
static void collect(const rd_kafka_message_t *msg, void *arg)
{
    struct letters *all = arg;
    struct envelope env;
    struct letter item = {0};
    const char *group, *original_id;
    char err[128];

    if (envelope_decode(msg->payload, msg->len, &env, err, sizeof(err)) != 0)
        return;
    group = payload_str(env.payload, "group");
    original_id = payload_str(env.payload, "original_id");
    if (strcmp(env.type, "dead_letter") != 0 || group == NULL || strcmp(group, all->group) != 0 ||
        payload_int(env.payload, "partition", &item.partition) != 0 ||
        payload_int(env.payload, "offset", &item.offset) != 0) {
        envelope_free(&env);
        return;
    }
    copy(item.topic, sizeof(item.topic), payload_str(env.payload, "topic"));
    copy(item.type, sizeof(item.type), payload_str(env.payload, "original_type"));
    copy(item.error, sizeof(item.error), payload_str(env.payload, "error"));
    copy(item.at, sizeof(item.at), env.occurred_at);
    if (payload_int(env.payload, "attempts", &item.attempts) != 0)
        item.attempts = 0;
    /* The consumer's inbox id: the message id, or where it was when it had
     * none (it could not be decoded). */
    if (original_id && original_id[0])
        copy(item.inbox_id, sizeof(item.inbox_id), original_id);
    else
        snprintf(item.inbox_id, sizeof(item.inbox_id), "%s/%lld/%lld", item.topic, item.partition,
                 item.offset);
    envelope_free(&env);
    if (all->count == all->capacity) {
        size_t capacity = all->capacity ? 2 * all->capacity : 16;
        struct letter *grown = realloc(all->items, capacity * sizeof(*grown));

        if (grown == NULL)
            return;
        all->items = grown;
        all->capacity = capacity;
    }
    all->items[all->count++] = item;
}

static rd_kafka_t *reader_new(const struct service_spec *spec,
                              const struct service_settings *settings)
{
    char group[200], err[512];
    const char *no_topics[] = {NULL};
    struct kafka_settings kafka = {.brokers = settings->brokers,
                                   .client_id = spec->name,
                                   .group_id = group,
                                   .session_timeout_ms = 6000};
    rd_kafka_t *rk;

    /* Never joins or commits: partitions are assigned by hand. */
    snprintf(group, sizeof(group), "%s-dead-letters", settings->group);
    rk = kafka_consumer_new(&kafka, no_topics, err, sizeof(err));
    if (rk == NULL)
        fprintf(stderr, "%s dead-letters: kafka: %s\n", spec->name, err);
    return rk;
}

/* Reads every dead letter of the group from the .dlq of each consumed topic. */
static int read_letters(const struct service_spec *spec, const struct service_settings *settings,
                        rd_kafka_t *rk, struct letters *all)
{
    char wire[300];

    for (const char *const *t = spec->consume_topics; t && *t; t++) {
        kafka_wire_topic(wire, sizeof(wire), settings->topic_prefix, *t, ".dlq");
        if (kafka_read_topic(rk, wire, READ_TIMEOUT_MS, collect, all) != 0) {
            fprintf(stderr, "%s dead-letters: cannot read %s (unknown topic or broker down)\n",
                    spec->name, wire);
            return -1;
        }
    }
    return 0;
}

/* "dead" while the inbox records the message as dead-lettered (a redriven
 * copy may be on its way); "handled" once a redrive (or anything else)
 * applied it; "gone" when the row was pruned, long after. */
static const char *letter_status(PGconn *conn, const char *inbox_id)
{
    const char *params[] = {inbox_id};
    PGresult *res = db_query(conn, "inbox outcome",
                             "SELECT outcome FROM inbox WHERE message_id = $1", 1, params);
    const char *status = "unknown";

    if (res == NULL)
        return status;
    if (PQntuples(res) == 0)
        status = "gone";
    else if (strcmp(PQgetvalue(res, 0, 0), "dead_letter") == 0)
        status = "dead";
    else
        status = "handled";
    PQclear(res);
    return status;
}

static void print_letters(const char *name, const struct letters *all, int json)
{
    size_t dead = 0;

    if (!json && all->count > 0)
        printf("%-9s %-24s %-32s %-20s %-36s %-8s %s\n", "STATUS", "DEAD-LETTERED AT", "FROM",
               "TYPE", "MESSAGE ID", "ATTEMPTS", "ERROR");
    for (size_t i = 0; i < all->count; i++) {
        const struct letter *l = &all->items[i];
        char from[220];

        dead += strcmp(l->status, "dead") == 0;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            char *text;

            cJSON_AddStringToObject(o, "status", l->status);
            cJSON_AddStringToObject(o, "dead_lettered_at", l->at);
            cJSON_AddStringToObject(o, "topic", l->topic);
            cJSON_AddNumberToObject(o, "partition", (double)l->partition);
            cJSON_AddNumberToObject(o, "offset", (double)l->offset);
            cJSON_AddStringToObject(o, "type", l->type);
            cJSON_AddStringToObject(o, "message_id", l->inbox_id);
            cJSON_AddNumberToObject(o, "attempts", (double)l->attempts);
            cJSON_AddStringToObject(o, "error", l->error);
            text = cJSON_PrintUnformatted(o);
            if (text)
                printf("%s\n", text);
            free(text);
            cJSON_Delete(o);
            continue;
        }
        snprintf(from, sizeof(from), "%s[%lld]@%lld", l->topic, l->partition, l->offset);
        printf("%-9s %-24s %-32s %-20s %-36s %-8lld %s\n", l->status, l->at, from,
               l->type[0] ? l->type : "-", l->inbox_id, l->attempts, l->error);
    }
    if (!json)
        fprintf(stderr, "%zu dead letter%s, %zu still dead%s%s%s\n", all->count,
                all->count == 1 ? "" : "s", dead, dead ? "; once the cause is fixed: " : "",
                dead ? name : "", dead ? " dead-letters redrive MESSAGE_ID" : "");
}

struct delivery {
    int done;
    rd_kafka_resp_err_t err;
    int64_t offset;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct delivery *d = msg->_private;

    (void)rk;
    (void)opaque;
    d->done = 1;
    d->err = msg->err;
    d->offset = msg->offset;
}

/* Produces a copy of original (key, value, headers, plus redriven_from) to
 * its partition and waits for the broker's acknowledgement. Returns the
 * copy's offset, or -1. */
static int64_t produce_copy(const struct service_spec *spec,
                            const struct service_settings *settings,
                            const rd_kafka_message_t *original, const char *from)
{
    struct kafka_settings kafka = {
        .brokers = settings->brokers, .client_id = spec->name, .linger_ms = 1};
    rd_kafka_headers_t *headers = NULL, *copied;
    struct delivery delivery = {0};
    char err[512];
    rd_kafka_t *producer = kafka_producer_new(&kafka, on_delivery, err, sizeof(err));
    rd_kafka_resp_err_t rc;

    if (producer == NULL) {
        fprintf(stderr, "%s dead-letters: kafka: %s\n", spec->name, err);
        return -1;
    }
    if (rd_kafka_message_headers(original, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR)
        copied = rd_kafka_headers_copy(headers);
    else
        copied = rd_kafka_headers_new(1);
    rd_kafka_header_add(copied, "redriven_from", -1, from, -1);
    rc = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(rd_kafka_topic_name(original->rkt)),
        RD_KAFKA_V_PARTITION(original->partition), RD_KAFKA_V_KEY(original->key, original->key_len),
        RD_KAFKA_V_VALUE(original->payload, original->len), RD_KAFKA_V_HEADERS(copied),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&delivery), RD_KAFKA_V_END);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_headers_destroy(copied); /* on success the message owns them */
    else
        rd_kafka_flush(producer, READ_TIMEOUT_MS);
    rd_kafka_destroy(producer);
    if (rc == RD_KAFKA_RESP_ERR_NO_ERROR && !delivery.done)
        rc = RD_KAFKA_RESP_ERR__TIMED_OUT;
    else if (rc == RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = delivery.err;
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "%s dead-letters: the copy was not acknowledged: %s\n", spec->name,
                rd_kafka_err2str(rc));
        return -1;
    }
    return delivery.offset;
}

/* The last dead letter of the group for message id (or topic/partition/offset). */
static const struct letter *find_letter(const struct letters *all, const char *id)
{
    for (size_t i = all->count; i > 0; i--) {
        if (strcmp(all->items[i - 1].inbox_id, id) == 0)
            return &all->items[i - 1];
    }
    return NULL;
}

/*
 * Hands message id back to the service: reads the original and produces its
 * copy, changing nothing else, so a crash anywhere is repaired by running it
 * again; a copy produced twice is skipped by the inbox.
 */
static int redrive(const struct service_spec *spec, const struct service_settings *settings,
                   rd_kafka_t *rk, PGconn *conn, const struct letters *all, const char *id)
{
    const struct letter *letter = find_letter(all, id);
    char wire[300], from[400];
    rd_kafka_message_t *original;
    const char *status;
    int64_t offset;

    if (letter == NULL) {
        fprintf(stderr, "%s dead-letters: no dead letter of group %s has message id %s\n",
                spec->name, settings->group, id);
        return 1;
    }
    status = letter_status(conn, id);
    if (strcmp(status, "handled") == 0) {
        printf("%s: already handled; nothing to do\n", id);
        return 0;
    }
    if (strcmp(status, "unknown") == 0) {
        fprintf(stderr, "%s dead-letters: cannot read the inbox\n", spec->name);
        return 1;
    }
    kafka_wire_topic(wire, sizeof(wire), settings->topic_prefix, letter->topic, NULL);
    original = kafka_read_at(rk, wire, (int32_t)letter->partition, letter->offset, READ_TIMEOUT_MS);
    if (original == NULL) {
        fprintf(stderr,
                "%s dead-letters: %s[%lld]@%lld is no longer in the topic (its retention "
                "passed) or the broker did not answer; the dead letter keeps its value\n",
                spec->name, letter->topic, letter->partition, letter->offset);
        return 1;
    }
    snprintf(from, sizeof(from), "%s/%lld/%lld", letter->topic, letter->partition, letter->offset);
    offset = produce_copy(spec, settings, original, from);
    rd_kafka_message_destroy(original);
    if (offset < 0) {
        fprintf(stderr,
                "%s dead-letters: the copy of %s may not have been sent; once the broker "
                "answers, run this redrive again to make sure (a second copy is skipped)\n",
                spec->name, id);
        return 1;
    }
    printf("%s: %s from %s[%lld]@%lld redriven as offset %lld; %s handles it next\n", id,
           letter->type[0] ? letter->type : "message", letter->topic, letter->partition,
           letter->offset, (long long)offset, spec->name);
    return 0;
}

int dead_letters_usage_ok(const char *name, int argc, char **argv)
{
    if (argc == 1 || (argc == 2 && strcmp(argv[1], "--json") == 0) ||
        (argc == 3 && strcmp(argv[1], "redrive") == 0))
        return 1;
    fprintf(stderr,
            "usage: %s dead-letters [--json]          list this service's dead letters\n"
            "       %s dead-letters redrive MESSAGE_ID  hand one back to the service\n",
            name, name);
    return 0;
}

int dead_letters_command(const struct service_spec *spec, const struct service_settings *settings,
                         int argc, char **argv)
{
    int json = argc == 2 && strcmp(argv[1], "--json") == 0;
    int redriving = argc == 3 && strcmp(argv[1], "redrive") == 0;
    struct letters all = {.group = settings->group};
    char err[512];
    rd_kafka_t *rk;
    PGconn *conn;
    int rc = 1;

    if (!dead_letters_usage_ok(spec->name, argc, argv))
        return 2;
    if (spec->consume_topics == NULL) {
        fprintf(stderr, "%s consumes no topic, so it has no dead letters\n", spec->name);
        return 0;
    }
    conn = db_connect(settings->database_url, "dead-letters", err, sizeof(err));
    if (conn == NULL) {
        fprintf(stderr, "%s dead-letters: database: %s\n", spec->name, err);
        return 1;
    }
    rk = reader_new(spec, settings);
    if (rk != NULL && read_letters(spec, settings, rk, &all) == 0) {
        if (redriving) {
            rc = redrive(spec, settings, rk, conn, &all, argv[2]);
        } else {
            for (size_t i = 0; i < all.count; i++)
                all.items[i].status = letter_status(conn, all.items[i].inbox_id);
            print_letters(spec->name, &all, json);
            rc = 0;
        }
    }
    if (rk != NULL)
        rd_kafka_destroy(rk);
    PQfinish(conn);
    free(all.items);
    return rc;
}

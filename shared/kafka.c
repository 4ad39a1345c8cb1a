/*
 * kafka.c - producer, consumer and admin helpers over librdkafka.
 */
#define _POSIX_C_SOURCE 200809L
#include "kafka.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "log.h"

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    log_rdkafka_cb(rk, level, fac, buf);
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    /* Broker-down errors are routine during restarts: librdkafka reconnects. */
    log_warn("msg=\"kafka error\" code=%s reason=\"%s\"",
             rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                    size_t errlen)
{
    if (rd_kafka_conf_set(conf, name, value, err, errlen) != RD_KAFKA_CONF_OK)
        return -1;
    return 0;
}

static rd_kafka_conf_t *base_conf(const struct kafka_settings *settings, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    if (conf_set(conf, "bootstrap.servers", settings->brokers, err, errlen) != 0 ||
        conf_set(conf, "client.id", settings->client_id ? settings->client_id : "widget-store", err,
                 errlen) != 0 ||
        conf_set(conf, "socket.nagle.disable", "true", err, errlen) != 0 ||
        conf_set(conf, "reconnect.backoff.ms", "50", err, errlen) != 0 ||
        conf_set(conf, "reconnect.backoff.max.ms", "1000", err, errlen) != 0 ||
        /* A topic created just before subscribing may be missing from the
         * first metadata answer; look again soon rather than in 5 minutes. */
        conf_set(conf, "topic.metadata.refresh.interval.ms", "2000", err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

rd_kafka_t *kafka_producer_new(const struct kafka_settings *settings,
                               void (*dr_cb)(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                                             void *opaque),
                               char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = base_conf(settings, err, errlen);
    char linger[32];
    rd_kafka_t *rk;

    if (conf == NULL)
        return NULL;
    snprintf(linger, sizeof(linger), "%g", settings->linger_ms);
    /* Idempotence implies acks=all and bounded in-flight requests, which keeps
     * per-partition order across internal retries. */
    if (conf_set(conf, "enable.idempotence", "true", err, errlen) != 0 ||
        conf_set(conf, "acks", "all", err, errlen) != 0 ||
        conf_set(conf, "linger.ms", linger, err, errlen) != 0 ||
        conf_set(conf, "message.timeout.ms", settings->gapless ? "0" : "60000", err, errlen) != 0 ||
        conf_set(conf, "enable.gapless.guarantee", settings->gapless ? "true" : "false", err,
                 errlen) != 0 ||
        conf_set(conf, "batch.num.messages", "10000", err, errlen) != 0 ||
        conf_set(conf, "queue.buffering.max.messages", "200000", err, errlen) != 0 ||
        conf_set(conf, "compression.codec", "none", err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (dr_cb)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
    if (rk == NULL)
        rd_kafka_conf_destroy(conf);
    return rk;
}

rd_kafka_t *kafka_consumer_new(const struct kafka_settings *settings, const char *const *topics,
                               char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = base_conf(settings, err, errlen);
    rd_kafka_topic_partition_list_t *subscription = NULL;
    rd_kafka_resp_err_t rerr;
    char session[32];
    rd_kafka_t *rk;
    int count = 0;

    if (conf == NULL)
        return NULL;
    long session_ms = settings->session_timeout_ms > 0 ? settings->session_timeout_ms : 6000;
    char heartbeat[32];

    snprintf(session, sizeof(session), "%ld", session_ms);
    /* Three heartbeats per session, at most one a second. */
    snprintf(heartbeat, sizeof(heartbeat), "%ld", session_ms / 3 < 1000 ? session_ms / 3 : 1000);
    if (conf_set(conf, "group.id", settings->group_id, err, errlen) != 0 ||
        conf_set(conf, "enable.auto.commit", "true", err, errlen) != 0 ||
        conf_set(conf, "enable.auto.offset.store", "false", err, errlen) != 0 ||
        conf_set(conf, "auto.commit.interval.ms", "200", err, errlen) != 0 ||
        conf_set(conf, "auto.offset.reset", "earliest", err, errlen) != 0 ||
        conf_set(conf, "session.timeout.ms", session, err, errlen) != 0 ||
        conf_set(conf, "heartbeat.interval.ms", heartbeat, err, errlen) != 0 ||
        conf_set(conf, "fetch.wait.max.ms", "100", err, errlen) != 0 ||
        conf_set(conf, "fetch.error.backoff.ms", "50", err, errlen) != 0 ||
        conf_set(conf, "partition.assignment.strategy", "range,roundrobin", err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (settings->max_poll_interval_ms > 0) {
        char max_poll[32];

        snprintf(max_poll, sizeof(max_poll), "%ld", settings->max_poll_interval_ms);
        if (conf_set(conf, "max.poll.interval.ms", max_poll, err, errlen) != 0) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (settings->instance_id && settings->instance_id[0] &&
        conf_set(conf, "group.instance.id", settings->instance_id, err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    for (const char *const *t = topics; *t; t++)
        count++;
    /* No topics: the caller assigns partitions itself (admin tools). */
    if (count == 0)
        return rk;
    subscription = rd_kafka_topic_partition_list_new(count);
    for (const char *const *t = topics; *t; t++) {
        char wire[256];

        kafka_wire_topic(wire, sizeof(wire), settings->topic_prefix, *t, NULL);
        rd_kafka_topic_partition_list_add(subscription, wire, RD_KAFKA_PARTITION_UA);
    }
    rerr = rd_kafka_subscribe(rk, subscription);
    rd_kafka_topic_partition_list_destroy(subscription);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "subscribe: %s", rd_kafka_err2str(rerr));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* The handles of one admin request, on a short-lived client of its own. */
struct admin_request {
    rd_kafka_t *rk;
    rd_kafka_AdminOptions_t *options;
    rd_kafka_queue_t *queue;
    rd_kafka_event_t *event; /* the answer, once admin_wait() returned 0 */
};

/* A short-lived client for admin requests and metadata; NULL with the
 * reason in err. */
static rd_kafka_t *admin_client_new(const char *brokers, char *err, size_t errlen)
{
    struct kafka_settings settings = {.brokers = brokers, .client_id = "topic-admin"};
    rd_kafka_conf_t *conf = base_conf(&settings, err, errlen);
    rd_kafka_t *rk;

    if (conf == NULL)
        return NULL;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
    if (rk == NULL)
        rd_kafka_conf_destroy(conf);
    return rk;
}

/* Creates the client, the options (timeout_ms) and the answer queue.
 * Returns 0, or -1 with the reason in err (nothing to release then). */
static int admin_begin(struct admin_request *req, const char *brokers, rd_kafka_admin_op_t op,
                       int timeout_ms, char *err, size_t errlen)
{
    memset(req, 0, sizeof(*req));
    req->rk = admin_client_new(brokers, err, errlen);
    if (req->rk == NULL)
        return -1;
    req->options = rd_kafka_AdminOptions_new(req->rk, op);
    rd_kafka_AdminOptions_set_request_timeout(req->options, timeout_ms, err, errlen);
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
        rd_kafka_AdminOptions_set_operation_timeout(req->options, timeout_ms, err, errlen);
    req->queue = rd_kafka_queue_new(req->rk);
    return 0;
}

/* Waits for the answer to the request sent. Returns 0 (the answer in
 * req->event), or -1 with the reason in err. */
static int admin_wait(struct admin_request *req, int timeout_ms, const char *what, char *err,
                      size_t errlen)
{
    req->event = rd_kafka_queue_poll(req->queue, timeout_ms + 2000);
    if (req->event == NULL) {
        snprintf(err, errlen, "%s: no answer within %d ms", what, timeout_ms);
        return -1;
    }
    if (rd_kafka_event_error(req->event)) {
        snprintf(err, errlen, "%s: %s", what, rd_kafka_event_error_string(req->event));
        return -1;
    }
    return 0;
}

static void admin_release(struct admin_request *req)
{
    if (req->event)
        rd_kafka_event_destroy(req->event);
    rd_kafka_queue_destroy(req->queue);
    rd_kafka_AdminOptions_destroy(req->options);
    rd_kafka_destroy(req->rk);
}

/* Checks the answer to a CreateTopics request: an existing topic is fine. */
static int created_all(rd_kafka_event_t *event, char *err, size_t errlen)
{
    const rd_kafka_CreateTopics_result_t *result = rd_kafka_event_CreateTopics_result(event);
    size_t n = 0;
    const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(result, &n);

    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(results[i]);

        if (terr != RD_KAFKA_RESP_ERR_NO_ERROR && terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            snprintf(err, errlen, "create topic %s: %s", rd_kafka_topic_result_name(results[i]),
                     rd_kafka_topic_result_error_string(results[i]));
            return -1;
        }
    }
    return 0;
}

int kafka_ensure_topics(const char *brokers, const char *const *topics, int partitions,
                        int timeout_ms, char *err, size_t errlen)
{
    rd_kafka_NewTopic_t *new_topics[64];
    struct admin_request req;
    size_t count = 0;
    int rc = -1;

    for (const char *const *t = topics; *t && count < 64; t++) {
        new_topics[count] = rd_kafka_NewTopic_new(*t, partitions, -1, err, errlen);
        if (new_topics[count] == NULL)
            goto out;
        count++;
    }
    if (admin_begin(&req, brokers, RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout_ms, err, errlen) != 0)
        goto out;
    rd_kafka_CreateTopics(req.rk, new_topics, count, req.options, req.queue);
    if (admin_wait(&req, timeout_ms, "create topics", err, errlen) == 0)
        rc = created_all(req.event, err, errlen);
    admin_release(&req);
out:
    for (size_t i = 0; i < count; i++)
        rd_kafka_NewTopic_destroy(new_topics[i]);
    return rc;
}

int kafka_topic_is_led(const struct rd_kafka_metadata *md, const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *t = &md->topics[i];

        if (strcmp(t->topic, topic) != 0)
            continue;
        if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR || t->partition_cnt == 0)
            return 0;
        for (int p = 0; p < t->partition_cnt; p++) {
            if (t->partitions[p].err != RD_KAFKA_RESP_ERR_NO_ERROR || t->partitions[p].leader < 0)
                return 0;
        }
        return 1;
    }
    return 0;
}

int kafka_await_topics(const char *brokers, const char *const *topics, int timeout_ms, char *err,
                       size_t errlen)
{
    const char *missing = topics[0];
    double deadline = backoff_now_ms() + timeout_ms, left;
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR__TRANSPORT;
    int answered = 0;
    rd_kafka_t *rk = admin_client_new(brokers, err, errlen);

    if (rk == NULL)
        return -1;
    while (missing != NULL && (left = deadline - backoff_now_ms()) > 0) {
        const struct rd_kafka_metadata *md = NULL;

        /* One request at most 2 s, and never past the deadline. */
        last = rd_kafka_metadata(rk, 1, NULL, &md, left < 2000 ? (int)left + 1 : 2000);
        if (last == RD_KAFKA_RESP_ERR_NO_ERROR) {
            answered = 1;
            missing = NULL;
            for (const char *const *t = topics; *t && missing == NULL; t++) {
                if (!kafka_topic_is_led(md, *t))
                    missing = *t;
            }
            rd_kafka_metadata_destroy(md);
        }
        if (missing != NULL)
            backoff_sleep_ms(50);
    }
    rd_kafka_destroy(rk);
    if (missing == NULL)
        return 0;
    if (answered)
        snprintf(err, errlen, "topic %s not in the broker's metadata within %d ms", missing,
                 timeout_ms);
    else
        snprintf(err, errlen, "no metadata from the broker within %d ms: %s", timeout_ms,
                 rd_kafka_err2str(last));
    return -1;
}

int kafka_keep_ms(const char *retention_ms, const char *segment_ms, const char *cleanup_policy,
                  long long *keep_ms)
{
    long long retention, segment;
    char *end;

    if (retention_ms == NULL || segment_ms == NULL || cleanup_policy == NULL)
        return -1;
    errno = 0;
    retention = strtoll(retention_ms, &end, 10);
    if (errno != 0 || end == retention_ms || *end != '\0' || retention < -1)
        return -1;
    segment = strtoll(segment_ms, &end, 10);
    if (errno != 0 || end == segment_ms || *end != '\0' || segment < 1)
        return -1;
    /* "compact" alone keeps each key's last message for ever; with
     * "delete" too, old segments still go after retention.ms. */
    if (retention == -1 || strstr(cleanup_policy, "delete") == NULL) {
        *keep_ms = -1;
        return 0;
    }
    /* Past a century ("practically for ever"), the database could not even
     * reckon back that far (now() - keep_ms ms runs out of range). */
    if (retention > KAFKA_KEEP_FOREVER_MS - segment) {
        *keep_ms = -1;
        return 0;
    }
    *keep_ms = retention + segment;
    return 0;
}

/* The keep time of one described topic; see kafka_topics_keep_ms. */
static int resource_keep_ms(const rd_kafka_ConfigResource_t *resource, long long *keep_ms,
                            char *err, size_t errlen)
{
    const char *retention = NULL, *segment = NULL, *policy = NULL;
    const rd_kafka_ConfigEntry_t **entries;
    size_t n = 0;

    if (rd_kafka_ConfigResource_error(resource) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "describe topic %s: %s", rd_kafka_ConfigResource_name(resource),
                 rd_kafka_ConfigResource_error_string(resource));
        return -1;
    }
    entries = rd_kafka_ConfigResource_configs(resource, &n);
    for (size_t i = 0; i < n; i++) {
        const char *name = rd_kafka_ConfigEntry_name(entries[i]);

        if (strcmp(name, "retention.ms") == 0)
            retention = rd_kafka_ConfigEntry_value(entries[i]);
        else if (strcmp(name, "segment.ms") == 0)
            segment = rd_kafka_ConfigEntry_value(entries[i]);
        else if (strcmp(name, "cleanup.policy") == 0)
            policy = rd_kafka_ConfigEntry_value(entries[i]);
    }
    if (kafka_keep_ms(retention, segment, policy, keep_ms) != 0) {
        snprintf(err, errlen, "topic %s: unreadable retention.ms, segment.ms or cleanup.policy",
                 rd_kafka_ConfigResource_name(resource));
        return -1;
    }
    return 0;
}

/* The longest keep time among the described topics of event. */
static int described_keep_ms(rd_kafka_event_t *event, size_t expected, long long *keep_ms,
                             char *err, size_t errlen)
{
    const rd_kafka_DescribeConfigs_result_t *result = rd_kafka_event_DescribeConfigs_result(event);
    size_t n = 0;
    const rd_kafka_ConfigResource_t **described =
        rd_kafka_DescribeConfigs_result_resources(result, &n);

    if (n != expected) {
        snprintf(err, errlen, "describe topics: %zu answers for %zu topics", n, expected);
        return -1;
    }
    *keep_ms = 0;
    for (size_t i = 0; i < n; i++) {
        long long topic_keep;

        if (resource_keep_ms(described[i], &topic_keep, err, errlen) != 0)
            return -1;
        if (topic_keep < 0 || *keep_ms < 0)
            *keep_ms = -1;
        else if (topic_keep > *keep_ms)
            *keep_ms = topic_keep;
    }
    return 0;
}

int kafka_topics_keep_ms(const char *brokers, const char *const *topics, int timeout_ms,
                         long long *keep_ms, char *err, size_t errlen)
{
    rd_kafka_ConfigResource_t *resources[64];
    struct admin_request req;
    size_t count = 0;
    int rc = -1;

    for (const char *const *t = topics; *t && count < 64; t++)
        resources[count++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, *t);
    if (admin_begin(&req, brokers, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, timeout_ms, err, errlen) ==
        0) {
        rd_kafka_DescribeConfigs(req.rk, resources, count, req.options, req.queue);
        if (admin_wait(&req, timeout_ms, "describe topics", err, errlen) == 0)
            rc = described_keep_ms(req.event, count, keep_ms, err, errlen);
        admin_release(&req);
    }
    for (size_t i = 0; i < count; i++)
        rd_kafka_ConfigResource_destroy(resources[i]);
    return rc;
}

const char *kafka_logical_topic(const struct kafka_settings *settings, const char *wire_name)
{
    size_t len = settings->topic_prefix ? strlen(settings->topic_prefix) : 0;

    if (len > 0 && strncmp(wire_name, settings->topic_prefix, len) == 0)
        return wire_name + len;
    return wire_name;
}

int kafka_wire_topic(char *out, size_t cap, const char *prefix, const char *logical,
                     const char *suffix)
{
    int n = snprintf(out, cap, "%s%s%s", prefix ? prefix : "", logical, suffix ? suffix : "");

    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int kafka_header(const rd_kafka_message_t *msg, const char *name, char *out, size_t cap)
{
    rd_kafka_headers_t *headers = NULL;
    const void *value;
    size_t size;

    if (rd_kafka_message_headers(msg, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (rd_kafka_header_get_last(headers, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        value == NULL)
        return -1;
    if (size >= cap)
        size = cap - 1;
    memcpy(out, value, size);
    out[size] = '\0';
    return 0;
}

int kafka_topic_watermarks(rd_kafka_t *rk, const char *topic, int32_t *ids, int64_t *low,
                           int64_t *high, int max, int timeout_ms)
{
    const struct rd_kafka_metadata *metadata = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int n = -1;

    if (rkt == NULL)
        return -1;
    if (rd_kafka_metadata(rk, 0, rkt, &metadata, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        goto out;
    if (metadata->topic_cnt != 1 || metadata->topics[0].err)
        goto out;
    n = 0;
    for (int i = 0; i < metadata->topics[0].partition_cnt && n < max; i++, n++) {
        ids[n] = metadata->topics[0].partitions[i].id;
        if (rd_kafka_query_watermark_offsets(rk, topic, ids[n], &low[n], &high[n], timeout_ms) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            n = -1;
            goto out;
        }
    }
out:
    if (metadata)
        rd_kafka_metadata_destroy(metadata);
    rd_kafka_topic_destroy(rkt);
    return n;
}

int kafka_read_topic(rd_kafka_t *rk, const char *topic, int timeout_ms,
                     void (*fn)(const rd_kafka_message_t *msg, void *arg), void *arg)
{
    int32_t ids[KAFKA_MAX_PARTITIONS];
    int64_t low[KAFKA_MAX_PARTITIONS], high[KAFKA_MAX_PARTITIONS];
    int n = kafka_topic_watermarks(rk, topic, ids, low, high, KAFKA_MAX_PARTITIONS, timeout_ms);
    int remaining = 0;
    rd_kafka_topic_partition_list_t *list;

    if (n < 0)
        return -1;
    list = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    for (int i = 0; i < n; i++) {
        if (high[i] <= low[i])
            continue;
        rd_kafka_topic_partition_list_add(list, topic, ids[i])->offset = low[i];
        remaining++;
    }
    rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    while (remaining > 0) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, timeout_ms);

        if (msg == NULL)
            break;
        if (!msg->err) {
            fn(msg, arg);
            for (int i = 0; i < n; i++) {
                if (ids[i] == msg->partition && msg->offset + 1 == high[i])
                    remaining--;
            }
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_assign(rk, NULL);
    return remaining == 0 ? 0 : -1;
}

rd_kafka_message_t *kafka_read_at(rd_kafka_t *rk, const char *topic, int32_t partition,
                                  int64_t offset, int timeout_ms)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_message_t *found = NULL;
    int64_t low, high;

    if (rd_kafka_query_watermark_offsets(rk, topic, partition, &low, &high, timeout_ms) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        offset < low || offset >= high)
        return NULL;
    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
    rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    while (found == NULL) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, timeout_ms);

        if (msg == NULL)
            break;
        if (!msg->err && msg->partition == partition && msg->offset == offset)
            found = msg;
        else
            rd_kafka_message_destroy(msg);
    }
    rd_kafka_assign(rk, NULL);
    return found;
}

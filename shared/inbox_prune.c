/*
 * inbox_prune.c - periodic deletion of inbox rows no replay can need; see
 * inbox_prune.h for why it is safe.
 */
#define _POSIX_C_SOURCE 200809L
#include "inbox_prune.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "db.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "ticker.h"

#define PRUNE_BATCH         10000 /* rows per delete, so no transaction grows large */
#define DESCRIBE_TIMEOUT_MS 10000

struct inbox_pruner {
    struct inbox_prune_config cfg;
    struct ticker *ticker;
    long long keep_ms; /* last answer: -1 for ever, 0 not yet known */
    struct timespec asked_at;
    struct metric *m_pruned, *m_keep;
};

static long long ms_since(const struct timespec *then)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)(now.tv_sec - then->tv_sec) * 1000 + (now.tv_nsec - then->tv_nsec) / 1000000;
}

/* Asks the broker how long the topics keep messages, at most once per
 * interval. Returns 0 or -1. */
static int refresh_keep(struct inbox_pruner *pruner)
{
    long long keep_ms;
    char err[512];

    if (pruner->keep_ms != 0 && ms_since(&pruner->asked_at) < pruner->cfg.interval_ms)
        return 0;
    if (kafka_topics_keep_ms(pruner->cfg.brokers, pruner->cfg.topics, DESCRIBE_TIMEOUT_MS, &keep_ms,
                             err, sizeof(err)) != 0) {
        log_warn("msg=\"inbox pruning cannot read the topics' retention; keeping every row "
                 "until the next run\" error=\"%s\"",
                 err);
        pruner->keep_ms = 0;
        metrics_set(pruner->m_keep, 0);
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &pruner->asked_at);
    if (keep_ms != pruner->keep_ms) {
        if (keep_ms < 0)
            log_info("msg=\"a consumed topic keeps messages for ever; the inbox is not pruned\"");
        else
            log_info("msg=\"inbox rows are kept while their topics may hold the message\" "
                     "keep_hours=%.1f",
                     (double)(keep_ms + INBOX_PRUNE_MARGIN_MS) / 3600000.0);
    }
    pruner->keep_ms = keep_ms;
    metrics_set(pruner->m_keep,
                keep_ms < 0 ? -1 : (int64_t)((keep_ms + INBOX_PRUNE_MARGIN_MS) / 1000));
    return 0;
}

/* The ticker's job: one batch. Returns the rows deleted when the batch was
 * full (run again at once), 0 otherwise (sleep an interval), -1 when the
 * database failed (back off and reconnect). */
static int prune_run(PGconn *conn, void *arg)
{
    struct inbox_pruner *pruner = arg;
    char keep[32], limit[32];
    const char *params[] = {keep, limit};
    PGresult *res;
    long deleted;

    /* Unknown or unbounded: delete nothing, ask again next run. */
    if (refresh_keep(pruner) != 0 || pruner->keep_ms < 0)
        return 0;
    snprintf(keep, sizeof(keep), "%lld", pruner->keep_ms + INBOX_PRUNE_MARGIN_MS);
    snprintf(limit, sizeof(limit), "%d", PRUNE_BATCH);
    res = db_query(conn, "inbox prune",
                   "WITH old AS (SELECT message_id FROM inbox "
                   "WHERE handled_at < now() - $1::bigint * interval '1 millisecond' "
                   "ORDER BY handled_at LIMIT $2::int) "
                   "DELETE FROM inbox USING old WHERE inbox.message_id = old.message_id",
                   2, params);
    if (res == NULL)
        return -1;
    deleted = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    if (deleted > 0) {
        metrics_add(pruner->m_pruned, (uint64_t)deleted);
        log_debug("msg=\"inbox pruned\" rows=%ld", deleted);
    }
    return deleted == PRUNE_BATCH ? (int)deleted : 0;
}

struct inbox_pruner *inbox_pruner_start(const struct inbox_prune_config *cfg)
{
    struct inbox_pruner *pruner = calloc(1, sizeof(*pruner));

    if (pruner == NULL)
        return NULL;
    pruner->cfg = *cfg;
    pruner->m_pruned = metrics_counter(
        "inbox_pruned_total", NULL, "Inbox rows deleted because no topic can hold their message");
    pruner->m_keep = metrics_gauge(
        "inbox_keep_seconds", NULL,
        "How long inbox rows are kept (-1: for ever, 0: not yet known from the broker)");
    pruner->ticker = ticker_start(cfg->db_url, cfg->name, cfg->interval_ms, prune_run, pruner);
    if (pruner->ticker == NULL) {
        free(pruner);
        return NULL;
    }
    return pruner;
}

void inbox_pruner_stop(struct inbox_pruner *pruner)
{
    if (pruner == NULL)
        return;
    ticker_stop(pruner->ticker);
    free(pruner);
}

/*
 * inbox_prune.h - keeps a service's inbox only as long as a replay could
 * need it. A row says "this message was handled"; it matters while the
 * message can still be read again, that is while a consumed topic may still
 * hold it (kafka_topics_keep_ms: retention.ms + segment.ms), and not after.
 * A thread asks the broker for that time every interval and deletes, in
 * batches, the rows handled longer ago than it plus INBOX_PRUNE_MARGIN_MS.
 * While any consumed topic keeps messages for ever, nothing is deleted.
 *
 * A restored backup stays safe: its rows cover every message handled within
 * that time before the backup, and anything older is gone from the topics.
 * Several replicas may prune at once; they only delete the same old rows.
 */
#ifndef SHARED_INBOX_PRUNE_H
#define SHARED_INBOX_PRUNE_H

/* Added to the topics' keep time: the broker deletes expired segments only
 * every log.retention.check.interval.ms (5 minutes by default), and hosts'
 * clocks may differ. */
#define INBOX_PRUNE_MARGIN_MS (3600LL * 1000)

struct inbox_prune_config {
    const char *db_url;
    const char *name; /* for logs and application_name */
    const char *brokers;
    const char *const *topics; /* consumed topics, wire names, NULL-terminated */
    long interval_ms;          /* between runs; the broker is asked again each run */
};

struct inbox_pruner; /* opaque */

/* Starts the thread; cfg's strings must outlive it. The first run is at
 * once. Returns NULL if the thread cannot be created. */
struct inbox_pruner *inbox_pruner_start(const struct inbox_prune_config *cfg);

/* Stops the thread after the current run and frees it. Accepts NULL. */
void inbox_pruner_stop(struct inbox_pruner *pruner);

#endif

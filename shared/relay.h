/*
 * relay.h - the outbox relay: a thread that publishes committed outbox rows
 * to Kafka in id order with the idempotent producer, and deletes each row once
 * the broker acknowledged it.
 *
 * Only one relay per database is active: it holds a PostgreSQL advisory lock
 * on its own connection. Other replicas wait as standbys and take over within
 * standby_check_ms once the holder's connection is gone (a killed process
 * loses its lock when the server notices the closed socket). A crash between
 * the broker's acknowledgement and the delete publishes those rows again;
 * consumers are idempotent by message id, so that is harmless.
 */
#ifndef SHARED_RELAY_H
#define SHARED_RELAY_H

#include <stddef.h>

#include "kafka.h"

struct relay_config {
    const char *db_url;
    const char *name; /* for logs and application_name */
    struct kafka_settings kafka;
    long batch_size;       /* rows fetched and published per round; default 2000 */
    long poll_interval_ms; /* fallback poll when no NOTIFY arrives; default 500 */
    long standby_check_ms; /* how often a standby tries the lock; default 1000 */
    long long lock_key;    /* advisory lock key; 0 picks the project default */
    /* Logical topics this relay will publish to (NULL-terminated, may be
     * NULL): their metadata is fetched when the relay starts, since
     * librdkafka holds the first message to a topic it has no metadata for
     * about a second, which a restarted service would add to every hop. */
    const char *const *topics;
};

struct relay; /* opaque */

/*
 * Starts the relay thread. cfg's strings must outlive the relay. The thread
 * connects (and reconnects) to the database itself and retries with backoff,
 * so an unreachable database or broker is not an error here. Returns NULL with
 * the reason in err only if the producer cannot be configured.
 */
struct relay *relay_start(const struct relay_config *cfg, char *err, size_t errlen);

/* Returns 1 while this relay holds the lock and publishes, else 0. */
int relay_is_active(const struct relay *relay);

/* Rows published (acknowledged and deleted) by this relay so far. */
long long relay_published(const struct relay *relay);

/* Stops the thread, waits for it and frees everything. Accepts NULL. */
void relay_stop(struct relay *relay);

#endif

/*
 * service.h - the runtime every service process shares: configuration from
 * the environment (common variables plus the service's own), logging, topic
 * creation, the outbox relay, the idempotent consumer and its inbox pruner,
 * the admin HTTP server (/healthz, /readyz, /metrics, POST /crash) and
 * shutdown on SIGTERM/SIGINT.
 *
 * Common variables: DATABASE_URL (required), KAFKA_BROKERS, KAFKA_GROUP,
 * KAFKA_INSTANCE_ID, KAFKA_LINGER_MS, KAFKA_SESSION_TIMEOUT_MS,
 * KAFKA_MAX_POLL_INTERVAL_MS, KAFKA_TOPIC_PREFIX, ADMIN_PORT, ADMIN_ADDRESS,
 * LOG_LEVEL, RELAY_BATCH_SIZE, MAX_ATTEMPTS, CONSUMER_THREADS,
 * CONSUMER_BATCH_MAX, INBOX_PRUNE_INTERVAL_MS (`NAME --help` lists them with
 * defaults). Values no later step could use stop the process at start.
 *
 * With the argument "dead-letters", the same binary and environment run the
 * operator's command of dead_letters.h instead of the service.
 */
#ifndef SHARED_SERVICE_H
#define SHARED_SERVICE_H

#include <stddef.h>

#include "admin_http.h"
#include "config.h"
#include "consumer.h"

struct service_settings {
    char database_url[512];
    char brokers[256];
    char group[128];
    char instance_id[128];
    char log_level[16];
    char topic_prefix[64];
    char admin_address[64];
    long linger_ms;
    long session_timeout_ms;
    long max_poll_interval_ms;
    long admin_port;
    long relay_batch;
    long max_attempts;
    long consumer_batch;
    long consumer_threads;
    long inbox_prune_interval_ms;
};

struct service_spec {
    const char *name; /* "inventory": logs, client ids, default group */
    long default_admin_port;
    const char *const *consume_topics; /* NULL-terminated; NULL for none */
    const char *const *produce_topics; /* created at start-up with their .dlq; may be NULL */
    consumer_handler_fn handler;       /* required when consume_topics is set */
    void *handler_arg;
    const char *const *handled_types; /* types the handler acts on; NULL for all */
    int handler_idempotent;           /* see consumer_config: no inbox row needed */
    admin_route_fn routes;            /* extra admin routes; may be NULL */
    void *routes_arg;
    const struct config_entry *extra_config; /* the service's own variables */
    size_t extra_config_count;
};

struct service; /* opaque */

/*
 * Loads the configuration (common and extra entries together; every bad
 * variable is printed and the process exits with status 2), sets up logging,
 * and fills settings. Call before service_start(). main's arguments: --help
 * lists the variables and exits 0; "dead-letters ..." runs that command
 * (dead_letters.h) and exits with its status; any other argument exits with
 * status 2.
 */
void service_configure(const struct service_spec *spec, struct service_settings *settings, int argc,
                       char **argv);

/*
 * Creates the topics (waiting for the broker), then starts the relay, the
 * consumer and the admin server. spec and settings must outlive the service.
 * Exits with status 1 if a component cannot start at all.
 */
struct service *service_start(const struct service_spec *spec,
                              const struct service_settings *settings);

/* Returns non-zero when the service is ready (consumer connected to its
 * database and in its group); otherwise writes the reason into why. */
int service_is_ready(struct service *svc, char *why, size_t whylen);

/* Blocks until SIGTERM or SIGINT. */
void service_wait(struct service *svc);

/* Returns non-zero while a stop was requested (for the service's own loops). */
int service_stopping(void);

/* Stops every component and frees svc. Accepts NULL. */
void service_stop(struct service *svc);

/* Ends the process at once with status 1, as a crash would, after a short
 * delay that lets the HTTP answer go out. For the crash buttons. */
void service_crash_soon(void);

#endif

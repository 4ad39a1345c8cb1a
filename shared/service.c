/*
 * service.c - wiring shared by every service: config, topics, relay,
 * consumer, admin server and signals.
 */
#define _POSIX_C_SOURCE 200809L
#include "service.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backoff.h"
#include "crashpoint.h"
#include "dead_letters.h"
#include "inbox_prune.h"
#include "kafka.h"
#include "log.h"
#include "relay.h"

#define MAX_CONFIG    48
#define MAX_TOPICS    32
#define MAX_CONSUMERS 16

struct service {
    const struct service_spec *spec;
    const struct service_settings *settings;
    struct relay *relay;
    struct consumer *consumers[MAX_CONSUMERS]; /* members of one group, one thread each */
    int consumer_count;
    char instance_ids[MAX_CONSUMERS][160];
    struct admin_http *admin;
    /* Set once the relay and the consumers exist: the admin server, which
     * starts first, reads the consumers only after that. */
    atomic_int started;
    struct inbox_pruner *pruner;
    char consumed_names[MAX_TOPICS][160]; /* wire names, for the pruner */
    const char *consumed[MAX_TOPICS + 1];
    char pruner_name[160];
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int service_stopping(void)
{
    return stop_requested;
}

/* Answers --help (the variables, to stdout, exit 0), recognises the
 * operator's commands (returns 1), and refuses any other argument (exit 2):
 * configuration comes from the environment only. */
static int service_arguments(const struct service_spec *spec, int argc, char **argv,
                             const struct config_entry *table, size_t count)
{
    if (argc < 2)
        return 0;
    if (strcmp(argv[1], "dead-letters") == 0) {
        if (!dead_letters_usage_ok(spec->name, argc - 1, argv + 1))
            exit(2);
        return 1;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("Usage: %s\n       %s dead-letters [--json]\n       %s dead-letters redrive "
               "MESSAGE_ID\n\nThe %s service, or its dead letters (list them; hand one back once "
               "the cause is fixed). Configured by these environment variables:\n",
               spec->name, spec->name, spec->name, spec->name);
        config_print_help(stdout, table, count);
        printf("  CRASH_AT (default \"\")\n      fault injection for tests: a crash point name, "
               "see shared/crashpoint.h\n");
        printf("  FAULT_AT (default \"\")\n      fault injection for tests: a fault point name, "
               "see shared/crashpoint.h\n");
        exit(0);
    }
    fprintf(stderr,
            "%s: unexpected argument \"%s\"; it is configured by environment variables "
            "(see %s --help)\n",
            spec->name, argv[1], spec->name);
    exit(2);
}

/*
 * Checks the values of a parsed DATABASE_URL that libpq would refuse only
 * when connecting, which the services would then retry for ever: the port
 * (a list, with a host list) and sslmode. Writes one line per fault into
 * errors; returns the bytes written.
 */
static size_t check_conninfo(const PQconninfoOption *parsed, char *errors, size_t errlen)
{
    static const char *const sslmodes[] = {"disable", "allow",     "prefer",
                                           "require", "verify-ca", "verify-full"};
    size_t used = 0;

    for (const PQconninfoOption *o = parsed; o->keyword != NULL && used < errlen; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "port") == 0) {
            const char *port = o->val;

            while (used < errlen) {
                size_t len = strcspn(port, ",");
                int digits = len > 0 && len <= 5 && strspn(port, "0123456789") == len;

                if (len > 0 && (!digits || atoi(port) < 1 || atoi(port) > 65535)) {
                    used += (size_t)snprintf(errors + used, errlen - used,
                                             "DATABASE_URL: port \"%.*s\" is not 1-65535\n",
                                             (int)(len > 16 ? 16 : len), port);
                    break;
                }
                if (port[len] == '\0')
                    break;
                port += len + 1;
            }
        } else if (strcmp(o->keyword, "sslmode") == 0) {
            size_t known = 0;

            while (known < sizeof(sslmodes) / sizeof(sslmodes[0]) &&
                   strcmp(o->val, sslmodes[known]) != 0)
                known++;
            if (known == sizeof(sslmodes) / sizeof(sslmodes[0]))
                used += (size_t)snprintf(errors + used, errlen - used,
                                         "DATABASE_URL: sslmode \"%.16s\" is not disable, allow, "
                                         "prefer, require, verify-ca or verify-full\n",
                                         o->val);
        }
    }
    return used;
}

/* Checks what config_load cannot: values a later step would refuse, so a
 * service with one stops at once with the reason instead of retrying a
 * connection or a topic creation that can never work. Writes one line per
 * problem into errors; returns 0 or -1. Fills *level. */
static int check_settings(const struct service_settings *settings, enum log_level *level,
                          char *errors, size_t errlen)
{
    static const char topic_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789._-";
    size_t used = 0;
    char *pq_error = NULL;
    PQconninfoOption *parsed;

    errors[0] = '\0';
    if (log_level_parse(settings->log_level, level) != 0)
        used += (size_t)snprintf(errors + used, errlen - used,
                                 "LOG_LEVEL: \"%s\" is not debug, info, warn or error\n",
                                 settings->log_level);
    /* Kafka allows only these in topic names. */
    if (strspn(settings->topic_prefix, topic_chars) != strlen(settings->topic_prefix) &&
        used < errlen)
        used += (size_t)snprintf(errors + used, errlen - used,
                                 "KAFKA_TOPIC_PREFIX: \"%s\" may only use A-Z a-z 0-9 . _ -\n",
                                 settings->topic_prefix);
    /* librdkafka refuses this pair only when the consumer is made, which may
     * be long after start-up, behind a broker that is not up yet. */
    if (settings->max_poll_interval_ms < settings->session_timeout_ms && used < errlen)
        used += (size_t)snprintf(errors + used, errlen - used,
                                 "KAFKA_MAX_POLL_INTERVAL_MS: %ld is below "
                                 "KAFKA_SESSION_TIMEOUT_MS (%ld)\n",
                                 settings->max_poll_interval_ms, settings->session_timeout_ms);
    parsed = PQconninfoParse(settings->database_url, &pq_error);
    if (parsed == NULL && used < errlen) {
        /* libpq's reason, which never quotes the URL (it may hold a password). */
        used += (size_t)snprintf(errors + used, errlen - used, "DATABASE_URL: %s",
                                 pq_error ? pq_error : "out of memory\n");
        if (used < errlen && errors[used - 1] != '\n')
            used += (size_t)snprintf(errors + used, errlen - used, "\n");
    }
    if (parsed != NULL && used < errlen)
        used += check_conninfo(parsed, errors + used, errlen - used);
    PQconninfoFree(parsed);
    PQfreemem(pq_error);
    return used == 0 ? 0 : -1;
}

void service_configure(const struct service_spec *spec, struct service_settings *settings, int argc,
                       char **argv)
{
    static char default_port[16];

    /* glibc gives each thread that allocates its own arena; a service has a
     * few busy threads (and the api one per open connection), so two arenas
     * keep resident memory small at no measurable cost. */
    mallopt(M_ARENA_MAX, 2);
    const struct config_entry common[] = {
        {"DATABASE_URL", CONFIG_STRING, settings->database_url, sizeof(settings->database_url),
         NULL, 0, 0, "PostgreSQL URL of this service's own database"},
        {"KAFKA_BROKERS", CONFIG_STRING, settings->brokers, sizeof(settings->brokers),
         "localhost:9092", 0, 0, "Kafka bootstrap servers"},
        {"KAFKA_GROUP", CONFIG_STRING, settings->group, sizeof(settings->group), spec->name, 0, 0,
         "consumer group"},
        {"KAFKA_INSTANCE_ID", CONFIG_STRING, settings->instance_id, sizeof(settings->instance_id),
         "", 0, 0, "static group membership id (unique per replica), empty for none"},
        {"KAFKA_LINGER_MS", CONFIG_INT, &settings->linger_ms, 0, "1", 0, 100,
         "producer batching delay"},
        {"ADMIN_PORT", CONFIG_INT, &settings->admin_port, 0, default_port, 0, 65535,
         "port of /healthz, /readyz, /metrics; 0 disables"},
        {"ADMIN_ADDRESS", CONFIG_STRING, settings->admin_address, sizeof(settings->admin_address),
         "127.0.0.1", 0, 0,
         "address the admin port listens on; 0.0.0.0 (or ::) lets other hosts' probes and "
         "scrapers in"},
        {"LOG_LEVEL", CONFIG_STRING, settings->log_level, sizeof(settings->log_level), "info", 0, 0,
         "debug, info, warn or error"},
        {"RELAY_BATCH_SIZE", CONFIG_INT, &settings->relay_batch, 0, "1000", 1, 100000,
         "outbox rows published per round"},
        {"KAFKA_SESSION_TIMEOUT_MS", CONFIG_INT, &settings->session_timeout_ms, 0, "1500", 1000,
         300000,
         "how soon the group gives a dead consumer's partitions to the others (the broker's "
         "group.min.session.timeout.ms must allow it)"},
        {"KAFKA_MAX_POLL_INTERVAL_MS", CONFIG_INT, &settings->max_poll_interval_ms, 0, "300000",
         1000, 86400000,
         "how long a consumer may stay on one message (retrying through an outage) before the "
         "group counts it gone and rebalances; it rejoins when the message is done, and the "
         "inbox makes the redelivery harmless (must be at least KAFKA_SESSION_TIMEOUT_MS)"},
        {"KAFKA_TOPIC_PREFIX", CONFIG_STRING, settings->topic_prefix,
         sizeof(settings->topic_prefix), "", 0, 0,
         "prefix of every topic name, to run several systems on one broker"},
        {"MAX_ATTEMPTS", CONFIG_INT, &settings->max_attempts, 0, "5", 1, 1000,
         "handler failures of one message before its dead-letter topic"},
        {"CONSUMER_THREADS", CONFIG_INT, &settings->consumer_threads, 0, "1", 1, MAX_CONSUMERS,
         "consumers (group members) in this process, each with its own thread and database "
         "connection"},
        {"CONSUMER_BATCH_MAX", CONFIG_INT, &settings->consumer_batch, 0, "64", 1,
         CONSUMER_BATCH_MAX, "messages already fetched that share one transaction (1: none)"},
        {"INBOX_PRUNE_INTERVAL_MS", CONFIG_INT, &settings->inbox_prune_interval_ms, 0, "600000", 0,
         86400000,
         "how often inbox rows no consumed topic can replay any more are deleted (0: never)"},
    };
    struct config_entry table[MAX_CONFIG];
    size_t count = 0;
    char errors[4096];
    enum log_level level;

    snprintf(default_port, sizeof(default_port), "%ld", spec->default_admin_port);
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        table[count++] = common[i];
    for (size_t i = 0; i < spec->extra_config_count && count < MAX_CONFIG; i++)
        table[count++] = spec->extra_config[i];
    int command = service_arguments(spec, argc, argv, table, count);
    log_init(spec->name, LOG_LEVEL_INFO);
    if (config_load(table, count, errors, sizeof(errors)) != 0) {
        fprintf(stderr, "%s: bad configuration:\n%s", spec->name, errors);
        exit(2);
    }
    if (check_settings(settings, &level, errors, sizeof(errors)) != 0) {
        fprintf(stderr, "%s: bad configuration:\n%s", spec->name, errors);
        exit(2);
    }
    log_init(spec->name, level);
    if (command)
        exit(dead_letters_command(spec, settings, argc - 1, argv + 1));
    crashpoint_init();
}

/* Sleeps up to ms, in short steps, so that a stop request ends it. */
static void sleep_unless_stopped(long ms)
{
    while (ms > 0 && !stop_requested) {
        long step = ms < 50 ? ms : 50;

        backoff_sleep_ms(step);
        ms -= step;
    }
}

/* Creates the topics the service consumes and produces (and their dead-letter
 * topics), then waits, for a bounded time, until the broker shows the
 * consumed ones, so that the consumer's first assignment holds all of them
 * and /readyz does not say ready on a part of its share. */
static void ensure_topics(const struct service_spec *spec, const struct service_settings *settings)
{
    static char names[MAX_TOPICS][160];
    const char *topics[MAX_TOPICS + 1];
    const char *consumed[MAX_TOPICS + 1];
    const char *const *lists[] = {spec->consume_topics, spec->produce_topics};
    size_t count = 0, consumed_count = 0;
    struct backoff retry;
    char err[512];

    for (size_t l = 0; l < 2; l++) {
        for (const char *const *t = lists[l]; t && *t && count + 2 <= MAX_TOPICS; t++) {
            kafka_wire_topic(names[count], sizeof(names[count]), settings->topic_prefix, *t, NULL);
            topics[count] = names[count];
            if (l == 0)
                consumed[consumed_count++] = names[count];
            count++;
            kafka_wire_topic(names[count], sizeof(names[count]), settings->topic_prefix, *t,
                             ".dlq");
            topics[count] = names[count];
            count++;
        }
    }
    topics[count] = NULL;
    consumed[consumed_count] = NULL;
    backoff_init(&retry, 200, 5000, 0);
    while (!stop_requested &&
           kafka_ensure_topics(settings->brokers, topics, 4, 5000, err, sizeof(err)) != 0) {
        log_warn("msg=\"cannot create topics yet; retrying\" error=\"%s\"", err);
        sleep_unless_stopped(backoff_next(&retry));
    }
    /* Not fatal: the consumer's metadata refresh finds a late topic too,
     * only with a rebalance later. */
    if (!stop_requested && consumed_count > 0 &&
        kafka_await_topics(settings->brokers, consumed, 10000, err, sizeof(err)) != 0)
        log_warn("msg=\"subscribing before every topic is known\" error=\"%s\"", err);
}

static int service_ready(void *arg, char *why, size_t whylen)
{
    struct service *svc = arg;

    int assigned = 0;

    /* Still making sure of its topics (the broker may be away), or starting
     * its relay and consumers: nothing is handled yet. */
    if (!atomic_load(&svc->started)) {
        snprintf(why, whylen, "starting: topics, relay and consumers not set up yet");
        return 0;
    }
    /* Every consumer has its database; between them they have partitions (a
     * consumer may get none when there are more consumers than partitions). */
    for (int i = 0; i < svc->consumer_count; i++) {
        int partitions = consumer_partitions(svc->consumers[i]);

        if (partitions < 0) {
            snprintf(why, whylen, "consumer not connected to the database");
            return 0;
        }
        assigned += partitions;
    }
    if (svc->consumer_count > 0 && assigned == 0) {
        snprintf(why, whylen, "consumers not yet in their group");
        return 0;
    }
    return 1;
}

int service_is_ready(struct service *svc, char *why, size_t whylen)
{
    return service_ready(svc, why, whylen);
}

static void *crash_thread(void *arg)
{
    (void)arg;
    backoff_sleep_ms(100);
    log_error("msg=\"crashing on request\"");
    _exit(1);
    return NULL;
}

void service_crash_soon(void)
{
    pthread_t thread;

    if (pthread_create(&thread, NULL, crash_thread, NULL) != 0)
        _exit(1);
    pthread_detach(thread);
}

static int service_routes(void *arg, const char *method, const char *path, int *status, char **body,
                          const char **content_type)
{
    struct service *svc = arg;

    if (strcmp(path, "/crash") == 0 && strcmp(method, "POST") == 0) {
        *status = 200;
        *body = strdup("crashing\n");
        *content_type = "text/plain";
        service_crash_soon();
        return 0;
    }
    if (svc->spec->routes)
        return svc->spec->routes(svc->spec->routes_arg, method, path, status, body, content_type);
    return -1;
}

/* Starts the inbox pruner over the consumed topics. */
static void start_pruner(struct service *svc)
{
    size_t count = 0;

    for (const char *const *t = svc->spec->consume_topics; *t && count < MAX_TOPICS; t++) {
        kafka_wire_topic(svc->consumed_names[count], sizeof(svc->consumed_names[count]),
                         svc->settings->topic_prefix, *t, NULL);
        svc->consumed[count] = svc->consumed_names[count];
        count++;
    }
    svc->consumed[count] = NULL;
    snprintf(svc->pruner_name, sizeof(svc->pruner_name), "%s-inbox-prune", svc->spec->name);
    struct inbox_prune_config cfg = {.db_url = svc->settings->database_url,
                                     .name = svc->pruner_name,
                                     .brokers = svc->settings->brokers,
                                     .topics = svc->consumed,
                                     .interval_ms = svc->settings->inbox_prune_interval_ms};
    svc->pruner = inbox_pruner_start(&cfg);
    if (svc->pruner == NULL) {
        log_error("msg=\"inbox pruner failed to start\"");
        exit(1);
    }
}

struct service *service_start(const struct service_spec *spec,
                              const struct service_settings *settings)
{
    struct service *svc = calloc(1, sizeof(*svc));
    struct sigaction sa = {.sa_handler = on_signal};
    struct kafka_settings kafka = {.brokers = settings->brokers,
                                   .client_id = spec->name,
                                   .linger_ms = (double)settings->linger_ms,
                                   .group_id = settings->group,
                                   .instance_id = settings->instance_id,
                                   .session_timeout_ms = settings->session_timeout_ms,
                                   .max_poll_interval_ms = settings->max_poll_interval_ms,
                                   .topic_prefix = settings->topic_prefix};
    char err[512];

    if (svc == NULL)
        exit(1);
    svc->spec = spec;
    svc->settings = settings;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (settings->admin_port > 0) {
        svc->admin = admin_http_start(settings->admin_address, (int)settings->admin_port,
                                      service_ready, svc, service_routes, svc, err, sizeof(err));
        if (svc->admin == NULL) {
            log_error("msg=\"admin server failed\" error=\"%s\"", err);
            exit(1);
        }
    }
    ensure_topics(spec, settings);
    /* Asked to stop while the broker was away: there is nothing to start. */
    if (stop_requested)
        return svc;
    struct relay_config relay_cfg = {.db_url = settings->database_url,
                                     .name = spec->name,
                                     .kafka = kafka,
                                     .batch_size = settings->relay_batch,
                                     .topics = spec->produce_topics};
    svc->relay = relay_start(&relay_cfg, err, sizeof(err));
    if (svc->relay == NULL) {
        log_error("msg=\"relay failed to start\" error=\"%s\"", err);
        exit(1);
    }
    if (spec->consume_topics) {
        struct consumer_config consumer_cfg = {.db_url = settings->database_url,
                                               .name = spec->name,
                                               .kafka = kafka,
                                               .topics = spec->consume_topics,
                                               .max_attempts = (int)settings->max_attempts,
                                               .batch_max = (int)settings->consumer_batch,
                                               .handler = spec->handler,
                                               .handler_arg = spec->handler_arg,
                                               .handled_types = spec->handled_types,
                                               .handler_idempotent = spec->handler_idempotent};

        /* Several members of the group in one process: the partitions are
         * shared among them, so handlers of different partitions (and their
         * database round trips) run in parallel. */
        for (int i = 0; i < settings->consumer_threads; i++) {
            /* With one consumer, KAFKA_INSTANCE_ID is used as given. */
            if (settings->instance_id[0] && settings->consumer_threads > 1) {
                snprintf(svc->instance_ids[i], sizeof(svc->instance_ids[i]), "%s-%d",
                         settings->instance_id, i);
                consumer_cfg.kafka.instance_id = svc->instance_ids[i];
            }
            svc->consumers[i] = consumer_start(&consumer_cfg, err, sizeof(err));
            if (svc->consumers[i] == NULL) {
                log_error("msg=\"consumer failed to start\" error=\"%s\"", err);
                exit(1);
            }
            svc->consumer_count++;
        }
        if (settings->inbox_prune_interval_ms > 0)
            start_pruner(svc);
    }
    atomic_store(&svc->started, 1);
    log_info("msg=\"service started\" admin_port=%ld group=%s", settings->admin_port,
             settings->group);
    return svc;
}

void service_wait(struct service *svc)
{
    (void)svc;
    while (!stop_requested)
        backoff_sleep_ms(100);
}

void service_stop(struct service *svc)
{
    if (svc == NULL)
        return;
    log_info("msg=\"service stopping\"");
    inbox_pruner_stop(svc->pruner);
    for (int i = 0; i < svc->consumer_count; i++)
        consumer_stop(svc->consumers[i]);
    relay_stop(svc->relay);
    admin_http_stop(svc->admin);
    free(svc);
}

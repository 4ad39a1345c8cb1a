/*
 * checkout - the saga orchestrator. Owns orders, saga instances with their
 * step history, and durable timers. Consumes checkout.commands and the events
 * of inventory, payment and dispatch; sends their commands and publishes
 * order snapshots on checkout.events, all through its outbox. main() only
 * wires.
 */
#include "backoff.h"
#include "contracts.h"
#include "db_pool.h"
#include "inspect.h"
#include "saga.h"
#include "service.h"
#include "ticker.h"

/* How often the sagas{state} gauges are refreshed. */
#define SAGA_COUNT_INTERVAL_MS 5000

int main(int argc, char **argv)
{
    static const char *const consume[] = {TOPIC_CHECKOUT_COMMANDS, TOPIC_INVENTORY_EVENTS,
                                          TOPIC_PAYMENT_EVENTS, TOPIC_DISPATCH_EVENTS, NULL};
    static const char *const produce[] = {TOPIC_CHECKOUT_EVENTS, TOPIC_INVENTORY_COMMANDS,
                                          TOPIC_PAYMENT_COMMANDS, TOPIC_DISPATCH_COMMANDS, NULL};
    static struct service_settings settings;
    static struct saga_config cfg;
    static const struct config_entry extra[] = {
        {"PAYMENT_TIMEOUT_MS", CONFIG_INT, &cfg.payment_timeout_ms, 0, "60000", 100, 86400000,
         "how long a checkout waits for the payment provider"},
        {"COMPENSATION_RETRY_MS", CONFIG_INT, &cfg.compensation_retry_ms, 0, "5000", 10, 3600000,
         "first resend of an unconfirmed compensation (doubles each round)"},
        {"COMPENSATION_MAX_ROUNDS", CONFIG_INT, &cfg.max_compensation_rounds, 0, "10", 1, 1000,
         "resends before a saga is parked as compensation_failed"},
        {"STEP_TIMEOUT_MS", CONFIG_INT, &cfg.step_timeout_ms, 0, "60000", 100, 86400000,
         "how long a checkout waits for inventory or payment to answer before cancelling"},
        {"OPEN_PAYMENT_EARLY", CONFIG_BOOL, &cfg.open_payment_early, 0, "true", 0, 0,
         "open the payment while the stock is being reserved, once the price is known"},
    };
    struct service_spec spec = {.name = "checkout",
                                .default_admin_port = 9101,
                                .consume_topics = consume,
                                .produce_topics = produce,
                                .handler = saga_handle,
                                .handled_types = saga_handled_types,
                                .handler_arg = &cfg,
                                .routes = inspect_route,
                                .extra_config = extra,
                                .extra_config_count = sizeof(extra) / sizeof(extra[0])};
    struct service *svc;
    struct ticker *timers, *counts;
    static struct inspect_context inspect = {.saga = &cfg};

    service_configure(&spec, &settings, argc, argv);
    cfg.started_ms = backoff_now_ms();
    inspect.pool =
        db_pool_new(settings.database_url, "checkout-inspect", 2, INSPECT_STATEMENT_TIMEOUT_MS);
    if (inspect.pool == NULL)
        return 1;
    spec.routes_arg = &inspect;
    svc = service_start(&spec, &settings);
    timers = ticker_start(settings.database_url, "checkout-timers", 100, saga_fire_timers, &cfg);
    inspect_metrics_init();
    counts = ticker_start(settings.database_url, "checkout-saga-counts", SAGA_COUNT_INTERVAL_MS,
                          inspect_count_sagas, NULL);
    if (timers == NULL || counts == NULL)
        return 1;
    service_wait(svc);
    ticker_stop(counts);
    ticker_stop(timers);
    service_stop(svc);
    db_pool_free(inspect.pool);
    return 0;
}

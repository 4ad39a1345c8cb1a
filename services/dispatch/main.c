/*
 * dispatch - owns shipments and their progress. Consumes dispatch.commands,
 * advances each shipment one durable step per DISPATCH_INTERVAL_MS, publishes
 * dispatch.events. main() only wires.
 */
#include "contracts.h"
#include "service.h"
#include "shipments.h"
#include "ticker.h"

int main(int argc, char **argv)
{
    static const char *const consume[] = {TOPIC_DISPATCH_COMMANDS, NULL};
    static const char *const produce[] = {TOPIC_DISPATCH_EVENTS, NULL};
    static struct service_settings settings;
    static struct shipments_config cfg;
    static const struct config_entry extra[] = {
        {"DISPATCH_STEPS", CONFIG_INT, &cfg.steps, 0, "10", 1, 1000, "progress steps per order"},
        {"DISPATCH_INTERVAL_MS", CONFIG_INT, &cfg.interval_ms, 0, "1000", 1, 3600000,
         "time between two steps"},
    };
    const struct service_spec spec = {.name = "dispatch",
                                      .default_admin_port = 9104,
                                      .consume_topics = consume,
                                      .produce_topics = produce,
                                      .handler = shipments_handle,
                                      .handled_types = shipments_handled_types,
                                      .handler_arg = &cfg,
                                      .extra_config = extra,
                                      .extra_config_count = sizeof(extra) / sizeof(extra[0])};
    struct service *svc;
    struct ticker *ticker;

    service_configure(&spec, &settings, argc, argv);
    svc = service_start(&spec, &settings);
    ticker = ticker_start(settings.database_url, "dispatch-steps", 100, shipments_tick, &cfg);
    if (ticker == NULL)
        return 1;
    service_wait(svc);
    ticker_stop(ticker);
    service_stop(svc);
    return 0;
}

/*
 * inventory - owns products, stock and reservations. Consumes
 * inventory.commands (reserve, release, commit, restock) and publishes
 * inventory.events through its outbox. main() only wires the runtime.
 */
#include "contracts.h"
#include "service.h"
#include "stock.h"

int main(int argc, char **argv)
{
    static const char *const consume[] = {TOPIC_INVENTORY_COMMANDS, NULL};
    static const char *const produce[] = {TOPIC_INVENTORY_EVENTS, NULL};
    static struct service_settings settings;
    const struct service_spec spec = {.name = "inventory",
                                      .default_admin_port = 9102,
                                      .consume_topics = consume,
                                      .produce_topics = produce,
                                      .handler = stock_handle,
                                      .handled_types = stock_handled_types};
    struct service *svc;

    service_configure(&spec, &settings, argc, argv);
    svc = service_start(&spec, &settings);
    service_wait(svc);
    service_stop(svc);
    return 0;
}

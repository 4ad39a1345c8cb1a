/*
 * payment - a stand-in for an external payment provider: sessions, provider
 * results, cancellations and refunds, idempotent by message and by order.
 * Consumes payment.commands, publishes payment.events. main() only wires.
 */
#include "contracts.h"
#include "service.h"
#include "sessions.h"

int main(int argc, char **argv)
{
    static const char *const consume[] = {TOPIC_PAYMENT_COMMANDS, NULL};
    static const char *const produce[] = {TOPIC_PAYMENT_EVENTS, NULL};
    static struct service_settings settings;
    const struct service_spec spec = {.name = "payment",
                                      .default_admin_port = 9103,
                                      .consume_topics = consume,
                                      .produce_topics = produce,
                                      .handler = sessions_handle,
                                      .handled_types = sessions_handled_types};
    struct service *svc;

    service_configure(&spec, &settings, argc, argv);
    svc = service_start(&spec, &settings);
    service_wait(svc);
    service_stop(svc);
    return 0;
}

/*
 * api - the web page and the DBOS-compatible REST API. Owns the read model
 * (built by consuming checkout.events, inventory.events and dispatch.events)
 * and the HTTP idempotency records; sends checkout, restock and payment
 * provider commands through its outbox. main() only wires.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contracts.h"
#include "db_pool.h"
#include "http.h"
#include "log.h"
#include "projections.h"
#include "service.h"
#include "store.h"

#define PAGE_MAX (1024 * 1024)

/* Reads the page into memory once; the process exits if it cannot be read
 * (missing, a directory) or is larger than PAGE_MAX. */
static char *load_page(const char *path, size_t *len)
{
    FILE *file = fopen(path, "rb");
    char *page = malloc(PAGE_MAX + 1);
    const char *problem = NULL;

    if (file == NULL || page == NULL)
        problem = "cannot open";
    else {
        *len = fread(page, 1, PAGE_MAX + 1, file);
        if (ferror(file))
            problem = "cannot read";
        else if (*len > PAGE_MAX)
            problem = "larger than 1 MiB:";
    }
    if (file != NULL)
        fclose(file);
    if (problem != NULL) {
        fprintf(stderr, "api: bad configuration:\nAPI_PAGE_PATH: %s %s\n", problem, path);
        exit(2);
    }
    return page;
}

/* The page's progress bar counts DISPATCH_STEPS steps: the first
 * PAGE_STEPS_TOKEN in it (page.html has one) becomes the number. steps has
 * at most 4 digits, fewer than the token's characters, so the page shrinks
 * in place; page has room for its NUL (load_page). */
#define PAGE_STEPS_TOKEN "{{DISPATCH_STEPS}}"
static void page_put_steps(char *page, size_t *len, long steps)
{
    char number[16];
    size_t digits = (size_t)snprintf(number, sizeof(number), "%ld", steps);
    size_t token_len = strlen(PAGE_STEPS_TOKEN);
    char *at;

    page[*len] = '\0';
    at = strstr(page, PAGE_STEPS_TOKEN);
    if (at == NULL || digits > token_len)
        return;
    memcpy(at, number, digits);
    memmove(at + digits, at + token_len, *len - (size_t)(at - page) - token_len + 1);
    *len -= token_len - digits;
}

int main(int argc, char **argv)
{
    static const char *const consume[] = {TOPIC_CHECKOUT_EVENTS, TOPIC_INVENTORY_EVENTS,
                                          TOPIC_DISPATCH_EVENTS, NULL};
    static const char *const produce[] = {TOPIC_CHECKOUT_COMMANDS, TOPIC_INVENTORY_COMMANDS,
                                          TOPIC_PAYMENT_COMMANDS, NULL};
    static struct service_settings settings;
    static char page_path[512];
    static long http_port, http_threads, pool_size, db_timeout_ms;
    static struct store store;
    static const struct config_entry extra[] = {
        {"HTTP_PORT", CONFIG_INT, &http_port, 0, "8080", 1, 65535, "web page and REST API port"},
        {"API_PAGE_PATH", CONFIG_STRING, page_path, sizeof(page_path), "services/api/page.html", 0,
         0, "the web page served at /"},
        {"API_WAIT_MS", CONFIG_INT, &store.wait_ms, 0, "30000", 100, 600000,
         "how long checkout, webhook and restock calls wait for their answer"},
        {"API_RECHECK_MS", CONFIG_INT, &store.recheck_ms, 0, "200", 1, 10000,
         "while waiting, re-check the read model this often even without a notification"},
        {"API_RESTOCK_LEVEL", CONFIG_INT, &store.restock_level, 0, "100", 1, 1000000,
         "POST /restock sets the inventory to this (the DBOS store: 100)"},
        {"DISPATCH_STEPS", CONFIG_INT, &store.dispatch_steps, 0, "10", 1, 1000,
         "dispatch's steps per order (set it alike for both): the progress_remaining of an "
         "order not in dispatch yet, and the page's bar"},
        {"API_MAX_PENDING", CONFIG_INT, &store.max_pending, 0, "64", 1, 100000,
         "checkout, webhook and restock calls waiting at once; more get 503 + Retry-After"},
        {"API_HTTP_THREADS", CONFIG_INT, &http_threads, 0, "4", 1, 64,
         "threads serving HTTP connections (they never wait on the database)"},
        {"API_DB_POOL", CONFIG_INT, &pool_size, 0, "8", 1, 500,
         "database connections, and threads running the requests that use them"},
        {"API_DB_TIMEOUT_MS", CONFIG_INT, &db_timeout_ms, 0, "5000", 0, 600000,
         "a request's statement running longer (a lock, a slow database) is cancelled: 503; "
         "0: no limit"},
    };
    const struct service_spec spec = {.name = "api",
                                      .default_admin_port = 9100,
                                      .consume_topics = consume,
                                      .produce_topics = produce,
                                      .handler = projections_handle,
                                      .handled_types = projections_handled_types,
                                      /* snapshots replace only older versions */
                                      .handler_idempotent = 1,
                                      .extra_config = extra,
                                      .extra_config_count = sizeof(extra) / sizeof(extra[0])};
    struct http_server *http;
    struct service *svc;
    size_t page_len;
    char *page;
    char err[256];

    service_configure(&spec, &settings, argc, argv);
    page = load_page(page_path, &page_len);
    page_put_steps(page, &page_len, store.dispatch_steps);
    store.pool = db_pool_new(settings.database_url, "api", (int)pool_size, db_timeout_ms);
    if (store.pool == NULL)
        return 1;
    store.waiters = waiters_start(settings.database_url);
    if (store.waiters == NULL)
        return 1;
    svc = service_start(&spec, &settings);
    http = http_start((int)http_port, (int)http_threads, (int)pool_size, &store, svc, page,
                      page_len, err, sizeof(err));
    if (http == NULL) {
        log_error("msg=\"http server failed\" error=\"%s\"", err);
        return 1;
    }
    log_info("msg=\"serving\" url=http://localhost:%ld", http_port);
    service_wait(svc);
    http_stop(http);
    service_stop(svc);
    waiters_stop(store.waiters);
    db_pool_free(store.pool);
    free(page);
    return 0;
}

/*
 * http.c - routing and response plumbing over libmicrohttpd: a small pool
 * of polling threads serves every connection, and a checkout, webhook or
 * restock waiting for its answer suspends its connection instead of holding
 * a thread.
 */
#define _POSIX_C_SOURCE 200809L
#include "http.h"

#include <malloc.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

struct http_server {
    struct MHD_Daemon *daemon;
    struct store *store;
    struct service *svc;
    const char *page;
    size_t page_len;
    struct metric *m_requests, *m_client_errors, *m_server_errors, *m_latency;
    atomic_int open_connections, open_peak; /* the peak since the heap was trimmed */
};

/* Each connection's buffer (CONNECTION_BUFFER) comes from the heap, which
 * keeps what a burst of connections freed unless told to give it back. Once
 * at least TRIM_AFTER_PEAK were open and three quarters of them closed, the
 * closing thread returns the heap's free pages (malloc_trim). */
#define CONNECTION_BUFFER (16 * 1024)
#define TRIM_AFTER_PEAK   64

/* Per-request state kept by libmicrohttpd between calls. */
struct request_state {
    size_t body_len;
    int too_large;
    int parked; /* call is parked: resume it when called again */
    struct store_call call;
};

static void suspend_connection(void *connection)
{
    MHD_suspend_connection(connection);
}

static void resume_connection(void *connection)
{
    MHD_resume_connection(connection);
}

static enum MHD_Result respond(struct MHD_Connection *connection, int status,
                               const char *content_type, const char *body, size_t len,
                               enum MHD_ResponseMemoryMode mode, const char *allow)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(len, (void *)body, mode);
    enum MHD_Result ret;

    if (response == NULL)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, "Cache-Control", "no-store");
    if (status == 503)
        MHD_add_response_header(response, "Retry-After", "1");
    if (allow)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
    ret = MHD_queue_response(connection, (unsigned int)status, response);
    MHD_destroy_response(response);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *connection, int status, const char *text,
                                    const char *allow)
{
    return respond(connection, status, "text/plain; charset=utf-8", text, strlen(text),
                   MHD_RESPMEM_MUST_COPY, allow);
}

/* Splits "/a/b/c" after prefix into at most n segments; returns the count, or
 * -1 if a segment is empty or there are more than n. */
static int split_path(const char *rest, char segments[][160], int n)
{
    int count = 0;

    while (*rest) {
        const char *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);

        if (len == 0 || len >= 160 || count == n)
            return -1;
        memcpy(segments[count], rest, len);
        segments[count][len] = '\0';
        count++;
        rest += len;
        if (*rest == '/')
            rest++;
        if (slash && *rest == '\0')
            return -1;
    }
    return count;
}

/* Queues reply (its body, when there is one, passes to libmicrohttpd). */
static enum MHD_Result respond_reply(struct MHD_Connection *connection, struct store_reply *reply)
{
    if (reply->body == NULL)
        return respond_text(connection, 500, "out of memory\n", NULL);
    return respond(connection, reply->status, reply->content_type, reply->body, strlen(reply->body),
                   MHD_RESPMEM_MUST_FREE, NULL);
}

static enum MHD_Result route(struct http_server *server, struct MHD_Connection *connection,
                             struct request_state *state, const char *method, const char *url)
{
    enum store_step step = STORE_REPLIED;
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    struct store_reply reply = {0};
    char segments[3][160];
    int n;

    if (strcmp(url, "/") == 0) {
        if (!is_get)
            return respond_text(connection, 405, "Method not allowed\n", "GET");
        return respond(connection, 200, "text/html; charset=utf-8", server->page, server->page_len,
                       MHD_RESPMEM_PERSISTENT, NULL);
    }
    if (strcmp(url, "/healthz") == 0)
        return is_get ? respond_text(connection, 200, "ok\n", NULL)
                      : respond_text(connection, 405, "Method not allowed\n", "GET");
    if (strcmp(url, "/readyz") == 0) {
        char why[256] = "not ready";

        if (!is_get)
            return respond_text(connection, 405, "Method not allowed\n", "GET");
        if (service_is_ready(server->svc, why, sizeof(why)))
            return respond_text(connection, 200, "ready\n", NULL);
        strncat(why, "\n", sizeof(why) - strlen(why) - 1);
        return respond_text(connection, 503, why, NULL);
    }
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *text;

        if (!is_get)
            return respond_text(connection, 405, "Method not allowed\n", "GET");
        text = metrics_render(&len);
        if (text == NULL)
            return respond_text(connection, 500, "out of memory\n", NULL);
        return respond(connection, 200, "text/plain; version=0.0.4", text, len,
                       MHD_RESPMEM_MUST_FREE, NULL);
    }
    if (strcmp(url, "/crash_application") == 0) {
        if (!is_post)
            return respond_text(connection, 405, "Method not allowed\n", "POST");
        log_warn("msg=\"application crash requested\"");
        service_crash_soon();
        return respond(connection, 200, "application/json",
                       "{\"message\":\"Crashing application...\"}", 37, MHD_RESPMEM_PERSISTENT,
                       NULL);
    }
    if (strcmp(url, "/product") == 0) {
        if (!is_get)
            return respond_text(connection, 405, "Method not allowed\n", "GET");
        store_product(server->store, &reply);
    } else if (strcmp(url, "/orders") == 0) {
        if (!is_get)
            return respond_text(connection, 405, "Method not allowed\n", "GET");
        store_orders(server->store, &reply);
    } else if (strcmp(url, "/restock") == 0) {
        if (!is_post)
            return respond_text(connection, 405, "Method not allowed\n", "POST");
        step = store_restock(server->store, &state->call, &reply);
    } else if (strncmp(url, "/order/", 7) == 0) {
        if (split_path(url + 7, segments, 1) != 1)
            return respond_text(connection, 400, "Invalid order ID: expected a positive integer\n",
                                NULL);
        if (!is_get)
            return respond_text(connection, 405, "Method not allowed\n", "GET");
        store_order(server->store, segments[0], &reply);
    } else if (strncmp(url, "/checkout/", 10) == 0) {
        if (split_path(url + 10, segments, 1) != 1)
            return respond_text(connection, 400, "Invalid idempotency key\n", NULL);
        if (!is_post)
            return respond_text(connection, 405, "Method not allowed\n", "POST");
        step = store_checkout(server->store, &state->call, segments[0], &reply);
    } else if (strncmp(url, "/payment_webhook/", 17) == 0) {
        n = split_path(url + 17, segments, 2);
        if (n != 2)
            return respond_text(connection, 404,
                                "Not found: use /payment_webhook/{payment_id}/{status}\n", NULL);
        if (!is_post)
            return respond_text(connection, 405, "Method not allowed\n", "POST");
        step = store_webhook(server->store, &state->call, segments[0], segments[1], &reply);
    } else {
        return respond_text(connection, 404, "Not found\n", NULL);
    }
    if (step == STORE_PARKED) {
        state->parked = 1; /* suspended; called again once resumed */
        return MHD_YES;
    }
    return respond_reply(connection, &reply);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *connection, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct http_server *server = cls;
    struct request_state *state = *con_cls;

    (void)version;
    (void)upload_data;
    if (state == NULL) {
        state = calloc(1, sizeof(*state));
        if (state == NULL)
            return MHD_NO;
        state->call.suspend = suspend_connection;
        state->call.resume = resume_connection;
        state->call.arg = connection;
        *con_cls = state;
        return MHD_YES;
    }
    if (state->parked) {
        struct store_reply reply = {0};

        if (store_resume(server->store, &state->call, &reply) == STORE_PARKED)
            return MHD_YES;
        state->parked = 0;
        return respond_reply(connection, &reply);
    }
    if (*upload_data_size != 0) {
        state->body_len += *upload_data_size;
        if (state->body_len > HTTP_MAX_BODY)
            state->too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    metrics_inc(server->m_requests);
    if (state->too_large)
        return respond_text(connection, 413, "Request body too large\n", NULL);
    if (strlen(url) > 512)
        return respond_text(connection, 414, "URI too long\n", NULL);
    return route(server, connection, state, method, url);
}

static void request_done(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    struct http_server *server = cls;
    struct request_state *state = *con_cls;

    (void)connection;
    (void)code;
    if (state != NULL && state->parked)
        store_abandon(server->store, &state->call);
    free(state);
    *con_cls = NULL;
}

static void connection_event(void *cls, struct MHD_Connection *connection, void **socket_context,
                             enum MHD_ConnectionNotificationCode code)
{
    struct http_server *server = cls;
    int open, peak;

    (void)connection;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        open = atomic_fetch_add(&server->open_connections, 1) + 1;
        peak = atomic_load(&server->open_peak);
        while (open > peak && !atomic_compare_exchange_weak(&server->open_peak, &peak, open))
            ;
        return;
    }
    open = atomic_fetch_sub(&server->open_connections, 1) - 1;
    peak = atomic_load(&server->open_peak);
    if (peak >= TRIM_AFTER_PEAK && open <= peak / 4 &&
        atomic_compare_exchange_strong(&server->open_peak, &peak, open))
        malloc_trim(0);
}

struct http_server *http_start(int port, int threads, struct store *store, struct service *svc,
                               const char *page, size_t page_len, char *err, size_t errlen)
{
    struct http_server *server = calloc(1, sizeof(*server));

    if (server == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    server->store = store;
    server->svc = svc;
    server->page = page;
    server->page_len = page_len;
    server->m_requests = metrics_counter("http_requests_total", NULL, "HTTP requests answered");
    /* A connection costs its buffer and nothing else (no thread): at most
     * 1000 connections, 16 MB. libmicrohttpd zeroes the whole buffer after
     * each request, so a bigger one would be resident in full (64 KiB: the
     * api at 64 MB with 760 connections open in a retry storm). 16 KiB holds
     * request headers up to about 14 kB; larger ones get 431. */
    server->daemon = MHD_start_daemon(
        MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, handle, server, MHD_OPTION_NOTIFY_COMPLETED, request_done,
        server, MHD_OPTION_NOTIFY_CONNECTION, connection_event, server, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)threads, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)1000, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)120, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_BUFFER,
        MHD_OPTION_END);
    if (server->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on HTTP port %d", port);
        free(server);
        return NULL;
    }
    return server;
}

void http_stop(struct http_server *server)
{
    if (server == NULL)
        return;
    /* libmicrohttpd must not stop with a connection suspended: every
     * parked call is resumed first, and answers 504 (retry). */
    waiters_close(server->store->waiters);
    MHD_stop_daemon(server->daemon);
    free(server);
}

/*
 * http.c - routing and response plumbing over libmicrohttpd. A small pool of
 * polling threads serves every connection and never waits on the database: a
 * request that needs it suspends its connection and is queued for a pool of
 * database workers, which resume the connection once its reply is written.
 * A checkout, webhook or restock waiting for its answer holds neither kind
 * of thread: its waiter resumes the connection when it should go on, in the
 * polling thread if its notification carried the answer, else in a worker.
 */
#define _POSIX_C_SOURCE 200809L
#include "http.h"

#include <malloc.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "log.h"
#include "metrics.h"

struct http_server {
    struct MHD_Daemon *daemon;
    struct store *store;
    struct service *svc;
    const char *page;
    size_t page_len;
    struct metric *m_requests, *m_duration;
    atomic_int open_connections, open_peak; /* the peak since the heap was trimmed */
    /* Requests waiting for a database worker, oldest first. Once closed,
     * new requests are refused (503) and the workers exit when it is empty. */
    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_ready;
    struct request_state *jobs_head, *jobs_tail;
    int jobs_closed;
    pthread_t *workers;
    int worker_count;
};

/* Each connection's buffer (CONNECTION_BUFFER) comes from the heap, which
 * keeps what a burst of connections freed unless told to give it back. Once
 * at least TRIM_AFTER_PEAK were open and three quarters of them closed, the
 * closing thread returns the heap's free pages (malloc_trim). */
#define CONNECTION_BUFFER (16 * 1024)
#define TRIM_AFTER_PEAK   64

/* What a database worker does for a request. */
enum db_job {
    JOB_PRODUCT,
    JOB_ORDERS,
    JOB_ORDER,
    JOB_RESTOCK,
    JOB_CHECKOUT,
    JOB_WEBHOOK,
    JOB_RESUME
};

/* Per-request state kept by libmicrohttpd between calls. While its job is
 * queued or running, or its call parked, the connection is suspended, and
 * only the thread running it touches the state. */
struct request_state {
    double started_ms; /* when the headers were in */
    size_t body_len;
    int too_large;
    struct http_server *server;
    struct MHD_Connection *connection;
    enum db_job job;
    char args[2][160];
    struct request_state *next_job;
    int has_reply; /* a worker wrote reply: send it when called again */
    int parked;    /* the call parked: go on with it when called again */
    struct store_reply reply;
    struct store_call call;
};

static void append_job_locked(struct http_server *server, struct request_state *state)
{
    state->next_job = NULL;
    if (server->jobs_tail)
        server->jobs_tail->next_job = state;
    else
        server->jobs_head = state;
    server->jobs_tail = state;
    pthread_cond_signal(&server->jobs_ready);
}

/* Suspends the request's connection and queues it for a database worker.
 * Returns 0 when the server is stopping (nothing queued). */
static int queue_job(struct request_state *state, enum db_job job)
{
    struct http_server *server = state->server;
    int queued = 0;

    pthread_mutex_lock(&server->jobs_lock);
    if (!server->jobs_closed) {
        state->job = job;
        MHD_suspend_connection(state->connection);
        append_job_locked(server, state);
        queued = 1;
    }
    pthread_mutex_unlock(&server->jobs_lock);
    return queued;
}

/* A call's callbacks (store_call), called under the waiters' lock: when it
 * parks, before any resume; and to resume it, from the listener. The
 * polling thread that is called again then goes on with it. A call parking
 * in a worker has had its connection suspended since queue_job. */
static void park_in_worker(void *arg)
{
    ((struct request_state *)arg)->parked = 1;
}

static void park_and_suspend(void *arg)
{
    struct request_state *state = arg;

    state->parked = 1;
    MHD_suspend_connection(state->connection);
}

static void resume_parked(void *arg)
{
    MHD_resume_connection(((struct request_state *)arg)->connection);
}

static enum store_step run_job(struct store *store, struct request_state *state,
                               struct store_reply *reply)
{
    switch (state->job) {
    case JOB_PRODUCT:
        store_product(store, reply);
        return STORE_REPLIED;
    case JOB_ORDERS:
        store_orders(store, reply);
        return STORE_REPLIED;
    case JOB_ORDER:
        store_order(store, state->args[0], reply);
        return STORE_REPLIED;
    case JOB_RESTOCK:
        return store_restock(store, &state->call, reply);
    case JOB_CHECKOUT:
        return store_checkout(store, &state->call, state->args[0], reply);
    case JOB_WEBHOOK:
        return store_webhook(store, &state->call, state->args[0], state->args[1], reply);
    default:
        return store_resume(store, &state->call, 1, reply);
    }
}

/* A database worker: runs queued requests until the queue is closed and
 * empty. A request answered gets its connection resumed; a parked one is
 * left alone, since its waiter may resume it at any moment. */
static void *db_worker(void *arg)
{
    struct http_server *server = arg;

    for (;;) {
        struct store_reply reply = {0};
        struct request_state *state;

        pthread_mutex_lock(&server->jobs_lock);
        while (server->jobs_head == NULL && !server->jobs_closed)
            pthread_cond_wait(&server->jobs_ready, &server->jobs_lock);
        state = server->jobs_head;
        if (state != NULL) {
            server->jobs_head = state->next_job;
            if (server->jobs_head == NULL)
                server->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&server->jobs_lock);
        if (state == NULL)
            return NULL;
        state->call.suspend = park_in_worker;
        if (run_job(server->store, state, &reply) == STORE_PARKED)
            continue;
        state->reply = reply;
        state->has_reply = 1;
        MHD_resume_connection(state->connection);
    }
}

/* What a 405 on a read-only route allows (libmicrohttpd answers HEAD as GET
 * without the body). */
#define GET_ALLOW "GET, HEAD"

/* Responses by status class (index status / 100); one server per process. */
static struct metric *responses_by_class[6];

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
    if (ret == MHD_YES && status >= 100 && status < 600)
        metrics_inc(responses_by_class[status / 100]);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *connection, int status, const char *text,
                                    const char *allow)
{
    return respond(connection, status, "text/plain; charset=utf-8", text, strlen(text),
                   MHD_RESPMEM_MUST_COPY, allow);
}

/* 405, with the methods the route allows. */
static enum MHD_Result method_not_allowed(struct MHD_Connection *connection, const char *allow)
{
    return respond_text(connection, 405, "Method not allowed\n", allow);
}

#define SPLIT_TOO_LONG (-2)

/* Splits "/a/b/c" after prefix into at most n segments; returns the count,
 * -1 if a segment is empty or there are more than n, or SPLIT_TOO_LONG if a
 * segment does not fit (no valid key, id or status is that long). */
static int split_path(const char *rest, char segments[][160], int n)
{
    int count = 0;

    while (*rest) {
        const char *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);

        if (len == 0 || count == n)
            return -1;
        if (len >= 160)
            return SPLIT_TOO_LONG;
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
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    enum db_job job;

    if (strcmp(url, "/") == 0) {
        if (!is_get)
            return method_not_allowed(connection, GET_ALLOW);
        return respond(connection, 200, "text/html; charset=utf-8", server->page, server->page_len,
                       MHD_RESPMEM_PERSISTENT, NULL);
    }
    if (strcmp(url, "/healthz") == 0)
        return is_get ? respond_text(connection, 200, "ok\n", NULL)
                      : method_not_allowed(connection, GET_ALLOW);
    if (strcmp(url, "/readyz") == 0) {
        char why[256] = "not ready";

        if (!is_get)
            return method_not_allowed(connection, GET_ALLOW);
        if (service_is_ready(server->svc, why, sizeof(why)))
            return respond_text(connection, 200, "ready\n", NULL);
        strncat(why, "\n", sizeof(why) - strlen(why) - 1);
        return respond_text(connection, 503, why, NULL);
    }
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *text;

        if (!is_get)
            return method_not_allowed(connection, GET_ALLOW);
        text = metrics_render(&len);
        if (text == NULL)
            return respond_text(connection, 500, "out of memory\n", NULL);
        return respond(connection, 200, "text/plain; version=0.0.4", text, len,
                       MHD_RESPMEM_MUST_FREE, NULL);
    }
    if (strcmp(url, "/crash_application") == 0) {
        if (!is_post)
            return method_not_allowed(connection, "POST");
        log_warn("msg=\"application crash requested\"");
        service_crash_soon();
        return respond(connection, 200, "application/json",
                       "{\"message\":\"Crashing application...\"}", 37, MHD_RESPMEM_PERSISTENT,
                       NULL);
    }
    if (strcmp(url, "/product") == 0) {
        if (!is_get)
            return method_not_allowed(connection, GET_ALLOW);
        job = JOB_PRODUCT;
    } else if (strcmp(url, "/orders") == 0) {
        if (!is_get)
            return method_not_allowed(connection, GET_ALLOW);
        job = JOB_ORDERS;
    } else if (strcmp(url, "/restock") == 0) {
        if (!is_post)
            return method_not_allowed(connection, "POST");
        job = JOB_RESTOCK;
    } else if (strncmp(url, "/order/", 7) == 0) {
        if (!is_get)
            return method_not_allowed(connection, GET_ALLOW);
        const char *id = url + 7;
        int segments = split_path(id, state->args, 1);

        /* Digits too many to hold are still a well-formed id, of no order
         * (as store_order() treats one past bigint). */
        if (segments == SPLIT_TOO_LONG && id[strspn(id, "0123456789")] == '\0')
            return respond_text(connection, 404, STORE_ORDER_NOT_FOUND, NULL);
        if (segments != 1)
            return respond_text(connection, 400, STORE_ORDER_ID_INVALID, NULL);
        job = JOB_ORDER;
    } else if (strncmp(url, "/checkout/", 10) == 0) {
        if (!is_post)
            return method_not_allowed(connection, "POST");
        if (split_path(url + 10, state->args, 1) != 1)
            return respond_text(connection, 400, "Invalid idempotency key\n", NULL);
        job = JOB_CHECKOUT;
    } else if (strncmp(url, "/payment_webhook/", 17) == 0) {
        if (!is_post)
            return method_not_allowed(connection, "POST");
        int segments = split_path(url + 17, state->args, 2);

        if (segments == SPLIT_TOO_LONG)
            return respond_text(connection, 400, "Invalid payment ID or status: too long\n", NULL);
        if (segments != 2)
            return respond_text(connection, 404,
                                "Not found: use /payment_webhook/{payment_id}/{status}\n", NULL);
        job = JOB_WEBHOOK;
    } else {
        return respond_text(connection, 404, "Not found\n", NULL);
    }
    if (queue_job(state, job))
        return MHD_YES; /* called again once a worker has written the reply */
    return respond_text(connection, 503, "Shutting down; retry\n", NULL);
}

/* Goes on with a parked call that was resumed: here when its notification
 * carried the answer (the common case), else in a worker, which reads the
 * row. */
static enum MHD_Result go_on(struct http_server *server, struct request_state *state)
{
    struct store_reply reply = {0};
    enum store_step step;

    state->parked = 0;
    state->call.suspend = park_and_suspend;
    step = store_resume(server->store, &state->call, 0, &reply);
    if (step == STORE_PARKED)
        return MHD_YES;
    if (step == STORE_REPLIED)
        return respond_reply(state->connection, &reply);
    if (queue_job(state, JOB_RESUME))
        return MHD_YES;
    store_abandon(server->store, &state->call);
    return respond_text(state->connection, 503, "Shutting down; retry\n", NULL);
}

/* Whether the request declares a body longer than HTTP_MAX_BODY. */
static int declared_too_large(struct MHD_Connection *connection)
{
    const char *length =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    /* libmicrohttpd has checked it is a number; past ULLONG_MAX reads as that. */
    return length != NULL && strtoull(length, NULL, 10) > HTTP_MAX_BODY;
}

/* Decodes %XX in the URL as libmicrohttpd does, but turns a decoded NUL
 * into DEL, which no path, key or id accepts: otherwise "/order/1%00junk"
 * would read as "/order/1", and two different keys as one. */
static size_t unescape_url(void *cls, struct MHD_Connection *connection, char *text)
{
    size_t len = MHD_http_unescape(text);

    (void)cls;
    (void)connection;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\0')
            text[i] = '\x7f';
    return len;
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
        state->started_ms = backoff_now_ms();
        state->server = server;
        state->connection = connection;
        state->call.resume = resume_parked;
        state->call.arg = state;
        *con_cls = state;
        if (declared_too_large(connection)) {
            /* Answered before the body is read; the connection then closes. */
            metrics_inc(server->m_requests);
            return respond_text(connection, 413, "Request body too large\n", NULL);
        }
        return MHD_YES;
    }
    if (state->has_reply) {
        state->has_reply = 0;
        return respond_reply(connection, &state->reply);
    }
    if (state->parked)
        return go_on(server, state);
    if (*upload_data_size != 0) {
        state->body_len += *upload_data_size;
        if (state->body_len > HTTP_MAX_BODY)
            state->too_large = 1;
        /* A body of no declared length (chunked) is read and dropped up to a
         * bound, so a little too much still gets its 413; past it, the
         * connection is closed rather than read for ever. */
        if (state->body_len > HTTP_DISCARD_MAX)
            return MHD_NO;
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
    if (state != NULL && code == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        metrics_observe_ms(server->m_duration, backoff_now_ms() - state->started_ms);
    /* A suspended connection is never closed, so no job is queued or
     * running here; but a call may have been resumed and not gone on, or its
     * reply not been sent. */
    if (state != NULL && state->parked)
        store_abandon(server->store, &state->call);
    if (state != NULL && state->has_reply)
        free(state->reply.body);
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

/* Closes the job queue, lets the workers finish what is queued, and joins
 * them. */
static void stop_workers(struct http_server *server)
{
    pthread_mutex_lock(&server->jobs_lock);
    server->jobs_closed = 1;
    pthread_cond_broadcast(&server->jobs_ready);
    pthread_mutex_unlock(&server->jobs_lock);
    for (int i = 0; i < server->worker_count; i++)
        pthread_join(server->workers[i], NULL);
    server->worker_count = 0;
}

static int start_workers(struct http_server *server, int count)
{
    pthread_attr_t attr;
    int ok = 1;

    server->workers = calloc((size_t)count, sizeof(*server->workers));
    if (server->workers == NULL || pthread_attr_init(&attr) != 0)
        return 0;
    pthread_attr_setstacksize(&attr, 256 * 1024);
    while (ok && server->worker_count < count) {
        ok = pthread_create(&server->workers[server->worker_count], &attr, db_worker, server) == 0;
        if (ok)
            server->worker_count++;
    }
    pthread_attr_destroy(&attr);
    return ok;
}

static void free_server(struct http_server *server)
{
    stop_workers(server);
    pthread_cond_destroy(&server->jobs_ready);
    pthread_mutex_destroy(&server->jobs_lock);
    free(server->workers);
    free(server);
}

struct http_server *http_start(int port, int threads, int db_workers, struct store *store,
                               struct service *svc, const char *page, size_t page_len, char *err,
                               size_t errlen)
{
    struct http_server *server = calloc(1, sizeof(*server));

    if (server == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&server->jobs_lock, NULL);
    pthread_cond_init(&server->jobs_ready, NULL);
    if (!start_workers(server, db_workers)) {
        snprintf(err, errlen, "cannot start the database workers");
        free_server(server);
        return NULL;
    }
    server->store = store;
    server->svc = svc;
    server->page = page;
    server->page_len = page_len;
    server->m_requests = metrics_counter("http_requests_total", NULL, "HTTP requests answered");
    server->m_duration = metrics_histogram(
        "http_request_duration_ms", NULL,
        "from a request's headers to its end, waits for the order's answer included");
    for (int hundreds = 2; hundreds <= 5; hundreds++) {
        char labels[32];

        snprintf(labels, sizeof(labels), "class=\"%dxx\"", hundreds);
        responses_by_class[hundreds] =
            metrics_counter("http_responses_total", labels, "HTTP responses by status class");
    }
    /* A connection costs its buffer and nothing else (no thread): at most
     * 1000 connections, 16 MB. libmicrohttpd zeroes the whole buffer after
     * each request, so a bigger one would be resident in full (64 KiB: the
     * api at 64 MB with 760 connections open in a retry storm). 16 KiB holds
     * request headers up to about 14 kB; larger ones get 431. */
    server->daemon = MHD_start_daemon(
        MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, handle, server, MHD_OPTION_NOTIFY_COMPLETED, request_done,
        server, MHD_OPTION_UNESCAPE_CALLBACK, unescape_url, server, MHD_OPTION_NOTIFY_CONNECTION,
        connection_event, server, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)1000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_BUFFER, MHD_OPTION_END);
    if (server->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on HTTP port %d", port);
        free_server(server);
        return NULL;
    }
    return server;
}

void http_stop(struct http_server *server)
{
    if (server == NULL)
        return;
    /* libmicrohttpd must not stop with a connection suspended: every
     * parked call is resumed and later parks are refused (504: retry), and
     * the workers finish every queued request before the daemon stops (a
     * request that would be queued after that gets 503). */
    waiters_close(server->store->waiters);
    stop_workers(server);
    MHD_stop_daemon(server->daemon);
    free_server(server);
}

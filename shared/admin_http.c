/*
 * admin_http.c - /healthz, /readyz and /metrics over libmicrohttpd.
 */
#define _POSIX_C_SOURCE 200809L
#include "admin_http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

#define ADMIN_MAX_BODY (64 * 1024)

struct admin_http {
    struct MHD_Daemon *daemon;
    admin_ready_fn ready_fn;
    void *ready_arg;
    admin_route_fn route_fn;
    void *route_arg;
};

static enum MHD_Result send_text(struct MHD_Connection *connection, unsigned int status,
                                 const char *content_type, char *body, int owned)
{
    struct MHD_Response *response;
    enum MHD_Result ret;

    response = MHD_create_response_from_buffer(
        strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (response == NULL) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return ret;
}

static enum MHD_Result admin_handle(void *cls, struct MHD_Connection *connection, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    struct admin_http *server = cls;
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    (void)version;
    (void)upload_data;
    /* Bodies are not used here: the first call only announces the request,
     * and one that is large, or of no declared length (chunked, which could
     * run on for ever), is refused unread (413 or 411, then the connection
     * closes). */
    if (*con_cls == NULL) {
        const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);

        *con_cls = server;
        if (length != NULL && strtoull(length, NULL, 10) > ADMIN_MAX_BODY)
            return send_text(connection, MHD_HTTP_CONTENT_TOO_LARGE, "text/plain",
                             "request body too large\n", 0);
        if (MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                        MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
            return send_text(connection, MHD_HTTP_LENGTH_REQUIRED, "text/plain",
                             "a request body needs a Content-Length here\n", 0);
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!is_get && (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
                    strcmp(url, "/metrics") == 0))
        return send_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                         "method not allowed\n", 0);
    if (strcmp(url, "/healthz") == 0)
        return send_text(connection, MHD_HTTP_OK, "text/plain", "ok\n", 0);
    if (strcmp(url, "/readyz") == 0) {
        char why[256] = "not ready";

        if (server->ready_fn == NULL || server->ready_fn(server->ready_arg, why, sizeof(why)))
            return send_text(connection, MHD_HTTP_OK, "text/plain", "ready\n", 0);
        strncat(why, "\n", sizeof(why) - strlen(why) - 1);
        return send_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", why, 0);
    }
    if (strcmp(url, "/metrics") == 0) {
        char *text = metrics_render(NULL);

        if (text == NULL)
            return send_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
                             "out of memory\n", 0);
        return send_text(connection, MHD_HTTP_OK, "text/plain; version=0.0.4", text, 1);
    }
    if (server->route_fn) {
        int status = 500;
        char *body = NULL;
        const char *content_type = "text/plain";

        if (server->route_fn(server->route_arg, method, url, &status, &body, &content_type) == 0 &&
            body != NULL)
            return send_text(connection, (unsigned int)status, content_type, body, 1);
        free(body);
    }
    return send_text(connection, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n", 0);
}

struct admin_http *admin_http_start(const char *address, int port, admin_ready_fn ready_fn,
                                    void *ready_arg, admin_route_fn route_fn, void *route_arg,
                                    char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *where = NULL;
    struct admin_http *server;
    char service[8];
    /* A thread per connection: a route that waits (checkout's saga lookups
     * on the database) holds back no probe or scrape. */
    unsigned int flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(address, service, &hints, &where) != 0) {
        snprintf(err, errlen, "admin address '%s' is not a numeric IPv4 or IPv6 address", address);
        return NULL;
    }
    server = calloc(1, sizeof(*server));
    if (server == NULL) {
        freeaddrinfo(where);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    server->ready_fn = ready_fn;
    server->ready_arg = ready_arg;
    server->route_fn = route_fn;
    server->route_arg = route_arg;
    if (where->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    server->daemon =
        MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, admin_handle, server,
                         MHD_OPTION_SOCK_ADDR, where->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned int)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_END);
    freeaddrinfo(where);
    if (server->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on admin address %s port %d", address, port);
        free(server);
        return NULL;
    }
    return server;
}

void admin_http_stop(struct admin_http *server)
{
    if (server == NULL)
        return;
    MHD_stop_daemon(server->daemon);
    free(server);
}

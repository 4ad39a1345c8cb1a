/*
 * http.h - the api's public HTTP server (port 8080 by default): the web page,
 * the DBOS widget-store REST API, /healthz, /readyz, /metrics and the crash
 * button. Bodies are not used by any endpoint and are refused above a small
 * limit (413, before the body is read when its length is declared); wrong
 * methods get 405, unknown paths 404 or 400.
 */
#ifndef API_HTTP_H
#define API_HTTP_H

#include <stddef.h>

#include "service.h"
#include "store.h"

#define HTTP_MAX_BODY    4096
#define HTTP_DISCARD_MAX (64 * 1024) /* a chunked body past this closes the connection */

struct http_server; /* opaque */

/*
 * Starts the server on port with threads polling the connections, which
 * never wait on the database, and db_workers threads running the requests
 * that need it (each uses at most one of store's pooled connections at a
 * time). A call waiting for its answer holds no thread at all. page is
 * served at "/" and must outlive the server. Returns NULL with a reason in
 * err.
 */
struct http_server *http_start(int port, int threads, int db_workers, struct store *store,
                               struct service *svc, const char *page, size_t page_len, char *err,
                               size_t errlen);

/* Answers every waiting call (504: retry) and every queued request, then
 * stops the server and frees it. Accepts NULL. */
void http_stop(struct http_server *server);

#endif

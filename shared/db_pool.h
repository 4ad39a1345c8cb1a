/*
 * db_pool.h - a fixed-size pool of PostgreSQL connections for request
 * threads. Connections are opened lazily and replaced when found broken.
 */
#ifndef SHARED_DB_POOL_H
#define SHARED_DB_POOL_H

#include <libpq-fe.h>

struct db_pool; /* opaque */

/* Creates a pool of at most size connections to url (copied). With
 * statement_timeout_ms > 0, each connection's statements are cancelled by
 * the server after that long (SQLSTATE 57014), so a request stuck behind a
 * lock fails instead of holding its connection. Returns NULL on allocation
 * failure. Connecting happens on first use. */
struct db_pool *db_pool_new(const char *url, const char *app_name, int size,
                            long statement_timeout_ms);

/*
 * Borrows a connection, waiting up to wait_ms for one to be free. Returns a
 * live connection, or NULL if none is free in time or the database cannot be
 * reached. Give it back with db_pool_release().
 */
PGconn *db_pool_acquire(struct db_pool *pool, long wait_ms);

/* Returns conn to the pool. A connection left inside a transaction or broken
 * is closed instead of reused. NULL (what a failed acquire returned) does
 * nothing: that acquire gave its slot back itself. */
void db_pool_release(struct db_pool *pool, PGconn *conn);

/* Closes every connection and frees the pool. Accepts NULL. */
void db_pool_free(struct db_pool *pool);

#endif

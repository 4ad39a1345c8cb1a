/*
 * db_pool.c - mutex and condition variable guarding an array of connections.
 */
#define _POSIX_C_SOURCE 200809L
#include "db_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "db.h"
#include "log.h"

struct db_pool {
    char *url;
    char *app_name;
    int size;
    long statement_timeout_ms; /* 0: the server's default */
    int in_use;                /* borrowed connections */
    PGconn **idle;             /* size slots; NULL entries are free capacity */
    int idle_count;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

struct db_pool *db_pool_new(const char *url, const char *app_name, int size,
                            long statement_timeout_ms)
{
    struct db_pool *pool = calloc(1, sizeof(*pool));

    if (pool == NULL)
        return NULL;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->freed, NULL);
    pool->url = strdup(url);
    pool->app_name = strdup(app_name);
    pool->size = size > 0 ? size : 1;
    pool->statement_timeout_ms = statement_timeout_ms > 0 ? statement_timeout_ms : 0;
    pool->idle = calloc((size_t)pool->size, sizeof(PGconn *));
    if (pool->url == NULL || pool->app_name == NULL || pool->idle == NULL) {
        db_pool_free(pool);
        return NULL;
    }
    return pool;
}

/* For the whole session, so it holds for every statement on conn. */
static int set_statement_timeout(const struct db_pool *pool, PGconn *conn)
{
    char ms[32];
    const char *params[] = {ms};

    if (pool->statement_timeout_ms == 0)
        return 0;
    snprintf(ms, sizeof(ms), "%ld", pool->statement_timeout_ms);
    return db_exec(conn, "statement timeout", "SELECT set_config('statement_timeout', $1, false)",
                   1, params);
}

/* Gives back a slot of the pool, with conn to keep for reuse if not NULL. */
static void give_back(struct db_pool *pool, PGconn *conn)
{
    pthread_mutex_lock(&pool->lock);
    pool->in_use--;
    if (conn != NULL)
        pool->idle[pool->idle_count++] = conn;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

PGconn *db_pool_acquire(struct db_pool *pool, long wait_ms)
{
    struct timespec deadline;
    PGconn *conn = NULL;
    char err[512];

    deadline = backoff_deadline(CLOCK_REALTIME, wait_ms);
    pthread_mutex_lock(&pool->lock);
    while (pool->idle_count == 0 && pool->in_use >= pool->size) {
        /* Any error ends the wait too (EINVAL would come straight back). */
        if (pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline) != 0) {
            pthread_mutex_unlock(&pool->lock);
            log_warn("msg=\"no database connection free\" pool_size=%d", pool->size);
            return NULL;
        }
    }
    if (pool->idle_count > 0)
        conn = pool->idle[--pool->idle_count];
    pool->in_use++;
    pthread_mutex_unlock(&pool->lock);

    /* A connection whose server went away (a restart) while it sat idle is
     * replaced here instead of failing the caller's first statement. */
    if (!db_probe_idle(conn))
        return conn;
    PQfinish(conn);
    conn = db_connect(pool->url, pool->app_name, err, sizeof(err));
    if (conn == NULL) {
        log_warn("msg=\"database unreachable\" error=\"%s\"", err);
    } else if (set_statement_timeout(pool, conn) != 0) {
        PQfinish(conn);
        conn = NULL;
    }
    if (conn == NULL)
        give_back(pool, NULL);
    return conn;
}

void db_pool_release(struct db_pool *pool, PGconn *conn)
{
    if (conn == NULL) /* a failed acquire gave its slot back already */
        return;
    if (db_is_broken(conn) || !db_idle(conn)) {
        PQfinish(conn);
        conn = NULL;
    }
    give_back(pool, conn);
}

void db_pool_free(struct db_pool *pool)
{
    if (pool == NULL)
        return;
    for (int i = 0; pool->idle && i < pool->idle_count; i++)
        PQfinish(pool->idle[i]);
    free(pool->idle);
    free(pool->url);
    free(pool->app_name);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->freed);
    free(pool);
}

/*
 * ticker.c - periodic database job thread with reconnect and backoff.
 */
#define _POSIX_C_SOURCE 200809L
#include "ticker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "backoff.h"
#include "db.h"
#include "log.h"

struct ticker {
    const char *db_url;
    const char *name;
    long interval_ms;
    ticker_fn fn;
    void *arg;
    PGconn *conn;
    pthread_t thread;
    atomic_int stop;
};

/* Sleeps up to ms, in short steps so a stop request is noticed quickly. */
static void ticker_sleep(struct ticker *ticker, long ms)
{
    while (ms > 0 && !atomic_load(&ticker->stop)) {
        long step = ms < 50 ? ms : 50;

        backoff_sleep_ms(step);
        ms -= step;
    }
}

static void *ticker_main(void *arg)
{
    struct ticker *ticker = arg;
    struct backoff retry;
    char err[512];

    backoff_init(&retry, 100, BACKOFF_RECONNECT_MAX_MS, 0);
    while (!atomic_load(&ticker->stop)) {
        int done;

        if (db_is_broken(ticker->conn)) {
            PQfinish(ticker->conn);
            ticker->conn = db_connect(ticker->db_url, ticker->name, err, sizeof(err));
            if (ticker->conn == NULL) {
                log_warn("msg=\"ticker cannot connect\" ticker=%s error=\"%s\"", ticker->name, err);
                ticker_sleep(ticker, backoff_next(&retry));
                continue;
            }
        }
        done = ticker->fn(ticker->conn, ticker->arg);
        if (done < 0) {
            ticker_sleep(ticker, backoff_next(&retry));
            continue;
        }
        backoff_reset(&retry);
        if (done == 0)
            ticker_sleep(ticker, ticker->interval_ms);
    }
    return NULL;
}

struct ticker *ticker_start(const char *db_url, const char *name, long interval_ms, ticker_fn fn,
                            void *arg)
{
    struct ticker *ticker = calloc(1, sizeof(*ticker));

    if (ticker == NULL)
        return NULL;
    ticker->db_url = db_url;
    ticker->name = name;
    ticker->interval_ms = interval_ms > 0 ? interval_ms : 100;
    ticker->fn = fn;
    ticker->arg = arg;
    if (pthread_create(&ticker->thread, NULL, ticker_main, ticker) != 0) {
        free(ticker);
        return NULL;
    }
    return ticker;
}

void ticker_stop(struct ticker *ticker)
{
    if (ticker == NULL)
        return;
    atomic_store(&ticker->stop, 1);
    pthread_join(ticker->thread, NULL);
    PQfinish(ticker->conn);
    free(ticker);
}

/*
 * waiters.c - one LISTEN connection per api process and a list of the HTTP
 * threads waiting on keys.
 */
#define _POSIX_C_SOURCE 200809L
#include "waiters.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

struct waiters {
    char *db_url;
    pthread_mutex_t lock;
    struct waiter *head; /* registered waiters, guarded by lock */
    pthread_t thread;
    atomic_int stop;
    struct metric *m_notifications, *m_answers;
};

/* Wakes the waiters for key, or all of them when key is NULL, handing them
 * answer (NULL: none). */
static void wake(struct waiters *waiters, const char *key, const char *answer)
{
    pthread_mutex_lock(&waiters->lock);
    for (struct waiter *w = waiters->head; w != NULL; w = w->next) {
        if (key == NULL || strcmp(w->key, key) == 0) {
            /* Only a lone answer is kept: of two, the older snapshot may
             * have come last, so the waiter reads the row instead. */
            w->has_answer =
                w->notifications++ == 0 && answer != NULL && strlen(answer) < sizeof(w->answer);
            if (w->has_answer)
                memcpy(w->answer, answer, strlen(answer) + 1);
            pthread_cond_signal(&w->cond);
        }
    }
    pthread_mutex_unlock(&waiters->lock);
}

static PGconn *listen_connect(struct waiters *waiters)
{
    char err[256];
    PGconn *conn = db_connect(waiters->db_url, "api-listener", err, sizeof(err));

    if (conn == NULL) {
        log_warn("msg=\"read-model listener cannot connect\" error=\"%s\"", err);
        return NULL;
    }
    if (db_exec(conn, "listen", "LISTEN " WAITERS_CHANNEL, 0, NULL) != 0) {
        PQfinish(conn);
        return NULL;
    }
    /* Changes made while we were not listening are only seen by re-checks. */
    wake(waiters, NULL, NULL);
    return conn;
}

static void *listener_main(void *arg)
{
    struct waiters *waiters = arg;
    struct backoff retry;
    PGconn *conn = NULL;

    backoff_init(&retry, 50, 2000, 0);
    while (!atomic_load(&waiters->stop)) {
        struct pollfd fd;
        PGnotify *notify;

        if (db_is_broken(conn)) {
            PQfinish(conn);
            conn = listen_connect(waiters);
            if (conn == NULL) {
                backoff_sleep_ms(backoff_next(&retry));
                continue;
            }
            backoff_reset(&retry);
        }
        fd = (struct pollfd){.fd = PQsocket(conn), .events = POLLIN};
        if (poll(&fd, 1, 200) < 0 && errno != EINTR)
            continue;
        if (!PQconsumeInput(conn)) {
            log_warn("msg=\"read-model listener lost its connection\"");
            PQfinish(conn);
            conn = NULL;
            continue;
        }
        while ((notify = PQnotifies(conn)) != NULL) {
            char *answer = strchr(notify->extra, ' ');

            metrics_inc(waiters->m_notifications);
            if (answer != NULL)
                *answer++ = '\0'; /* "key answer" */
            wake(waiters, notify->extra, answer);
            PQfreemem(notify);
        }
    }
    PQfinish(conn);
    return NULL;
}

struct waiters *waiters_start(const char *db_url)
{
    struct waiters *waiters = calloc(1, sizeof(*waiters));

    if (waiters == NULL || (waiters->db_url = strdup(db_url)) == NULL) {
        free(waiters);
        return NULL;
    }
    pthread_mutex_init(&waiters->lock, NULL);
    waiters->m_notifications =
        metrics_counter("read_model_notifications_total", NULL,
                        "Read-model change notifications received (they wake waiting requests)");
    waiters->m_answers = metrics_counter(
        "read_model_notified_answers_total", NULL,
        "Waiting requests woken with their answer in the notification (no re-read of the row)");
    if (pthread_create(&waiters->thread, NULL, listener_main, waiters) != 0) {
        free(waiters->db_url);
        free(waiters);
        return NULL;
    }
    return waiters;
}

void waiters_stop(struct waiters *waiters)
{
    if (waiters == NULL)
        return;
    atomic_store(&waiters->stop, 1);
    pthread_join(waiters->thread, NULL);
    pthread_mutex_destroy(&waiters->lock);
    free(waiters->db_url);
    free(waiters);
}

void waiter_register(struct waiters *waiters, struct waiter *w, const char *key)
{
    pthread_condattr_t attr;

    snprintf(w->key, sizeof(w->key), "%s", key);
    w->notifications = 0;
    w->has_answer = 0;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&waiters->lock);
    w->prev = NULL;
    w->next = waiters->head;
    if (waiters->head)
        waiters->head->prev = w;
    waiters->head = w;
    pthread_mutex_unlock(&waiters->lock);
}

int waiter_wait(struct waiters *waiters, struct waiter *w, long timeout_ms, char *answer,
                size_t len)
{
    struct timespec until = backoff_deadline(CLOCK_MONOTONIC, timeout_ms);
    int answered;

    pthread_mutex_lock(&waiters->lock);
    while (w->notifications == 0) {
        if (pthread_cond_timedwait(&w->cond, &waiters->lock, &until) == ETIMEDOUT)
            break;
    }
    answered = w->notifications == 1 && w->has_answer && strlen(w->answer) < len;
    if (answered)
        memcpy(answer, w->answer, strlen(w->answer) + 1);
    w->notifications = 0;
    w->has_answer = 0;
    pthread_mutex_unlock(&waiters->lock);
    if (answered)
        metrics_inc(waiters->m_answers);
    return answered;
}

void waiter_unregister(struct waiters *waiters, struct waiter *w)
{
    pthread_mutex_lock(&waiters->lock);
    if (w->prev)
        w->prev->next = w->next;
    else
        waiters->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&waiters->lock);
    pthread_cond_destroy(&w->cond);
}

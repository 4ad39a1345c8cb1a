/*
 * waiters.c - one LISTEN connection per api process, the list of parked
 * requests it resumes, and their timeouts.
 */
#define _POSIX_C_SOURCE 200809L
#include "waiters.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

/* The listener's longest sleep. Parks with earlier timeouts and
 * waiters_stop wake it through wake_fd, so this is only a safety net. */
#define LISTENER_TICK_MS 1000

struct waiters {
    char *db_url;
    pthread_mutex_t lock;
    struct waiter *head;         /* registered waiters, guarded by lock */
    int closing;                 /* guarded by lock */
    double listener_wakes_at_ms; /* when the listener's poll ends, guarded by lock */
    int wake_fd;                 /* eventfd: ends the listener's poll early */
    pthread_t thread;
    atomic_int stop;
    struct metric *m_notifications, *m_answers;
};

static void poke_listener(struct waiters *waiters)
{
    uint64_t one = 1;

    if (write(waiters->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("msg=\"cannot wake the read-model listener\" error=\"%s\"", strerror(errno));
}

/* Calls a parked waiter's resume, once. Called with the lock held. */
static void resume_locked(struct waiter *w)
{
    if (w->parked) {
        w->parked = 0;
        w->resume(w->arg);
    }
}

/* Resumes the waiters for key, or all of them when key is NULL, handing them
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
            resume_locked(w);
        }
    }
    pthread_mutex_unlock(&waiters->lock);
}

/* Resumes the waiters whose timeout has passed. Returns how long the
 * listener may sleep until the next timeout, at most max_ms, and records when
 * that is, so a park with an earlier timeout knows to wake it. */
static long resume_due(struct waiters *waiters, long max_ms)
{
    double now = backoff_now_ms(), next = now + (double)max_ms;

    pthread_mutex_lock(&waiters->lock);
    for (struct waiter *w = waiters->head; w != NULL; w = w->next) {
        if (!w->parked)
            continue;
        if (w->resume_at_ms <= now)
            resume_locked(w);
        else if (w->resume_at_ms < next)
            next = w->resume_at_ms;
    }
    waiters->listener_wakes_at_ms = next;
    pthread_mutex_unlock(&waiters->lock);
    return (long)(next - now) + 1; /* rounded up: never wake just before */
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

/* Hands every notification received to its waiters. Returns -1 when the
 * connection is lost. */
static int take_notifications(struct waiters *waiters, PGconn *conn)
{
    PGnotify *notify;

    if (!PQconsumeInput(conn)) {
        log_warn("msg=\"read-model listener lost its connection\"");
        return -1;
    }
    while ((notify = PQnotifies(conn)) != NULL) {
        char *answer = strchr(notify->extra, ' ');

        metrics_inc(waiters->m_notifications);
        if (answer != NULL)
            *answer++ = '\0'; /* "key answer" */
        wake(waiters, notify->extra, answer);
        PQfreemem(notify);
    }
    return 0;
}

static void *listener_main(void *arg)
{
    struct waiters *waiters = arg;
    struct backoff retry;
    double reconnect_at = 0;
    PGconn *conn = NULL;

    backoff_init(&retry, 50, 2000, 0);
    while (!atomic_load(&waiters->stop)) {
        struct pollfd fds[2] = {{.fd = waiters->wake_fd, .events = POLLIN}};
        nfds_t nfds = 1;
        long sleep_ms = LISTENER_TICK_MS;
        uint64_t pokes;

        if (conn != NULL && db_is_broken(conn)) {
            PQfinish(conn);
            conn = NULL;
        }
        if (conn == NULL && backoff_now_ms() >= reconnect_at) {
            conn = listen_connect(waiters);
            if (conn == NULL)
                reconnect_at = backoff_now_ms() + (double)backoff_next(&retry);
            else
                backoff_reset(&retry);
        }
        if (conn != NULL) {
            fds[1] = (struct pollfd){.fd = PQsocket(conn), .events = POLLIN};
            nfds = 2;
        } else if (reconnect_at - backoff_now_ms() < (double)sleep_ms) {
            sleep_ms =
                reconnect_at > backoff_now_ms() ? (long)(reconnect_at - backoff_now_ms()) + 1 : 0;
        }
        /* Timeouts are kept while the database is away, too. */
        sleep_ms = resume_due(waiters, sleep_ms);
        if (poll(fds, nfds, (int)sleep_ms) < 0 && errno != EINTR) {
            log_warn("msg=\"read-model listener cannot poll\" error=\"%s\"", strerror(errno));
            backoff_sleep_ms(LISTENER_TICK_MS);
            continue;
        }
        if (fds[0].revents & POLLIN) {
            if (read(waiters->wake_fd, &pokes, sizeof(pokes)) < 0 && errno != EAGAIN)
                log_warn("msg=\"cannot read the listener's wake-ups\" error=\"%s\"",
                         strerror(errno));
        }
        if (conn != NULL && take_notifications(waiters, conn) < 0) {
            PQfinish(conn);
            conn = NULL;
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
    waiters->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (waiters->wake_fd < 0) {
        log_error("msg=\"cannot create the listener's eventfd\" error=\"%s\"", strerror(errno));
        free(waiters->db_url);
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
        pthread_mutex_destroy(&waiters->lock);
        close(waiters->wake_fd);
        free(waiters->db_url);
        free(waiters);
        return NULL;
    }
    return waiters;
}

void waiters_close(struct waiters *waiters)
{
    pthread_mutex_lock(&waiters->lock);
    waiters->closing = 1;
    for (struct waiter *w = waiters->head; w != NULL; w = w->next)
        resume_locked(w);
    pthread_mutex_unlock(&waiters->lock);
}

void waiters_stop(struct waiters *waiters)
{
    if (waiters == NULL)
        return;
    atomic_store(&waiters->stop, 1);
    poke_listener(waiters);
    pthread_join(waiters->thread, NULL);
    pthread_mutex_destroy(&waiters->lock);
    close(waiters->wake_fd);
    free(waiters->db_url);
    free(waiters);
}

void waiter_register(struct waiters *waiters, struct waiter *w, const char *key)
{
    snprintf(w->key, sizeof(w->key), "%s", key);
    w->notifications = 0;
    w->has_answer = 0;
    w->parked = 0;
    pthread_mutex_lock(&waiters->lock);
    w->prev = NULL;
    w->next = waiters->head;
    if (waiters->head)
        waiters->head->prev = w;
    waiters->head = w;
    pthread_mutex_unlock(&waiters->lock);
}

int waiter_park(struct waiters *waiters, struct waiter *w, long timeout_ms,
                void (*suspend)(void *arg), void (*resume)(void *arg), void *arg)
{
    int rc, poke = 0;

    pthread_mutex_lock(&waiters->lock);
    if (waiters->closing) {
        rc = -1;
    } else if (w->notifications > 0) {
        rc = 0;
    } else {
        w->resume_at_ms = backoff_now_ms() + (double)timeout_ms;
        w->resume = resume;
        w->arg = arg;
        w->parked = 1;
        suspend(arg);
        /* The listener sleeps until its next timeout; an earlier one must
         * cut that short. */
        poke = w->resume_at_ms < waiters->listener_wakes_at_ms;
        rc = 1;
    }
    pthread_mutex_unlock(&waiters->lock);
    if (poke)
        poke_listener(waiters);
    return rc;
}

int waiter_take(struct waiters *waiters, struct waiter *w, char *answer, size_t len)
{
    int answered;

    pthread_mutex_lock(&waiters->lock);
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
    w->parked = 0;
    pthread_mutex_unlock(&waiters->lock);
}

/*
 * db.c - libpq helpers with one error convention: NULL or -1 on failure,
 * logged once where it happens.
 *
 * Statements with parameters are prepared once per connection and then only
 * executed, which saves the server parsing and planning them every time. The
 * cache hangs off the connection (a libpq event procedure), so it lives and
 * dies with it; statements are recognised by the address of their SQL text,
 * which is why callers pass string literals (every caller does).
 *
 * Round trips are saved with libpq's pipeline mode: BEGIN is only queued, and
 * so are statements run with db_exec_later(); they travel with the next
 * statement whose result is needed, or with the COMMIT, and their results are
 * read then. A failed queued statement fails that later call (the transaction
 * is aborted by then, as it would have been had it run at once).
 */
#define _POSIX_C_SOURCE 200809L
#include "db.h"

#include <libpq-events.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define STATEMENT_CACHE_MAX 64
#define NOTIFY_MAX          128 /* notifications queued per transaction */
#define PIPELINE_MAX        128 /* statements queued before they are sent anyway */

static _Thread_local char last_sqlstate[6];

#define LOCAL_LISTENERS_MAX 4

static struct {
    char channel[64];
    db_local_listener_fn fn;
    void *arg;
} local_listeners[LOCAL_LISTENERS_MAX];
static pthread_mutex_t local_listeners_lock = PTHREAD_MUTEX_INITIALIZER;

/* One request sent in pipeline mode whose result is still to be read. */
struct pending {
    const char *what;
    int prepares; /* the cache index this request prepares, or -1 */
};

/* What hangs off each connection: its prepared statements, the requests
 * queued in its pipeline, and the notifications its open transaction will
 * send after committing. */
struct conn_state {
    const char *sql[STATEMENT_CACHE_MAX]; /* index i is prepared as "s<i>" */
    int count;
    int begin_queued; /* BEGIN asked for, not sent yet */
    int pending_count;
    struct pending pending[2 * PIPELINE_MAX + 8]; /* a prepare and an execute each */
    int notify_count;
    char channels[NOTIFY_MAX][64];
    char payloads[NOTIFY_MAX][DB_NOTIFY_PAYLOAD_MAX];
    int read_only; /* a write was refused as read-only: replace the connection */
};

static int db_event(PGEventId id, void *info, void *arg)
{
    (void)arg;
    if (id == PGEVT_REGISTER) {
        PGEventRegister *event = info;
        struct conn_state *cache = calloc(1, sizeof(*cache));

        return cache != NULL && PQsetInstanceData(event->conn, db_event, cache);
    }
    if (id == PGEVT_CONNRESET) {
        /* A reset connection is a new session: nothing is prepared there. */
        struct conn_state *cache = PQinstanceData(((PGEventConnReset *)info)->conn, db_event);

        if (cache) {
            cache->count = 0;
            cache->begin_queued = 0;
            cache->pending_count = 0;
            cache->notify_count = 0;
        }
    } else if (id == PGEVT_CONNDESTROY) {
        free(PQinstanceData(((PGEventConnDestroy *)info)->conn, db_event));
    }
    return 1;
}

/*
 * Over TCP, a database host that vanishes without a reset (a partition, a
 * host that died) would otherwise hold a caller for as long as the kernel
 * retransmits, about 15 minutes, and an idle connection (the api's listener)
 * forever. These defaults give up on data left unacknowledged for 10 s, and
 * probe an idle connection after 10 s of silence. They come before dbname,
 * so parameters in DATABASE_URL override them; Unix sockets ignore them.
 */
PGconn *db_connect(const char *url, const char *app_name, char *err, size_t errlen)
{
    const char *keys[] = {"keepalives",       "keepalives_idle",  "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", "dbname",
                          "application_name", "connect_timeout",  NULL};
    const char *values[] = {"1", "10", "5", "2", "10000", url, app_name ? app_name : "widget-store",
                            "5", NULL};
    PGconn *conn;

    /* expand_dbname=1 lets url be a full connection URI or key=value string. */
    conn = PQconnectdbParams(keys, values, 1);
    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(conn);
        size_t len = strlen(msg);

        while (len > 0 && msg[len - 1] == '\n')
            len--;
        log_quote(err, errlen, msg, len); /* callers log it as error="..." */
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, log_pq_notice, NULL);
    /* Without the cache, statements are simply not prepared. */
    if (!PQregisterEventProc(conn, db_event, "db statement cache", NULL))
        log_warn("msg=\"statement cache unavailable\"");
    return conn;
}

static void note_failure(PGconn *conn, const char *what, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    size_t len = strlen(msg);
    char quoted[1024];

    snprintf(last_sqlstate, sizeof(last_sqlstate), "%s", state ? state : "");
    /* A failover can leave a connection on a server that is now a standby:
     * every write fails until a new connection finds the primary. */
    if (state != NULL && strcmp(state, "25006") == 0) {
        struct conn_state *cs = PQinstanceData(conn, db_event);

        if (cs != NULL)
            cs->read_only = 1;
    }
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    log_quote(quoted, sizeof(quoted), msg, len);
    /* Duplicate keys are often expected (idempotency: a redelivered
     * message's inbox row); the caller decides, and logs what matters. */
    if (state != NULL && strcmp(state, "23505") == 0)
        log_debug("msg=\"query failed\" what=%s sqlstate=%s error=\"%s\"", what, state, quoted);
    else
        log_warn("msg=\"query failed\" what=%s sqlstate=%s error=\"%s\"", what,
                 state ? state : "none", quoted);
}

/*
 * The cache slot of sql: its index when prepared, cache->count when it is
 * not prepared yet (prepare it as "s<index>"), or -1 when the cache is full.
 */
static int cache_slot(const struct conn_state *cache, const char *sql)
{
    int i;

    for (i = 0; i < cache->count && cache->sql[i] != sql; i++)
        ;
    return i == STATEMENT_CACHE_MAX ? -1 : i;
}

/*
 * Executes sql as a prepared statement, preparing it first if this connection
 * has not seen it. Returns NULL (nothing sent) when the cache is full or
 * missing, or the PGresult of the preparation when that failed.
 */
static PGresult *exec_prepared(PGconn *conn, struct conn_state *cache, const char *sql, int nparams,
                               const char *const *params)
{
    char name[16];
    int i = cache ? cache_slot(cache, sql) : -1;

    if (i < 0)
        return NULL;
    snprintf(name, sizeof(name), "s%d", i);
    if (i == cache->count) {
        PGresult *res = PQprepare(conn, name, sql, nparams, NULL);

        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
            return res;
        PQclear(res);
        cache->sql[cache->count++] = sql;
    }
    return PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0);
}

static int has_queued(const struct conn_state *state)
{
    return state != NULL && (state->begin_queued || state->pending_count > 0);
}

static void push_pending(struct conn_state *state, const char *what, int prepares)
{
    state->pending[state->pending_count].what = what;
    state->pending[state->pending_count].prepares = prepares;
    state->pending_count++;
}

/* Sends one statement into the pipeline (entering pipeline mode, and sending
 * the queued BEGIN first, when needed). Returns 0, or -1 if it could not be
 * sent (the connection is then in an unknown state: pipeline_sync() next). */
static int pipeline_send(PGconn *conn, struct conn_state *state, const char *what, const char *sql,
                         int nparams, const char *const *params)
{
    char name[16];
    int i = -1;

    if (PQpipelineStatus(conn) == PQ_PIPELINE_OFF && PQenterPipelineMode(conn) != 1)
        return -1;
    if (state->begin_queued) {
        state->begin_queued = 0;
        if (PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1)
            return -1;
        push_pending(state, "begin", -1);
    }
    if (nparams > 0)
        i = cache_slot(state, sql);
    if (i >= 0) {
        snprintf(name, sizeof(name), "s%d", i);
        if (i == state->count) {
            if (PQsendPrepare(conn, name, sql, nparams, NULL) != 1)
                return -1;
            state->sql[state->count++] = sql;
            push_pending(state, what, i);
        }
        if (PQsendQueryPrepared(conn, name, nparams, params, NULL, NULL, 0) != 1)
            return -1;
    } else if (PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0) != 1) {
        return -1;
    }
    push_pending(state, what, -1);
    return 0;
}

/*
 * Ends the pipeline: sends a Sync, reads the result of every pending request
 * and leaves pipeline mode. The first failure is logged and recorded (later
 * requests are then skipped by the server). When last is not NULL and every
 * request succeeded, *last gets the last request's result (the caller
 * PQclear()s it). When succeeded is not NULL, it gets how many requests, from
 * the first, are known to have succeeded. Returns 0 if every request
 * succeeded, else -1.
 */
static int pipeline_sync(PGconn *conn, struct conn_state *state, PGresult **last, int *succeeded)
{
    int count = state->pending_count, failed = 0, logged = 0;
    PGresult *res;

    state->pending_count = 0;
    if (succeeded)
        *succeeded = 0;
    if (last)
        *last = NULL;
    if (PQpipelineSync(conn) != 1)
        failed = 1;
    for (int k = 0; k < count && PQstatus(conn) != CONNECTION_BAD; k++) {
        ExecStatusType status;

        res = PQgetResult(conn);
        if (res == NULL) {
            failed = 1;
            break;
        }
        status = PQresultStatus(res);
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            /* A statement prepared here (or skipped) may not exist now, nor
             * any prepared after it in this pipeline. */
            if (state->pending[k].prepares >= 0 && state->count > state->pending[k].prepares)
                state->count = state->pending[k].prepares;
            if (!logged && status != PGRES_PIPELINE_ABORTED) {
                note_failure(conn, state->pending[k].what, res);
                logged = 1;
            }
            failed = 1;
        }
        if (succeeded && !failed)
            *succeeded = k + 1;
        if (last && k == count - 1 && !failed)
            *last = res;
        else
            PQclear(res);
        while ((res = PQgetResult(conn)) != NULL) /* each request ends with a NULL */
            PQclear(res);
    }
    if (PQstatus(conn) != CONNECTION_BAD) {
        res = PQgetResult(conn);
        if (res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC)
            failed = 1;
        PQclear(res);
    }
    if (PQexitPipelineMode(conn) != 1)
        failed = 1;
    if (failed && !logged)
        note_failure(conn, count > 0 ? state->pending[count - 1].what : "pipeline", NULL);
    if (failed && last) {
        PQclear(*last);
        *last = NULL;
    }
    return failed ? -1 : 0;
}

/* Sends sql after everything queued and waits for all of it. Returns sql's
 * result, or NULL if it or anything queued before it failed. */
static PGresult *pipeline_run(PGconn *conn, struct conn_state *state, const char *what,
                              const char *sql, int nparams, const char *const *params)
{
    PGresult *res;

    if (pipeline_send(conn, state, what, sql, nparams, params) != 0) {
        pipeline_sync(conn, state, NULL, NULL);
        return NULL;
    }
    pipeline_sync(conn, state, &res, NULL);
    return res;
}

PGresult *db_query(PGconn *conn, const char *what, const char *sql, int nparams,
                   const char *const *params)
{
    struct conn_state *state;
    PGresult *res;
    ExecStatusType status;

    last_sqlstate[0] = '\0';
    if (conn == NULL)
        return NULL;
    state = PQinstanceData(conn, db_event);
    if (has_queued(state))
        return pipeline_run(conn, state, what, sql, nparams, params);
    res = nparams > 0 ? exec_prepared(conn, state, sql, nparams, params) : NULL;
    if (res == NULL)
        res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
        return res;
    note_failure(conn, what, res);
    PQclear(res);
    return NULL;
}

int db_exec(PGconn *conn, const char *what, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = db_query(conn, what, sql, nparams, params);

    if (res == NULL)
        return -1;
    PQclear(res);
    return 0;
}

int db_exec_later(PGconn *conn, const char *what, const char *sql, int nparams,
                  const char *const *params)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;

    /* Outside a transaction nothing would ever send it: run it now. */
    if (state == NULL || (!has_queued(state) && PQtransactionStatus(conn) != PQTRANS_INTRANS))
        return db_exec(conn, what, sql, nparams, params);
    last_sqlstate[0] = '\0';
    if (state->pending_count >= 2 * PIPELINE_MAX && pipeline_sync(conn, state, NULL, NULL) != 0)
        return -1;
    if (pipeline_send(conn, state, what, sql, nparams, params) != 0) {
        pipeline_sync(conn, state, NULL, NULL);
        return -1;
    }
    return 0;
}

int db_notify_after_commit(PGconn *conn, const char *channel, const char *payload)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;

    if (state == NULL)
        return -1;
    for (int i = 0; i < state->notify_count; i++) {
        if (strcmp(state->channels[i], channel) == 0 && strcmp(state->payloads[i], payload) == 0)
            return 0;
    }
    if (state->notify_count == NOTIFY_MAX || strlen(channel) >= sizeof(state->channels[0]) ||
        strlen(payload) >= sizeof(state->payloads[0]))
        return -1;
    snprintf(state->channels[state->notify_count], sizeof(state->channels[0]), "%s", channel);
    snprintf(state->payloads[state->notify_count], sizeof(state->payloads[0]), "%s", payload);
    state->notify_count++;
    return 0;
}

/* The slot of this process's listener for channel, or -1. Call with
 * local_listeners_lock held. */
static int listener_slot(const char *channel)
{
    for (int i = 0; i < LOCAL_LISTENERS_MAX; i++) {
        if (local_listeners[i].fn && strcmp(local_listeners[i].channel, channel) == 0)
            return i;
    }
    return -1;
}

void db_set_local_listener(const char *channel, db_local_listener_fn fn, void *arg)
{
    int free_slot;

    pthread_mutex_lock(&local_listeners_lock);
    free_slot = listener_slot(channel);
    for (int i = 0; i < LOCAL_LISTENERS_MAX && free_slot < 0; i++) {
        if (local_listeners[i].fn == NULL)
            free_slot = i;
    }
    if (free_slot >= 0) {
        snprintf(local_listeners[free_slot].channel, sizeof(local_listeners[0].channel), "%s",
                 channel);
        local_listeners[free_slot].fn = fn;
        local_listeners[free_slot].arg = arg;
    }
    pthread_mutex_unlock(&local_listeners_lock);
}

/* Offers a notification to this process's listener for its channel; returns
 * 1 when that listener took it. */
static int deliver_locally(const char *channel, const char *payload)
{
    int taken = 0, i;

    pthread_mutex_lock(&local_listeners_lock);
    i = listener_slot(channel);
    if (i >= 0)
        taken = local_listeners[i].fn(payload, local_listeners[i].arg);
    pthread_mutex_unlock(&local_listeners_lock);
    return taken;
}

static void drop_pending_notifications(PGconn *conn)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;

    if (state)
        state->notify_count = 0;
}

/* Appends s to the Postgres array literal out (of len bytes) as a quoted
 * element; out has room for it (the caller sized it for the worst case). */
static size_t append_element(char *out, size_t len, const char *s)
{
    if (out[len - 1] != '{')
        out[len++] = ',';
    out[len++] = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            out[len++] = '\\';
        out[len++] = *s;
    }
    out[len++] = '"';
    return len;
}

/* Notifying assigns a transaction id, so the notifying transaction writes
 * WAL; it need not wait for the flush (a lost notification only delays the
 * listener), and it holds the notify lock while it commits. A failure,
 * likewise, only delays the listeners until their poll. */
static const char notify_sql[] = "SELECT set_config('synchronous_commit', 'off', true), "
                                 "pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)";

static int no_local_listener(const char *channel, const char *payload)
{
    int none;

    (void)payload;
    pthread_mutex_lock(&local_listeners_lock);
    none = listener_slot(channel) < 0;
    pthread_mutex_unlock(&local_listeners_lock);
    return none;
}

static int not_delivered_locally(const char *channel, const char *payload)
{
    return !deliver_locally(channel, payload);
}

/*
 * Takes the queued notifications for which take(channel, payload) is true
 * off the queue, as the two array parameters of notify_sql in *channels and
 * *payloads (free both). Returns how many (0: nothing to send).
 */
static int take_notifications(struct conn_state *state, int (*take)(const char *, const char *),
                              char **channels, char **payloads)
{
    size_t clen = 1, plen = 1;
    int kept = 0, taken = 0;

    /* Worst case: every byte escaped, plus quotes and commas. */
    *channels = malloc((size_t)state->notify_count * (2 * sizeof(state->channels[0]) + 3) + 3);
    *payloads = malloc((size_t)state->notify_count * (2 * sizeof(state->payloads[0]) + 3) + 3);
    if (*channels == NULL || *payloads == NULL)
        return 0;
    (*channels)[0] = (*payloads)[0] = '{';
    for (int i = 0; i < state->notify_count; i++) {
        if (take(state->channels[i], state->payloads[i])) {
            clen = append_element(*channels, clen, state->channels[i]);
            plen = append_element(*payloads, plen, state->payloads[i]);
            taken++;
            continue;
        }
        if (kept != i) {
            memcpy(state->channels[kept], state->channels[i], sizeof(state->channels[0]));
            memcpy(state->payloads[kept], state->payloads[i], sizeof(state->payloads[0]));
        }
        kept++;
    }
    state->notify_count = kept;
    (*channels)[clen++] = '}';
    (*channels)[clen] = '\0';
    (*payloads)[plen++] = '}';
    (*payloads)[plen] = '\0';
    return taken;
}

/* After a commit: offers each queued notification to this process's
 * listeners, and sends the rest in one statement of its own. */
static void send_pending_notifications(PGconn *conn)
{
    struct conn_state *state = PQinstanceData(conn, db_event);
    char *channels = NULL, *payloads = NULL;

    if (state == NULL || state->notify_count == 0)
        return;
    if (take_notifications(state, not_delivered_locally, &channels, &payloads) > 0) {
        const char *params[] = {channels, payloads};

        db_exec(conn, "notify", notify_sql, 2, params);
    }
    free(channels);
    free(payloads);
    state->notify_count = 0;
}

/*
 * Sends COMMIT after everything queued, and behind it (as a transaction of
 * its own, in the same round trip) the notifications no listener in this
 * process could take. Returns 0 if the COMMIT succeeded, whatever became of
 * the notifications.
 */
static int pipeline_commit(PGconn *conn, struct conn_state *state)
{
    char *channels = NULL, *payloads = NULL;
    int remote = state->notify_count > 0
                     ? take_notifications(state, no_local_listener, &channels, &payloads)
                     : 0;
    int committed = 0, succeeded;

    if (pipeline_send(conn, state, "commit", "COMMIT", 0, NULL) == 0) {
        int commit_index = state->pending_count - 1;

        if (remote > 0) {
            const char *params[] = {channels, payloads};

            pipeline_send(conn, state, "notify", notify_sql, 2, params);
        }
        pipeline_sync(conn, state, NULL, &succeeded);
        committed = succeeded > commit_index;
    } else {
        pipeline_sync(conn, state, NULL, NULL);
    }
    free(channels);
    free(payloads);
    return committed ? 0 : -1;
}

int db_begin(PGconn *conn)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;

    /* Sent with the transaction's first statement. */
    if (state != NULL && !has_queued(state) && PQtransactionStatus(conn) == PQTRANS_IDLE) {
        state->begin_queued = 1;
        return 0;
    }
    return db_exec(conn, "begin", "BEGIN", 0, NULL);
}

/* Ends a transaction that failed inside a pipeline, which leaves it open and
 * aborted. */
static void rollback_if_aborted(PGconn *conn)
{
    if (!db_is_broken(conn) && PQtransactionStatus(conn) == PQTRANS_INERROR) {
        PGresult *res = PQexec(conn, "ROLLBACK");

        PQclear(res);
    }
}

int db_commit(PGconn *conn)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;
    int rc;

    last_sqlstate[0] = '\0';
    if (state != NULL && state->begin_queued && state->pending_count == 0) {
        state->begin_queued = 0; /* nothing was sent: nothing to commit */
        rc = 0;
    } else if (state != NULL && has_queued(state)) {
        rc = pipeline_commit(conn, state);
    } else if (PQtransactionStatus(conn) == PQTRANS_INERROR) {
        /* A statement of it failed (and its caller went on): PostgreSQL
         * would answer the COMMIT with a ROLLBACK that reads as success. */
        snprintf(last_sqlstate, sizeof(last_sqlstate), "25P02");
        rc = -1;
    } else {
        rc = db_exec(conn, "commit", "COMMIT", 0, NULL);
    }
    if (rc != 0) {
        rollback_if_aborted(conn);
        drop_pending_notifications(conn);
        return -1;
    }
    send_pending_notifications(conn);
    return 0;
}

int db_rollback(PGconn *conn)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;

    drop_pending_notifications(conn);
    if (state != NULL) {
        state->begin_queued = 0;
        if (state->pending_count > 0)
            pipeline_sync(conn, state, NULL, NULL); /* their fate no longer matters */
    }
    if (db_is_broken(conn))
        return -1;
    if (PQtransactionStatus(conn) == PQTRANS_IDLE)
        return 0;
    return db_exec(conn, "rollback", "ROLLBACK", 0, NULL);
}

int db_idle(PGconn *conn)
{
    struct conn_state *state = conn ? PQinstanceData(conn, db_event) : NULL;

    return conn != NULL && !has_queued(state) && PQtransactionStatus(conn) == PQTRANS_IDLE;
}

int db_probe_idle(PGconn *conn)
{
    return conn == NULL || !PQconsumeInput(conn) || !PQconsumeInput(conn) || db_is_broken(conn);
}

int db_is_broken(PGconn *conn)
{
    const struct conn_state *cs;

    if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
        return 1;
    cs = PQinstanceData(conn, db_event);
    if (cs == NULL)
        return 0;
    /* Between calls, this file leaves pipeline mode unless statements are
     * queued. Still in it with none queued, libpq could not leave it (a
     * session ended by the server can do that while the socket looks open):
     * every later call would fail, so the connection must be replaced. */
    if (PQpipelineStatus(conn) != PQ_PIPELINE_OFF && cs->pending_count == 0)
        return 1;
    return cs->read_only;
}

int db_last_failure_transient(PGconn *conn)
{
    if (db_is_broken(conn))
        return 1;
    return db_sqlstate_transient(last_sqlstate);
}

int db_sqlstate_transient(const char *sqlstate)
{
    static const char *const prefixes[] = {"08",    "40",    "53",    "57P0",
                                           "57014", "55P03", "25006", "42501"};

    if (sqlstate == NULL || sqlstate[0] == '\0')
        return 1; /* no SQLSTATE: the server never answered */
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(sqlstate, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    }
    return 0;
}

const char *db_last_sqlstate(void)
{
    return last_sqlstate;
}

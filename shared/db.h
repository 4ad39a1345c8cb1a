/*
 * db.h - small helpers over libpq: connect with the notice processor routed to
 * the logger, run parameterised statements with uniform error reporting, and
 * classify failures as transient (retry) or not.
 *
 * Only parameterised statements are offered for anything carrying data.
 */
#ifndef SHARED_DB_H
#define SHARED_DB_H

#include <libpq-fe.h>
#include <stddef.h>

/*
 * Opens a connection to url. On success returns the connection (release with
 * PQfinish) with notices routed to the logger and application_name set to
 * app_name. On failure returns NULL and writes the reason into err.
 */
PGconn *db_connect(const char *url, const char *app_name, char *err, size_t errlen);

/*
 * Runs sql with nparams text parameters. sql must be a string literal (or
 * otherwise constant for the connection's life): a statement with parameters
 * is prepared once per connection and recognised later by its address.
 * Returns the result when the status
 * is PGRES_COMMAND_OK or PGRES_TUPLES_OK (the caller PQclear()s it); otherwise
 * logs the error once with what, records its SQLSTATE for db_last_failure_transient(),
 * and returns NULL.
 */
PGresult *db_query(PGconn *conn, const char *what, const char *sql, int nparams,
                   const char *const *params);

/* Like db_query for statements whose rows are not needed. Returns 0 or -1. */
int db_exec(PGconn *conn, const char *what, const char *sql, int nparams,
            const char *const *params);

/*
 * Like db_exec for a statement inside a transaction whose result only matters
 * as success or failure: it is queued and sent with the next statement whose
 * result is needed, or with the COMMIT, saving a round trip. If it fails,
 * that later db_query / db_exec / db_commit fails (its SQLSTATE is the one
 * db_last_sqlstate() reports), so the transaction is rolled back as usual.
 * Outside a transaction it runs at once. Returns 0, or -1 if it could not be
 * sent.
 */
int db_exec_later(PGconn *conn, const char *what, const char *sql, int nparams,
                  const char *const *params);

/*
 * Queues NOTIFY channel, payload to be sent after the next successful
 * db_commit(conn), as a separate tiny transaction; db_rollback(conn) drops it.
 *
 * Why not NOTIFY inside the transaction: PostgreSQL serialises every
 * committing transaction that notified behind one cluster-wide lock, held
 * across its WAL flush, which caps commits of all databases together. A
 * notification lost to a crash between the two commits only delays the
 * listener until its fallback poll; listeners must not rely on it for
 * correctness. Duplicates within a transaction are sent once. Returns 0, or
 * -1 when too many are queued or too long (the listener then relies on its
 * poll). A payload holds at most DB_NOTIFY_PAYLOAD_MAX - 1 bytes.
 */
#define DB_NOTIFY_PAYLOAD_MAX 256
int db_notify_after_commit(PGconn *conn, const char *channel, const char *payload);

/*
 * A listener in this process for channel: after a commit, each queued
 * notification on channel is first offered to fn, and sent through
 * PostgreSQL only if fn returns 0 (e.g. the local outbox relay is not the
 * active one, so another process must hear it). fn runs on the committing
 * thread and must be quick. fn NULL removes the listener. At most 4 channels.
 */
typedef int (*db_local_listener_fn)(const char *payload, void *arg);
void db_set_local_listener(const char *channel, db_local_listener_fn fn, void *arg);

/*
 * BEGIN / COMMIT / ROLLBACK. Return 0 or -1. BEGIN is sent with the
 * transaction's first statement (so a connection failure shows there); a
 * COMMIT that fails leaves no transaction open. ROLLBACK on a broken
 * connection is a no-op that returns -1.
 */
int db_begin(PGconn *conn);
int db_commit(PGconn *conn);
int db_rollback(PGconn *conn);

/* Returns 1 if conn has no transaction open or begun and nothing queued. */
int db_idle(PGconn *conn);

/*
 * Looks at an idle connection nobody has read from: a server that went away
 * (a restart) left its goodbye and then EOF on the socket, which only a read
 * notices. Reads twice (the first read takes the message, the second meets
 * the EOF); on a live connection both return at once with nothing. Returns 1
 * if conn is NULL, a read failed, or it is broken (db_is_broken), else 0.
 */
int db_probe_idle(PGconn *conn);

/*
 * Returns 1 if the last failure seen by db_query/db_exec on this thread was
 * transient: the connection broke, or db_sqlstate_transient(). Else 0.
 */
int db_last_failure_transient(PGconn *conn);

/*
 * Returns 1 if a statement that failed with sqlstate may well succeed when
 * retried as it is, because the fault lies with the database or its set-up,
 * not with the statement or its data: no SQLSTATE (no answer), class 08
 * (connection), 40 (serialization failure, deadlock), 53 (disk full, out of
 * memory, too many connections), 57P0x (shutting down, cannot connect now),
 * 57014 (cancelled, statement timeout), 55P03 (lock not available), 25006
 * (read-only transaction: a failover left the connection on a standby) and
 * 42501 (insufficient privilege: a grant missing after a deployment fails
 * every message alike, so they wait for the fix instead of all going to the
 * dead-letter topic). Else 0: the statement itself is wrong for this data.
 */
int db_sqlstate_transient(const char *sqlstate);

/* Returns 1 if conn is NULL, its connection is gone, libpq is stuck in
 * pipeline mode (it could not leave it after a failure), or a write on it
 * was refused as read-only (SQLSTATE 25006: a failover left it on a
 * standby); in every case the caller replaces it. */
int db_is_broken(PGconn *conn);

/* Returns the SQLSTATE of the last failure on this thread ("" if none). */
const char *db_last_sqlstate(void);

#endif

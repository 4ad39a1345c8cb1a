/*
 * outbox.h - the transactional outbox: a message to publish is a row written
 * in the caller's own transaction, so it exists if and only if the state
 * change that caused it committed. The relay (relay.h) publishes the rows.
 */
#ifndef SHARED_OUTBOX_H
#define SHARED_OUTBOX_H

#include <libpq-fe.h>

#include "envelope.h"

#define OUTBOX_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-01" */

/* The relay LISTENs here; outbox_enqueue() has it notified after the
 * writer's commit (through process memory when the active relay is in the
 * same process, see db_set_local_listener). */
#define OUTBOX_CHANNEL "outbox"

/*
 * Inserts env, serialised, as a row for topic with key (the partitioning key,
 * normally the saga id). Must run inside a transaction the caller opened on
 * conn; nothing is sent until that transaction commits. traceparent is the W3C
 * trace context of the message being handled, or NULL to start a new trace;
 * the row gets a child span of it. Returns 0, or -1 on failure (logged; the
 * caller rolls back).
 */
int outbox_enqueue(PGconn *conn, const char *topic, const char *key, const struct envelope *env,
                   const char *traceparent);

/*
 * Writes a W3C traceparent into out: same trace id as parent (when parent is a
 * valid traceparent) or a fresh one, with a fresh span id.
 */
void outbox_traceparent_child(const char *parent, char out[OUTBOX_TRACEPARENT_LEN + 1]);

#endif

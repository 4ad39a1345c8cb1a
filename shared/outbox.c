/*
 * outbox.c - enqueue messages into the outbox table inside the caller's
 * transaction.
 */
#define _POSIX_C_SOURCE 200809L
#include "outbox.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "db.h"

static void random_hex(char *out, size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    uuid_t raw;
    size_t done = 0;

    while (done < nbytes) {
        uuid_generate_random(raw);
        for (size_t i = 0; i < sizeof(raw) && done < nbytes; i++, done++) {
            out[2 * done] = digits[raw[i] >> 4];
            out[2 * done + 1] = digits[raw[i] & 0xf];
        }
    }
    out[2 * nbytes] = '\0';
}

static int valid_traceparent(const char *text)
{
    if (text == NULL || strlen(text) != OUTBOX_TRACEPARENT_LEN)
        return 0;
    for (int i = 0; i < OUTBOX_TRACEPARENT_LEN; i++) {
        int dash = (i == 2 || i == 35 || i == 52);

        if (dash ? text[i] != '-' : !isxdigit((unsigned char)text[i]))
            return 0;
    }
    return 1;
}

void outbox_traceparent_child(const char *parent, char out[OUTBOX_TRACEPARENT_LEN + 1])
{
    char trace_id[33];
    char span_id[17];

    if (valid_traceparent(parent)) {
        memcpy(trace_id, parent + 3, 32);
        trace_id[32] = '\0';
    } else {
        random_hex(trace_id, 16);
    }
    random_hex(span_id, 8);
    snprintf(out, OUTBOX_TRACEPARENT_LEN + 1, "00-%s-%s-01", trace_id, span_id);
}

int outbox_enqueue(PGconn *conn, const char *topic, const char *key, const struct envelope *env,
                   const char *traceparent)
{
    char child[OUTBOX_TRACEPARENT_LEN + 1];
    char *value = envelope_encode(env);
    int rc;

    if (value == NULL)
        return -1;
    outbox_traceparent_child(traceparent, child);
    {
        const char *params[] = {topic, key, env->id, env->type, child, value};

        rc = db_exec_later(
            conn, "outbox insert",
            "INSERT INTO outbox (topic, msg_key, msg_id, msg_type, traceparent, value) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            6, params);
    }
    free(value);
    /* Wakes the relay (of any replica) right after the commit. */
    if (rc == 0)
        db_notify_after_commit(conn, OUTBOX_CHANNEL, "");
    return rc;
}

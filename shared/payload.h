/*
 * payload.h - typed reads of message payload fields, and emitting a message
 * (envelope build + outbox enqueue) in one call.
 */
#ifndef SHARED_PAYLOAD_H
#define SHARED_PAYLOAD_H

#include <cJSON.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "consumer.h"

/* Reads an integer field. Returns 0 and sets *out, or -1 if the field is
 * missing, not a number or not a whole number. */
int payload_int(const cJSON *payload, const char *name, long long *out);

/* Reads a positive integer id field into *out and, as decimal text for SQL
 * parameters, into text (capacity cap). Returns 0, or -1 if the field is
 * missing, not a whole number or not positive. */
int payload_positive_id(const cJSON *payload, const char *name, long long *out, char *text,
                        size_t cap);

/* Returns the string field, or NULL if missing or not a string. */
const char *payload_str(const cJSON *payload, const char *name);

/* Reads an optional UUID field: returns 0 with *out the UUID, or NULL when
 * the field is absent; -1 when it is there but not a UUID string (a number
 * or null included). */
int payload_optional_uuid(const cJSON *payload, const char *name, const char **out);

/* Copies text into out (capacity cap > 0), cut short if it does not fit, but
 * never inside a UTF-8 sequence: the copy stays valid UTF-8, which PostgreSQL
 * requires of text. Returns 1 if text was cut, else 0. */
int payload_copy_text(char *out, size_t cap, const char *text);

/*
 * Writes unit_price (a decimal string with at most 2 decimals, as numeric(10,2)
 * prints it) times quantity (decimal text) into out, exactly, in cents: "99.99"
 * times "3" is "299.97". Returns 0, or -1 if either is malformed or the amount
 * would not fit numeric(10,2).
 */
int payload_amount_times(const char *unit_price, const char *quantity, char *out, size_t outlen);

/*
 * Builds an envelope of type for saga_id (when NULL, the saga of cause, which
 * must then be set), caused by cause (may be NULL), and enqueues it to topic
 * under key, inside the caller's transaction; it carries cause's traceparent
 * when there is a cause. Takes ownership of payload. Returns 0 or -1.
 */
int payload_emit(PGconn *conn, const char *topic, const char *key, const char *type,
                 const char *producer, const struct consumer_message *cause, const char *saga_id,
                 cJSON *payload);

#endif

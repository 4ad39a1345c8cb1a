/*
 * envelope.h - the message envelope every topic carries (ARCHITECTURE.md):
 *
 *   {"id": uuid, "type": "...", "version": 1, "saga_id": "...",
 *    "causation_id": uuid|null, "correlation_id": "...",
 *    "occurred_at": RFC 3339, "producer": "...", "payload": {...}}
 *
 * Decoding is strict about the fields it needs and ignores unknown ones, so a
 * newer producer can add fields without breaking older consumers.
 */
#ifndef SHARED_ENVELOPE_H
#define SHARED_ENVELOPE_H

#include <cJSON.h>
#include <stddef.h>

#define ENVELOPE_MAX_BYTES (64 * 1024) /* larger values are rejected unread */
#define ENVELOPE_UUID_LEN  36
#define ENVELOPE_TYPE_MAX  64
#define ENVELOPE_KEY_MAX   128 /* saga_id, correlation_id */
#define ENVELOPE_NAME_MAX  64  /* producer */
#define ENVELOPE_TIME_MAX  40

struct envelope {
    char id[ENVELOPE_UUID_LEN + 1];
    char type[ENVELOPE_TYPE_MAX];
    int version;
    char saga_id[ENVELOPE_KEY_MAX];
    char causation_id[ENVELOPE_UUID_LEN + 1]; /* "" encodes as null */
    char correlation_id[ENVELOPE_KEY_MAX];
    char occurred_at[ENVELOPE_TIME_MAX];
    char producer[ENVELOPE_NAME_MAX];
    cJSON *payload; /* owned by the envelope; always an object once built */
};

/*
 * Builds a new envelope with a fresh random id and the current time. cause,
 * if not NULL, is the message being handled: its id becomes causation_id and
 * its correlation_id is carried on; otherwise correlation_id is saga_id.
 * payload is taken over (pass NULL for an empty object); on failure it is
 * freed too. Returns 0, or -1 if a string is too long or allocation failed.
 * Release with envelope_free().
 */
int envelope_build(struct envelope *env, const char *type, const char *saga_id,
                   const char *producer, const struct envelope *cause, cJSON *payload);

/* Serialises env to a NUL-terminated JSON string. The caller frees it with
 * free(). Returns NULL on allocation failure. */
char *envelope_encode(const struct envelope *env);

/*
 * Parses and validates len bytes of data (need not be NUL-terminated), which
 * must be UTF-8 throughout (PostgreSQL stores nothing else). On
 * success returns 0 and fills *env, which then owns a payload to release with
 * envelope_free(). On failure returns -1, leaves *env empty and writes a short
 * reason into err.
 */
int envelope_decode(const char *data, size_t len, struct envelope *env, char *err, size_t errlen);

/* Releases the payload. Accepts NULL and envelopes that were never filled. */
void envelope_free(struct envelope *env);

/* Returns 1 if text is a canonical 36-character UUID, else 0. */
int envelope_is_uuid(const char *text);

/* Writes a fresh UUID (36 chars + NUL) into out: version 7, so ids made in a
 * later millisecond sort after earlier ones; the rest is random. */
void envelope_new_uuid(char out[ENVELOPE_UUID_LEN + 1]);

/* Writes the current UTC time as RFC 3339 with milliseconds into out. */
void envelope_now_rfc3339(char out[ENVELOPE_TIME_MAX]);

/* Returns 1 if text looks like an RFC 3339 timestamp, else 0. */
int envelope_is_rfc3339(const char *text);

#endif

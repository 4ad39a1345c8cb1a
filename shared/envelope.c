/*
 * envelope.c - build, encode and strictly decode message envelopes.
 */
#define _POSIX_C_SOURCE 200809L
#include "envelope.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

static int copy_field(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(src);

    if (len >= cap)
        return -1;
    memcpy(dst, src, len + 1);
    return 0;
}

int envelope_is_uuid(const char *text)
{
    uuid_t parsed;

    if (text == NULL || strlen(text) != ENVELOPE_UUID_LEN)
        return 0;
    return uuid_parse(text, parsed) == 0;
}

/*
 * A version 7 UUID (RFC 9562): 48 bits of Unix time in milliseconds, then
 * libuuid's random bits. Ids made later sort later, so the indexes on them
 * (inbox, payments) grow at their right edge instead of touching a random
 * page per insert. (libuuid in Debian 12 predates uuid_generate_time_v7.)
 */
void envelope_new_uuid(char out[ENVELOPE_UUID_LEN + 1])
{
    struct timespec now;
    unsigned long long ms;
    uuid_t raw;

    uuid_generate_random(raw); /* sets the RFC 9562 variant bits */
    clock_gettime(CLOCK_REALTIME, &now);
    ms = (unsigned long long)now.tv_sec * 1000u + (unsigned long long)now.tv_nsec / 1000000u;
    for (int i = 0; i < 6; i++)
        raw[i] = (unsigned char)(ms >> (40 - 8 * i));
    raw[6] = (unsigned char)((raw[6] & 0x0f) | 0x70);
    uuid_unparse_lower(raw, out);
}

void envelope_now_rfc3339(char out[ENVELOPE_TIME_MAX])
{
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    /* Casts bound every field so the compiler can see the text fits. */
    snprintf(out, ENVELOPE_TIME_MAX, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
             (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
             (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
             (unsigned)tm.tm_sec % 100u, (unsigned)(now.tv_nsec / 1000000) % 1000u);
}

int envelope_is_rfc3339(const char *text)
{
    /* YYYY-MM-DDTHH:MM:SS, optional fraction, then Z or +HH:MM / -HH:MM. */
    static const char pattern[] = "dddd-dd-ddTdd:dd:dd";
    size_t i;

    if (text == NULL)
        return 0;
    for (i = 0; pattern[i]; i++) {
        if (pattern[i] == 'd' ? !isdigit((unsigned char)text[i]) : text[i] != pattern[i])
            return 0;
    }
    if (text[i] == '.') {
        i++;
        if (!isdigit((unsigned char)text[i]))
            return 0;
        while (isdigit((unsigned char)text[i]))
            i++;
    }
    if (text[i] == 'Z' && text[i + 1] == '\0')
        return 1;
    if ((text[i] == '+' || text[i] == '-') && isdigit((unsigned char)text[i + 1]) &&
        isdigit((unsigned char)text[i + 2]) && text[i + 3] == ':' &&
        isdigit((unsigned char)text[i + 4]) && isdigit((unsigned char)text[i + 5]) &&
        text[i + 6] == '\0')
        return 1;
    return 0;
}

int envelope_build(struct envelope *env, const char *type, const char *saga_id,
                   const char *producer, const struct envelope *cause, cJSON *payload)
{
    memset(env, 0, sizeof(*env));
    if (payload == NULL)
        payload = cJSON_CreateObject();
    if (payload == NULL || !cJSON_IsObject(payload))
        goto fail;
    envelope_new_uuid(env->id);
    env->version = 1;
    envelope_now_rfc3339(env->occurred_at);
    if (copy_field(env->type, sizeof(env->type), type) != 0 ||
        copy_field(env->saga_id, sizeof(env->saga_id), saga_id) != 0 ||
        copy_field(env->producer, sizeof(env->producer), producer) != 0)
        goto fail;
    if (cause != NULL) {
        memcpy(env->causation_id, cause->id, sizeof(env->causation_id));
        memcpy(env->correlation_id, cause->correlation_id, sizeof(env->correlation_id));
    } else {
        memcpy(env->correlation_id, env->saga_id, sizeof(env->correlation_id));
    }
    env->payload = payload;
    return 0;

fail:
    cJSON_Delete(payload);
    memset(env, 0, sizeof(*env));
    return -1;
}

char *envelope_encode(const struct envelope *env)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *payload_copy = NULL;
    char *text = NULL;

    if (root == NULL)
        return NULL;
    if (!cJSON_AddStringToObject(root, "id", env->id) ||
        !cJSON_AddStringToObject(root, "type", env->type) ||
        !cJSON_AddNumberToObject(root, "version", env->version) ||
        !cJSON_AddStringToObject(root, "saga_id", env->saga_id))
        goto out;
    if (env->causation_id[0] ? !cJSON_AddStringToObject(root, "causation_id", env->causation_id)
                             : !cJSON_AddNullToObject(root, "causation_id"))
        goto out;
    if (!cJSON_AddStringToObject(root, "correlation_id", env->correlation_id) ||
        !cJSON_AddStringToObject(root, "occurred_at", env->occurred_at) ||
        !cJSON_AddStringToObject(root, "producer", env->producer))
        goto out;
    /* The envelope keeps its payload, so the tree gets a reference-free copy. */
    payload_copy = env->payload ? cJSON_Duplicate(env->payload, 1) : cJSON_CreateObject();
    if (payload_copy == NULL || !cJSON_AddItemToObject(root, "payload", payload_copy)) {
        cJSON_Delete(payload_copy);
        goto out;
    }
    text = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    return text;
}

/*
 * Returns the offset of the first byte of data that does not belong to a
 * well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or len if all of it is UTF-8. PostgreSQL refuses
 * anything else in text, so such a message could never be stored.
 */
static size_t utf8_invalid_at(const unsigned char *data, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = data[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else
            return i;
        if (len - i <= need || data[i + 1] < lo || data[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if (data[i + k] < 0x80 || data[i + k] > 0xBF)
                return i;
        i += need + 1;
    }
    return len;
}

/* Copies the string member name of root into dst (capacity cap). Returns 0,
 * or -1 with a reason in err. */
static int take_string(const cJSON *root, const char *name, char *dst, size_t cap, char *err,
                       size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);

    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        snprintf(err, errlen, "field %s missing or not a string", name);
        return -1;
    }
    if (copy_field(dst, cap, item->valuestring) != 0) {
        snprintf(err, errlen, "field %s longer than %zu bytes", name, cap - 1);
        return -1;
    }
    return 0;
}

int envelope_decode(const char *data, size_t len, struct envelope *env, char *err, size_t errlen)
{
    cJSON *root = NULL;
    const cJSON *item;
    int rc = -1;

    memset(env, 0, sizeof(*env));
    if (data == NULL || len == 0) {
        snprintf(err, errlen, "empty message");
        return -1;
    }
    if (len > ENVELOPE_MAX_BYTES) {
        snprintf(err, errlen, "message of %zu bytes exceeds the %d byte limit", len,
                 ENVELOPE_MAX_BYTES);
        return -1;
    }
    size_t bad = utf8_invalid_at((const unsigned char *)data, len);
    if (bad < len) {
        snprintf(err, errlen, "not valid UTF-8 (byte %zu)", bad);
        return -1;
    }
    root = cJSON_ParseWithLength(data, len);
    if (root == NULL) {
        snprintf(err, errlen, "not valid JSON");
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "not a JSON object");
        goto out;
    }
    if (take_string(root, "id", env->id, sizeof(env->id), err, errlen) != 0)
        goto out;
    if (!envelope_is_uuid(env->id)) {
        snprintf(err, errlen, "field id is not a UUID");
        goto out;
    }
    if (take_string(root, "type", env->type, sizeof(env->type), err, errlen) != 0)
        goto out;
    if (env->type[0] == '\0') {
        snprintf(err, errlen, "field type is empty");
        goto out;
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsNumber(item) || item->valuedouble < 1 || item->valuedouble > 1000000 ||
        item->valuedouble != (double)item->valueint) {
        snprintf(err, errlen, "field version missing or not a positive integer");
        goto out;
    }
    env->version = item->valueint;
    if (take_string(root, "saga_id", env->saga_id, sizeof(env->saga_id), err, errlen) != 0)
        goto out;
    item = cJSON_GetObjectItemCaseSensitive(root, "causation_id");
    if (item != NULL && !cJSON_IsNull(item)) {
        if (take_string(root, "causation_id", env->causation_id, sizeof(env->causation_id), err,
                        errlen) != 0)
            goto out;
        if (!envelope_is_uuid(env->causation_id)) {
            snprintf(err, errlen, "field causation_id is not a UUID or null");
            goto out;
        }
    }
    if (take_string(root, "correlation_id", env->correlation_id, sizeof(env->correlation_id), err,
                    errlen) != 0)
        goto out;
    if (take_string(root, "occurred_at", env->occurred_at, sizeof(env->occurred_at), err, errlen) !=
        0)
        goto out;
    if (!envelope_is_rfc3339(env->occurred_at)) {
        snprintf(err, errlen, "field occurred_at is not an RFC 3339 time");
        goto out;
    }
    if (take_string(root, "producer", env->producer, sizeof(env->producer), err, errlen) != 0)
        goto out;
    item = cJSON_GetObjectItemCaseSensitive(root, "payload");
    if (!cJSON_IsObject(item)) {
        snprintf(err, errlen, "field payload missing or not an object");
        goto out;
    }
    env->payload = cJSON_DetachItemFromObjectCaseSensitive(root, "payload");
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc != 0) {
        cJSON_Delete(env->payload);
        memset(env, 0, sizeof(*env));
    }
    return rc;
}

void envelope_free(struct envelope *env)
{
    if (env == NULL)
        return;
    cJSON_Delete(env->payload);
    env->payload = NULL;
}

/*
 * loadgen.c - load generator for the widget store: runs the real purchase
 * flow over HTTP against any base URL and reports throughput, errors and
 * latency percentiles, as text and as JSON.
 *
 * One purchase is POST /checkout/{new key}, then POST
 * /payment_webhook/{payment id}/paid (or /failed for a share of them), and
 * with --follow, GET /order/{id} until the order is DISPATCHED (every
 * --poll-ms, 100 by default).
 *
 * Open loop (--rate N): purchases start on a fixed schedule, N per second,
 * whether or not earlier ones finished, and every latency is measured from
 * the scheduled start, so a slow server cannot hide its queueing
 * (coordinated omission). Closed loop (--concurrency N): N purchases in
 * flight, each starting when one ends.
 *
 * With --retry S, a call that fails (no answer, or 502, 503, 504: the api
 * restarting, or refusing under load) is sent again with the same key or
 * payment id, as a client of an idempotent API would: after the answer's
 * Retry-After (seconds), or 100 ms when it has none, while the
 * purchase is younger than S seconds; the retries are counted, and the
 * latency still runs from the scheduled start. --samples FILE writes one CSV
 * line per purchase (when it was due, its outcome and latencies), which
 * tests/load/recovery.py reads to see what a crash cost.
 *
 * Uses libcurl's multi interface: one thread, many connections.
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_IN_FLIGHT 20000
#define BODY_MAX      512

enum step { STEP_CHECKOUT, STEP_WEBHOOK, STEP_FOLLOW };
enum series { S_CHECKOUT, S_WEBHOOK, S_TO_PAID, S_TO_DISPATCHED, S_PURCHASE, S_COUNT };
static const char *const series_names[S_COUNT] = {"checkout", "webhook", "checkout_to_paid",
                                                  "checkout_to_dispatched", "purchase"};

struct purchase {
    enum step step;
    int paid;
    double scheduled; /* when the purchase was due to start (ms) */
    double step_started;
    double next_send; /* when to send the step again (a poll or a retry); 0 if not due */
    double checkout_ms, decided_ms; /* latencies so far, for --samples */
    int retries;
    char key[64];
    char payment_id[64];
    char order_id[32];
    char body[BODY_MAX];
    size_t body_len;
    char url[512];
    CURL *easy;
};

struct samples {
    double *values;
    size_t len, cap;
};

static struct samples stats[S_COUNT];
static long errors[S_COUNT], retries[S_COUNT];
static long started_count, completed_count, sold_out_count;
static const char *base_url = "http://localhost:8080";
static double paid_ratio = 0.9;
static int follow;
static double poll_ms = 100;   /* --follow: how often to ask for the order */
static double retry_window_ms; /* --retry: 0 means a failed call fails the purchase */
static FILE *samples_file;
static double run_begin;

static double now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}

static void record(enum series s, double ms)
{
    struct samples *v = &stats[s];

    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4096;
        double *grown = realloc(v->values, cap * sizeof(double));

        if (grown == NULL)
            return;
        v->values = grown;
        v->cap = cap;
    }
    v->values[v->len++] = ms;
}

static size_t discard(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    (void)arg;
    return size * nmemb;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct purchase *p = arg;
    size_t n = size * nmemb;
    size_t room = BODY_MAX - 1 - p->body_len;

    memcpy(p->body + p->body_len, data, n < room ? n : room);
    p->body_len += n < room ? n : room;
    p->body[p->body_len] = '\0';
    return n;
}

/* Issues the request of p's current step on multi. */
static void send_step(CURLM *multi, struct purchase *p, double now)
{
    const char *method = "POST";

    p->body_len = 0;
    p->body[0] = '\0';
    p->step_started = now;
    if (p->step == STEP_CHECKOUT) {
        snprintf(p->url, sizeof(p->url), "%s/checkout/%s", base_url, p->key);
    } else if (p->step == STEP_WEBHOOK) {
        snprintf(p->url, sizeof(p->url), "%s/payment_webhook/%s/%s", base_url, p->payment_id,
                 p->paid ? "paid" : "failed");
    } else {
        snprintf(p->url, sizeof(p->url), "%s/order/%s", base_url, p->order_id);
        method = "GET";
    }
    curl_easy_reset(p->easy);
    curl_easy_setopt(p->easy, CURLOPT_URL, p->url);
    curl_easy_setopt(p->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(p->easy, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(p->easy, CURLOPT_PRIVATE, p);
    curl_easy_setopt(p->easy, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(p->easy, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(p->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(p->easy, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(p->easy, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_multi_add_handle(multi, p->easy);
}

static struct purchase *purchase_new(double scheduled, unsigned long long seq)
{
    struct purchase *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->easy = curl_easy_init();
    p->scheduled = scheduled;
    p->paid = ((double)(seq % 1000) / 1000.0) < paid_ratio;
    snprintf(p->key, sizeof(p->key), "load-%lx-%llu", (unsigned long)time(NULL), seq);
    started_count++;
    return p;
}

static void purchase_free(struct purchase *p)
{
    curl_easy_cleanup(p->easy);
    free(p);
}

/* The restock under way, if any: on the multi handle like the purchases,
 * so the loop never waits for it (a wait would be charged to the calls in
 * flight meanwhile, and hold back the purchases falling due). */
static CURL *restock_easy;

/* POST /restock without waiting for it; one already under way covers the
 * sales that sold out meanwhile. */
static void restock(CURLM *multi)
{
    char url[512];

    if (restock_easy != NULL || (restock_easy = curl_easy_init()) == NULL)
        return;
    snprintf(url, sizeof(url), "%s/restock", base_url);
    curl_easy_setopt(restock_easy, CURLOPT_URL, url);
    curl_easy_setopt(restock_easy, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(restock_easy, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(restock_easy, CURLOPT_WRITEFUNCTION, discard);
    curl_multi_add_handle(multi, restock_easy);
}

/* Ends the restock under way. */
static void restock_done(CURLM *multi)
{
    curl_multi_remove_handle(multi, restock_easy);
    curl_easy_cleanup(restock_easy);
    restock_easy = NULL;
}

/* The series whose latency and errors a step counts in. */
static enum series step_series(enum step step)
{
    return step == STEP_CHECKOUT ? S_CHECKOUT : step == STEP_WEBHOOK ? S_WEBHOOK : S_TO_DISPATCHED;
}

/* --samples: one line per finished purchase (see the header written in main). */
static void write_sample(const struct purchase *p, const char *outcome, double now)
{
    if (samples_file)
        fprintf(samples_file, "%.1f,%s,%d,%d,%.1f,%.1f,%.1f\n", p->scheduled - run_begin, outcome,
                p->paid, p->retries, p->checkout_ms, p->decided_ms, now - p->scheduled);
}

/*
 * Advances p after its request finished. Returns 1 when p is finished (done
 * or failed) and should be freed, 0 when another request is due.
 */
static int on_done(CURLM *multi, struct purchase *p, CURLcode result, double now)
{
    long status = 0;
    enum series s = step_series(p->step);

    curl_multi_remove_handle(multi, p->easy);
    curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
    if (p->step == STEP_CHECKOUT && result == CURLE_OK && status == 409) {
        /* Sold out (the store holds 100 widgets): restock and go on. */
        sold_out_count++;
        write_sample(p, "sold_out", now);
        restock(multi);
        return 1;
    }
    if (result != CURLE_OK || status != 200) {
        int transient = result != CURLE_OK || status == 502 || status == 503 || status == 504;

        if (transient && now - p->scheduled < retry_window_ms) {
            curl_off_t retry_after = 0;

            if (curl_easy_getinfo(p->easy, CURLINFO_RETRY_AFTER, &retry_after) != CURLE_OK)
                retry_after = 0;
            retries[s]++;
            p->retries++;
            p->next_send = now + (retry_after > 0 ? (double)retry_after * 1000.0 : 100.0);
            return 0;
        }
        errors[s]++;
        write_sample(p, "failed", now);
        return 1;
    }
    if (p->step == STEP_CHECKOUT) {
        p->checkout_ms = now - p->scheduled;
        record(S_CHECKOUT, p->checkout_ms);
        snprintf(p->payment_id, sizeof(p->payment_id), "%.63s", p->body);
        p->step = STEP_WEBHOOK;
        send_step(multi, p, now);
        return 0;
    }
    if (p->step == STEP_WEBHOOK) {
        record(S_WEBHOOK, now - p->step_started);
        /* The webhook answers once the order is decided: PAID for a success. */
        p->decided_ms = now - p->scheduled;
        if (p->paid)
            record(S_TO_PAID, p->decided_ms);
        snprintf(p->order_id, sizeof(p->order_id), "%.31s", p->body);
        if (!follow || !p->paid) {
            record(S_PURCHASE, now - p->scheduled);
            completed_count++;
            write_sample(p, "completed", now);
            return 1;
        }
        p->step = STEP_FOLLOW;
        p->next_send = now + poll_ms;
        return 0;
    }
    /* STEP_FOLLOW: "order_status" : 1 means DISPATCHED. */
    const char *field = strstr(p->body, "\"order_status\"");
    const char *colon = field ? strchr(field, ':') : NULL;

    if (colon && atoi(colon + 1) == 1) {
        record(S_TO_DISPATCHED, now - p->scheduled);
        record(S_PURCHASE, now - p->scheduled);
        completed_count++;
        write_sample(p, "completed", now);
        return 1;
    }
    p->next_send = now + poll_ms;
    return 0;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double percentile(const struct samples *v, double q)
{
    size_t i;

    if (v->len == 0)
        return NAN;
    i = (size_t)(q * (double)(v->len - 1) + 0.5);
    return v->values[i];
}

static void report(FILE *text, FILE *json, double seconds, const char *mode, double target)
{
    fprintf(text,
            "%s: %.1f s, %ld purchases started, %ld completed, %.1f completed/s, "
            "%ld sold out (restocked)\n",
            mode, seconds, started_count, completed_count, (double)completed_count / seconds,
            sold_out_count);
    fprintf(text, "%-24s %8s %8s %8s %8s %8s %7s %7s\n", "latency (ms)", "count", "p50", "p90",
            "p99", "max", "errors", "retries");
    if (json)
        fprintf(json,
                "{\"mode\":\"%s\",\"target\":%g,\"seconds\":%.3f,\"started\":%ld,"
                "\"completed\":%ld,\"completed_per_s\":%.2f,\"sold_out\":%ld,\"series\":{",
                mode, target, seconds, started_count, completed_count,
                (double)completed_count / seconds, sold_out_count);
    for (int s = 0; s < S_COUNT; s++) {
        struct samples *v = &stats[s];

        if (v->len > 0) /* values is NULL until the first sample */
            qsort(v->values, v->len, sizeof(double), compare_double);
        fprintf(text, "%-24s %8zu %8.1f %8.1f %8.1f %8.1f %7ld %7ld\n", series_names[s], v->len,
                percentile(v, 0.5), percentile(v, 0.9), percentile(v, 0.99),
                v->len ? v->values[v->len - 1] : NAN, errors[s], retries[s]);
        if (json)
            fprintf(json,
                    "%s\"%s\":{\"count\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
                    "\"max\":%.3f,\"errors\":%ld,\"retries\":%ld}",
                    s ? "," : "", series_names[s], v->len, v->len ? percentile(v, 0.5) : 0.0,
                    v->len ? percentile(v, 0.9) : 0.0, v->len ? percentile(v, 0.99) : 0.0,
                    v->len ? v->values[v->len - 1] : 0.0, errors[s], retries[s]);
    }
    if (json)
        fprintf(json, "}}\n");
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen [--url BASE] (--rate PER_S | --concurrency N) "
                    "[--duration S] [--paid-ratio R] [--follow] [--poll-ms MS] [--retry S]\n"
                    "       [--json FILE] [--samples FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double rate = 0, duration = 10;
    long concurrency = 0;
    const char *json_path = NULL, *samples_path = NULL;
    struct purchase **in_flight = calloc(MAX_IN_FLIGHT, sizeof(*in_flight));
    size_t count = 0;
    unsigned long long seq = 0;
    CURLM *multi;
    double begin, end, next_start;

    for (int i = 1; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(argv[i], "--url") == 0 && next)
            base_url = argv[++i];
        else if (strcmp(argv[i], "--rate") == 0 && next)
            rate = atof(argv[++i]);
        else if (strcmp(argv[i], "--concurrency") == 0 && next)
            concurrency = atol(argv[++i]);
        else if (strcmp(argv[i], "--duration") == 0 && next)
            duration = atof(argv[++i]);
        else if (strcmp(argv[i], "--paid-ratio") == 0 && next)
            paid_ratio = atof(argv[++i]);
        else if (strcmp(argv[i], "--json") == 0 && next)
            json_path = argv[++i];
        else if (strcmp(argv[i], "--retry") == 0 && next)
            retry_window_ms = atof(argv[++i]) * 1000.0;
        else if (strcmp(argv[i], "--poll-ms") == 0 && next)
            poll_ms = atof(argv[++i]);
        else if (strcmp(argv[i], "--samples") == 0 && next)
            samples_path = argv[++i];
        else if (strcmp(argv[i], "--follow") == 0)
            follow = 1;
        else
            usage();
    }
    if ((rate > 0) == (concurrency > 0) || duration <= 0 || retry_window_ms < 0 || poll_ms <= 0 ||
        in_flight == NULL)
        usage();
    if (samples_path) {
        samples_file = fopen(samples_path, "w");
        if (samples_file == NULL) {
            perror(samples_path);
            return 1;
        }
        fprintf(samples_file, "due_ms,outcome,paid,retries,checkout_ms,decided_ms,total_ms\n");
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 2000L);
    begin = run_begin = now_ms();
    end = begin + duration * 1000.0;
    next_start = begin;
    for (;;) {
        double now = now_ms();
        int running, queued;
        CURLMsg *msg;

        /* Start what is due. Open loop: every purchase scheduled before the
         * end, even when the loop itself was held up past it. */
        while (count < MAX_IN_FLIGHT && (rate > 0 ? next_start < end && next_start <= now
                                                  : now < end && (long)count < concurrency)) {
            struct purchase *p = purchase_new(rate > 0 ? next_start : now, seq++);

            if (p == NULL)
                break;
            in_flight[count++] = p;
            send_step(multi, p, now);
            next_start += 1000.0 / (rate > 0 ? rate : 1);
        }
        for (size_t i = 0; i < count; i++) {
            if (in_flight[i]->next_send > 0 && in_flight[i]->next_send <= now) {
                in_flight[i]->next_send = 0;
                send_step(multi, in_flight[i], now);
            }
        }
        if (now >= end && count == 0 && (rate <= 0 || next_start >= end))
            break;
        curl_multi_perform(multi, &running);
        while ((msg = curl_multi_info_read(multi, &queued)) != NULL) {
            struct purchase *p;

            if (msg->msg != CURLMSG_DONE)
                continue;
            if (msg->easy_handle == restock_easy) {
                restock_done(multi);
                continue;
            }
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&p);
            if (on_done(multi, p, msg->data.result, now_ms())) {
                for (size_t i = 0; i < count; i++) {
                    if (in_flight[i] == p) {
                        in_flight[i] = in_flight[--count];
                        break;
                    }
                }
                purchase_free(p);
            }
        }
        /* Sleeps up to 2 ms even with nothing in flight (curl_multi_wait
         * would return at once then, and the loop would spin a core that
         * the system under test needs). */
        curl_multi_poll(multi, NULL, 0, 2, NULL);
    }
    {
        char mode[64];
        FILE *json = json_path ? fopen(json_path, "w") : NULL;
        double seconds = (now_ms() - begin) / 1000.0;

        snprintf(mode, sizeof(mode), rate > 0 ? "open loop at %.0f/s" : "closed loop x%.0f",
                 rate > 0 ? rate : (double)concurrency);
        report(stdout, json, seconds, mode, rate > 0 ? rate : (double)concurrency);
        if (json)
            fclose(json);
        if (samples_file)
            fclose(samples_file);
    }
    if (restock_easy != NULL)
        restock_done(multi);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    free(in_flight);
    for (int s = 0; s < S_COUNT; s++)
        free(stats[s].values);
    return 0;
}

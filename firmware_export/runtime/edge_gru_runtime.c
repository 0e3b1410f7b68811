/*
 * edge_gru_runtime.c - the GRU step, normalization and per-stream rules of edge-gru in C99.
 *
 * The maths is Keras 3's GRU cell (gate columns z | r | h, exact logistic sigmoid, either
 * reset_after) and a Dense(1) head, as in edge_gru/reference.py; the per-stream rules are
 * edge_gru/pool.py's and edge_gru/normalization.py's. Scratch lives on the stack (a few
 * times EDGE_GRU_UNITS floats); the weights are the const arrays of edge_gru_model.c.
 */
#include "edge_gru_runtime.h"

#include <math.h>
#include <stddef.h>

#define EDGE_GRU_G (3 * EDGE_GRU_UNITS) /* width of the gate columns z | r | h */

#if EDGE_GRU_INT8
typedef int8_t edge_gru_weight;
#define EDGE_GRU_SCALE(name) name##_scale
#else
typedef float edge_gru_weight;
#define EDGE_GRU_SCALE(name) NULL
#endif

/* out[j] = sum_i in[i] * w[i * stride + j] for j < cols (times the per-column scale for int8). */
static void edge_gru_matvec(float *out, const float *in, int rows, const edge_gru_weight *w, int stride, int cols,
                            const float *scale)
{
    int i, j;
    for (j = 0; j < cols; j++) {
        out[j] = 0.0f;
    }
    for (i = 0; i < rows; i++) {
        const float v = in[i];
        const edge_gru_weight *row = w + (size_t)i * (size_t)stride;
        for (j = 0; j < cols; j++) {
            out[j] += v * (float)row[j];
        }
    }
#if EDGE_GRU_INT8
    for (j = 0; j < cols; j++) {
        out[j] *= scale[j];
    }
#else
    (void)scale;
#endif
}

static float edge_gru_sigmoid(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* One GRU step on the normalized input x: updates h in place, returns the Dense(1) output. */
static float edge_gru_step(float *h, const float *x)
{
    float gx[EDGE_GRU_G];
    float gh[EDGE_GRU_G];
    float y;
    int u;

    edge_gru_matvec(gx, x, EDGE_GRU_INPUTS, edge_gru_kernel, EDGE_GRU_G, EDGE_GRU_G, EDGE_GRU_SCALE(edge_gru_kernel));
    for (u = 0; u < EDGE_GRU_G; u++) {
        gx[u] += edge_gru_bias_in[u];
    }
#if EDGE_GRU_RESET_AFTER
    edge_gru_matvec(gh, h, EDGE_GRU_UNITS, edge_gru_recurrent_kernel, EDGE_GRU_G, EDGE_GRU_G,
                    EDGE_GRU_SCALE(edge_gru_recurrent_kernel));
    for (u = 0; u < EDGE_GRU_G; u++) {
        gh[u] += edge_gru_bias_rec[u];
    }
    for (u = 0; u < EDGE_GRU_UNITS; u++) {
        const float z = edge_gru_sigmoid(gx[u] + gh[u]);
        const float r = edge_gru_sigmoid(gx[EDGE_GRU_UNITS + u] + gh[EDGE_GRU_UNITS + u]);
        const float c = tanhf(gx[2 * EDGE_GRU_UNITS + u] + r * gh[2 * EDGE_GRU_UNITS + u]);
        h[u] = z * h[u] + (1.0f - z) * c;
    }
#else
    /* z and r from the first 2U recurrent columns; the candidate sees (r * h) @ U_h. */
    edge_gru_matvec(gh, h, EDGE_GRU_UNITS, edge_gru_recurrent_kernel, EDGE_GRU_G, 2 * EDGE_GRU_UNITS,
                    EDGE_GRU_SCALE(edge_gru_recurrent_kernel));
    for (u = 0; u < EDGE_GRU_UNITS; u++) {
        const float z = edge_gru_sigmoid(gx[u] + gh[u]);
        const float r = edge_gru_sigmoid(gx[EDGE_GRU_UNITS + u] + gh[EDGE_GRU_UNITS + u]);
        gh[u] = z;
        gh[EDGE_GRU_UNITS + u] = r * h[u];
    }
#if EDGE_GRU_INT8
    edge_gru_matvec(gh + 2 * EDGE_GRU_UNITS, gh + EDGE_GRU_UNITS, EDGE_GRU_UNITS,
                    edge_gru_recurrent_kernel + 2 * EDGE_GRU_UNITS, EDGE_GRU_G, EDGE_GRU_UNITS,
                    edge_gru_recurrent_kernel_scale + 2 * EDGE_GRU_UNITS);
#else
    edge_gru_matvec(gh + 2 * EDGE_GRU_UNITS, gh + EDGE_GRU_UNITS, EDGE_GRU_UNITS,
                    edge_gru_recurrent_kernel + 2 * EDGE_GRU_UNITS, EDGE_GRU_G, EDGE_GRU_UNITS, NULL);
#endif
    for (u = 0; u < EDGE_GRU_UNITS; u++) {
        const float z = gh[u];
        const float c = tanhf(gx[2 * EDGE_GRU_UNITS + u] + gh[2 * EDGE_GRU_UNITS + u]);
        h[u] = z * h[u] + (1.0f - z) * c;
    }
#endif
    edge_gru_matvec(&y, h, EDGE_GRU_UNITS, edge_gru_dense_kernel, 1, 1, EDGE_GRU_SCALE(edge_gru_dense_kernel));
    return y + edge_gru_dense_bias;
}

#if EDGE_GRU_NORM_CAUSAL
static edge_gru_stat edge_gru_scale(edge_gru_stat mean, edge_gru_stat var)
{
    const edge_gru_stat floor = (edge_gru_stat)1e-6 + (edge_gru_stat)1e-4 * (mean < 0 ? -mean : mean);
#if EDGE_GRU_STATS_DOUBLE
    const edge_gru_stat sd = sqrt(var);
#else
    const edge_gru_stat sd = sqrtf(var);
#endif
    return sd > floor ? sd : floor;
}
#endif

void edge_gru_normalize(edge_gru_state *s, const float *x_raw, float *z)
{
    int i;
#if EDGE_GRU_NORM_CAUSAL
    edge_gru_stat a;
    if (s->norm_count < UINT32_MAX) {
        s->norm_count++;
    }
    a = (edge_gru_stat)1.0 / (edge_gru_stat)s->norm_count;
    if (a < (edge_gru_stat)EDGE_GRU_NORM_ALPHA) {
        a = (edge_gru_stat)EDGE_GRU_NORM_ALPHA;
    }
#else
    (void)s; /* fixed normalization keeps no statistics */
#endif
    for (i = 0; i < EDGE_GRU_INPUTS; i++) {
        const edge_gru_stat x = (edge_gru_stat)x_raw[i];
        edge_gru_stat v;
#if EDGE_GRU_NORM_CAUSAL
        const edge_gru_stat d = x - s->mean[i];
        s->mean[i] = s->mean[i] + a * d;
        s->var[i] = ((edge_gru_stat)1.0 - a) * (s->var[i] + a * d * d);
        v = (x - s->mean[i]) / edge_gru_scale(s->mean[i], s->var[i]);
        if (i == EDGE_GRU_TARGET) {
            s->last = x_raw[i];
        }
#else
        v = (x - (edge_gru_stat)edge_gru_input_mean[i]) / (edge_gru_stat)edge_gru_input_std[i];
#endif
#if EDGE_GRU_NORM_CLIPPED
        if (v > (edge_gru_stat)EDGE_GRU_NORM_CLIP) {
            v = (edge_gru_stat)EDGE_GRU_NORM_CLIP;
        } else if (v < -(edge_gru_stat)EDGE_GRU_NORM_CLIP) {
            v = -(edge_gru_stat)EDGE_GRU_NORM_CLIP;
        }
#endif
        z[i] = (float)v;
    }
}

float edge_gru_denormalize(const edge_gru_state *s, float y)
{
#if EDGE_GRU_NORM_CAUSAL
    /* The network forecasts the change from the newest reading in units of the stream's scale. */
    return (float)((edge_gru_stat)s->last +
                   edge_gru_scale(s->mean[EDGE_GRU_TARGET], s->var[EDGE_GRU_TARGET]) * (edge_gru_stat)y);
#else
    (void)s;
    return (float)((edge_gru_stat)EDGE_GRU_TARGET_MEAN + (edge_gru_stat)EDGE_GRU_TARGET_STD * (edge_gru_stat)y);
#endif
}

void edge_gru_restart(edge_gru_state *s)
{
    int i;
#if EDGE_GRU_WINDOW_MODE
    for (i = 0; i < EDGE_GRU_WINDOW * EDGE_GRU_INPUTS; i++) {
        s->ring[i] = 0.0f;
    }
#else
    for (i = 0; i < EDGE_GRU_UNITS; i++) {
        s->h[i] = 0.0f;
    }
#endif
    s->head = 0;
    s->count = 0;
}

void edge_gru_reset(edge_gru_state *s)
{
    int i;
#if EDGE_GRU_NORM_CAUSAL
    for (i = 0; i < EDGE_GRU_INPUTS; i++) {
        s->mean[i] = 0;
        s->var[i] = 0;
    }
    s->last = 0.0f;
#endif
    s->norm_count = 0;
    s->last_ts = (double)NAN;
    s->period = EDGE_GRU_SAMPLE_PERIOD_S > 0 ? EDGE_GRU_SAMPLE_PERIOD_S : (double)NAN;
    for (i = 0; i < EDGE_GRU_PERIOD_SAMPLES; i++) {
        s->intervals[i] = (double)NAN;
    }
    s->n_intervals = 0;
    s->gap_resets = 0;
    edge_gru_restart(s);
}

static int edge_gru_finite_sample(const float *x_raw)
{
    int i;
    for (i = 0; i < EDGE_GRU_INPUTS; i++) {
        if (!isfinite(x_raw[i])) {
            return 0;
        }
    }
    return 1;
}

/* Normalize, step, and denormalize one accepted sample. */
static float edge_gru_accept(edge_gru_state *s, const float *x_raw, edge_gru_status *status)
{
    float z[EDGE_GRU_INPUTS];
    float y = 0.0f;
    int ready;

    edge_gru_normalize(s, x_raw, z);
    if (s->count < UINT32_MAX) {
        s->count++;
    }
    ready = s->count >= (uint32_t)EDGE_GRU_WARMUP;
#if EDGE_GRU_WINDOW_MODE
    {
        /* Overwrite the oldest slot; each forecast runs the window from a zero state. */
        float h[EDGE_GRU_UNITS];
        int i, k;
        for (i = 0; i < EDGE_GRU_INPUTS; i++) {
            s->ring[s->head * EDGE_GRU_INPUTS + (uint32_t)i] = z[i];
        }
        s->head = (s->head + 1u) % (uint32_t)EDGE_GRU_WINDOW;
        if (ready) {
            for (i = 0; i < EDGE_GRU_UNITS; i++) {
                h[i] = 0.0f;
            }
            for (k = 0; k < EDGE_GRU_WINDOW; k++) {
                const uint32_t slot = (s->head + (uint32_t)k) % (uint32_t)EDGE_GRU_WINDOW;
                y = edge_gru_step(h, &s->ring[slot * EDGE_GRU_INPUTS]);
            }
        }
    }
#else
    y = edge_gru_step(s->h, z);
#endif
    if (!ready) {
        *status = EDGE_GRU_STATUS_WARMUP;
        return NAN;
    }
    *status = EDGE_GRU_STATUS_FORECAST;
    return edge_gru_denormalize(s, y);
}

float edge_gru_predict(edge_gru_state *s, const float *x_raw)
{
    edge_gru_status status;
    if (!edge_gru_finite_sample(x_raw)) {
        return NAN;
    }
    return edge_gru_accept(s, x_raw, &status);
}

/* Record one interval while the period is unknown; the median of the first few becomes it. */
static void edge_gru_learn_period(edge_gru_state *s, double dt)
{
    double sorted[EDGE_GRU_PERIOD_SAMPLES];
    int i, j;
    if (EDGE_GRU_SAMPLE_PERIOD_S > 0 || !isnan(s->period) || !isfinite(dt) || !(dt > 0)) {
        return;
    }
    s->intervals[s->n_intervals++] = dt;
    if (s->n_intervals < EDGE_GRU_PERIOD_SAMPLES) {
        return;
    }
    for (i = 0; i < EDGE_GRU_PERIOD_SAMPLES; i++) {
        const double v = s->intervals[i];
        for (j = i; j > 0 && sorted[j - 1] > v; j--) {
            sorted[j] = sorted[j - 1];
        }
        sorted[j] = v;
    }
#if EDGE_GRU_PERIOD_SAMPLES % 2
    s->period = sorted[EDGE_GRU_PERIOD_SAMPLES / 2];
#else
    s->period = 0.5 * (sorted[EDGE_GRU_PERIOD_SAMPLES / 2 - 1] + sorted[EDGE_GRU_PERIOD_SAMPLES / 2]);
#endif
}

float edge_gru_predict_ts(edge_gru_state *s, const float *x_raw, double ts, edge_gru_status *status)
{
    edge_gru_status ignored;
    double dt;
    if (status == NULL) {
        status = &ignored;
    }
    if (!edge_gru_finite_sample(x_raw) || !isfinite(ts)) {
        *status = EDGE_GRU_STATUS_NOT_FINITE;
        return NAN;
    }
    if (ts == s->last_ts) {
        *status = EDGE_GRU_STATUS_DUPLICATE;
        return NAN;
    }
    if (ts < s->last_ts) {
        *status = EDGE_GRU_STATUS_OUT_OF_ORDER;
        return NAN;
    }
    dt = ts - s->last_ts; /* NAN for the stream's first timestamp */
    if (isfinite(dt) && isfinite(s->period) && dt > EDGE_GRU_GAP_FACTOR * s->period) {
        edge_gru_restart(s);
        if (s->gap_resets < UINT32_MAX) {
            s->gap_resets++;
        }
    } else {
        edge_gru_learn_period(s, dt);
    }
    s->last_ts = ts;
    return edge_gru_accept(s, x_raw, status);
}

double edge_gru_period(const edge_gru_state *s)
{
    return isfinite(s->period) ? s->period : 0.0;
}

/*
 * edge_gru_runtime.c - the network step, normalization and per-stream rules of edge-gru in C99.
 *
 * The network is the layer table edge_gru_layers of edge_gru_model.c, run in order (any depth):
 * Keras 3 GRU cells (gate columns z | r | h, exact logistic sigmoid, either reset_after), each
 * feeding the next, then dense layers (linear, relu, tanh or sigmoid), as in
 * edge_gru/reference.py; the per-stream rules are edge_gru/pool.py's and
 * edge_gru/normalization.py's. Scratch lives on the stack (a few times the widest layer in
 * floats); the weights are the const arrays of edge_gru_model.c.
 */
#include "edge_gru_runtime.h"

#include <math.h>
#include <stddef.h>

#if EDGE_GRU_INT8
typedef int8_t edge_gru_weight;
#else
typedef float edge_gru_weight;
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

/* One GRU layer one step: input x[inputs], its state h[units] updated in place; gx and gh are
 * scratch of 3 * units floats. */
static void edge_gru_gru_layer(const edge_gru_layer *layer, const float *x, float *h, float *gx, float *gh)
{
    const int n = layer->units;
    const int g = 3 * n;
    const edge_gru_weight *kernel = edge_gru_matrices + layer->matrix;
    const edge_gru_weight *recurrent = kernel + (size_t)layer->inputs * (size_t)g;
    const float *bias_in = edge_gru_vectors + layer->vector;
#if EDGE_GRU_INT8
    const float *kernel_scale = bias_in + (layer->flag ? 2 * g : g);
    const float *recurrent_scale = kernel_scale + g;
#else
    const float *kernel_scale = NULL;
    const float *recurrent_scale = NULL;
#endif
    int u;

    edge_gru_matvec(gx, x, layer->inputs, kernel, g, g, kernel_scale);
    for (u = 0; u < g; u++) {
        gx[u] += bias_in[u];
    }
    if (layer->flag) { /* reset_after: r multiplies the recurrent candidate term, bias included */
        const float *bias_rec = bias_in + g;
        edge_gru_matvec(gh, h, n, recurrent, g, g, recurrent_scale);
        for (u = 0; u < g; u++) {
            gh[u] += bias_rec[u];
        }
        for (u = 0; u < n; u++) {
            const float z = edge_gru_sigmoid(gx[u] + gh[u]);
            const float r = edge_gru_sigmoid(gx[n + u] + gh[n + u]);
            const float c = tanhf(gx[2 * n + u] + r * gh[2 * n + u]);
            h[u] = z * h[u] + (1.0f - z) * c;
        }
        return;
    }
    /* reset_before: z and r from the first 2U recurrent columns; the candidate sees (r * h) @ U_h. */
    edge_gru_matvec(gh, h, n, recurrent, g, 2 * n, recurrent_scale);
    for (u = 0; u < n; u++) {
        const float z = edge_gru_sigmoid(gx[u] + gh[u]);
        const float r = edge_gru_sigmoid(gx[n + u] + gh[n + u]);
        gh[u] = z;
        gh[n + u] = r * h[u];
    }
#if EDGE_GRU_INT8
    edge_gru_matvec(gh + 2 * n, gh + n, n, recurrent + 2 * n, g, n, recurrent_scale + 2 * n);
#else
    edge_gru_matvec(gh + 2 * n, gh + n, n, recurrent + 2 * n, g, n, NULL);
#endif
    for (u = 0; u < n; u++) {
        const float z = gh[u];
        const float c = tanhf(gx[2 * n + u] + gh[2 * n + u]);
        h[u] = z * h[u] + (1.0f - z) * c;
    }
}

/* One dense layer: out[units] = activation(x @ kernel + bias). */
static void edge_gru_dense_layer(const edge_gru_layer *layer, const float *x, float *out)
{
    const int k = layer->units;
    const float *bias = edge_gru_vectors + layer->vector;
#if EDGE_GRU_INT8
    const float *scale = bias + k;
#else
    const float *scale = NULL;
#endif
    int j;
    edge_gru_matvec(out, x, layer->inputs, edge_gru_matrices + layer->matrix, k, k, scale);
    for (j = 0; j < k; j++) {
        const float v = out[j] + bias[j];
        switch (layer->flag) {
        case EDGE_GRU_ACT_RELU:
            out[j] = v > 0.0f ? v : 0.0f;
            break;
        case EDGE_GRU_ACT_TANH:
            out[j] = tanhf(v);
            break;
        case EDGE_GRU_ACT_SIGMOID:
            out[j] = edge_gru_sigmoid(v);
            break;
        default:
            out[j] = v;
            break;
        }
    }
}

void edge_gru_step(float *h, const float *z, float *y)
{
    float gx[EDGE_GRU_MAX_GATES];
    float gh[EDGE_GRU_MAX_GATES];
    float buf[2][EDGE_GRU_MAX_DENSE];
    const float *in = z;
    float *state = h;
    int n, side = 0;

    for (n = 0; n < EDGE_GRU_LAYERS; n++) {
        const edge_gru_layer *layer = &edge_gru_layers[n];
        if (layer->kind == EDGE_GRU_KIND_GRU) {
            edge_gru_gru_layer(layer, in, state, gx, gh);
            in = state; /* the next layer reads this layer's new state */
            state += layer->units;
        } else {
            edge_gru_dense_layer(layer, in, buf[side]);
            in = buf[side];
            side ^= 1;
        }
    }
    for (n = 0; n < EDGE_GRU_HORIZON; n++) {
        y[n] = in[n];
    }
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
    for (i = 0; i < EDGE_GRU_STATE_SIZE; i++) {
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

static void edge_gru_no_forecast(float *out)
{
    int k;
    for (k = 0; k < EDGE_GRU_HORIZON; k++) {
        out[k] = NAN;
    }
}

/* Normalize, step, and denormalize one accepted sample into out[EDGE_GRU_HORIZON]. */
static edge_gru_status edge_gru_accept(edge_gru_state *s, const float *x_raw, float *out)
{
    float z[EDGE_GRU_INPUTS];
    float y[EDGE_GRU_HORIZON];
    int ready, k;

    edge_gru_normalize(s, x_raw, z);
    if (s->count < UINT32_MAX) {
        s->count++;
    }
    ready = s->count >= (uint32_t)EDGE_GRU_WARMUP;
#if EDGE_GRU_WINDOW_MODE
    {
        /* Overwrite the oldest slot; each forecast runs the window from a zero state. */
        float h[EDGE_GRU_STATE_SIZE];
        int i;
        for (i = 0; i < EDGE_GRU_INPUTS; i++) {
            s->ring[s->head * EDGE_GRU_INPUTS + (uint32_t)i] = z[i];
        }
        s->head = (s->head + 1u) % (uint32_t)EDGE_GRU_WINDOW;
        if (ready) {
            for (i = 0; i < EDGE_GRU_STATE_SIZE; i++) {
                h[i] = 0.0f;
            }
            for (k = 0; k < EDGE_GRU_WINDOW; k++) {
                const uint32_t slot = (s->head + (uint32_t)k) % (uint32_t)EDGE_GRU_WINDOW;
                edge_gru_step(h, &s->ring[slot * EDGE_GRU_INPUTS], y);
            }
        }
    }
#else
    edge_gru_step(s->h, z, y);
#endif
    if (!ready) {
        edge_gru_no_forecast(out);
        return EDGE_GRU_STATUS_WARMUP;
    }
    for (k = 0; k < EDGE_GRU_HORIZON; k++) {
        out[k] = edge_gru_denormalize(s, y[k]);
    }
    return EDGE_GRU_STATUS_FORECAST;
}

edge_gru_status edge_gru_forecast(edge_gru_state *s, const float *x_raw, float *out)
{
    if (!edge_gru_finite_sample(x_raw)) {
        edge_gru_no_forecast(out);
        return EDGE_GRU_STATUS_NOT_FINITE;
    }
    return edge_gru_accept(s, x_raw, out);
}

float edge_gru_predict(edge_gru_state *s, const float *x_raw)
{
    float out[EDGE_GRU_HORIZON];
    edge_gru_forecast(s, x_raw, out);
    return out[0];
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

edge_gru_status edge_gru_forecast_ts(edge_gru_state *s, const float *x_raw, double ts, float *out)
{
    double dt;
    if (!edge_gru_finite_sample(x_raw) || !isfinite(ts)) {
        edge_gru_no_forecast(out);
        return EDGE_GRU_STATUS_NOT_FINITE;
    }
    if (ts == s->last_ts) {
        edge_gru_no_forecast(out);
        return EDGE_GRU_STATUS_DUPLICATE;
    }
    if (ts < s->last_ts) {
        edge_gru_no_forecast(out);
        return EDGE_GRU_STATUS_OUT_OF_ORDER;
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
    return edge_gru_accept(s, x_raw, out);
}

float edge_gru_predict_ts(edge_gru_state *s, const float *x_raw, double ts, edge_gru_status *status)
{
    float out[EDGE_GRU_HORIZON];
    const edge_gru_status st = edge_gru_forecast_ts(s, x_raw, ts, out);
    if (status != NULL) {
        *status = st;
    }
    return out[0];
}

double edge_gru_period(const edge_gru_state *s)
{
    return isfinite(s->period) ? s->period : 0.0;
}

/*
 * edge_gru_runtime.h - C99 runtime for an edge-gru forecaster (see edge_gru_model.h): any stack of
 * GRU layers followed by dense layers, whose last dense layer gives EDGE_GRU_HORIZON forecasts.
 *
 * No malloc, no global state: the caller owns one edge_gru_state per sensor stream and
 * passes it to every call, so any number of streams (or models, with different export
 * prefixes) can run side by side, from an interrupt-free main loop or an RTOS task.
 *
 * Forecasts equal the Python StreamPool's (edge_gru.pool) for the same readings: the same
 * normalization (fixed, or causal per stream), the same warm-up, the same window/stateful
 * mode, the same timestamp rules in edge_gru_predict_ts.
 *
 * Build option: -DEDGE_GRU_STATS_DOUBLE=0 keeps the causal normalization's running mean
 * and variance in float instead of double. On a Cortex-M4 (single-precision FPU only)
 * that avoids software double arithmetic in every sample, at the cost of precision on
 * series whose mean is large against their spread (see docs/firmware.md for measurements).
 */
#ifndef EDGE_GRU_RUNTIME_H
#define EDGE_GRU_RUNTIME_H

#include <stdint.h>

#include "edge_gru_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef EDGE_GRU_STATS_DOUBLE
#define EDGE_GRU_STATS_DOUBLE 1
#endif

#if EDGE_GRU_STATS_DOUBLE
typedef double edge_gru_stat;
#else
typedef float edge_gru_stat;
#endif

/* Intervals whose median becomes a stream's sample period when the bundle has none. */
#define EDGE_GRU_PERIOD_SAMPLES 5

/* What became of one reading (the same codes as edge_gru.Status in Python). */
typedef enum {
    EDGE_GRU_STATUS_FORECAST = 0,     /* accepted; the return value is a forecast */
    EDGE_GRU_STATUS_WARMUP = 1,       /* accepted into the state; no forecast yet (NAN) */
    EDGE_GRU_STATUS_NOT_FINITE = 2,   /* NaN/inf value or timestamp: dropped, state untouched */
    EDGE_GRU_STATUS_OUT_OF_ORDER = 3, /* timestamp older than the last one: dropped */
    EDGE_GRU_STATUS_DUPLICATE = 4     /* timestamp equal to the last one: dropped */
} edge_gru_status;

/* Everything one stream needs between samples. Plain data: copy it, or save it to flash. */
typedef struct {
#if EDGE_GRU_NORM_CAUSAL
    edge_gru_stat mean[EDGE_GRU_INPUTS]; /* causal normalization: EW mean per feature */
    edge_gru_stat var[EDGE_GRU_INPUTS];  /* causal normalization: EW variance per feature */
#endif
    double last_ts;                                /* last accepted timestamp, NAN if none */
    double period;                                 /* sample period (s) for gap resets, NAN if unknown */
    double intervals[EDGE_GRU_PERIOD_SAMPLES];     /* first intervals, to learn the period */
#if EDGE_GRU_WINDOW_MODE
    float ring[EDGE_GRU_WINDOW * EDGE_GRU_INPUTS]; /* last WINDOW normalized samples */
#else
    float h[EDGE_GRU_STATE_SIZE]; /* the GRU layers' hidden states, concatenated in layer order */
#endif
#if EDGE_GRU_NORM_CAUSAL
    float last; /* newest raw reading of the target: causal forecasts are changes from it */
#endif
    uint32_t head;        /* window mode: ring slot of the oldest sample */
    uint32_t count;       /* samples since the last (re)start, saturating */
    uint32_t norm_count;  /* samples seen by the causal normalization, saturating */
    uint32_t n_intervals; /* intervals collected while learning the period */
    uint32_t gap_resets;  /* restarts caused by a gap in the timestamps */
} edge_gru_state;

/* Start a new stream: clears the GRU state, the normalization statistics and the timestamps. */
void edge_gru_reset(edge_gru_state *s);

/* Restart the warm-up (hidden state or window) but keep the normalization statistics and the
 * learned period - what a gap in the timestamps does. */
void edge_gru_restart(edge_gru_state *s);

/* Feed one raw sample x_raw[EDGE_GRU_INPUTS] (all input features, raw units); writes the forecasts
 * of the target feature for the next EDGE_GRU_HORIZON samples, raw units, to out[EDGE_GRU_HORIZON]
 * and returns EDGE_GRU_STATUS_FORECAST; while the stream warms up (EDGE_GRU_STATUS_WARMUP) or when
 * the sample holds NaN/inf (EDGE_GRU_STATUS_NOT_FINITE, the state untouched) out is all NAN. */
edge_gru_status edge_gru_forecast(edge_gru_state *s, const float *x_raw, float *out);

/* Like edge_gru_forecast for a sample taken at time ts (seconds, e.g. epoch seconds): drops
 * non-finite, out-of-order and duplicate timestamps, and restarts the warm-up after a gap
 * longer than EDGE_GRU_GAP_FACTOR sample periods (the bundle's period, or the median of the
 * stream's first intervals). Returns what became of the reading. */
edge_gru_status edge_gru_forecast_ts(edge_gru_state *s, const float *x_raw, double ts, float *out);

/* The first forecast only (the next sample), or NAN: edge_gru_forecast's out[0]. */
float edge_gru_predict(edge_gru_state *s, const float *x_raw);

/* edge_gru_forecast_ts's out[0]; status (may be NULL) receives what became of the reading. */
float edge_gru_predict_ts(edge_gru_state *s, const float *x_raw, double ts, edge_gru_status *status);

/* The network alone, one step: normalized input z[EDGE_GRU_INPUTS], the stream's states
 * h[EDGE_GRU_STATE_SIZE] updated in place, normalized outputs y[EDGE_GRU_HORIZON]. */
void edge_gru_step(float *h, const float *z, float *y);

/* The two halves of edge_gru_forecast around the network, for running the step model some other
 * way (e.g. edge_gru_model_int8_tflite.c under TensorFlow Lite Micro, with inputs x_t = z and
 * h_prev). edge_gru_normalize observes x_raw (it updates the causal statistics) and writes the
 * network input z[EDGE_GRU_INPUTS]; edge_gru_denormalize turns one network output (any of the
 * EDGE_GRU_HORIZON) into raw units. */
void edge_gru_normalize(edge_gru_state *s, const float *x_raw, float *z);
float edge_gru_denormalize(const edge_gru_state *s, float y);

/* The sample period used for gap detection in seconds, or 0 while it is not known yet. */
double edge_gru_period(const edge_gru_state *s);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_GRU_RUNTIME_H */

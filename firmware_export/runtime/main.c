/*
 * main.c - example: forecast a sensor stream read from stdin with the exported model.
 *
 *   make && ./edge_gru_forecast < samples.txt
 *   ./edge_gru_forecast --ts < stamped.txt     first field of each line: time in seconds
 *   ./edge_gru_forecast --info                 model facts and the state size
 *
 * One sample per line: EDGE_GRU_INPUTS numbers separated by commas, semicolons, spaces or
 * tabs (an empty field between commas is a missing value). For every line it prints the
 * forecast of the next sample's target in raw units, or "nan" while the stream warms up or
 * when the line is not usable (a warning then goes to stderr). Blank lines and lines that
 * start with '#' are skipped. A model with EDGE_GRU_HORIZON > 1 prints that many forecasts per
 * line (the next samples, in order), separated by spaces.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_gru_runtime.h"

#define MAX_LINE 4096
#define MAX_FIELDS (EDGE_GRU_INPUTS + 1)

/* Split a line into numbers; returns the field count, or -1 when a field is not a number. */
static int parse_fields(const char *p, double *out, int max)
{
    int n = 0;
    int after_sep = 0;
    for (;;) {
        char *end;
        double v;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0' || *p == '\n' || *p == '\r') {
            if (after_sep) {
                if (n >= max) {
                    return max + 1;
                }
                out[n++] = NAN;
            }
            return n;
        }
        if (*p == ',' || *p == ';') { /* empty field */
            if (n >= max) {
                return max + 1;
            }
            out[n++] = NAN;
            after_sep = 1;
            p++;
            continue;
        }
        v = strtod(p, &end);
        if (end == p) {
            return -1;
        }
        if (n >= max) {
            return max + 1;
        }
        out[n++] = v;
        p = end;
        if (*p != ' ' && *p != '\t' && *p != ',' && *p != ';' && *p != '\0' && *p != '\n' && *p != '\r') {
            return -1; /* e.g. "12abc" */
        }
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        after_sep = (*p == ',' || *p == ';');
        if (after_sep) {
            p++;
        }
    }
}

static void print_forecast(const float *out)
{
    int k;
    for (k = 0; k < EDGE_GRU_HORIZON; k++) {
        if (k > 0) {
            putchar(' ');
        }
        if (isnan(out[k])) {
            fputs("nan", stdout);
        } else {
            printf("%.9g", (double)out[k]);
        }
    }
    putchar('\n');
}

int main(int argc, char **argv)
{
    static char line[MAX_LINE];
    edge_gru_state state;
    double fields[MAX_FIELDS];
    float x[EDGE_GRU_INPUTS];
    float out[EDGE_GRU_HORIZON];
    int with_ts = 0;
    int expected;
    unsigned long lineno = 0;
    unsigned long bad = 0;
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ts") == 0) {
            with_ts = 1;
        } else if (strcmp(argv[i], "--info") == 0) {
            printf("bundle %s\ninputs %d\nlayers %d\nstate_size %d\nhorizon %d\nwindow %d\nwindow_mode %d\n"
                   "int8 %d\nwarmup %d\nstate_bytes %lu\n",
                   EDGE_GRU_BUNDLE_ID, EDGE_GRU_INPUTS, EDGE_GRU_LAYERS, EDGE_GRU_STATE_SIZE, EDGE_GRU_HORIZON,
                   EDGE_GRU_WINDOW, EDGE_GRU_WINDOW_MODE, EDGE_GRU_INT8, EDGE_GRU_WARMUP,
                   (unsigned long)sizeof(edge_gru_state));
            return 0;
        } else {
            fprintf(stderr, "usage: %s [--ts] [--info] < samples\n", argv[0]);
            return 2;
        }
    }
    expected = EDGE_GRU_INPUTS + with_ts;
    setvbuf(stdout, NULL, _IOLBF, 0);
    edge_gru_reset(&state);

    while (fgets(line, sizeof line, stdin) != NULL) {
        const char *p = line;
        size_t len = strlen(line);
        int n;
        lineno++;
        if (len == sizeof line - 1 && line[len - 1] != '\n') { /* overlong line: skip the rest */
            int c;
            while ((c = getchar()) != EOF && c != '\n') {
            }
            n = -1;
        } else {
            while (*p == ' ' || *p == '\t') {
                p++;
            }
            if (*p == '\0' || *p == '\n' || *p == '\r' || *p == '#') {
                continue;
            }
            n = parse_fields(p, fields, MAX_FIELDS);
        }
        if (n != expected) {
            if (bad++ < 10) {
                fprintf(stderr, "line %lu: expected %d number(s)%s, got %s\n", lineno, expected,
                        with_ts ? " (timestamp first)" : "", n < 0 ? "text that is not a number" : "another count");
            }
            for (i = 0; i < EDGE_GRU_HORIZON; i++) {
                out[i] = NAN;
            }
            print_forecast(out);
            continue;
        }
        for (i = 0; i < EDGE_GRU_INPUTS; i++) {
            x[i] = (float)fields[i + with_ts];
        }
        if (with_ts) {
            edge_gru_forecast_ts(&state, x, fields[0], out);
        } else {
            edge_gru_forecast(&state, x, out);
        }
        print_forecast(out);
    }
    if (bad > 10) {
        fprintf(stderr, "%lu unusable line(s) in all\n", bad);
    }
    return 0;
}

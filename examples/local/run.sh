#!/usr/bin/env bash
# The daemon end to end on this machine, with the MQTT command-line clients a user would use:
# a private mosquitto, `edge-gru serve` with examples/local/edge-gru.toml, two sensors fed
# with mosquitto_pub, their forecasts read with mosquitto_sub and printed, then a clean stop.
#
#   bash examples/local/run.sh                    # port 1883, 30 readings per sensor
#   PORT=11883 READINGS=60 bash examples/local/run.sh
#
# Environment: PORT (broker port), READINGS (per sensor, >= 12: the default model warms up
# on the first 10), EDGE_GRU (the command, default .venv/bin/edge-gru, else edge-gru),
# STATE_DIR (default examples/local/state), MOSQUITTO (the broker binary), TIMEOUT_S
# (longest wait for any step, default 300: a first run on a Pi compiles the kernels).
# Every process it starts is stopped on exit; the exit status is 0 only when every reading
# past the warm-up got its forecast.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PORT:-1883}
readings=${READINGS:-30}
timeout_s=${TIMEOUT_S:-300}
state_dir=${STATE_DIR:-$here/state}
if [[ -n "${EDGE_GRU:-}" ]]; then
    read -r -a edge_gru <<<"$EDGE_GRU"
elif [[ -x "$root/.venv/bin/edge-gru" ]]; then
    edge_gru=("$root/.venv/bin/edge-gru")
else
    edge_gru=(edge-gru)
fi
mosquitto=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
for tool in "$mosquitto" mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install mosquitto mosquitto-clients)" >&2; exit 1; }
done
if (( readings < 12 )); then
    echo "run.sh: READINGS=$readings; the default model warms up on 10 readings, use 12 or more" >&2
    exit 2
fi

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if (( status != 0 )) && [[ -f "$work/daemon.log" ]]; then
        echo "--- daemon log ---" >&2; tail -n 30 "$work/daemon.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

daemon=
wait_for() {  # wait_for DESCRIPTION COMMAND...: retry COMMAND every 0.1 s for up to TIMEOUT_S
    local what=$1 deadline=$((SECONDS + timeout_s))
    shift
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$daemon" ]] && ! kill -0 "$daemon" 2>/dev/null; then
            echo "run.sh: the daemon exited while waiting for $what" >&2
            return 1
        fi
        if (( SECONDS >= deadline )); then echo "run.sh: no $what within $timeout_s s" >&2; return 1; fi
        sleep 0.1
    done
}

# 1. A private broker on loopback only.
if mosquitto_pub -p "$port" -t examples/local/probe -n 2>/dev/null; then
    echo "run.sh: a broker already listens on port $port; choose another with PORT=..." >&2
    exit 1
fi
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
"$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for "broker on port $port" mosquitto_pub -p "$port" -t examples/local/probe -n
kill -0 "${pids[0]}" 2>/dev/null || { echo "run.sh: mosquitto did not start:" >&2; cat "$work/mosquitto.log" >&2; exit 1; }
echo "broker     mosquitto on 127.0.0.1:$port" >&2

# 2. The daemon, from the config's own directory (its relative paths start there).
mkdir -p "$state_dir"
(cd "$here" && EDGE_GRU_MQTT_PORT=$port EDGE_GRU_STATE_DIR=$state_dir exec "${edge_gru[@]}" serve --config edge-gru.toml) \
    >"$work/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")
online() { [[ "$(mosquitto_sub -p "$port" -t edge-gru/edge-gru-local/status -C 1 -W 2)" == online ]]; }
wait_for "daemon online" online
echo "daemon     online: edge-gru serve --config examples/local/edge-gru.toml (backend ${EDGE_GRU_MODEL_BACKEND:-auto})" >&2

# 3. Read every forecast; make sure the subscription is in place before any reading is sent.
mosquitto_sub -p "$port" -v -t 'predictions/#' -t examples/local/ready >"$work/forecasts" &
pids+=($!)
ready() { mosquitto_pub -p "$port" -t examples/local/ready -m ready && grep -q '^examples/local/ready' "$work/forecasts"; }
wait_for "subscription" ready

# 4. Two sensors, one reading every 5 minutes of simulated time, as JSON with a timestamp.
t0=1732600000
feed() {  # feed STREAM BASE AMPLITUDE
    awk -v n="$readings" -v t0="$t0" -v base="$2" -v amp="$3" \
        'BEGIN { for (k = 0; k < n; k++) printf "{\"value\": %.3f, \"ts\": %d}\n", base + amp * sin(k / 4.0), t0 + 300 * k }' |
        mosquitto_pub -p "$port" -q 1 -t "sensors/$1/value" -l
}
feed kitchen_temperature 21 2
feed cellar_humidity 60 5
echo "sent       $readings readings to each of sensors/kitchen_temperature/value, sensors/cellar_humidity/value" >&2

# 5. Wait for the forecast of each sensor's last reading, then show them.
last_ts="$((t0 + 300 * (readings - 1))).0"
both() { (( $(grep -c "\"ts\":$last_ts," "$work/forecasts") >= 2 )); }
wait_for "forecast of the last readings" both
grep '^predictions/' "$work/forecasts"
echo "received   $(grep -c '^predictions/' "$work/forecasts") forecasts (none during each sensor's warm-up)" >&2

# 6. A clean stop: SIGTERM drains, checkpoints the streams' state, publishes offline, exits 0.
kill -TERM "$daemon"
wait "$daemon"
echo "stopped    exit 0; state in $state_dir/edge-gru-local.checkpoint.npz" >&2

#!/usr/bin/env bash
# The checks scripts/test-systemd runs inside the Debian VM, as root, with systemd as PID 1.
#   inside.sh PAYLOAD     PAYLOAD: the share from the host (src/, dist/, wheelhouse/, bundles/, checks/)
# Writes PAYLOAD/results/: checks.tsv (check, ok|FAIL, seconds, detail), figures.txt, journals,
# systemd-analyze security output. Every check runs even when an earlier one failed, as long as
# the service can still be started; a check that finds a broken promise says which and why.
set -uo pipefail

P=${1:?usage: inside.sh PAYLOAD}
RES=$P/results
mkdir -p "$RES"
CHECKS=$RES/checks.tsv
FIG=$RES/figures.txt
: >"$CHECKS"
: >"$FIG"
FAULT=$(cat "$P/fault" 2>/dev/null || true)
export HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

UNIT=edge-gru.service
CONF=/etc/edge-gru/edge-gru.toml
VENV=/opt/edge-gru/venv
PY=$VENV/bin/python
STATE=/var/lib/private/edge-gru      # where DynamicUser= keeps StateDirectory= (/var/lib/edge-gru links here)
PW=vm-check-password                  # every MQTT user's password in this throw-away VM
BROKER=(-h 127.0.0.1 -p 1883)
PERIOD=1800
BASE=$(($(date +%s) / PERIOD * PERIOD - 30 * 86400))   # readings dated in the recent past, half-hourly
CLIENT=edge-gru-node1

log() { printf '[inside %5ss] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }
figure() { printf '%s\n' "$*" | tee -a "$FIG"; }

# check NAME FUNCTION: run it, time it, record ok / FAIL and the function's last line of output
check() {
  local name=$1 fn=$2 t0 rc took out
  log "== $name"
  t0=$(date +%s.%N)
  out=$RES/check-$name.log
  ("$fn") >"$out" 2>&1
  rc=$?
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  sed 's/^/    /' "$out"
  local detail
  detail=$(grep -v '^+' "$out" | tail -1 | tr '\t' ' ')
  if [ "$rc" -eq 0 ]; then
    printf '%s\tok\t%s\t%s\n' "$name" "$took" "$detail" >>"$CHECKS"
    log "-- $name: ok in $took s"
  else
    printf '%s\tFAIL\t%s\t%s\n' "$name" "$took" "$detail" >>"$CHECKS"
    log "-- $name: FAIL in $took s"
  fi
  return "$rc"
}
fail() { echo "BROKEN: $*" >&2; exit 1; }

mainpid() { systemctl show -p MainPID --value "$UNIT"; }
nrestarts() { systemctl show -p NRestarts --value "$UNIT"; }
cursor() { journalctl -n 0 --show-cursor -q | sed -n 's/^-- cursor: //p'; }
# the unit's journal since CURSOR, whole (no grep -m1 on a pipe: journalctl's SIGPIPE fails it)
unit_journal() { local j; j=$(journalctl -u "$UNIT" --after-cursor "$1" -o cat -q); printf '%s\n' "$j"; }
# wait_journal CURSOR SECONDS PATTERN...: the first of the daemon's lines since CURSOR matching a pattern
wait_journal() {
  local cur=$1 secs=$2 end line
  shift 2
  end=$(($(date +%s) + secs))
  while [ "$(date +%s)" -lt "$end" ]; do
    for pat in "$@"; do
      line=$(unit_journal "$cur" | grep -E "$pat" | head -1 || true)
      if [ -n "$line" ]; then echo "$line"; return 0; fi
    done
    sleep 0.5
  done
  return 1
}
# wait_active OLDPID SECONDS: until the unit is active with a main PID other than OLDPID
wait_restarted() {
  local old=$1 secs=$2 end pid
  end=$(($(date +%s) + secs))
  while [ "$(date +%s)" -lt "$end" ]; do
    pid=$(mainpid)
    if [ "$(systemctl is-active "$UNIT")" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$old" ]; then
      echo "$pid"
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# forecasts STREAM BUNDLE START COUNT [--restored]: send readings START.. of STREAM as that sensor,
# collect the forecasts as the dashboard, compare them with the reference pool of BUNDLE
forecasts() {
  local stream=$1 bundle=$2 start=$3 count=$4 restored=${5:-} sub got=$RES/sub-$1-$3.txt readings
  readings=$(mktemp)
  "$PY" -I "$P/checks/vmcheck.py" readings --base "$BASE" --period "$PERIOD" --start "$start" --count "$count" >"$readings"
  # the retained status is "offline" (the last will) until a restarted daemon is connected again
  local end=$(($(date +%s) + 30)) status=""
  until [ "$status" = online ] || [ "$(date +%s)" -ge "$end" ]; do
    status=$(mosquitto_sub "${BROKER[@]}" -u dashboard -P "$PW" -C 1 -W 5 -t "edge-gru/$CLIENT/status" 2>/dev/null || true)
    [ "$status" = online ] || sleep 0.5
  done
  local want
  want=$("$PY" -I "$P/checks/vmcheck.py" count --bundle "$bundle" --stream "$stream" \
    --base "$BASE" --period "$PERIOD" --start "$start" --count "$count")
  : >"$got"
  # The daemon's retained status arrives first: once it is there, the subscription is live.
  mosquitto_sub "${BROKER[@]}" -u dashboard -P "$PW" -q 1 -v -W 120 -C $((want + 1)) \
    -t "edge-gru/$CLIENT/status" -t "predictions/$stream" >"$got" &
  sub=$!
  end=$(($(date +%s) + 20))
  until [ -s "$got" ] || [ "$(date +%s)" -ge "$end" ]; do sleep 0.2; done
  [ -s "$got" ] || { kill "$sub" 2>/dev/null; fail "no retained status from edge-gru/$CLIENT/status within 20 s"; }
  grep -q "^edge-gru/$CLIENT/status online" "$got" || { kill "$sub" 2>/dev/null; fail "status is not online: $(head -1 "$got")"; }
  mosquitto_pub "${BROKER[@]}" -u "$stream" -P "$PW" -q 1 -t "sensors/$stream/value" -l <"$readings"
  # it exits after the status line and WANT forecasts, or after 120 s of silence (-W)
  wait "$sub" 2>/dev/null
  rm -f "$readings"
  # shellcheck disable=SC2086  # restored is empty or one flag
  "$PY" -I "$P/checks/vmcheck.py" expect --bundle "$bundle" --stream "$stream" --received "$got" \
    --base "$BASE" --period "$PERIOD" --start "$start" --count "$count" $restored
}

# ------------------------------------------------------------------------------------ checks
c_install() {
  set -e
  local whl
  whl=$(ls "$P"/dist/edge_gru-*.whl)
  bash "$P/src/deploy/install.sh" --wheel "$whl" --pip-args "--no-index --find-links $P/wheelhouse"
  "$VENV/bin/edge-gru" --version
  systemctl cat "$UNIT" >/dev/null
  if [ "$FAULT" = no-watchdog ]; then
    echo "PLANTED FAULT no-watchdog: WatchdogSec= removed from the installed unit"
    sed -i '/^WatchdogSec=/d' /etc/systemd/system/$UNIT
    systemctl daemon-reload
  fi
  echo "installed $("$VENV/bin/edge-gru" --version), kernels: $(find /var/cache/edge-gru -maxdepth 1 -mindepth 1 -printf '%f ')"
}

c_broker() {
  set -e
  local m=$P/src/deploy/mosquitto user
  bash "$m/make-certs.sh" --out /etc/mosquitto/certs --host localhost --ip 127.0.0.1 --owner mosquitto
  install -m 640 -o root -g mosquitto /dev/null /etc/mosquitto/edge-gru.passwd
  for user in edge-gru dashboard boiler kettle fridge tank; do
    mosquitto_passwd -b /etc/mosquitto/edge-gru.passwd "$user" "$PW"
  done
  install -m 644 "$m/edge-gru.acl" /etc/mosquitto/edge-gru.acl
  install -m 644 "$m/edge-gru.conf" /etc/mosquitto/conf.d/edge-gru.conf
  systemctl restart mosquitto
  systemctl is-active mosquitto
  # the config as shipped refuses anonymous clients
  if mosquitto_pub "${BROKER[@]}" -t sensors/boiler/value -m 1 -q 1 2>/dev/null; then
    fail "the broker accepted an anonymous client"
  fi
  echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') with deploy/mosquitto/edge-gru.conf: active, anonymous refused"
}

c_configure() {
  set -e
  # As docs/deployment.md says: the daemon's password as a systemd credential, in a drop-in.
  (umask 077; printf '%s' "$PW" >/etc/edge-gru/mqtt-password)
  mkdir -p /etc/systemd/system/$UNIT.d
  printf '[Service]\nLoadCredential=mqtt-password:/etc/edge-gru/mqtt-password\n' \
    >/etc/systemd/system/$UNIT.d/credential.conf
  sed -i -e 's|^# username = "edge-gru".*|username = "edge-gru"|' \
    -e 's|^# password_file = .*|password_file = "/run/credentials/edge-gru.service/mqtt-password"|' \
    -e 's|^checkpoint_interval_s = 30 |checkpoint_interval_s = 5  |' "$CONF"
  if ! grep -q '^username = "edge-gru"' "$CONF" || ! grep -q '^password_file = "/run/credentials/' "$CONF" \
    || ! grep -q '^checkpoint_interval_s = 5 ' "$CONF"; then
    fail "could not edit $CONF (has the example changed?)"
  fi
  systemctl daemon-reload
  echo "config: username edge-gru, password as the credential mqtt-password, checkpoint every 5 s"
}

c_start() {
  set -e
  local t0 t1 timeout pid
  t0=$(date +%s.%N)
  systemctl enable --now "$UNIT"   # Type=notify: returns once the daemon sent READY=1
  t1=$(date +%s.%N)
  systemctl is-active "$UNIT"
  pid=$(mainpid)
  timeout=$(systemctl show -p TimeoutStartUSec --value "$UNIT")
  local ready
  ready=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  journalctl -u "$UNIT" -o cat -q >"$RES/.start-journal"
  grep 'event=ready' "$RES/.start-journal" | head -1 || true
  grep -q 'event=ready' "$RES/.start-journal" || fail "no event=ready in the journal"
  rm -f "$RES/.start-journal"
  figure "start to READY=1 (systemctl enable --now): $ready s (TimeoutStartSec=$timeout)"
  figure "daemon RSS after READY: $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status")"
  echo "active, READY after $ready s (limit $timeout), main PID $pid"
}

c_forecasts() {
  forecasts boiler /opt/edge-gru/models/default 0 40
}

bundle_id() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1] + "/manifest.json"))["id"])' "$1"; }
serving_bundle() { sed -n 's|^path = "\(.*\)"|\1|p' "$CONF"; }

c_reload() {
  set -e
  local cur line new=/opt/edge-gru/models/trained id old
  # A bundle trained on the desktop with `edge-gru train`, copied in as a user would.
  rm -rf "$new"
  cp -r "$P/bundles/trained" "$new"
  if [ "$FAULT" = bundle-0600 ]; then
    echo "PLANTED FAULT bundle-0600: the copied bundle's files made 0600"
    chmod 0600 "$new"/*
  fi
  echo "copied with cp -r: $(stat -c '%A %U %n' "$new"/* | tr '\n' ';')"
  id=$(bundle_id "$new")
  old=$(serving_bundle)
  sed -i "s|^path = \"[^\"]*\"|path = \"$new\"|" "$CONF"
  cur=$(cursor)
  systemctl reload "$UNIT"
  line=$(wait_journal "$cur" 60 'event=model_reloaded' 'event=reload_refused') || fail "no reload event within 60 s"
  echo "$line"
  systemctl is-active "$UNIT"
  if [[ "$line" == *event=reload_refused* ]]; then
    sed -i "s|^path = \"[^\"]*\"|path = \"$old\"|" "$CONF"   # so that the restarts below start
    if stat -c '%a' "$new"/* | grep -qv '[4-7]$'; then
      fail "the service refused a bundle whose files others cannot read ($(stat -c '%a' "$new"/manifest.json)): DynamicUser= runs it as a user who cannot read them"
    fi
    fail "the service refused the new bundle"
  fi
  [[ "$line" == *"new=$id"* ]] || fail "reloaded something other than $id"
  forecasts kettle "$new" 0 20
}

c_reload_corrupt() {
  set -e
  local cur line bad=/opt/edge-gru/models/damaged serving good
  good=$(serving_bundle)      # the bundle in use now (the new one when the reload above worked)
  serving=$(bundle_id "$good")
  rm -rf "$bad"
  cp -r "$P/bundles/trained" "$bad"
  chmod -R a+rX "$bad"   # readable: what gets refused must be the damage, not the file modes
  # a transfer cut short: half of weights.npz
  local size
  size=$(stat -c %s "$bad/weights.npz")
  truncate -s $((size / 2)) "$bad/weights.npz"
  sed -i "s|^path = \"[^\"]*\"|path = \"$bad\"|" "$CONF"
  cur=$(cursor)
  systemctl reload "$UNIT"
  line=$(wait_journal "$cur" 60 'event=model_reloaded' 'event=reload_refused') || fail "no reload event within 60 s"
  echo "$line"
  # put the config back before anything restarts the service (it would refuse to start: exit 78)
  sed -i "s|^path = \"[^\"]*\"|path = \"$good\"|" "$CONF"
  [[ "$line" == *event=reload_refused* ]] || fail "a truncated bundle was accepted"
  [[ "$line" != *"Permission denied"* ]] || fail "refused for its file modes, not for the damage"
  [[ "$line" == *"model=$serving"* ]] || fail "after the refusal the serving model is not $serving"
  systemctl is-active "$UNIT"
  forecasts fridge "$good" 0 20
  echo "refused, still active, $serving keeps serving"
}

c_kill9() {
  set -e
  local bundle pid new before ckpt cur
  bundle=$(serving_bundle)
  ckpt=$STATE/$CLIENT.checkpoint.npz
  local t_sent
  t_sent=$(date +%s)
  forecasts tank "$bundle" 0 30
  # Every forecast is back, so every reading is in the pool; the next periodic checkpoint
  # (every 5 s here) saves it: wait a little longer than that.
  sleep 8
  [ -f "$ckpt" ] || fail "no checkpoint $ckpt"
  [ "$(stat -c %Y "$ckpt")" -ge "$t_sent" ] || fail "$ckpt was not written since the readings were sent"
  echo "checkpoint $(stat -c '%s bytes, owner %U, mode %a, written %y' "$ckpt")"
  pid=$(mainpid)
  before=$(nrestarts)
  cur=$(cursor)
  local t0
  t0=$(date +%s.%N)
  kill -9 "$pid"
  new=$(wait_restarted "$pid" 120) || fail "not active again with a new PID within 120 s of kill -9 $pid"
  local took
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$(nrestarts)" -gt "$before" ] || fail "NRestarts did not grow: not a restart by systemd"
  unit_journal "$cur" | grep -E 'status=9/KILL|Scheduled restart' || fail "the journal does not show the kill and the restart"
  wait_journal "$cur" 5 'event=checkpoint_restored' || fail "no event=checkpoint_restored after the restart"
  figure "kill -9 to active again (RestartSec=5): $took s"
  forecasts tank "$bundle" 30 15 --restored
  echo "killed $pid, systemd restarted it as $new after $took s, tank's state carried over"
}

c_watchdog() {
  set -e
  local pid new before cur t0 took wd
  wd=$(systemctl show -p WatchdogUSec --value "$UNIT")
  echo "WatchdogUSec=$wd"
  pid=$(mainpid)
  before=$(nrestarts)
  cur=$(cursor)
  t0=$(date +%s.%N)
  kill -STOP "$pid"   # the whole daemon, worker included, hangs: no more WATCHDOG=1
  new=$(wait_restarted "$pid" 150) || {
    kill -CONT "$pid" 2>/dev/null || true
    fail "a daemon stalled with SIGSTOP was not restarted within 150 s (WatchdogUSec=$wd)"
  }
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$(nrestarts)" -gt "$before" ] || fail "NRestarts did not grow"
  unit_journal "$cur" | grep -i -E 'watchdog timeout|result .watchdog.' \
    || fail "restarted, but the journal names no watchdog timeout"
  figure "SIGSTOP to active again (WatchdogSec=$wd): $took s"
  echo "stalled $pid; the watchdog killed it and systemd restarted it as $new after $took s"
}

PROBE=/usr/local/libexec/edge-gru-sandbox-probe
c_sandbox() {
  set -e
  local pid st
  pid=$(mainpid)
  st=/proc/$pid/status
  # the running daemon itself
  local uid caps nnp seccomp
  uid=$(awk '/^Uid:/ {print $2}' "$st")
  caps=$(awk '/^CapEff:/ {print $2}' "$st")
  nnp=$(awk '/^NoNewPrivs:/ {print $2}' "$st")
  seccomp=$(awk '/^Seccomp:/ {print $2}' "$st")
  echo "daemon PID $pid: uid $uid, CapEff $caps, NoNewPrivs $nnp, Seccomp $seccomp"
  [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || fail "the daemon runs as uid $uid, not a DynamicUser= uid (61184-65519)"
  [ "$caps" = 0000000000000000 ] || fail "the daemon has capabilities $caps"
  [ "$nnp" = 1 ] && [ "$seccomp" = 2 ] || fail "NoNewPrivs=$nnp Seccomp=$seccomp"
  # its mount namespace: which directories are read-only mounts there (even root cannot write);
  # the others are closed to the service by their ownership alone (root, 0755)
  local d out bad=0 ro="" rw=""
  for d in / /etc /etc/edge-gru /opt/edge-gru /opt/edge-gru/models /usr /var /var/lib /root /home /srv /run; do
    if nsenter -t "$pid" -m -- sh -c "touch '$d/.edge-gru-probe' && rm -f '$d/.edge-gru-probe'" 2>/dev/null; then
      rw="$rw $d"
    else
      ro="$ro $d"
    fi
  done
  echo "in the daemon's mount namespace, read-only even for root:$ro; writable by root only:$rw"
  figure "sandbox: read-only mounts for the daemon:$ro; root-owned but not read-only mounts:$rw"
  for d in /var/lib/edge-gru /var/cache/edge-gru; do
    nsenter -t "$pid" -m -- sh -c "touch '$d/.edge-gru-probe' && rm -f '$d/.edge-gru-probe'" \
      || { echo "root in the daemon's mount namespace cannot write to $d"; bad=1; }
  done
  # and as the service itself: a probe run by the unit (ExecStartPost=, same user, same sandbox)
  mkdir -p "$(dirname "$PROBE")"
  cat >"$PROBE" <<'EOF'
#!/bin/sh
# Runs as the edge-gru service (ExecStartPost=): where can it create a file?
out=/var/lib/edge-gru/sandbox-probe.txt
: >"$out"
for d in / /etc /etc/edge-gru /opt/edge-gru /opt/edge-gru/models/default /usr /usr/local /var /var/lib /var/log \
         /var/spool /root /home /srv /run /run/systemd /dev/shm /tmp /var/tmp /var/lib/edge-gru /var/cache/edge-gru; do
  if (: >"$d/.edge-gru-probe-$$") 2>/dev/null; then echo "writable $d" >>"$out"; else echo "denied $d" >>"$out"; fi
done
id -u >>"$out"
exit 0
EOF
  chmod 755 "$PROBE"
  mkdir -p /etc/systemd/system/$UNIT.d
  printf '[Service]\nExecStartPost=%s\n' "$PROBE" >/etc/systemd/system/$UNIT.d/zz-sandbox-probe.conf
  systemctl daemon-reload
  systemctl restart "$UNIT"
  rm -f /etc/systemd/system/$UNIT.d/zz-sandbox-probe.conf
  systemctl daemon-reload
  out=$STATE/sandbox-probe.txt
  [ -s "$out" ] || fail "the probe left no $out"
  cat "$out"
  local allowed=" /var/lib/edge-gru /var/cache/edge-gru /tmp /var/tmp /dev/shm "
  while read -r what d; do
    [ "$what" = writable ] || continue
    [[ "$allowed" == *" $d "* ]] || { echo "the service could write to $d"; bad=1; }
  done <"$out"
  if ! grep -qx 'writable /var/lib/edge-gru' "$out" || ! grep -qx 'writable /var/cache/edge-gru' "$out"; then
    echo "the service cannot write its own state or cache directory"
    bad=1
  fi
  # /tmp and /var/tmp were its private ones: nothing it wrote is in the real ones. /dev/shm is
  # shared (PrivateDevices= keeps it), but RemoveIPC= deletes the user's files there at stop (c_stop).
  local leaked
  leaked=$(find / -xdev \( -path /proc -o -path /mnt -o -path '/tmp/systemd-private-*' -o -path /var/lib/private/edge-gru \
    -o -path /var/cache/private/edge-gru -o -path '/var/tmp/systemd-private-*' \) -prune -o -name '.edge-gru-probe-*' -print 2>/dev/null)
  if [ -n "$leaked" ]; then echo "files the service wrote outside its directories: $leaked"; bad=1; fi
  find /var/lib/private/edge-gru /var/cache/private/edge-gru -name '.edge-gru-probe-*' -delete
  [ "$bad" = 0 ] || fail "the sandbox let the service write outside its state and cache directories (above)"
  echo "uid $uid, no capabilities, seccomp; writes only to /var/lib/edge-gru, /var/cache/edge-gru and its private /tmp, /var/tmp, /dev/shm"
}

c_security() {
  set -e
  systemd-analyze security "$UNIT" --no-pager >"$RES/systemd-analyze-security.txt" 2>&1 || true
  local line score
  line=$(grep -m1 'Overall exposure level' "$RES/systemd-analyze-security.txt") || fail "no exposure level in systemd-analyze security"
  score=$(echo "$line" | grep -oE '[0-9]+\.[0-9]+' | head -1)
  figure "systemd-analyze security edge-gru: $score (${line##*: })"
  awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score is above 2.0"
  echo "$line"
}

c_stop() {
  set -e
  local cur t0 took result status
  local end=$(($(date +%s) + 120))
  until [ "$(systemctl is-active "$UNIT")" = active ]; do
    [ "$(date +%s)" -lt "$end" ] || fail "the service is not active to be stopped: $(systemctl is-active "$UNIT")"
    sleep 1
  done
  sleep 2   # its signal handlers are installed before READY; give the worker a moment
  cur=$(cursor)
  t0=$(date +%s.%N)
  systemctl stop "$UNIT"
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  result=$(systemctl show -p Result --value "$UNIT")
  status=$(systemctl show -p ExecMainStatus --value "$UNIT")
  unit_journal "$cur" | grep -E 'event=(stopping|stopped)'
  [ "$result" = success ] && [ "$status" = 0 ] || fail "systemctl stop: Result=$result, exit status $status"
  local shm
  shm=$(find /dev/shm -name '.edge-gru-probe-*' 2>/dev/null)
  [ -z "$shm" ] || fail "after the stop the service's files are still in /dev/shm (RemoveIPC=): $shm"
  figure "systemctl stop: $took s"
  echo "stopped cleanly in $took s (Result=success, exit 0)"
}

c_journal() {
  set -e
  journalctl -u "$UNIT" -o json -q >"$RES/journal-edge-gru.json"
  journalctl -u "$UNIT" -o short-iso-precise -q >"$RES/journal-edge-gru.txt"
  "$PY" -I "$P/checks/vmcheck.py" logfmt --journal "$RES/journal-edge-gru.json" \
    --require starting,mqtt_subscribed,ready,reload_refused,checkpoint_restored,stopping,stopped
}

# ------------------------------------------------------------------------------------ run
log "systemd $(systemctl --version | head -1 | awk '{print $2}'), kernel $(uname -r), $(nproc) CPU, $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo)"
[ -z "$FAULT" ] || log "planted fault: $FAULT"
figure "boot to checks: $(cut -d' ' -f1 /proc/uptime) s (VM uptime)"
check install c_install || { log "install failed: nothing else can run"; exit 1; }
check broker c_broker || true
check configure c_configure || true
check start c_start || { journalctl -u "$UNIT" -q --no-pager | tail -40; exit 1; }
check forecasts c_forecasts || true
check reload c_reload || true
check reload-corrupt c_reload_corrupt || true
check kill-9 c_kill9 || true
check watchdog c_watchdog || true
check sandbox c_sandbox || true
check security c_security || true
check stop c_stop || true
check journal c_journal || true
journalctl -b -o short-iso-precise -q >"$RES/journal-boot.txt"
log "done"

#!/bin/bash
# sync_plutus.sh: one `plutus-sync sync` pass for sites that keep cron instead of
# the service. Installed by the .deb as /usr/share/plutus-sync/sync_plutus.sh.
#
# Every 5 minutes as the service's user, in /etc/cron.d/plutus-sync:
#
#   */5 * * * * plutus-sync /usr/share/plutus-sync/sync_plutus.sh -c /etc/plutus-sync/config.toml
#
# What it adds to `plutus-sync sync`:
#   * a lock (flock(1) on --lock): two passes never overlap. A pass that finds the
#     lock held logs "skipped" and exits 0 at once, or waits up to --wait SECONDS.
#     The lock is held by an open file descriptor that plutus-sync inherits, so it
#     holds for as long as the pass runs, even if this script is killed.
#   * timestamped log lines: appended to --log FILE, or sent to syslog (tag
#     sync_plutus) without it: the pass's summary and every line it logs.
#   * the exit code of `plutus-sync sync`, passed through: 0 everything found was
#     archived; 1 something was left (failed, quarantined, not finished, destination
#     down); 2 an error; 3 refused because the service runs on the same config.
#     The script's own errors (bad arguments, a lock file it cannot open, no
#     binary) exit 2.
#
# Refusing while the service runs is plutus-sync's own check, not a guess made
# here: `sync` asks the control socket named by the config, which only a running
# `plutus-sync run` of that config answers, and exits 3 naming its pid. The
# journal's lock backs it up for any other holder. `systemctl is-active` was not
# used: it knows a unit, not a journal (a service on another config would stop cron
# for nothing, one started by hand or in a container would be missed).
#
# Environment: PLUTUS_SYNC_BIN (default /usr/bin/plutus-sync); PLUTUS_SYNC_CONFIG
# as plutus-sync reads it, when -c is not given.

set -u

usage() {
  cat <<'USAGE'
usage: sync_plutus.sh [-c FILE] [--log FILE] [--lock FILE] [--wait SECONDS]
  -c, --config FILE  the config (default: $PLUTUS_SYNC_CONFIG, else /etc/plutus-sync/config.toml)
  --log FILE         append timestamped lines to FILE (default: syslog, tag sync_plutus)
  --lock FILE        the lock that keeps passes apart (default: /run/lock/plutus-sync-cron.lock)
  --wait SECONDS     wait up to SECONDS for a running pass to end (default: 0, skip at once)
USAGE
}

bin=${PLUTUS_SYNC_BIN:-/usr/bin/plutus-sync}
config=()
log_file=
lock=/run/lock/plutus-sync-cron.lock
wait=0

# One line with a UTC timestamp and the pid of this pass, to the file or to syslog.
log() {
  local level=$1
  shift
  if [[ -n $log_file ]]; then
    printf '%s sync_plutus[%d] %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$level" "$*" >>"$log_file"
  else
    logger -t sync_plutus --id=$$ -p "user.$level" -- "$*"
  fi
}

die() {
  echo "sync_plutus.sh: $*" >&2
  exit 2
}

while (($#)); do
  case $1 in
    -c | --config)
      (($# >= 2)) || die "$1 needs a file"
      config=(-c "$2")
      shift 2
      ;;
    --log)
      (($# >= 2)) || die "--log needs a file"
      log_file=$2
      shift 2
      ;;
    --lock)
      (($# >= 2)) || die "--lock needs a file"
      lock=$2
      shift 2
      ;;
    --wait)
      (($# >= 2)) && [[ $2 =~ ^[0-9]+$ ]] || die "--wait needs a number of seconds"
      wait=$2
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
done

if [[ -n $log_file ]]; then
  { : >>"$log_file"; } 2>/dev/null || die "$log_file: cannot append to the log file"
fi
[[ -x $bin ]] || die "$bin: no plutus-sync binary here (set PLUTUS_SYNC_BIN)"

# Opened read-only, so a lock file another user created (root, once, by hand) still
# locks: flock needs no write access. Created only when missing.
if [[ ! -e $lock ]]; then
  { : >>"$lock"; } 2>/dev/null || die "$lock: cannot create the lock file (choose another with --lock)"
fi
exec 9<"$lock" || die "$lock: cannot open the lock file"

if ! flock -n 9; then
  if ((wait == 0)); then
    log notice "another pass holds $lock; skipped"
    exit 0
  fi
  log notice "another pass holds $lock; waiting up to ${wait}s"
  if ! flock -w "$wait" 9; then
    log notice "another pass still holds $lock after ${wait}s; skipped"
    exit 0
  fi
fi

log info "pass started: $bin sync ${config[*]}"
# stdout (the summary) and stderr (the log lines) both go to the log, line by line.
"$bin" sync "${config[@]}" 2>&1 | while IFS= read -r line; do log info "$line"; done
rc=${PIPESTATUS[0]}
case $rc in
  0) log info "pass ended: exit 0, everything found was archived" ;;
  1) log warning "pass ended: exit 1, something was left (see the summary above; plutus-sync journal list --state failed)" ;;
  3) log err "pass refused: exit 3, the service runs on this config; remove this cron line or stop the service" ;;
  *) log err "pass ended: exit $rc, an error (see above)" ;;
esac
exit "$rc"

#!/usr/bin/env bash
# Check the monitoring files against each other and against the service as it runs:
#
#   1. promtool check rules + promtool test rules (skipped, and said so, without promtool);
#   2. the dashboard is well-formed JSON, panel ids are unique, panels do not overlap,
#      every query names the ${DS_PROMETHEUS} datasource input;
#   3. every plutus_sync_* name used by the rules, their tests and the dashboard's queries
#      is one the running service exposes. The service is started for real with a
#      file:// destination and [metrics] listen on a free loopback port, delivers one
#      file, and is scraped with curl.
#
# Usage: packaging/monitoring/check.sh
#   PLUTUS_SYNC_BIN=path  use this binary instead of running `cargo build` and taking
#                         target/debug/plutus-sync
# Needs: bash, python3, curl; promtool (Debian package `prometheus`) for step 1.
# Exit status 0 when every check passed, 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
rules=$here/plutus-sync.rules.yml
tests=$here/plutus-sync.rules.test.yml
dash=$here/grafana-dashboard.json
failed=0
fail() { echo "FAIL  $*"; failed=1; }
ok() { echo "OK    $*"; }

# --- 1. promtool ------------------------------------------------------------------------
if command -v promtool >/dev/null; then
    if out=$(promtool check rules "$rules" 2>&1); then ok "promtool check rules"; else fail "promtool check rules"; echo "$out"; fi
    # promtool resolves rule_files relative to the test file's folder.
    if out=$(cd "$here" && promtool test rules "$tests" 2>&1); then ok "promtool test rules"; else fail "promtool test rules"; echo "$out"; fi
else
    echo "SKIP  promtool not found (apt-get install prometheus): rules not checked"
fi

# --- 2. dashboard structure ---------------------------------------------------------------
# Also writes the metric names the dashboard's queries use, one a line, for step 3.
# Only queries count: the panel descriptions may name a histogram by its family name.
workdir=$(mktemp -d)
pid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$workdir"
}
trap cleanup EXIT

if python3 - "$dash" >"$workdir/dash-names" 2>"$workdir/dash-err" <<'EOF'
import json, re, sys
d = json.load(open(sys.argv[1]))
errors, names, ids, boxes = [], set(), set(), []
if "DS_PROMETHEUS" not in [i.get("name") for i in d.get("__inputs", [])]:
    errors.append("no DS_PROMETHEUS in __inputs")
for p in d["panels"]:
    if p["id"] in ids:
        errors.append(f"panel id {p['id']} used twice")
    ids.add(p["id"])
    g = p["gridPos"]
    for (t, o) in boxes:
        if g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]:
            errors.append(f"panel {p['title']!r} overlaps {t!r}")
    boxes.append((p["title"], g))
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            errors.append(f"panel {p['title']!r} target {t['refId']} does not use ${{DS_PROMETHEUS}}")
        names.update(re.findall(r"plutus_sync_[a-z_]+", t["expr"]))
for v in d["templating"]["list"]:
    names.update(re.findall(r"plutus_sync_[a-z_]+", v.get("definition", "")))
for e in errors:
    print(e, file=sys.stderr)
print("\n".join(sorted(names)))
sys.exit(1 if errors else 0)
EOF
then
    ok "dashboard: well-formed JSON, unique panel ids, no overlap, every query on \${DS_PROMETHEUS}"
else
    fail "dashboard:"; sed 's/^/      /' "$workdir/dash-err"
fi

# --- 3. names against a running service -----------------------------------------------------
if [[ -n ${PLUTUS_SYNC_BIN:-} ]]; then
    bin=$PLUTUS_SYNC_BIN
else
    (cd "$repo" && cargo build --quiet)
    bin=$repo/target/debug/plutus-sync
fi
# A free loopback port: bind port 0 and read back what the kernel chose.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
d=$workdir/svc
mkdir -p "$d"/{outbox,archive,quarantine,inbox,backup-inbox}
# The demo's settings (see config::demo), plus the metrics endpoint: --demo takes no extra keys.
cat >"$d/config.toml" <<EOF
[source]
outbox = "outbox"
archive = "archive"
quarantine = "quarantine"
settle = "500ms"
[journal]
path = "journal"
[destination]
url = "file://$d/inbox"
# A backup, so that the failover series (exposed only with one) are checked too.
[destination.backup]
url = "file://$d/backup-inbox"
[metrics]
listen = "127.0.0.1:$port"
EOF
"$bin" run -c "$d/config.toml" 2>"$d/run.log" &
pid=$!

# Poll, never a fixed sleep: the endpoint is up once it answers.
scrape() { curl -fsS --max-time 2 "http://127.0.0.1:$port/metrics"; }
deadline=$((SECONDS + 30))
until scrape >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
        fail "service: no metrics on 127.0.0.1:$port; its log:"; sed 's/^/      /' "$d/run.log"; exit 1
    fi
    sleep 0.2
done
# One real delivery, so that the counters and histograms have moved when they are read.
printf '{"order":"check-1","lines":[]}\n' >"$d/outbox/.check-1.json.tmp"
mv "$d/outbox/.check-1.json.tmp" "$d/outbox/check-1.json"
deadline=$((SECONDS + 30))
until [[ -n $(find "$d/archive" -type f -name check-1.json) ]]; do
    if ((SECONDS > deadline)); then fail "service: check-1.json not archived within 30 s; its log:"; sed 's/^/      /' "$d/run.log"; exit 1; fi
    sleep 0.2
done
scrape >"$workdir/metrics.txt"
kill "$pid"; wait "$pid" || true; pid=
# Sample names, and the family names from `# TYPE` lines (a histogram's own name).
grep -v '^#' "$workdir/metrics.txt" | sed -E 's/[{ ].*//' | sort -u >"$workdir/exposed"
if grep -qE '^plutus_sync_deliveries_total 1$' "$workdir/metrics.txt"; then
    ok "service: delivered one file, plutus_sync_deliveries_total 1, $(wc -l <"$workdir/exposed") names exposed"
else
    fail "service: plutus_sync_deliveries_total is not 1 after one delivery"
fi

{
    cat "$rules" "$tests" | grep -v '^\s*#' | grep -oE 'plutus_sync_[a-z_]+' || true
    cat "$workdir/dash-names"
} | sort -u >"$workdir/used"
missing=$(comm -23 "$workdir/used" "$workdir/exposed")
if [[ -z $missing ]]; then
    ok "names: all $(wc -l <"$workdir/used") plutus_sync_* names used by the rules, tests and dashboard are exposed"
else
    fail "names used but not exposed by the service:"; while read -r n; do echo "      $n"; done <<<"$missing"
fi
# Not an error: a metric nobody watches yet.
unused=$(comm -13 "$workdir/used" "$workdir/exposed" | grep -vE '_(bucket|sum|count)$' | grep -v '^plutus_sync_files$' || true)
[[ -z $unused ]] || echo "NOTE  exposed but used nowhere here: $(tr '\n' ' ' <<<"$unused")"
exit "$failed"

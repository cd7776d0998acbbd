#!/usr/bin/env bash
# The customer's topology on one Linux box, for trying plutus-sync against a real SFTP
# server and for tests that need network faults:
#
#   netns plutus-web  10.77.0.1/24  veth-web ==== veth-erp  10.77.0.2/24  netns plutus-erp
#   (web shop: plutus-sync)                                   (ERP: sshd on :22, the inbox)
#
# Both ends of the veth pair live in the namespaces, so the host's own network is not
# touched, and the faults below hit only the lab's link.
#
# Usage (as root):
#   lab.sh up          build it: namespaces, link, keys, sshd, config.toml, lab.env
#   lab.sh status      what is up, which faults are on, whether the ERP answers
#   lab.sh down        kill everything in the namespaces, remove them and the lab dir
#   lab.sh cut         both link ends down: new connections fail at once (unreachable)
#   lab.sh heal        undo every fault: link up, no delay, no loss, no blackhole
#   lab.sh delay MS    MS of delay each way (tc netem; needs sch_netem in the kernel)
#   lab.sh loss PCT    drop PCT% of the packets each way (nftables numgen)
#   lab.sh blackhole   drop every packet silently (nftables): connections hang, no RST
#
# LAB_DIR (default /tmp/plutus-lab) holds every file the lab makes; `down` removes it.
# Exit status: 0 done, 1 failed, 2 bad usage, 3 the fault is not possible on this machine
# (a test can treat 3 as "skip").
set -euo pipefail

LAB_DIR=${LAB_DIR:-/tmp/plutus-lab}
WEB_NS=plutus-web
ERP_NS=plutus-erp
WEB_IF=veth-web
ERP_IF=veth-erp
WEB_IP=10.77.0.1
ERP_IP=10.77.0.2
# The marker that makes LAB_DIR ours: `up` and `down` remove only a folder that has it.
MARKER=.plutus-lab
NFT_TABLE=plutus_lab

die() { echo "lab: $*" >&2; exit 1; }
unsupported() { echo "lab: $*" >&2; exit 3; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

in_web() { ip netns exec "$WEB_NS" "$@"; }
in_erp() { ip netns exec "$ERP_NS" "$@"; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
is_up() { ns_exists "$WEB_NS" || ns_exists "$ERP_NS"; }
require_up() {
    if ! ns_exists "$WEB_NS" || ! ns_exists "$ERP_NS"; then die "the lab is not up (run: $0 up)"; fi
}

# The SSH banner, read from inside the web namespace: the ERP is ready when it answers.
# bash's /dev/tcp, so that this needs no nc; `timeout` because a blackholed connect hangs.
banner() {
    in_web timeout 2 bash -c "exec 3<>/dev/tcp/$ERP_IP/22 && head -c 7 <&3" 2>/dev/null || true
}

cmd_up() {
    is_up && die "the lab is already up (namespace $WEB_NS or $ERP_NS exists); run: $0 down"
    for c in ip sshd ssh-keygen timeout; do
        command -v "$c" >/dev/null || die "$c not found (Debian: apt-get install iproute2 openssh-server openssh-client)"
    done
    [[ $LAB_DIR == /* && $LAB_DIR != *[[:space:]]* ]] ||
        die "LAB_DIR=$LAB_DIR: must be an absolute path without spaces (it goes into an sftp:// URL)"
    if [[ -e $LAB_DIR ]]; then
        [[ -e $LAB_DIR/$MARKER ]] || die "$LAB_DIR exists and is not a lab folder; remove it or set LAB_DIR"
        rm -rf "$LAB_DIR" # a previous lab that was not taken down: start clean
    fi
    # If anything below fails, take down what was built, so that `up` can simply be rerun.
    trap 'echo "lab: up failed; cleaning up" >&2; cmd_down >/dev/null 2>&1 || true' ERR

    mkdir -p "$LAB_DIR"/erp/inbox "$LAB_DIR"/web/{outbox,archive,quarantine}
    touch "$LAB_DIR/$MARKER"
    chmod 700 "$LAB_DIR"

    # --- network -------------------------------------------------------------------------
    ip netns add "$WEB_NS"
    ip netns add "$ERP_NS"
    # Created straight into the namespaces: no interface ever appears in the host's.
    ip link add "$WEB_IF" netns "$WEB_NS" type veth peer name "$ERP_IF" netns "$ERP_NS"
    ip -n "$WEB_NS" addr add "$WEB_IP/24" dev "$WEB_IF"
    ip -n "$ERP_NS" addr add "$ERP_IP/24" dev "$ERP_IF"
    # lo too: plutus-sync's metrics endpoint (127.0.0.1:9464) is served inside plutus-web.
    for ns in "$WEB_NS" "$ERP_NS"; do ip -n "$ns" link set lo up; done
    ip -n "$WEB_NS" link set "$WEB_IF" up
    ip -n "$ERP_NS" link set "$ERP_IF" up

    # --- the ERP: sshd with its own host key, key login only ------------------------------
    local erp=$LAB_DIR/erp web=$LAB_DIR/web
    ssh-keygen -q -t ed25519 -N '' -C "plutus-lab ERP host key" -f "$erp/ssh_host_ed25519_key"
    # The web shop's login key, the one plutus-sync uses (no passphrase, as plutus-sync needs).
    ssh-keygen -q -t ed25519 -N '' -C "plutus-lab web shop" -f "$web/id_ed25519"
    cp "$web/id_ed25519.pub" "$erp/authorized_keys"
    # The host key line, exactly what an operator pastes into plutus-sync's known_hosts.
    echo "$ERP_IP $(cut -d' ' -f1,2 "$erp/ssh_host_ed25519_key.pub")" >"$web/known_hosts"

    # Root logs in with the lab's key: no user account is added to the host, so `down`
    # has nothing to undo outside LAB_DIR. AuthorizedKeysFile points into the lab, not at
    # root's own ~/.ssh. StrictModes is off because it refuses key files below a
    # world-writable folder, and the lab lives under /tmp by default.
    cat >"$erp/sshd_config" <<EOF
ListenAddress $ERP_IP:22
HostKey $erp/ssh_host_ed25519_key
PidFile $erp/sshd.pid
AuthorizedKeysFile $erp/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
    # sshd's privilege separation directory; openssh-server normally has it, and other
    # sshd instances may use it, so `down` leaves it.
    mkdir -p /run/sshd
    sshd -t -f "$erp/sshd_config" || die "sshd rejects $erp/sshd_config"
    # sshd forks into the background inside plutus-erp and writes its pid to sshd.pid.
    in_erp "$(command -v sshd)" -f "$erp/sshd_config" -E "$erp/sshd.log"
    local deadline=$((SECONDS + 10))
    until [[ $(banner) == SSH-2.0 ]]; do
        ((SECONDS < deadline)) || die "sshd does not answer on $ERP_IP:22 after 10 s; its log: $erp/sshd.log"
        sleep 0.1
    done

    # --- the web shop: plutus-sync's config ---------------------------------------------
    # Paths are relative to the config's folder (plutus-sync resolves them that way).
    # Short timeouts and retries, so that faults show within seconds, not minutes.
    cat >"$LAB_DIR/config.toml" <<EOF
# Written by packaging/lab/lab.sh for the lab in $LAB_DIR.
# Run: ip netns exec $WEB_NS plutus-sync run -c $LAB_DIR/config.toml
[source]
outbox = "web/outbox"
archive = "web/archive"
quarantine = "web/quarantine"
settle = "500ms"
sweep_interval = "30s"

[journal]
path = "web/journal"

[destination]
url = "sftp://root@$ERP_IP$erp/inbox"
identity = "web/id_ed25519"
known_hosts = "web/known_hosts"
timeout = "5s"

[retry]
initial = "1s"
max = "10s"

[metrics]
# Inside $WEB_NS: its own loopback, so this cannot clash with the host's port 9464.
listen = "127.0.0.1:9464"
EOF

    # Everything a test needs, as shell variables: `. $LAB_DIR/lab.env`.
    {
        printf 'LAB_DIR=%q\n' "$LAB_DIR"
        printf 'LAB_WEB_NS=%q\nLAB_ERP_NS=%q\nLAB_WEB_IP=%q\nLAB_ERP_IP=%q\n' "$WEB_NS" "$ERP_NS" "$WEB_IP" "$ERP_IP"
        printf 'LAB_CONFIG=%q\n' "$LAB_DIR/config.toml"
        printf 'LAB_OUTBOX=%q\nLAB_INBOX=%q\n' "$web/outbox" "$erp/inbox"
        printf 'LAB_METRICS=%q\n' "http://127.0.0.1:9464/metrics"
        printf 'LAB_SSH_OPTS=%q\n' "-F none -i $web/id_ed25519 -o UserKnownHostsFile=$web/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes"
    } >"$LAB_DIR/lab.env"

    trap - ERR
    cat <<EOF
lab up in $LAB_DIR
  web shop  netns $WEB_NS  $WEB_IP   outbox $web/outbox
  ERP       netns $ERP_NS  $ERP_IP   sshd pid $(cat "$erp/sshd.pid"), inbox $erp/inbox
run plutus-sync in the web shop's namespace:
  ip netns exec $WEB_NS plutus-sync run -c $LAB_DIR/config.toml
log in to the ERP by hand:
  ip netns exec $WEB_NS sftp -F none -i $web/id_ed25519 -o UserKnownHostsFile=$web/known_hosts root@$ERP_IP
metrics:
  ip netns exec $WEB_NS curl -s http://127.0.0.1:9464/metrics
EOF
}

# TERM, up to 5 s, then KILL, for every process left in a namespace: sshd, its sessions,
# a plutus-sync someone started there. A process would keep its namespace alive after
# `ip netns del`, and then nothing would be "gone".
kill_ns_pids() {
    local ns=$1 pids
    ns_exists "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086 # one pid a word
    kill -TERM $pids 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while [[ -n $(ip netns pids "$ns" 2>/dev/null || true) ]] && ((SECONDS < deadline)); do sleep 0.1; done
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
    kill_ns_pids "$ERP_NS"
    kill_ns_pids "$WEB_NS"
    # Deleting a namespace deletes the veth end inside it, and with it the pair, the
    # qdiscs and the nftables table there.
    for ns in "$WEB_NS" "$ERP_NS"; do
        ! ns_exists "$ns" || ip netns del "$ns"
    done
    if [[ -e $LAB_DIR/$MARKER ]]; then
        rm -rf "$LAB_DIR"
    elif [[ -e $LAB_DIR ]]; then
        echo "lab: $LAB_DIR is not a lab folder (no $MARKER); left alone" >&2
    fi
    echo "lab down"
}

cmd_status() {
    local ns
    for ns in "$WEB_NS" "$ERP_NS"; do
        if ns_exists "$ns"; then
            local dev=$WEB_IF flags link
            [[ $ns == "$ERP_NS" ]] && dev=$ERP_IF
            # The flags, not the operstate: a veth reports "DOWN" for a moment after `up`.
            flags=$(ip -n "$ns" -o link show dev "$dev" | sed -E 's/^[^<]*<([^>]*)>.*/\1/')
            link="link down"
            [[ ,$flags, == *,UP,* && ,$flags, == *,LOWER_UP,* ]] && link="link up"
            echo "netns $ns: $dev $(ip -n "$ns" -o -4 addr show dev "$dev" | awk '{print $4}'), $link"
            local q
            q=$(tc -n "$ns" qdisc show | grep netem || true)
            [[ -z $q ]] || echo "  qdisc: $q"
            if command -v nft >/dev/null && ip netns exec "$ns" nft list table inet "$NFT_TABLE" >/dev/null 2>&1; then
                echo "  nftables: $(ip netns exec "$ns" nft list table inet "$NFT_TABLE" | grep -E 'drop' | tr -s ' \t' ' ' | tr '\n' ';')"
            fi
            local procs
            procs=$(ip netns pids "$ns" | xargs -r ps -o comm= -p | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
            echo "  processes: ${procs:-none}"
        else
            echo "netns $ns: absent"
        fi
    done
    if [[ -e $LAB_DIR/$MARKER ]]; then
        echo "lab dir $LAB_DIR: config.toml, lab.env; inbox holds $(find "$LAB_DIR/erp/inbox" -type f | wc -l) file(s)"
    else
        echo "lab dir $LAB_DIR: absent"
    fi
    if ns_exists "$WEB_NS" && ns_exists "$ERP_NS"; then
        if [[ $(banner) == SSH-2.0 ]]; then echo "ERP sshd: answers on $ERP_IP:22"; else echo "ERP sshd: no answer on $ERP_IP:22 within 2 s"; fi
    fi
}

cmd_cut() {
    require_up
    # Both ends, as when a cable is pulled between two hosts that notice it. The connected
    # route goes with the link, so new connections fail at once with "Network is
    # unreachable" instead of timing out; use `blackhole` for the silent kind of outage.
    ip -n "$WEB_NS" link set "$WEB_IF" down
    ip -n "$ERP_NS" link set "$ERP_IF" down
    echo "link cut"
}

cmd_heal() {
    require_up
    ip -n "$WEB_NS" link set "$WEB_IF" up
    ip -n "$ERP_NS" link set "$ERP_IF" up
    local ns dev
    for ns in "$WEB_NS" "$ERP_NS"; do
        dev=$WEB_IF; [[ $ns == "$ERP_NS" ]] && dev=$ERP_IF
        # Back to the default qdisc; "no such qdisc" when there was no delay is fine.
        tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
        if command -v nft >/dev/null; then
            ip netns exec "$ns" nft delete table inet "$NFT_TABLE" 2>/dev/null || true
        fi
    done
    echo "healed: link up, no delay, no loss, no blackhole"
}

cmd_delay() {
    require_up
    [[ ${1:-} =~ ^[0-9]+$ ]] || usage
    local ms=$1 err
    # On both ends, so the round trip grows by twice MS, as on a real slow line.
    if ! err=$(tc -n "$WEB_NS" qdisc replace dev "$WEB_IF" root netem delay "${ms}ms" 2>&1); then
        if grep -qiE 'unknown|not supported|no such file' <<<"$err"; then
            unsupported "delay: this kernel has no sch_netem (tc said: $err); no delay injected"
        fi
        die "delay: tc failed: $err"
    fi
    tc -n "$ERP_NS" qdisc replace dev "$ERP_IF" root netem delay "${ms}ms"
    echo "delay ${ms} ms each way"
}

# One nftables chain per fault in the lab's own table, hooked on input in both
# namespaces: a packet dropped on input vanishes silently (dropping on output would hand
# the local sender an EPERM instead). Replacing the chain makes a repeated command
# replace the fault rather than stack it.
nft_fault() {
    local chain=$1 rule=$2 ns peer err
    command -v nft >/dev/null || unsupported "$chain: nft not found (apt-get install nftables)"
    for ns in "$WEB_NS" "$ERP_NS"; do
        peer=$ERP_IP
        [[ $ns == "$ERP_NS" ]] && peer=$WEB_IP
        # `add` is a no-op for a table or chain that exists; the flush drops the old rule.
        if ! err=$(ip netns exec "$ns" nft -f - 2>&1 <<EOF
add table inet $NFT_TABLE
add chain inet $NFT_TABLE $chain { type filter hook input priority 0; policy accept; }
flush chain inet $NFT_TABLE $chain
add rule inet $NFT_TABLE $chain ip saddr $peer $rule
EOF
        ); then
            unsupported "$chain: nftables refused the rule in $ns: $err"
        fi
    done
}

cmd_loss() {
    require_up
    if ! [[ ${1:-} =~ ^[0-9]+$ ]] || (($1 > 100)); then usage; fi
    # nftables rather than netem: it works on kernels without sch_netem (like the one this
    # was written on), and then behaves the same everywhere.
    nft_fault loss "numgen random mod 100 < $1 drop"
    echo "loss $1% each way"
}

cmd_blackhole() {
    require_up
    nft_fault blackhole "drop"
    echo "blackhole: every packet between $WEB_IP and $ERP_IP dropped silently"
}

[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, sshd on port 22)"
case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
cut) cmd_cut ;;
heal) cmd_heal ;;
delay) shift; cmd_delay "$@" ;;
loss) shift; cmd_loss "$@" ;;
blackhole) cmd_blackhole ;;
-h | --help | help) usage ;;
*) usage ;;
esac

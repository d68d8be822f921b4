#!/usr/bin/env bash
# A local gaffer cluster on one machine: a controller and N agents, each in its own network
# namespace, cabled to one bridge, so they talk over real TCP as separate hosts would.
#
#   usage: netns-cluster.sh up|down|status|partition NODE|heal NODE      (as root)
#
#                        netns gfn-switch: br0
#             p0              p1              p2              p3
#              |               |               |               |
#     gfn-controller      gfn-node1       gfn-node2       gfn-node3
#     eth0 10.232.0.1     eth0 .11        eth0 .12        eth0 .13
#     gaffer-controller   gaffer-agent    gaffer-agent    gaffer-agent
#
# The root namespace is never touched: links are created inside the switch namespace with
# their peer placed straight into each host namespace, and nothing routes to the lab from
# outside, so reach the controller from inside a namespace (`ip netns exec`), as `up` prints.
#
# Settings (environment):
#   GAFFER_CONTROLLER_CMD  the controller's command line, run by sh in its namespace
#                          (default: gaffer-controller --bind "$GAFFER_NETNS_BIND"
#                           --data-dir "$GAFFER_NETNS_DATA_DIR" --insecure)
#   GAFFER_AGENT_CMD       each agent's command line (default: gaffer-agent --controller
#                          "$GAFFER_NETNS_CONTROLLER" --name "$GAFFER_NETNS_NODE"
#                          --state-dir "$GAFFER_NETNS_STATE_DIR" --insecure; each agent gets
#                          its own state dir, as separate hosts would)
#   GAFFER_NETNS_STATE     logs, pid files and the controller's data (default /tmp/gaffer-netns)
#   GAFFER_NETNS_NODES     number of agents (default 3)
#   GAFFER_NETNS_PREFIX    namespace name prefix (default gfn)
#   GAFFER_NETNS_SUBNET    first three octets of the lab's /24 (default 10.232.0)
#   GAFFER_NETNS_PORT      controller port (default 6001)
#   GAFFER_NETNS_AGENT_STOP_SIGNAL  what `down` sends each agent (default QUIT: an agent then
#                          stops its processes gracefully, as when a host is retired; TERM
#                          would leave them running, and namespace deletion would SIGKILL them)
#   GAFFER_NETNS_STOP_TIMEOUT  seconds `down` waits for a daemon before SIGKILL (default 30)
# The commands see GAFFER_NETNS_BIND, GAFFER_NETNS_CONTROLLER (both tcp://IP:PORT),
# GAFFER_NETNS_DATA_DIR (controller), GAFFER_NETNS_NODE and GAFFER_NETNS_STATE_DIR (agents)
# in their environment.
#
# Every command is idempotent: `up` creates only what is missing and starts only what is not
# running; `down` on a stopped cluster does nothing. Test processes of the Python harness use
# the gft<pid>- prefix and never collide with these names.
set -eu

STATE=${GAFFER_NETNS_STATE:-/tmp/gaffer-netns}
NODES=${GAFFER_NETNS_NODES:-3}
PREFIX=${GAFFER_NETNS_PREFIX:-gfn}
SUBNET=${GAFFER_NETNS_SUBNET:-10.232.0}
PORT=${GAFFER_NETNS_PORT:-6001}
STOP_TIMEOUT=${GAFFER_NETNS_STOP_TIMEOUT:-30}
AGENT_STOP_SIGNAL=${GAFFER_NETNS_AGENT_STOP_SIGNAL:-QUIT}
# The defaults are expanded by the sh that runs them, in the daemon's namespace.
# shellcheck disable=SC2016
CONTROLLER_CMD=${GAFFER_CONTROLLER_CMD:-'gaffer-controller --bind "$GAFFER_NETNS_BIND" --data-dir "$GAFFER_NETNS_DATA_DIR" --insecure'}
# shellcheck disable=SC2016
AGENT_CMD=${GAFFER_AGENT_CMD:-'gaffer-agent --controller "$GAFFER_NETNS_CONTROLLER" --name "$GAFFER_NETNS_NODE" --state-dir "$GAFFER_NETNS_STATE_DIR" --insecure'}

SWITCH=$PREFIX-switch
CONTROLLER=$PREFIX-controller
CONTROLLER_IP=$SUBNET.1
ENDPOINT=tcp://$CONTROLLER_IP:$PORT
LOGS=$STATE/logs
RUN=$STATE/run
DATA=$STATE/controller-data
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "netns-cluster: $*" >&2; exit 1; }

check_settings() {
    [ "$(id -u)" = 0 ] || die "network namespaces need root (run with sudo)"
    command -v ip >/dev/null || die "ip (iproute2) not found"
    command -v bridge >/dev/null || die "bridge (iproute2) not found"
    case $NODES in ''|*[!0-9]*) die "GAFFER_NETNS_NODES must be a number 1..200, got '$NODES'";; esac
    if [ "$NODES" -lt 1 ] || [ "$NODES" -gt 200 ]; then
        die "GAFFER_NETNS_NODES must be 1..200, got $NODES"
    fi
    case $PREFIX in gft[0-9]*) die "GAFFER_NETNS_PREFIX '$PREFIX' is reserved for the test harness";; esac
    case $PREFIX in ''|*[!a-z0-9_-]*) die "GAFFER_NETNS_PREFIX must be [a-z0-9_-]+, got '$PREFIX'";; esac
    echo "$SUBNET" | grep -Eq '^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$' \
        || die "GAFFER_NETNS_SUBNET must be three octets like 10.232.0, got '$SUBNET'"
    # sudo resets PATH; the repo's venv is where the gaffer daemons are installed.
    if [ -d "$REPO/.venv/bin" ]; then PATH=$REPO/.venv/bin:$PATH; fi
}

node_ns() { echo "$PREFIX-node$1"; }
node_ip() { echo "$SUBNET.$((10 + $1))"; }

netns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# Namespaces of this cluster that exist now, hosts first and the switch last.
present_namespaces() {
    ip netns list | awk '{print $1}' | grep -E "^$PREFIX-(node[0-9]+|controller)\$" || true
    if netns_exists "$SWITCH"; then echo "$SWITCH"; fi
}

ensure_netns() {
    netns_exists "$1" || ip netns add "$1"
    ip -n "$1" link set lo up
}

ensure_switch() {
    ensure_netns "$SWITCH"
    ip -n "$SWITCH" link show br0 >/dev/null 2>&1 \
        || ip -n "$SWITCH" link add br0 type bridge stp_state 0 forward_delay 0
    ip -n "$SWITCH" link set br0 up
}

# ensure_host NS PORT IP: the namespace, cabled to the bridge through switch port PORT.
ensure_host() {
    ensure_netns "$1"
    if ! ip -n "$1" link show eth0 >/dev/null 2>&1; then
        # A port whose peer went with a namespace deleted by hand would block the new cable.
        ip -n "$SWITCH" link delete "$2" 2>/dev/null || true
        ip -n "$SWITCH" link add "$2" type veth peer name eth0 netns "$1"
    fi
    ip -n "$SWITCH" link set "$2" master br0 up
    ip -n "$1" -4 addr show dev eth0 | grep -q "inet $3/" || ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}

# proc_stat_field PID N: field N (N >= 3) of /proc/PID/stat, read past the command name.
proc_stat_field() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    printf '%s\n' "${stat##*) }" | cut -d' ' -f"$(($2 - 2))"
}

# our_process NAME: the pid of the daemon NAME we started, if it still runs. The pid file
# holds "PID STARTTIME", so a pid reused by another process (or a zombie) never matches.
our_process() {
    local pidfile=$RUN/$1.pid pid start
    [ -s "$pidfile" ] || return 1
    read -r pid start <"$pidfile" || true
    [ -n "${start:-}" ] && [ "$(proc_stat_field "$pid" 22)" = "$start" ] || return 1
    [ "$(proc_stat_field "$pid" 3)" != Z ] || return 1
    echo "$pid"
}

# daemon_pid NAME NS: the daemon's pid if it runs inside NS.
daemon_pid() {
    local pid
    pid=$(our_process "$1") || return 1
    [ "$(ip netns identify "$pid" 2>/dev/null)" = "$2" ] || return 1
    echo "$pid"
}

# start_daemon NAME NS COMMAND [VAR=VALUE...]: run COMMAND (sh syntax) in NS, in its own session.
start_daemon() {
    local name=$1 ns=$2 cmd=$3 pid waited=0
    shift 3
    if pid=$(daemon_pid "$name" "$ns"); then
        echo "$name already running (pid $pid)"
        return 0
    fi
    stop_daemon "$name" TERM  # one that outlived its namespace
    command -v "$(first_word "$cmd")" >/dev/null \
        || die "$name: '$(first_word "$cmd")' not found on PATH (set GAFFER_CONTROLLER_CMD / GAFFER_AGENT_CMD)"
    # The inner sh (comm "sh", so stat fields are where cut expects them) writes its pid and
    # start time, then execs the command: the pid file names the daemon itself. A background
    # job of a script starts with SIGINT and SIGQUIT ignored; env gives them back their defaults.
    # shellcheck disable=SC2016
    ip netns exec "$ns" env --default-signal=INT,QUIT "$@" setsid sh -c \
        'echo $$ $(cut -d" " -f22 /proc/$$/stat) > "$0.tmp"; mv "$0.tmp" "$0"; eval "exec $1"' \
        "$RUN/$name.pid" "$cmd" </dev/null >>"$LOGS/$name.log" 2>&1 &
    while [ ! -s "$RUN/$name.pid" ] && [ $waited -lt 50 ]; do sleep 0.1; waited=$((waited + 1)); done
    sleep 0.3
    if pid=$(daemon_pid "$name" "$ns"); then
        echo "$name started (pid $pid, log $LOGS/$name.log)"
    else
        echo "$name exited at once; its log $LOGS/$name.log ends with:" >&2
        tail -n 5 "$LOGS/$name.log" >&2 || true
        return 1
    fi
}

# first_word COMMAND: the program a command line starts (split like sh would, no globbing).
# shellcheck disable=SC2086
first_word() (set -f; set -- $1; printf '%s\n' "${1:-}")

# signal_daemon NAME SIGNAL: send SIGNAL to the daemon's process group (and CONT, should it be
# frozen) and print its pid; a daemon that is not running is skipped (prints nothing).
signal_daemon() {
    local pid
    pid=$(our_process "$1") || return 0
    kill -"$2" -- "-$pid" 2>/dev/null || kill -"$2" "$pid" 2>/dev/null || true
    kill -CONT -- "-$pid" 2>/dev/null || true
    echo "$pid"
}

# await_daemon NAME SIGNAL DEADLINE PID: wait until $SECONDS reaches DEADLINE for the daemon
# signalled as PID (empty: it was not running) to exit, then SIGKILL it; drop its pid file.
await_daemon() {
    local name=$1 pid=$4
    if [ -z "$pid" ]; then
        [ ! -e "$RUN/$name.pid" ] || echo "$name was not running"
    else
        while our_process "$name" >/dev/null && [ "$SECONDS" -lt "$3" ]; do sleep 0.1; done
        if our_process "$name" >/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            echo "$name killed (pid $pid, still running ${STOP_TIMEOUT}s after $2)"
        else
            echo "$name stopped (pid $pid)"
        fi
    fi
    rm -f "$RUN/$name.pid"
}

stop_daemon() {
    local pid
    pid=$(signal_daemon "$1" "$2")
    await_daemon "$1" "$2" $((SECONDS + STOP_TIMEOUT)) "$pid"
}

# Daemons with a pid file: agents first, the controller last.
daemon_names() {
    local pidfile
    for pidfile in "$RUN"/node*.pid; do
        if [ -e "$pidfile" ]; then basename "$pidfile" .pid; fi
    done | sort -V
    if [ -e "$RUN/controller.pid" ]; then echo controller; fi
}

stop_signal_of() { case $1 in node*) echo "$AGENT_STOP_SIGNAL" ;; *) echo TERM ;; esac; }

delete_namespace() {
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    # shellcheck disable=SC2086  # one argument per pid
    if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
    ip netns delete "$1"
    echo "namespace $1 deleted"
}

print_access() {
    cat <<EOF
controller: $ENDPOINT (namespace $CONTROLLER)
  ip netns exec $CONTROLLER gafferctl --controller $ENDPOINT nodes
  ip netns exec $(node_ns 1) gafferctl --controller $ENDPOINT status
logs: $LOGS    pid files: $RUN    controller data: $DATA    agents' state: $STATE/nodeN
stop: $0 down
EOF
}

cmd_up() {
    local n
    mkdir -p "$LOGS" "$RUN" "$DATA"
    ensure_switch
    ensure_host "$CONTROLLER" p0 "$CONTROLLER_IP"
    for n in $(seq 1 "$NODES"); do
        ensure_host "$(node_ns "$n")" "p$n" "$(node_ip "$n")"
        mkdir -p "$STATE/node$n"
    done
    start_daemon controller "$CONTROLLER" "$CONTROLLER_CMD" \
        "GAFFER_NETNS_BIND=$ENDPOINT" "GAFFER_NETNS_DATA_DIR=$DATA"
    for n in $(seq 1 "$NODES"); do
        start_daemon "node$n" "$(node_ns "$n")" "$AGENT_CMD" \
            "GAFFER_NETNS_CONTROLLER=$ENDPOINT" "GAFFER_NETNS_NODE=node$n" \
            "GAFFER_NETNS_STATE_DIR=$STATE/node$n"
    done
    print_access
}

# down: signal every daemon at once (agents QUIT, so they stop their processes gracefully), wait
# for each, then kill whatever is left in the namespaces and delete them.
cmd_down() {
    local name ns deadline=$((SECONDS + STOP_TIMEOUT))
    local -A signalled=()
    for name in $(daemon_names); do
        signalled[$name]=$(signal_daemon "$name" "$(stop_signal_of "$name")")
    done
    for name in $(daemon_names); do
        await_daemon "$name" "$(stop_signal_of "$name")" "$deadline" "${signalled[$name]:-}"
    done
    for ns in $(present_namespaces); do delete_namespace "$ns"; done
    echo "cluster down (logs kept in $LOGS)"
}

# status_line NAME NS IP: one row of `status`; returns 3 unless the daemon runs.
status_line() {
    local state=stopped rc=3 pid
    if ! netns_exists "$2"; then
        state="no namespace"
    elif pid=$(daemon_pid "$1" "$2"); then
        state="running (pid $pid)"; rc=0
    fi
    printf '%-11s %-18s %-13s %s\n' "$1" "$2" "$3" "$state"
    return $rc
}

# status: exit 0 when every namespace exists and every daemon runs, 3 otherwise.
cmd_status() {
    local rc=0 n
    netns_exists "$SWITCH" || { printf '%-11s %-18s %s\n' switch "$SWITCH" "no namespace"; rc=3; }
    status_line controller "$CONTROLLER" "$CONTROLLER_IP" || rc=3
    for n in $(seq 1 "$NODES"); do
        status_line "node$n" "$(node_ns "$n")" "$(node_ip "$n")" || rc=3
    done
    if [ $rc = 0 ]; then print_access; fi
    return $rc
}

# partition NODE / heal NODE: the NODE's bridge port drops / forwards every frame, both ways.
set_port_state() {
    local port
    case $1 in
        controller) port=p0 ;;
        node[0-9]*) port=p${1#node} ;;
        *) die "unknown node '$1' (controller or nodeN)" ;;
    esac
    ip -n "$SWITCH" link show "$port" >/dev/null 2>&1 || die "no port for '$1': is the cluster up?"
    bridge -netns "$SWITCH" link set dev "$port" state "$2"
}

main() {
    check_settings
    case ${1:-} in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        partition) [ $# = 2 ] || die "usage: $0 partition NODE"; set_port_state "$2" 0; echo "$2 partitioned" ;;
        heal) [ $# = 2 ] || die "usage: $0 heal NODE"; set_port_state "$2" 3; echo "$2 healed" ;;
        *) echo "usage: $0 up|down|status|partition NODE|heal NODE" >&2; exit 2 ;;
    esac
}

main "$@"

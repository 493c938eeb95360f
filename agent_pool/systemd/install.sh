#!/usr/bin/env bash
# Install the clipping service's systemd units on this host. See --help.
set -euo pipefail

readonly PREFIX=/opt/clipping
readonly VENV="$PREFIX/venv"
readonly SRC="$PREFIX/src"
readonly WORK="$PREFIX/work"
readonly ETC=/etc/clipping
readonly ENV_FILE="$ETC/clipping.env"
readonly UNIT_DIR=/etc/systemd/system
readonly SERVICE_USER=clipping
readonly STATE_DIR=/var/lib/clipping

# Default source: the checkout this script is in (agent_pool/systemd/install.sh).
CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--dry-run] [--restart] [--source DIR] ROLE...

Install the clipping service on this host, idempotently: user '$SERVICE_USER', the
project in $SRC and $VENV, $ENV_FILE
(from clipping.env.example, only if absent), the units of the ROLEs in
$UNIT_DIR; then enable and start the units.

Roles (several allowed):
  server              prefect-server.service (Prefect API and UI, 127.0.0.1:4200 behind
                      a TLS reverse proxy; needs PREFECT_SERVER_API_AUTH_STRING)
  worker AGENT_ID     clipping-worker@AGENT_ID.service (Prefect worker on nas-pool,
                      health on CLIPPING_WORKER_HEALTH_PORT); repeat for more agents
  listener            clipping-listener.service (Pub/Sub requests -> flow runs)
  proxy               clipping-proxy.service (REST API, port 8080)

Options:
  -n, --dry-run   print the commands instead of running them (no root needed)
  --restart       also restart the role's units, so running ones load the new code
  --source DIR    project checkout to install (default: $CHECKOUT)
  -h, --help      this help

When $ENV_FILE did not exist yet, the units are enabled but not started: edit the
file first, then 'systemctl start' them (the command is printed).

Examples:
  $(basename "$0") server listener proxy
  $(basename "$0") worker nas-server-01
  $(basename "$0") --dry-run worker nas-server-03
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

DRY_RUN=0
RESTART=0
UNITS=()
EXTRAS=()
NEEDS_TEMPLATE=0
while (($#)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        -n | --dry-run) DRY_RUN=1 ;;
        --restart) RESTART=1 ;;
        --source)
            (($# >= 2)) || die "--source needs a directory"
            CHECKOUT="$(cd "$2" && pwd)" || die "no directory $2"
            shift
            ;;
        server) UNITS+=(prefect-server.service) EXTRAS+=(worker) ;;
        listener) UNITS+=(clipping-listener.service) EXTRAS+=(worker) ;;
        proxy) UNITS+=(clipping-proxy.service) EXTRAS+=(proxy) ;;
        worker)
            (($# >= 2)) || die "worker needs an agent id, e.g. 'worker nas-server-01'"
            # The id names the unit instance and the Prefect worker: keep it to safe characters.
            [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
                die "invalid agent id '$2' (letters, digits, '.', '_', '-')"
            UNITS+=("clipping-worker@$2.service")
            EXTRAS+=(worker)
            NEEDS_TEMPLATE=1
            shift
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
((${#UNITS[@]})) || die "no role given (see --help)"
[[ -f "$CHECKOUT/pyproject.toml" && -d "$CHECKOUT/agent_pool/systemd" ]] ||
    die "$CHECKOUT is not a checkout of the clipping service"
# The same unit named twice (e.g. 'worker a worker a') is installed once.
mapfile -t UNITS < <(printf '%s\n' "${UNITS[@]}" | awk '!seen[$0]++')
# The roles' dependency sets (pyproject's extras), e.g. "worker,proxy".
EXTRAS_SPEC="$(printf '%s\n' "${EXTRAS[@]}" | sort -u | paste -sd, -)"

# Prints each command; runs it unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    ((DRY_RUN)) || "$@"
}

if ((!DRY_RUN)); then
    ((EUID == 0)) || die "run as root (or with --dry-run)"
    command -v systemctl >/dev/null || die "systemctl not found: this host does not run systemd"
fi

# 1. Service user: no login, no home of its own (units keep their state in $STATE_DIR).
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 2. Directories.
run install -d -m 0755 "$PREFIX"
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$WORK"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"

# 3. The project at a fixed path: `python -m deployments` (run from $SRC) records $SRC as
#    the flows' working directory and $VENV/bin/python as their interpreter, so every
#    worker host needs both at the same paths. The new copy is swapped in by renaming.
run rm -rf "$SRC.new" "$SRC.old"
run install -d -m 0755 "$SRC.new"
run tar -C "$CHECKOUT" -c -f "$SRC.new.tar" \
    --exclude=./.git --exclude=./.venv --exclude=./.stack --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.ruff_cache .
run tar -C "$SRC.new" -x -f "$SRC.new.tar" --no-same-owner
run rm -f "$SRC.new.tar"
if [[ -e "$SRC" ]]; then
    run mv "$SRC" "$SRC.old"
fi
run mv "$SRC.new" "$SRC"
run rm -rf "$SRC.old"

# 4. Virtualenv with the project installed.
if [[ ! -x "$VENV/bin/python" ]]; then
    PYTHON="${PYTHON:-python3}"
    if ((!DRY_RUN)); then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "$PYTHON is older than Python 3.11 (set PYTHON=/path/to/python3.11)"
    fi
    run "$PYTHON" -m venv "$VENV"
fi
run "$VENV/bin/python" -m pip install --quiet --upgrade pip
run "$VENV/bin/python" -m pip install --quiet "$SRC[$EXTRAS_SPEC]"

# 5. Environment file: created once from the example, never overwritten.
FRESH_ENV=0
if [[ ! -e "$ENV_FILE" ]]; then
    run install -m 0640 -o root -g "$SERVICE_USER" "$CHECKOUT/agent_pool/systemd/clipping.env.example" \
        "$ENV_FILE"
    FRESH_ENV=1
fi

# 6. Units.
for unit in "${UNITS[@]}"; do
    case "$unit" in
        clipping-worker@*) ;; # an instance of the template, installed below
        *) run install -m 0644 "$CHECKOUT/agent_pool/systemd/$unit" "$UNIT_DIR/$unit" ;;
    esac
done
if ((NEEDS_TEMPLATE)); then
    run install -m 0644 "$CHECKOUT/agent_pool/systemd/clipping-worker@.service" \
        "$UNIT_DIR/clipping-worker@.service"
fi
run systemctl daemon-reload

# 7. Enable (and start) them.
if ((FRESH_ENV)); then
    # Started on the example's placeholders they would only fail and restart.
    run systemctl enable "${UNITS[@]}"
    if ((DRY_RUN)); then
        echo "install.sh: dry run: $ENV_FILE does not exist yet; it would be" \
            "created from the example, and the units started only after it is edited." >&2
    else
        echo "install.sh: created $ENV_FILE from the example: edit it, then run" >&2
        echo "  systemctl start ${UNITS[*]}" >&2
    fi
else
    run systemctl enable --now "${UNITS[@]}"
    if ((RESTART)); then
        run systemctl restart "${UNITS[@]}"
    fi
fi

((DRY_RUN)) && exit 0
cat >&2 <<EOF
install.sh: done. $ENV_FILE holds the Prefect API's secret (PREFECT_API_AUTH_STRING):
keep it root:$SERVICE_USER, mode 0640. The signing key (CLIPPING_SERVICE_ACCOUNT_FILE)
stays on each worker host, readable by $SERVICE_USER alone, e.g.
  install -m 0640 -o root -g $SERVICE_USER key.json $ETC/service-account.json
Once per release, with the Prefect server up, apply the work pool, blocks, automations
and deployment from $SRC (on one host):
  sudo sh -c 'set -a; . $ENV_FILE; cd $SRC && exec $VENV/bin/python -m deployments'
EOF

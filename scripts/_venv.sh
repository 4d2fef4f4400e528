# shellcheck shell=bash
# Shared by scripts/test and scripts/demo (sourced, not run): cd to the repository root,
# create .venv when missing and install the project into it with its test extras.
#
# Honours:
#   LOGOUT_PYTHON         interpreter used to create .venv (default: python3.11, else python3)
#   LOGOUT_FORCE_INSTALL  1 = run pip install even when pyproject.toml has not changed

LOGOUT_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$LOGOUT_REPO_ROOT"

if [ -t 2 ]; then
    log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    log() { printf '==> %s\n' "$*" >&2; }
fi
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Run a command as root: directly when we are root, else through sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root to run '$*' (not root and no sudo); install it yourself and rerun"
    fi
}

in_ci() { [ "$(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]')" = true ]; }

# LOGOUT_TEST_NO_APT=1: install no Debian package (the tests that need a missing one fail,
# naming it). CI must run everything, so there the opt-out is ignored, loudly.
apt_allowed() {
    [ "${LOGOUT_TEST_NO_APT:-0}" = 1 ] || return 0
    if in_ci; then
        log "LOGOUT_TEST_NO_APT=1 is ignored: CI=true, where every test must run"
        return 0
    fi
    return 1
}

# Install Debian packages; `apt-get update` runs at most once per script run.
_LOGOUT_APT_UPDATED=0
apt_install() {
    have apt-get || die "cannot install $* automatically (no apt-get); install it and rerun"
    if [ "$_LOGOUT_APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        _LOGOUT_APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# want_package PACKAGE WHY: install a missing Debian package, saying first what and why;
# returns 1 (installing nothing) when LOGOUT_TEST_NO_APT=1 opts out.
want_package() {
    if ! apt_allowed; then
        log "not installing Debian's $1 ($2): LOGOUT_TEST_NO_APT=1; the tests that need it will fail, naming it"
        return 1
    fi
    log "installing Debian's $1: $2 (set LOGOUT_TEST_NO_APT=1 to install nothing)"
    apt_install "$1"
}

ensure_venv() {
    local py="${LOGOUT_PYTHON:-}"
    if [ -z "$py" ]; then
        if have python3.11; then py=python3.11; else py=python3; fi
    fi
    if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then
        have "$py" || die "$py not found; Python 3.11 or newer is required"
        # Debian ships venv/ensurepip separately (python3.11-venv).
        if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            local ver
            ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            apt_install "python${ver}-venv"
        fi
        log "creating .venv with $py"
        "$py" -m venv --clear .venv
        .venv/bin/python -m pip install -q --upgrade pip
    fi

    # pip install -e is idempotent but takes seconds (it builds the editable wheel each
    # time); skip it while pyproject.toml and the interpreter are unchanged.
    local stamp=.venv/.logout-orchestrator-installed want
    want="$({ .venv/bin/python -VV; cat pyproject.toml; } | sha256sum | cut -d' ' -f1)"
    if [ "${LOGOUT_FORCE_INSTALL:-0}" = 1 ] || [ ! -x .venv/bin/logout-orchestrator ] \
        || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing the project into .venv (pip install -e '.[test]')"
        rm -f "$stamp"
        # lxml and xmlsec as wheels only: each bundles its own libxml2, and only the pinned
        # pair of wheels agree on it (built from source they would not).
        .venv/bin/pip install -q --only-binary lxml,xmlsec -e '.[test]'
        printf '%s\n' "$want" >"$stamp"
    fi
}

ensure_venv

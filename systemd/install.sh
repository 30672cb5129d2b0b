#!/usr/bin/env bash
# Install Simpul as a systemd service on 64-bit Raspberry Pi OS, Debian or Ubuntu, from the
# checkout this script sits in. Safe to run again (that is also how to upgrade).
#
#   sudo systemd/install.sh [--listen HOST:PORT]   install or upgrade, start simpul-node
#   sudo systemd/install.sh --uninstall [--purge]  remove; --purge also deletes the data
#
# Environment:
#   ROOT                      install into this directory instead of / (staging, tests):
#                             nothing is started, systemctl is only printed, and the
#                             venv works only at that path (it is not relocatable)
#   PYTHON                    the interpreter for the venv (default python3; 3.11 or 3.12)
#   SYSTEMD_VERSION           the target's systemd version (default: this machine's)
#   SIMPUL_INSTALL_VENV_ARGS  extra `python -m venv` arguments (e.g. --system-site-packages)
#   SIMPUL_INSTALL_PIP_ARGS   extra `pip install` arguments (e.g. --no-deps for an offline
#                             venv that already sees its dependencies)
set -euo pipefail

ROOT="${ROOT:-}"
PYTHON="${PYTHON:-python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/opt/simpul"
VENV="$PREFIX/venv"
UNIT_DIR="$ROOT/etc/systemd/system"
DEFAULTS="$ROOT/etc/default/simpul"
UNITS=(simpul-node.service simpul-hub.service)
USB_UNIT=simpul-usb-mount@.service  # started by the udev rule for each plugged drive
UDEV_RULE=99-simpul-usb.rules
UDEV_DIR="$ROOT/etc/udev/rules.d"
BACKOFF_MIN_SYSTEMD=254  # RestartSteps= / RestartMaxDelaySec=
MDNS_PORT=5353
STAGE=""  # temporary copy of the sources to build from
trap '[ -z "$STAGE" ] || rm -rf "$STAGE"' EXIT

say() { printf 'simpul install: %s\n' "$*"; }
die() { printf 'simpul install: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Run a command on the live system, or only print it when installing into ROOT or when
# systemd is not running (a container, a chroot).
live_systemd() {
  [ -z "$ROOT" ] && [ -d /run/systemd/system ]
}

systemctl_or_print() {
  if live_systemd; then
    say "running: systemctl $*"
    systemctl "$@"
  else
    say "not on a running systemd; run yourself: systemctl $*"
  fi
}

ufw_active() {
  [ -z "$ROOT" ] && command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'
}

# Open each port with ufw, or print the command when ufw is not active. Uninstalling only
# prints: a rule may serve something else too (mDNS for avahi), so the admin decides.
firewall() {
  local action="$1" port
  shift
  for port in "$@"; do
    if [ "$action" = allow ] && ufw_active; then
      say "running: ufw allow $port"
      ufw allow "$port"
    elif [ "$action" = allow ]; then
      say "ufw not active: no firewall change (with ufw: ufw allow $port)"
    else
      say "firewall left as it is; if nothing else needs it: ufw delete allow $port"
    fi
  done
}

# The HOST:PORT the page listens on: /etc/default/simpul, else the unit's default.
current_listen() {
  local value=""
  if [ -f "$DEFAULTS" ]; then
    value="$(sed -n 's/^SIMPUL_LISTEN=//p' "$DEFAULTS" | tail -n 1)"
  fi
  printf '%s\n' "${value:-127.0.0.1:8470}"
}

# Ports to open: LAN sync (page port + 1) and mDNS always; the page only off loopback.
firewall_ports() {
  local listen host port
  listen="$(current_listen)"
  host="${listen%:*}"
  port="${listen##*:}"
  printf '%s\n' "$((port + 1))/tcp" "$MDNS_PORT/udp"
  case "$host" in
    127.* | localhost | '[::1]' | ::1) ;;
    *) printf '%s\n' "$port/tcp" ;;
  esac
}

check_python() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: apt-get install python3 python3-venv"
  "$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); Simpul needs Python 3.11 or 3.12"
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
    die "$PYTHON cannot make a venv: apt-get install python3-venv"
  case "$(uname -m)" in
    armv6l | armv7l | i?86) die "32-bit $(uname -m): Automerge has no wheels for it; use a 64-bit OS" ;;
  esac
}

systemd_version() {
  if [ -n "${SYSTEMD_VERSION:-}" ]; then
    printf '%s\n' "$SYSTEMD_VERSION"
  elif command -v systemctl >/dev/null 2>&1; then
    systemctl --version | awk 'NR == 1 { print $2 + 0 }'
  else
    printf '0\n'
  fi
}

install_package() {
  local venv_args=() pip_args=()
  read -r -a venv_args <<<"${SIMPUL_INSTALL_VENV_ARGS:-}"
  read -r -a pip_args <<<"${SIMPUL_INSTALL_PIP_ARGS:-}"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV"
    mkdir -p "$PREFIX"
    "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
  fi
  # Build from a copy so that the checkout gets no build/ or egg-info from this.
  STAGE="$(mktemp -d)"
  cp -R "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/node" "$REPO/sync" "$REPO/crypto" "$STAGE/"
  say "installing Simpul from $REPO into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}" "$STAGE"
  rm -rf "$STAGE"
  "$VENV/bin/simpul" --help >/dev/null || die "$VENV/bin/simpul does not run"
  mkdir -p "$PREFIX/doc"
  install -m 0644 "$REPO/docs/operations.md" "$REPO/systemd/README.md" "$PREFIX/doc/"
}

install_units() {
  local unit version
  version="$(systemd_version)"
  mkdir -p "$UNIT_DIR"
  for unit in "${UNITS[@]}"; do
    install -m 0644 "$REPO/systemd/$unit" "$UNIT_DIR/$unit"
    if [ "$version" -ge "$BACKOFF_MIN_SYSTEMD" ]; then
      install -D -m 0644 "$REPO/systemd/backoff.conf" "$UNIT_DIR/$unit.d/backoff.conf"
    else
      rm -f "$UNIT_DIR/$unit.d/backoff.conf"
      rmdir "$UNIT_DIR/$unit.d" 2>/dev/null || true
    fi
  done
  if [ "$version" -lt "$BACKOFF_MIN_SYSTEMD" ]; then
    say "systemd $version < $BACKOFF_MIN_SYSTEMD: restarts every 5 s without growing back-off"
  fi
  say "units installed in $UNIT_DIR: ${UNITS[*]} (simpul-hub is not enabled: a hub needs 'simpul hub trust' first)"
  install -m 0644 "$REPO/systemd/$USB_UNIT" "$UNIT_DIR/$USB_UNIT"
  install -D -m 0644 "$REPO/systemd/$UDEV_RULE" "$UDEV_DIR/$UDEV_RULE"
  say "USB drives: $UDEV_DIR/$UDEV_RULE mounts FAT32/exFAT drives under /media/simpul"
}

udev_reload() {
  if live_systemd && command -v udevadm >/dev/null 2>&1; then
    say "running: udevadm control --reload"
    udevadm control --reload
  else
    say "not on a running system with udev; run yourself: udevadm control --reload"
  fi
}

write_defaults() {
  local listen="$1"
  [ -n "$listen" ] || return 0
  mkdir -p "$(dirname "$DEFAULTS")"
  printf '# Read by simpul-node.service (see docs/operations.md).\nSIMPUL_LISTEN=%s\n' \
    "$listen" >"$DEFAULTS"
  say "page listens on $listen ($DEFAULTS)"
}

do_install() {
  local listen="$1"
  check_python
  install_package
  install_units
  write_defaults "$listen"
  # shellcheck disable=SC2046  # one port per word
  firewall allow $(firewall_ports)
  systemctl_or_print daemon-reload
  udev_reload
  systemctl_or_print try-restart simpul-node.service
  systemctl_or_print enable --now simpul-node.service
  say "done; data in /var/lib/simpul (made by systemd on first start); logs: journalctl -u simpul-node"
}

do_uninstall() {
  local purge="$1" unit
  if live_systemd; then
    for unit in "${UNITS[@]}"; do
      systemctl disable --now "$unit" 2>/dev/null || true
    done
  else
    say "not on a running systemd; run yourself: systemctl disable --now ${UNITS[*]}"
  fi
  # shellcheck disable=SC2046  # one port per word
  firewall delete $(firewall_ports)
  for unit in "${UNITS[@]}"; do
    rm -f "$UNIT_DIR/$unit"
    rm -rf "$UNIT_DIR/$unit.d"
  done
  rm -f "$UNIT_DIR/$USB_UNIT" "$UDEV_DIR/$UDEV_RULE"
  rm -rf "$PREFIX"
  systemctl_or_print daemon-reload
  udev_reload
  if [ "$purge" = yes ]; then
    rm -rf "$ROOT/var/lib/simpul" "$ROOT/var/lib/private/simpul" \
      "$ROOT/var/lib/simpul-hub" "$ROOT/var/lib/private/simpul-hub" "$DEFAULTS" "$DEFAULTS-hub"
    say "removed; data deleted (--purge)"
  else
    say "removed; data kept in $ROOT/var/lib/simpul (delete it with --uninstall --purge)"
  fi
}

main() {
  local mode=install purge=no listen=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --uninstall) mode=uninstall ;;
      --purge) purge=yes ;;
      --listen)
        [ $# -ge 2 ] || die "--listen needs HOST:PORT"
        listen="$2"
        shift
        ;;
      --listen=*) listen="${1#--listen=}" ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
  done
  [ "$purge" = no ] || [ "$mode" = uninstall ] || die "--purge goes with --uninstall"
  if [ -n "$listen" ] && ! [[ "$listen" =~ ^.+:[0-9]+$ ]]; then
    die "--listen wants HOST:PORT, got $listen"
  fi
  if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or set ROOT=DIR to install into a directory"
  fi
  if [ "$mode" = install ]; then do_install "$listen"; else do_uninstall "$purge"; fi
}

main "$@"

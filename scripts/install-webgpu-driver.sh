#!/usr/bin/env bash
# Install a Vulkan driver that wgpu can use when no GPU driver is present:
# Mesa's lavapipe (CPU) plus the Vulkan loader. On Debian 12 it prefers Mesa 25
# from bookworm-backports, whose lavapipe has no per-invocation loop limit
# (Mesa 22.3's cuts loops past 65 535 iterations silently). The backports
# entry is derived from the machine's own Debian sources entry (same URIs).
# Needs root. Usage: scripts/install-webgpu-driver.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-webgpu-driver: run as root (apt-get)" >&2; exit 1; }
. /etc/os-release
export DEBIAN_FRONTEND=noninteractive
target=()
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
  bp=/etc/apt/sources.list.d/q4gsw-bookworm-backports.sources
  if [ ! -f "$bp" ]; then
    # The first deb822 stanza whose Suites name plain "bookworm" gives the URIs.
    uris=$(awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm( |\n|$)/ && !/security/ {
             if (match($0, /URIs:[^\n]*/)) { print substr($0, RSTART+6, RLENGTH-6); exit } }' \
           /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
      uris=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
    fi
    if [ -n "$uris" ]; then
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uris" > "$bp"
    fi
  fi
  [ -f "$bp" ] && target=(-t bookworm-backports)
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${target[@]}" mesa-vulkan-drivers libvulkan1 \
  || apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
dpkg-query -W -f='installed ${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1

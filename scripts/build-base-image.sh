#!/usr/bin/env bash
# Build the Docker base image the Shipyard image starts from, without any image registry.
# No registry is reachable from CI machines, so `docker pull` fails; this builds a Debian
# bookworm root file system with debootstrap (from the Debian mirror apt already uses) and
# imports it as an image with Python, venv, pip, git and CA certificates.
#
#   usage: scripts/build-base-image.sh [IMAGE_TAG]     (default: shipyard-test/python:bookworm)
#
# The image trusts what this host trusts: certificates added under /usr/local/share/ca-certificates
# (a TLS-inspecting egress proxy's CA, say) are added to it, so pip inside `docker build` reaches
# PyPI as the host's pip does. An image of that tag built without them (e.g. by another script)
# gets them added as one more layer.
#
# Needs root, a running dockerd (scripts/start-dockerd.sh) and a few minutes the first time;
# later runs only check. Where a registry is reachable, any Debian-based image with
# python3 >= 3.10, python3-venv and git works as the Dockerfile's BASE instead.
set -euo pipefail
tag="${1:-shipyard-test/python:bookworm}"
local_cas=/usr/local/share/ca-certificates
# One build at a time on this host (the test suite's two workers may both ask for the image on a
# fresh machine): the second waits here, then finds the image present.
exec 9>"${TMPDIR:-/tmp}/shipyard-build-base-image.lock"
flock 9

add_host_cas() {
  local names
  names="$(cd "$local_cas" 2>/dev/null && ls -- *.crt 2>/dev/null | tr '\n' ' ')" || true
  [ -n "$names" ] || return 0
  # shellcheck disable=SC2086
  if docker run --rm "$tag" sh -c "cd $local_cas && ls $names" >/dev/null 2>&1; then return 0; fi
  local box="shipyard-base-cas-$$"
  docker run --name "$box" -v "$local_cas:/host-cas:ro" "$tag" \
    sh -c 'cp /host-cas/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates >/dev/null'
  docker commit --change 'CMD ["/bin/bash"]' "$box" "$tag" >/dev/null
  docker rm "$box" >/dev/null
  echo "added this host's CA certificates ($names) to $tag"
}

if docker image inspect "$tag" >/dev/null 2>&1; then
  add_host_cas
  echo "image $tag present"; exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# The machine's own apt configuration names the Debian mirror it may use.
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
[ -n "$mirror" ] || mirror="$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
[ -n "$mirror" ] || { echo "build-base-image: no Debian mirror configured in apt sources" >&2; exit 1; }
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,git,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
# debootstrap leaves its package cache behind; the image need not carry it.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$tag" >/dev/null
add_host_cas
echo "built $tag"

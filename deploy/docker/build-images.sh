#!/usr/bin/env bash
# Builds every image docker-compose.yml runs, with no image registry and no
# network inside any build step:
#
#   mt5-debian:bookworm   Debian 12 (debootstrap --variant=minbase, trimmed),
#                         brought in with `docker import`;
#   mt5-nats:bookworm     nats-server      } Debian 12's packages, downloaded
#   mt5-redis:bookworm    redis, sentinel  } on the host against that base and
#   mt5-nginx:bookworm    nginx-light      } installed from the build context;
#   mt5-gateway:TAG       our `gateway` and `ingestor`, release builds from
#                         the host, stripped (Dockerfile, target `prebuilt`).
#
# The Debian base and the .deb files are cached in $MT5_IMAGE_CACHE
# (/var/cache/mt5-compose); a second run only rebuilds what changed.
#
# Usage: deploy/docker/build-images.sh [--bin-dir DIR] [--tag TAG]
#   --bin-dir  where the release binaries are (default target/release)
#   --tag      the gateway image's tag (default dev, as MT5_VERSION)
# Needs: docker (a running daemon), debootstrap, strip; root for debootstrap.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin_dir=target/release tag=dev
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "build-images.sh: unknown option $1" >&2; exit 64 ;;
  esac
done
cache=${MT5_IMAGE_CACHE:-/var/cache/mt5-compose}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"
say() { printf '  [images] %s\n' "$*"; }

# 1. The Debian base.
if [ ! -d "$cache/rootfs" ]; then
  say "debootstrap --variant=minbase bookworm (once; cached in $cache)"
  rm -rf "$cache/rootfs.tmp"
  debootstrap --variant=minbase bookworm "$cache/rootfs.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  mv "$cache/rootfs.tmp" "$cache/rootfs"
fi
if ! docker image inspect mt5-debian:bookworm >/dev/null 2>&1; then
  say "docker import mt5-debian:bookworm"
  tar -C "$cache/rootfs" -c \
    --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' \
    --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
    --exclude='./usr/share/info/*' --exclude='./usr/share/locale/*' \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' --exclude='./run/*' \
    --exclude='./tmp/*' --exclude='./root/*' --exclude='./var/log/*' . |
    docker import --change 'CMD ["bash"]' - mt5-debian:bookworm >/dev/null
fi

# 2. The .deb files of each image, resolved against the base (apt in a
#    chroot of it, on the host, with the host's network).
fetch_debs() { # set packages...
  local set=$1; shift
  local dir="$cache/debs/$set"
  [ -n "$(ls "$dir"/*.deb 2>/dev/null)" ] && return 0
  say "apt-get download $* (with dependencies)"
  local root="$cache/rootfs"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  if [ ! -e "$cache/apt-updated" ]; then
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
      "$mirror" "$mirror" >"$root/etc/apt/sources.list"
    chroot "$root" apt-get update -qq
    touch "$cache/apt-updated"
  fi
  rm -rf "$root/var/cache/apt/archives/"*.deb
  chroot "$root" apt-get install -qq -y --download-only --no-install-recommends "$@" >/dev/null
  mkdir -p "$dir"
  mv "$root/var/cache/apt/archives/"*.deb "$dir/"
}
fetch_debs nats nats-server
fetch_debs redis redis-server redis-sentinel redis-tools
fetch_debs nginx nginx-light gettext-base

ctx="$cache/ctx"
rm -rf "$ctx"
mkdir -p "$ctx/debs"
cp -r "$cache/debs/." "$ctx/debs/"
cp deploy/docker/nginx-start.sh "$ctx/"
for target in nats redis nginx; do
  say "docker build mt5-$target:bookworm"
  docker build -q -f deploy/docker/infra.Dockerfile --target "$target" \
    --build-arg BASE_IMAGE=mt5-debian:bookworm -t "mt5-$target:bookworm" "$ctx" >/dev/null
done

# 3. Our image from the host's release binaries, stripped.
for bin in gateway ingestor; do
  [ -x "$bin_dir/$bin" ] || { echo "build-images.sh: $bin_dir/$bin missing: cargo build --release -p gateway -p ingestor" >&2; exit 1; }
done
bins="$cache/bins"
rm -rf "$bins"
mkdir -p "$bins"
strip -o "$bins/gateway" "$bin_dir/gateway"
strip -o "$bins/ingestor" "$bin_dir/ingestor"
say "docker build mt5-gateway:$tag (stripped release binaries)"
docker build -q -f Dockerfile --target prebuilt --build-arg BASE_IMAGE=mt5-debian:bookworm \
  -t "mt5-gateway:$tag" "$bins" >/dev/null
say "$(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^mt5-' | tr '\n' ' ')"

#!/usr/bin/env bash
# build.sh - builds the data-reduction corpus of issue 7 from Debian material:
#
#   base.img     ext4 image (mkfs.ext4 -d) of an installed package tree: this
#                machine's installed Debian files (/etc, /usr/bin, /usr/sbin,
#                /usr/lib/x86_64-linux-gnu, /usr/share/man, /var/lib/dpkg).
#                Not a debootstrap: the machine is a Debian 12 install with
#                ~880 packages, so its files are a real package tree, and
#                copying them takes seconds where debootstrap from the
#                mirror takes many minutes on this shared 2-core machine.
#   updated.img  the same tree after what an admin does: the packages
#                `apt list --upgradable` offers from a fixed list upgraded
#                (their .debs fetched with apt-get download and unpacked
#                over the tree with dpkg -x), a few new packages added the
#                same way, config files edited, logs appended; written as a
#                NEW ext4 image from scratch (mkfs.ext4 -d of the updated
#                tree), so block layout differs from base.img.
#   pgdata.img   ext4 image of a PostgreSQL 15 data directory after
#                pgbench -i -s $PGSCALE and pgbench -T $PGSECONDS.
#   MANIFEST     what was used: sources, package versions, sizes, sha256.
#
# Idempotent: each image that exists is kept. Needs root (chown of the
# trees, runuser postgres). Run it niced: nice -n 10 bench/corpus/build.sh
#
# Environment (all optional):
#   SHALE_CORPUS   output directory (default /var/tmp/shale-corpus)
#   IMG_SIZE       size of base.img and updated.img (default 1536M)
#   PGSCALE        pgbench scale (default 20, ~300 MB of tables+indexes)
#   PGSECONDS      pgbench run time (default 60)
#   PGIMG_SIZE     size of pgdata.img (default 1024M)
set -euo pipefail

OUT=${SHALE_CORPUS:-/var/tmp/shale-corpus}
IMG_SIZE=${IMG_SIZE:-1536M}
PGSCALE=${PGSCALE:-20}
PGSECONDS=${PGSECONDS:-60}
PGIMG_SIZE=${PGIMG_SIZE:-1024M}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# The base tree: installed package files, no /proc-like or per-host caches.
BASE_DIRS=(/etc /usr/bin /usr/sbin /usr/lib/x86_64-linux-gnu /usr/share/man /var/lib/dpkg)
# Packages upgraded in updated.img when the mirror has a newer version, and
# packages added (not installed here). Fixed lists so reruns match.
UPGRADE_PKGS=(bash curl libcurl4 dpkg e2fsprogs libcom-err2 libcap2 libcap2-bin jq apt libapt-pkg6.0 libbrotli1 base-files ca-certificates libcups2 libevent-2.1-7)
ADD_PKGS=(htop tmux rsync lsof strace tcpdump)

if ((EUID != 0)); then echo "build.sh: needs root" >&2; exit 2; fi
for t in mkfs.ext4 apt-get dpkg-deb runuser sha256sum; do
  command -v "$t" >/dev/null || { echo "build.sh: $t not found" >&2; exit 2; }
done
[[ -x $PGBIN/initdb && -x $PGBIN/pg_ctl ]] || { echo "build.sh: no PostgreSQL in $PGBIN (apt-get install -y postgresql)" >&2; exit 2; }
command -v pgbench >/dev/null || { echo "build.sh: pgbench not found (apt-get install -y postgresql-contrib)" >&2; exit 2; }

mkdir -p "$OUT"
WORK=$OUT/work
mkdir -p "$WORK"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# mkimg DIR IMG SIZE: a fresh ext4 image of DIR (no journal replay needed,
# fixed UUID/hash seed so reruns give the same metadata).
mkimg() {
  local dir=$1 img=$2 size=$3
  rm -f "$img.tmp"
  mkfs.ext4 -q -F -L corpus -U clear -E root_owner=0:0,hash_seed=00000000-0000-0000-0000-000000000000 \
    -d "$dir" "$img.tmp" "$size"
  mv "$img.tmp" "$img"
}

copy_base() { # copy_base DEST
  local dest=$1 d
  for d in "${BASE_DIRS[@]}"; do
    mkdir -p "$dest$(dirname "$d")"
    cp -a "$d" "$dest$d" 2>/dev/null || cp -a "$d" "$dest$(dirname "$d")/"
  done
}

if [[ ! -f $OUT/base.img ]]; then
  log "base: copying ${BASE_DIRS[*]}"
  rm -rf "$WORK/base"; mkdir -p "$WORK/base"
  copy_base "$WORK/base"
  log "base: tree $(du -sh "$WORK/base" | cut -f1); mkfs.ext4 -d ($IMG_SIZE)"
  mkimg "$WORK/base" "$OUT/base.img" "$IMG_SIZE"
  dpkg-query -W -f '${Package} ${Version}\n' >"$OUT/base.packages"
  rm -rf "$WORK/base"
  log "base: done"
fi

if [[ ! -f $OUT/updated.img ]]; then
  log "updated: copying base tree again"
  rm -rf "$WORK/updated"; mkdir -p "$WORK/updated" "$WORK/debs"
  copy_base "$WORK/updated"
  log "updated: apt-get download ${UPGRADE_PKGS[*]} ${ADD_PKGS[*]}"
  (cd "$WORK/debs" && apt-get download "${UPGRADE_PKGS[@]}" "${ADD_PKGS[@]}" >/dev/null)
  : >"$OUT/updated.changes"
  for deb in "$WORK"/debs/*.deb; do
    pkg=$(dpkg-deb -f "$deb" Package); ver=$(dpkg-deb -f "$deb" Version)
    old=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || echo -)
    echo "$pkg $old -> $ver" >>"$OUT/updated.changes"
    dpkg-deb -x "$deb" "$WORK/updated"
    # What dpkg records for the package: its status stanza and file list.
    dpkg-deb -c "$deb" | awk '{print substr($6,2)}' | sed 's,/$,,' >"$WORK/updated/var/lib/dpkg/info/$pkg.list"
    dpkg-deb -f "$deb" >>"$WORK/updated/var/lib/dpkg/status"
  done
  log "updated: config edits"
  u=$WORK/updated
  echo "shale-corpus-updated" >"$u/etc/hostname"
  printf '\n# added by admin\n10.0.0.5 db1.example.internal db1\n10.0.0.6 db2.example.internal db2\n' >>"$u/etc/hosts"
  [[ -f $u/etc/ssh/sshd_config ]] && sed -i 's/^#\?PermitRootLogin.*/PermitRootLogin no/; s/^#\?PasswordAuthentication.*/PasswordAuthentication no/' "$u/etc/ssh/sshd_config"
  [[ -f $u/etc/sysctl.conf ]] && printf 'vm.swappiness = 10\nnet.core.somaxconn = 4096\n' >>"$u/etc/sysctl.conf"
  printf 'admin:x:1001:1001:Admin,,,:/home/admin:/bin/bash\n' >>"$u/etc/passwd"
  printf 'admin:x:1001:\n' >>"$u/etc/group"
  mkdir -p "$u/etc/cron.d" && printf '17 3 * * * root /usr/local/sbin/backup.sh\n' >"$u/etc/cron.d/backup"
  rm -f "$u/etc/motd"
  # dpkg's log grows with every install.
  for ch in $(seq 1 40); do date -u "+%F %T status installed corpus-change-$ch" ; done >>"$u/var/lib/dpkg/status-old"
  log "updated: tree $(du -sh "$u" | cut -f1); mkfs.ext4 -d ($IMG_SIZE)"
  mkimg "$u" "$OUT/updated.img" "$IMG_SIZE"
  rm -rf "$WORK/updated"
  log "updated: done ($(wc -l <"$OUT/updated.changes") packages changed)"
fi

if [[ ! -f $OUT/pgdata.img ]]; then
  pg=$WORK/pg; rm -rf "$pg"; mkdir -p "$pg"; chown postgres: "$pg"
  port=$((54000 + RANDOM % 1000))
  log "pgdata: initdb, pgbench -i -s $PGSCALE, pgbench -T $PGSECONDS (port $port)"
  runuser -u postgres -- "$PGBIN/initdb" -D "$pg/data" >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$pg/data" -l "$pg/log" -w \
    -o "-p $port -k $pg -c listen_addresses=''" start >/dev/null
  trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D "$pg/data" -m fast stop >/dev/null 2>&1 || true' EXIT
  runuser -u postgres -- pgbench -q -h "$pg" -p "$port" -i -s "$PGSCALE" postgres >/dev/null 2>&1
  runuser -u postgres -- pgbench -h "$pg" -p "$port" -c 4 -j 2 -T "$PGSECONDS" postgres >"$OUT/pgbench.out" 2>&1
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null
  trap - EXIT
  log "pgdata: data dir $(du -sh "$pg/data" | cut -f1); mkfs.ext4 -d ($PGIMG_SIZE)"
  mkimg "$pg/data" "$OUT/pgdata.img" "$PGIMG_SIZE"
  "$PGBIN/postgres" --version >"$OUT/pgdata.version"
  rm -rf "$pg"
  log "pgdata: done"
fi

log "manifest"
{
  echo "# shale data-reduction corpus (bench/corpus/build.sh)"
  echo "manifest written: $(date -u +%FT%TZ) on $(uname -n), $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "base tree: ${BASE_DIRS[*]} of this machine ($(wc -l <"$OUT/base.packages") packages installed; list in base.packages)"
  echo "updated: $(wc -l <"$OUT/updated.changes") packages unpacked over the base tree (updated.changes), config edits, new ext4 image"
  echo "pgdata: $(cat "$OUT/pgdata.version" 2>/dev/null), pgbench -i -s $PGSCALE, -T $PGSECONDS: $(grep -h '^tps' "$OUT/pgbench.out" 2>/dev/null | head -1)"
  echo "mkfs.ext4: $(dpkg-query -W -f '${Version}' e2fsprogs)"
  echo
  echo "# image  size_bytes  allocated_bytes  sha256"
  for f in base updated pgdata; do
    img=$OUT/$f.img
    echo "$f.img $(stat -c %s "$img") $(( $(stat -c %b "$img") * $(stat -c %B "$img") )) $(sha256sum "$img" | cut -d' ' -f1)"
  done
  echo
  echo "# updated.changes (package old -> new)"
  cat "$OUT/updated.changes"
} >"$OUT/MANIFEST"
cat "$OUT/MANIFEST" >&2

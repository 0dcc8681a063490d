#!/usr/bin/env bash
# Idempotent host setup for scx_concord / concord-lab on Debian 12 (bookworm), run as root.
# Adds bookworm-backports + trixie + trixie-backports pinned at priority 100 (nothing upgrades by accident),
# then installs only what is missing. A second run does no network work beyond a quick dpkg check.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $0)"
# Debian 12 itself, not a derivative that carries /etc/debian_version (Ubuntu does).
os_id=$(. /etc/os-release 2>/dev/null && echo "${ID:-}:${VERSION_ID:-}")
[ "$os_id" = "debian:12" ] || die "this script supports Debian 12 (bookworm) only (/etc/os-release says ${os_id:-nothing})"

# The Rust toolchain the workspace asks for (rust-version in Cargo.toml); rustup installs it.
here=$(cd "$(dirname "$0")/.." && pwd)
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$here/Cargo.toml" | head -1)
command -v cargo >/dev/null 2>&1 || die "no cargo on PATH: install Rust >= $need_rust with rustup (rustup toolchain install stable), then run this again"
have_rust=$(rustc --version 2>/dev/null | awk '{print $2}')
if [ -n "$need_rust" ] && [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -1)" != "$need_rust" ]; then
    die "rustc $have_rust is older than the workspace's rust-version $need_rust: rustup update stable"
fi

SOURCES=/etc/apt/sources.list.d/concord-lab.sources
PREFS=/etc/apt/preferences.d/concord-lab
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || die "missing $KEYRING: apt-get install debian-archive-keyring"

# The machine's own Debian mirror (never a fixed archive host): the URI that serves its bookworm suite,
# from deb822 sources or a one-line sources.list.
mirror_uri() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/security/ {
                 if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u=substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }' "$f"
    done | head -1
    if [ -r /etc/apt/sources.list ]; then
        awk '$1=="deb" && $3 ~ /^bookworm$/ { print $2; exit }' /etc/apt/sources.list
    fi
}
# CONCORD_DEBIAN_MIRROR overrides it (a local mirror, a proxy).
MIRROR=${CONCORD_DEBIAN_MIRROR:-$(mirror_uri | head -1)}
[ -n "$MIRROR" ] || die "no Debian bookworm mirror in /etc/apt/sources.list{,.d/*.sources}: configure apt first, or set CONCORD_DEBIAN_MIRROR"

want_sources="Types: deb
URIs: $MIRROR
Suites: bookworm-backports trixie trixie-backports
Components: main
Signed-By: $KEYRING"
want_prefs="Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100

Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=trixie-backports
Pin-Priority: 100"

changed=0
if [ "$(cat "$SOURCES" 2>/dev/null)" != "$want_sources" ]; then
    log "adding apt suites (bookworm-backports, trixie, trixie-backports) to $SOURCES"
    printf '%s\n' "$want_sources" >"$SOURCES"; changed=1
fi
if [ "$(cat "$PREFS" 2>/dev/null)" != "$want_prefs" ]; then
    log "pinning those suites at priority 100 in $PREFS"
    printf '%s\n' "$want_prefs" >"$PREFS"; changed=1
fi

# Packages from bookworm (default release) and from bookworm-backports (newer QEMU, bpftool).
BASE_PKGS=(busybox-static cpio kmod xz-utils clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config make
           libseccomp-dev libcap-ng-dev stress-ng rt-tests linux-perf sysbench python3 file erlang-base
           dpkg-dev)
BPO_PKGS=(qemu-system-x86 bpftool)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${BASE_PKGS[@]}" "${BPO_PKGS[@]}"; do
    installed "$p" || missing+=("$p")
done
# QEMU must be 10.x (bookworm's 7.2 lacks the smp-cache options the lab uses).
if dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | grep -qv '^1:10\.'; then missing+=(qemu-system-x86); fi

lists_fresh() { ls /var/lib/apt/lists/*trixie-backports*Packages* >/dev/null 2>&1; }
if [ ${#missing[@]} -gt 0 ] || [ $changed -eq 1 ] || ! lists_fresh; then
    log "apt-get update"
    apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    base=(); bpo=()
    for p in "${missing[@]}"; do
        case " ${BPO_PKGS[*]} " in *" $p "*) bpo+=("$p");; *) base+=("$p");; esac
    done
    # apt's own progress lines (one per package fetched and set up), not a silent wait; a
    # failure shows below as a package still missing.
    apt_install() { apt-get install -y --no-install-recommends "$@" | grep --line-buffered -E '^(Get:|Setting up)' >&2 || true; }
    [ ${#base[@]} -eq 0 ] || { log "installing ${#base[@]} package(s): ${base[*]}"; apt_install "${base[@]}"; }
    [ ${#bpo[@]} -eq 0 ] || { log "installing from bookworm-backports: ${bpo[*]}"; apt_install -t bookworm-backports "${bpo[@]}"; }
    still=()
    for p in "${missing[@]}"; do
        installed "$p" || still+=("$p")
    done
    [ ${#still[@]} -eq 0 ] || die "apt-get could not install: ${still[*]}"
fi

# libbpf and the BPF build look for plain `clang`/`llvm-strip`.
for tool in clang llvm-strip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        ln -sf "/usr/bin/${tool}-19" "/usr/local/bin/$tool"; log "linked /usr/local/bin/$tool -> ${tool}-19"
    fi
done

# virtiofsd is not packaged for bookworm; the lab uses it for kernels without 9p modules (7.0.x).
if ! command -v virtiofsd >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/virtiofsd" ]; then
    log "cargo install virtiofsd (about 2 minutes on 2 cores)"
    cargo install --locked --quiet virtiofsd
fi

# `make deb` packages the scheduler with cargo-deb (pinned: its manifest keys change across
# majors).
cargo_deb_version=3.7.0
if ! cargo deb --version 2>/dev/null | grep -q " $cargo_deb_version"; then
    log "cargo install cargo-deb $cargo_deb_version (about 2 minutes on 2 cores)"
    cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi

log "host ready: $(qemu-system-x86_64 --version | head -1), $(clang-19 --version | head -1)"

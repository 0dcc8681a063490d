#!/usr/bin/env bash
# Idempotent host setup for scx_concord / concord-lab on Debian 12 (bookworm), run as root.
# Adds bookworm-backports + trixie + trixie-backports pinned at priority 100 (nothing upgrades by accident),
# then installs only what is missing. A second run does no network work beyond a quick dpkg check.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $0)"
[ -r /etc/debian_version ] || die "this script supports Debian 12 (bookworm) only"

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
MIRROR=$(mirror_uri | head -1)
[ -n "$MIRROR" ] || die "no Debian bookworm mirror in /etc/apt/sources.list{,.d/*.sources}: configure apt first"
grep -q '^12\.' /etc/debian_version || die "this script supports Debian 12 (bookworm) only (found $(cat /etc/debian_version))"

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
           libseccomp-dev libcap-ng-dev stress-ng rt-tests linux-perf sysbench python3 file erlang-base)
BPO_PKGS=(qemu-system-x86 bpftool)

missing=()
for p in "${BASE_PKGS[@]}" "${BPO_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
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
    [ ${#base[@]} -eq 0 ] || { log "installing: ${base[*]}"; apt-get install -y -qq --no-install-recommends "${base[@]}" >/dev/null; }
    [ ${#bpo[@]} -eq 0 ] || { log "installing from bookworm-backports: ${bpo[*]}"; apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bpo[@]}" >/dev/null; }
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

log "host ready: $(qemu-system-x86_64 --version | head -1), $(clang-19 --version | head -1)"

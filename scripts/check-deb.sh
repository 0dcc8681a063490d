#!/usr/bin/env bash
# Checks a scx_concord .deb (make deb): the files an operator expects are in it, the unit is
# not enabled on install, and the packaged binary runs. Usage: check-deb.sh FILE.deb
set -euo pipefail
deb="${1:?usage: check-deb.sh FILE.deb}"
[ -f "$deb" ] || { echo "check-deb: no such file: $deb" >&2; exit 2; }
fail=0
no() { echo "check-deb: $*" >&2; fail=1; }

contents="$(dpkg-deb -c "$deb" | awk '{print $6}')"
for f in ./usr/bin/scx_concord ./usr/bin/concord-ext ./usr/share/man/man8/scx_concord.8.gz \
    ./usr/share/bash-completion/completions/scx_concord \
    ./usr/share/zsh/vendor-completions/_scx_concord \
    ./usr/share/fish/vendor_completions.d/scx_concord.fish \
    ./etc/default/scx_concord ./usr/share/doc/scx-concord/operators.md; do
    grep -qx "$f" <<<"$contents" || no "$f missing"
done
grep -q '^\./\(usr/\)\?lib/systemd/system/scx_concord\.service$' <<<"$contents" \
    || no "the systemd unit is missing"

info="$(dpkg-deb -I "$deb")"
grep -q '^ Package: scx-concord$' <<<"$info" || no "unexpected package name"
grep -q '^ Depends: .*libc6' <<<"$info" || no "no shared-library dependencies computed"
dpkg-deb -I "$deb" conffiles 2>/dev/null | grep -qx '/etc/default/scx_concord' \
    || no "/etc/default/scx_concord is not a conffile (an upgrade would overwrite an operator's flags)"
# Installing must not start or enable a scheduler by itself: the unit is enabled again only on
# an upgrade of a host where it was enabled, and restarted only if it was running.
scripts="$(mktemp -d)"
dpkg-deb -e "$deb" "$scripts"
if [ -f "$scripts/postinst" ]; then
    ! grep -q 'deb-systemd-invoke \(start\|restart\)\|systemctl .*\(start\|enable\)' "$scripts/postinst" \
        || no "postinst starts or enables the unit"
    awk '/was-enabled/ {guard = NR} /deb-systemd-helper enable/ && NR - guard > 2 {bad = 1} END {exit bad}' \
        "$scripts/postinst" || no "postinst enables the unit on a fresh install"
fi
rm -rf "$scripts"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/scx_concord" --version | grep -q '^scx_concord ' || no "the packaged scx_concord does not run"
zcat "$root/usr/share/man/man8/scx_concord.8.gz" | grep -q '^\.TH scx_concord 8' || no "the man page is not one"

[ "$fail" = 0 ] || exit 1
echo "check-deb: $(basename "$deb"): binaries, man page, completions, unit (disabled), defaults (conffile): ok"

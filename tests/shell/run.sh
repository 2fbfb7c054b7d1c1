#!/bin/sh
# tests/shell/run.sh [FILE.test.sh...]: runs the host tests of the on-device scripts (default:
# every tests/shell/*.test.sh), each under `busybox sh` as on the device, against the
# repository's initramfs libraries and the contract fixture tests/shell/contract.sh (the
# build generates the real one). `cargo test` runs this through src/node/overlay_tests.rs.
# Needs busybox (busybox-static), sfdisk (fdisk), sgdisk (gdisk), e2fsprogs.

here=$(cd "${0%/*}" && pwd)
repo=${here%/tests/shell}
EDGEIMG_LIB=$(mktemp -d)
trap 'rm -rf "$EDGEIMG_LIB"' EXIT
ln -s "$here/contract.sh" "$EDGEIMG_LIB/contract.sh"
for f in "$repo"/overlays/initramfs/usr/lib/edgeimg/*.sh; do
	# A contract.sh there (generated, or copied in by hand) does not replace the fixture.
	[ -e "$EDGEIMG_LIB/${f##*/}" ] || ln -s "$f" "$EDGEIMG_LIB/"
done
export EDGEIMG_LIB EDGEIMG_REPO="$repo"

[ "$#" -gt 0 ] || set -- "$here"/*.test.sh
status=0
for t in "$@"; do
	busybox sh "$t" || status=1
done
exit "$status"

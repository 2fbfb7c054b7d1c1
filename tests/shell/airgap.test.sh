# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of link_airgap (the root's lib.sh): the airgap bundles of the verified root are
# linked into <data-dir>/images, where the k0s worker imports them, with no copy on data.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

rootfs_lib() {
	export EDGEIMG_AIRGAP="$T/root/usr/share/edgeimg/airgap" K0S_DATA="$T/data/k0s"
	# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/lib.sh
	. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/lib.sh"
}

bundles_are_linked_not_copied() {
	rootfs_lib
	mkdir -p "$EDGEIMG_AIRGAP"
	echo layout >"$EDGEIMG_AIRGAP/k0s-airgap-bundle-v1-linux-amd64.tar"
	out=$(link_airgap) || exit 1
	assert_eq "edgeimg: airgap: 1 bundle(s) linked into $K0S_DATA/images" "$out"
	l="$K0S_DATA/images/k0s-airgap-bundle-v1-linux-amd64.tar"
	[ -L "$l" ] || { echo "no symlink at $l"; exit 1; }
	assert_eq "$EDGEIMG_AIRGAP/k0s-airgap-bundle-v1-linux-amd64.tar" "$(readlink "$l")"
	assert_eq layout "$(cat "$l")" "the link reads the bundle"
	# A second boot changes nothing and says the same.
	assert_eq "$out" "$(link_airgap)"
	assert_eq 1 "$(find "$K0S_DATA/images" -mindepth 1 | wc -l)"
}

stale_links_go_and_other_files_stay() {
	rootfs_lib
	mkdir -p "$EDGEIMG_AIRGAP" "$K0S_DATA/images"
	echo new >"$EDGEIMG_AIRGAP/new.tar"
	ln -s "$EDGEIMG_AIRGAP/old.tar" "$K0S_DATA/images/old.tar"
	echo mine >"$K0S_DATA/images/user.tar"
	ln -s /elsewhere/gone.tar "$K0S_DATA/images/foreign.tar"
	link_airgap >/dev/null || exit 1
	[ -e "$K0S_DATA/images/old.tar" ] || [ -L "$K0S_DATA/images/old.tar" ] &&
		{ echo "the link to a bundle this image lacks stayed"; exit 1; }
	assert_eq new "$(cat "$K0S_DATA/images/new.tar")"
	assert_eq mine "$(cat "$K0S_DATA/images/user.tar")" "a file the user put there"
	[ -L "$K0S_DATA/images/foreign.tar" ] || { echo "a link edgeimg did not make was removed"; exit 1; }
}

no_bundle_no_line_no_folder() {
	rootfs_lib
	out=$(link_airgap) || exit 1
	assert_eq "" "$out"
	[ -e "$K0S_DATA/images" ] && { echo "images folder made without a bundle"; exit 1; }
	return 0
}

tcase "bundles of the root are linked into <data-dir>/images, not copied" bundles_are_linked_not_copied
tcase "links to bundles the image no longer ships go; other files stay" stale_links_go_and_other_files_stay
tcase "an image without a bundle makes no folder and prints nothing" no_bundle_no_line_no_folder
t_done

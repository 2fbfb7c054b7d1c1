# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, verity.sh: the read-only root. The squashfs partition is mounted on
# $NEWROOT directly, or through dm-verity when the command line carries the root hash
# (edgeimg.verity= with _salt, _blocks, _hash_start; the hash tree sits on the same
# partition after the data). A block that does not match stops the boot: a changed root is
# never run. Needs common.sh and the KARG_VERITY* variables of cmdline.sh.
#
# State kept for the data step, which maps the root again after growing the data
# partition: ROOT_DEV (the device mounted: /dev/vda2 or the dm-verity device), VERITY (1 when
# the root is mapped through dm-verity), VERITY_CHECKED (1 once the whole root was read).

# dm-verity: Debian's dmsetup, copied into the initramfs with its libraries by the build.
DMSETUP=${EDGEIMG_DMSETUP:-/usr/sbin/dmsetup}
VERITY_NAME=edgeimg-root

# verity_check_args: fails unless the four dm-verity arguments are there and well formed.
verity_check_args() {
	if [ -z "$KARG_VERITY_SALT" ] || [ -z "$KARG_VERITY_BLOCKS" ] || [ -z "$KARG_VERITY_HASH_START" ]; then
		fail "root: edgeimg.verity= needs edgeimg.verity_salt=, edgeimg.verity_blocks= and edgeimg.verity_hash_start= on the kernel command line (rebuild the image)"
	fi
	case "$KARG_VERITY_BLOCKS$KARG_VERITY_HASH_START" in
	*[!0-9]*) fail "root: edgeimg.verity_blocks=$KARG_VERITY_BLOCKS and edgeimg.verity_hash_start=$KARG_VERITY_HASH_START must be numbers (rebuild the image)" ;;
	esac
	# A salt of `-` is dm-verity's "no salt".
	case "$KARG_VERITY${KARG_VERITY_SALT#-}" in
	*[!0-9a-fA-F]*) fail "root: edgeimg.verity= and edgeimg.verity_salt= must be hex digits (rebuild the image)" ;;
	esac
}

# verity_table PART: prints the dm-verity table for PART (4096-byte blocks, sha256; data and
# hash tree on PART, the tree from hash block KARG_VERITY_HASH_START on). Call
# verity_check_args first.
verity_table() {
	echo "0 $((KARG_VERITY_BLOCKS * 8)) verity 1 $DEV/$1 $DEV/$1 4096 4096 $KARG_VERITY_BLOCKS $KARG_VERITY_HASH_START sha256 $KARG_VERITY $KARG_VERITY_SALT"
}

# verity_dev: the block device of the mapping (/dev/mapper/NAME, else /dev/dm-N from sysfs).
verity_dev() {
	local d
	if [ -b "$DEV/mapper/$VERITY_NAME" ]; then
		echo "$DEV/mapper/$VERITY_NAME"
		return 0
	fi
	for d in "$SYS"/block/dm-*; do
		if [ "$(cat "$d/dm/name" 2>/dev/null)" = "$VERITY_NAME" ]; then
			echo "$DEV/${d##*/}"
			return 0
		fi
	done
	return 1
}

# verity_corrupted: true when dm-verity has seen a block that does not match the root hash.
verity_corrupted() {
	[ "$(DM_DISABLE_UDEV=1 "$DMSETUP" status "$VERITY_NAME" 2>/dev/null | awk '{print $4}')" = C ]
}

# verity_refuse PART: the boot stops: PART does not match the root hash.
verity_refuse() {
	fail "root: dm-verity: /dev/$1 does not match the root hash on the kernel command line (edgeimg.verity=$KARG_VERITY): the root partition was changed after the build (tampering or a failing card); not booting it. Flash the image again"
}

# open_root PART: sets ROOT_DEV, the device to mount: PART through dm-verity when the
# command line has edgeimg.verity= (then VERITY=1), else PART itself (VERITY empty).
open_root() {
	local table
	ROOT_DEV="$DEV/$1"
	VERITY=""
	[ -n "$KARG_VERITY" ] || return 0
	[ -x "$DMSETUP" ] || fail "root: edgeimg.verity= is set but this initramfs has no $DMSETUP (rebuild the image)"
	verity_check_args
	table=$(verity_table "$1")
	DM_DISABLE_UDEV=1 "$DMSETUP" create --readonly --noudevsync "$VERITY_NAME" --table "$table" >/dev/null 2>&1 ||
		fail "root: dm-verity: could not map /dev/$1 (dm-verity module missing, or a wrong table: $table)"
	ROOT_DEV=$(verity_dev) || fail "root: dm-verity: the device of $VERITY_NAME did not show up"
	VERITY=1
}

# close_root: removes the dm-verity mapping, if any.
close_root() {
	[ -n "$VERITY" ] || return 0
	DM_DISABLE_UDEV=1 "$DMSETUP" remove --noudevsync "$VERITY_NAME" >/dev/null 2>&1 ||
		fail "root: dm-verity: removing $VERITY_NAME"
}

# verity_check_all PART: reads the whole root through dm-verity (edgeimg.verity_check=full),
# so a changed block anywhere stops the boot now rather than failing a read later. Once a
# boot (sets VERITY_CHECKED): the root is mapped again after the data partition grows.
verity_check_all() {
	[ -n "$VERITY" ] && [ "$KARG_VERITY_CHECK" = full ] || return 0
	[ -z "${VERITY_CHECKED:-}" ] || return 0
	dd if="$ROOT_DEV" of=/dev/null bs=1M 2>/dev/null
	verity_corrupted && verity_refuse "$1"
	VERITY_CHECKED=1
	say "root: dm-verity: every block of /dev/$1 checked"
}

# mount_root PART: opens PART (open_root) and mounts the read-only squashfs on $NEWROOT.
mount_root() {
	open_root "$1"
	verity_check_all "$1"
	if ! mount -t squashfs -o ro "$ROOT_DEV" "$NEWROOT"; then
		[ -n "$VERITY" ] && verity_corrupted && verity_refuse "$1"
		fail "root: mounting squashfs $ROOT_DEV"
	fi
	[ -n "$VERITY" ] && verity_corrupted && verity_refuse "$1"
	return 0
}

# unmount_root: unmounts $NEWROOT and closes the mapping; false when the unmount fails.
unmount_root() {
	umount "$NEWROOT" || return 1
	close_root
}

# root_mounted_line PART: the `root:` line about the mounted root.
root_mounted_line() {
	if [ -n "$VERITY" ]; then
		say "root: squashfs /dev/$1 mounted read-only through dm-verity (root hash $(echo "$KARG_VERITY" | cut -c1-16)...)"
	else
		say "root: squashfs /dev/$1 mounted read-only (no dm-verity)"
	fi
}

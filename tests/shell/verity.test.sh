# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of verity.sh: the dm-verity arguments, the table given to a fake dmsetup, and
# what happens when dm-verity reports a changed block.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

HASH=4f1c5e3b8a7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c
SALT=8c2d7a01b3e4f5a6978899aabbccddeeff00112233445566778899aabbccddee

verity_cmdline() {
	fake_cmdline "edgeimg.root=/dev/vda2 edgeimg.verity=$HASH edgeimg.verity_salt=$SALT edgeimg.verity_blocks=6144 edgeimg.verity_hash_start=6145 $*"
	cmdline_load
}

# A dmsetup that maps edgeimg-root as dm-0 and reports STATUS (V: verified, C: corrupted).
fake_dmsetup() {
	mkdir -p "$SYS/block/dm-0/dm"
	echo edgeimg-root >"$SYS/block/dm-0/dm/name"
	: >"$DEV/dm-0"
	fake dmsetup "[ \"\$1\" = status ] && echo '0 49152 verity ${1:-V}'; exit ${2:-0}"
}

the_table_covers_data_and_hash_tree() {
	verity_cmdline
	verity_check_args
	assert_eq "0 49152 verity 1 $DEV/vda2 $DEV/vda2 4096 4096 6144 6145 sha256 $HASH $SALT" "$(verity_table vda2)"
}

missing_arguments_stop_the_boot() {
	local out
	fake_cmdline "edgeimg.verity=$HASH edgeimg.verity_salt=$SALT edgeimg.verity_blocks=6144"
	cmdline_load
	out=$(verity_check_args)
	assert_eq "edgeimg: FAILED: root: edgeimg.verity= needs edgeimg.verity_salt=, edgeimg.verity_blocks= and edgeimg.verity_hash_start= on the kernel command line (rebuild the image)" "$out"
}

malformed_arguments_stop_the_boot() {
	local out
	verity_cmdline edgeimg.verity_blocks=6k
	out=$(verity_check_args) && exit 1
	assert_has "$out" "edgeimg: FAILED: root: edgeimg.verity_blocks=6k and edgeimg.verity_hash_start=6145 must be numbers"
	verity_cmdline "edgeimg.verity_salt=xyz"
	out=$(verity_check_args) && exit 1
	assert_has "$out" "must be hex digits"
	verity_cmdline "edgeimg.verity_salt=-"
	verity_check_args
	assert_has "$(verity_table vda2)" " sha256 $HASH -" "salt - is dm-verity's no salt"
}

without_a_root_hash_the_partition_is_mounted_itself() {
	fake_cmdline "edgeimg.root=/dev/vda2"
	cmdline_load
	fake dmsetup "exit 1"
	mount_root vda2
	assert_eq "$DEV/vda2|" "$ROOT_DEV|$VERITY"
	assert_eq "mount -t squashfs -o ro $DEV/vda2 $NEWROOT" "$(calls)" "no dmsetup call"
	assert_eq "edgeimg: root: squashfs /dev/vda2 mounted read-only (no dm-verity)" "$(root_mounted_line vda2)"
}

with_a_root_hash_the_mapping_is_mounted() {
	verity_cmdline
	fake_dmsetup V
	mount_root vda2 >"$T/out"
	assert_eq "$DEV/dm-0|1" "$ROOT_DEV|$VERITY"
	assert_eq "dmsetup create --readonly --noudevsync edgeimg-root --table 0 49152 verity 1 $DEV/vda2 $DEV/vda2 4096 4096 6144 6145 sha256 $HASH $SALT
mount -t squashfs -o ro $DEV/dm-0 $NEWROOT
dmsetup status edgeimg-root" "$(calls)"
	assert_eq "" "$(cat "$T/out")" "no line: the caller says root_mounted_line"
	assert_eq "edgeimg: root: squashfs /dev/vda2 mounted read-only through dm-verity (root hash 4f1c5e3b8a7d6c5b...)" "$(root_mounted_line vda2)"
	unmount_root
	assert_has "$(calls)" "dmsetup remove --noudevsync edgeimg-root"
}

a_changed_block_refuses_the_root() {
	local out
	verity_cmdline
	fake_dmsetup C
	out=$(mount_root vda2) && exit 1
	assert_eq "edgeimg: FAILED: root: dm-verity: /dev/vda2 does not match the root hash on the kernel command line (edgeimg.verity=$HASH): the root partition was changed after the build (tampering or a failing card); not booting it. Flash the image again" "$out"
}

the_full_check_reads_every_block_once() {
	verity_cmdline edgeimg.verity_check=full
	fake_dmsetup V
	head -c 8192 /dev/zero >"$DEV/dm-0"
	mount_root vda2 >"$T/out"
	assert_eq "edgeimg: root: dm-verity: every block of /dev/vda2 checked" "$(cat "$T/out")"
	assert_eq 1 "$VERITY_CHECKED"
	mount_root vda2 >"$T/out"
	assert_eq "" "$(cat "$T/out")" "once per boot"
	fake_dmsetup C
	VERITY_CHECKED=""
	(mount_root vda2 >"$T/out") && exit 1
	assert_has "$(cat "$T/out")" "FAILED: root: dm-verity: /dev/vda2 does not match"
	assert_lacks "$(cat "$T/out")" "every block"
}

a_missing_dmsetup_or_mapping_is_named() {
	local out
	verity_cmdline
	out=$(open_root vda2) && exit 1
	assert_eq "edgeimg: FAILED: root: edgeimg.verity= is set but this initramfs has no $T/bin/dmsetup (rebuild the image)" "$out"
	fake dmsetup "exit 1"
	out=$(open_root vda2) && exit 1
	assert_has "$out" "FAILED: root: dm-verity: could not map /dev/vda2 (dm-verity module missing, or a wrong table: 0 49152 verity 1"
	fake dmsetup "exit 0"
	out=$(open_root vda2) && exit 1
	assert_eq "edgeimg: FAILED: root: dm-verity: the device of edgeimg-root did not show up" "$out"
}

tcase "the table covers data and hash tree" the_table_covers_data_and_hash_tree
tcase "missing arguments stop the boot" missing_arguments_stop_the_boot
tcase "malformed arguments stop the boot" malformed_arguments_stop_the_boot
tcase "without a root hash the partition is mounted itself" without_a_root_hash_the_partition_is_mounted_itself
tcase "with a root hash the mapping is mounted" with_a_root_hash_the_mapping_is_mounted
tcase "a changed block refuses the root" a_changed_block_refuses_the_root
tcase "the full check reads every block once" the_full_check_reads_every_block_once
tcase "a missing dmsetup or mapping is named" a_missing_dmsetup_or_mapping_is_named
t_done

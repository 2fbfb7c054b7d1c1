# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of data.sh: when the data partition grows (real sfdisk on an image file), and
# whether prepare_data makes, checks or remakes the ext4 (real mkfs.ext4, e2fsck, resize2fs
# on a partition file; mount is fake).
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

# part_file PART MIB: the partition's device file, MIB MiB long (sysfs keeps the table's size).
part_file() {
	truncate -s "${2}M" "$DEV/$1"
}

a_disk_as_big_as_the_image_does_not_grow() {
	fake_disk vda 64 "$GPT_TABLE"
	data_needs_grow vda3 && exit 1
	regrow_data vda3 vda2
	assert_eq "" "$DATA_GROWN"
	assert_eq "" "$(calls)" "nothing unmounted, nothing re-read"
}

a_bigger_gpt_disk_grows_partition_3_to_its_end() {
	need sgdisk gdisk
	fake_disk vda 256 "$GPT_TABLE"
	[ "$(free_after vda3)" -gt 300000 ] || exit 1
	data_needs_grow vda3 || exit 1
	regrow_data vda3 vda2 >"$T/out"
	assert_eq "partition grown, " "$DATA_GROWN"
	# The root was unmounted for the re-read and mounted again.
	assert_eq "umount $NEWROOT
blockdev --rereadpt $DEV/vda
mount -t squashfs -o ro $DEV/vda2 $NEWROOT" "$(calls)"
	fake_sysfs vda
	[ "$(free_after vda3)" -lt 64 ] || {
		echo "partition 3 does not reach the disk end: $(free_after vda3) sectors left"
		exit 1
	}
	data_needs_grow vda3 && exit 1
	assert_has "$(sgdisk -v "$DEV/vda")" "No problems found"
	assert_eq vda3 "$(resolve PARTUUID=D80464CE-A1E9-1141-8EE6-B3A1D2806DA1)" "same PARTUUID"
}

an_mbr_data_partition_grows_keeping_its_partuuid() {
	fake_disk vda 128 "$MBR_TABLE"
	grow_partition vda3
	fake_sysfs vda
	[ "$(free_after vda3)" -lt 2048 ] || exit 1
	assert_eq deadbeef-03 "$(partuuid_of vda3)"
}

a_failed_reread_is_said_and_the_boot_goes_on() {
	fake_disk vda 256 "$GPT_TABLE"
	fake blockdev "exit 1"
	regrow_data vda3 vda2 >"$T/out"
	assert_eq "edgeimg: data: the kernel could not re-read /dev/vda (the new size shows after a reboot)" "$(cat "$T/out")"
	assert_eq "partition grown, " "$DATA_GROWN"
}

ext4_and_its_slack_are_read_from_the_superblock() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	part_file vda3 2
	has_ext4 "$DEV/vda3" && exit 1
	assert_eq make "$(data_plan "$DEV/vda3")"
	mkfs.ext4 -F -q "$DEV/vda3"
	has_ext4 "$DEV/vda3" || exit 1
	assert_eq check "$(data_plan "$DEV/vda3")"
	assert_eq $((2 << 20)) "$(fs_slack vda3)" "a 2 MiB ext4 in a 4 MiB partition"
	part_file vda3 4
	resize2fs "$DEV/vda3" >/dev/null 2>&1
	assert_eq 0 "$(fs_slack vda3)"
}

a_blank_partition_gets_a_new_ext4_with_the_marker() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	part_file vda3 4
	prepare_data vda3 "$NEWROOT/data"
	assert_eq created "$DATA_DONE"
	has_ext4 "$DEV/vda3" || exit 1
	[ -e "$NEWROOT/data/$DATA_MARKER" ] || exit 1
	assert_eq "mount -t ext4 -o noatime $DEV/vda3 $NEWROOT/data" "$(calls)"
	assert_eq edgeimg-data "$(dumpe2fs -h "$DEV/vda3" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')"
}

an_ext4_with_the_marker_is_checked_and_kept() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	part_file vda3 4
	mkfs.ext4 -F -q -U 11111111-2222-3333-4444-555555555555 "$DEV/vda3"
	: >"$NEWROOT/data/$DATA_MARKER"
	prepare_data vda3 "$NEWROOT/data"
	assert_eq checked "$DATA_DONE"
	assert_has "$(dumpe2fs -h "$DEV/vda3" 2>/dev/null)" 11111111-2222-3333-4444-555555555555 "the same filesystem"
}

an_ext4_without_the_marker_is_made_again() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	part_file vda3 4
	mkfs.ext4 -F -q -U 11111111-2222-3333-4444-555555555555 "$DEV/vda3"
	prepare_data vda3 "$NEWROOT/data"
	assert_eq "made again (no marker)" "$DATA_DONE"
	assert_lacks "$(dumpe2fs -h "$DEV/vda3" 2>/dev/null)" 11111111-2222-3333-4444-555555555555 "a new filesystem"
	assert_eq "mount -t ext4 -o noatime $DEV/vda3 $NEWROOT/data
umount $NEWROOT/data
mount -t ext4 -o noatime $DEV/vda3 $NEWROOT/data" "$(calls)"
}

a_small_ext4_is_resized_to_its_partition() {
	need resize2fs e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	part_file vda3 2
	mkfs.ext4 -F -q "$DEV/vda3"
	part_file vda3 4
	: >"$NEWROOT/data/$DATA_MARKER"
	prepare_data vda3 "$NEWROOT/data"
	assert_eq "checked, resized" "$DATA_DONE"
	assert_eq 0 "$(fs_slack vda3)"
}

errors_e2fsck_cannot_fix_stop_the_boot() {
	local out
	need mkfs.ext4 e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	part_file vda3 4
	mkfs.ext4 -F -q "$DEV/vda3"
	fake e2fsck "exit 8"
	out=$(prepare_data vda3 "$NEWROOT/data") && exit 1
	assert_eq "edgeimg: FAILED: data: e2fsck -p $DEV/vda3 found errors it could not fix (exit 8); run e2fsck $DEV/vda3 by hand" "$out"
	fake e2fsck "exit 1"
	: >"$NEWROOT/data/$DATA_MARKER"
	prepare_data vda3 "$NEWROOT/data"
	assert_eq checked "$DATA_DONE" "exit 1: errors corrected"
}

no_data_partition_means_a_tmpfs() {
	setup_data "" vda2 >"$T/out"
	assert_eq "edgeimg: data: no edgeimg.data=, using a tmpfs (nothing is kept across reboots)" "$(cat "$T/out")"
	assert_eq "mount -t tmpfs -o mode=0755 tmpfs $NEWROOT/data" "$(calls)"
}

the_data_line_says_what_happened() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 256 "$GPT_TABLE"
	part_file vda3 4
	fake df "echo 'Filesystem Size Used Available Use% Mounted on'; echo '/dev/vda3 190.0M 24.0K 180.0M 0% /newroot/data'"
	setup_data vda3 vda2 >"$T/out"
	assert_eq "edgeimg: data: ext4 /dev/vda3 partition grown, created (190.0M)" "$(cat "$T/out")"
}

tcase "a disk as big as the image does not grow" a_disk_as_big_as_the_image_does_not_grow
tcase "a bigger GPT disk grows partition 3 to its end" a_bigger_gpt_disk_grows_partition_3_to_its_end
tcase "an MBR data partition grows keeping its PARTUUID" an_mbr_data_partition_grows_keeping_its_partuuid
tcase "a failed re-read is said and the boot goes on" a_failed_reread_is_said_and_the_boot_goes_on
tcase "ext4 and its slack are read from the superblock" ext4_and_its_slack_are_read_from_the_superblock
tcase "a blank partition gets a new ext4 with the marker" a_blank_partition_gets_a_new_ext4_with_the_marker
tcase "an ext4 with the marker is checked and kept" an_ext4_with_the_marker_is_checked_and_kept
tcase "an ext4 without the marker is made again" an_ext4_without_the_marker_is_made_again
tcase "a small ext4 is resized to its partition" a_small_ext4_is_resized_to_its_partition
tcase "errors e2fsck cannot fix stop the boot" errors_e2fsck_cannot_fix_stop_the_boot
tcase "no data partition means a tmpfs" no_data_partition_means_a_tmpfs
tcase "the data line says what happened" the_data_line_says_what_happened
t_done

# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of parts.sh: partitions found by PARTUUID, computed from real GPT and MBR
# tables (image files made with sfdisk) through a fake sysfs.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

gpt_partuuids_come_from_the_entries() {
	fake_disk vda 64 "$GPT_TABLE"
	assert_eq 825d84b8-a1df-fd43-83d3-b03044e4b9a7 "$(partuuid_of vda1)"
	assert_eq d80464ce-a1e9-1141-8ee6-b3a1d2806da1 "$(partuuid_of vda3)"
	assert_eq vda2 "$(resolve PARTUUID=80DB9710-D650-B54C-B155-5240524DCEAA)" "upper case spec"
	assert_eq vda3 "$(wait_for PARTUUID=d80464ce-a1e9-1141-8ee6-b3a1d2806da1 1)"
	assert_eq missing "$(wait_for PARTUUID=00000000-0000-0000-0000-000000000000 0 || echo missing)"
	assert_eq vda "$(parent_disk vda2)"
}

mbr_partuuids_are_signature_and_number() {
	fake_disk vda 64 "$MBR_TABLE"
	assert_eq deadbeef-03 "$(partuuid_of vda3)"
	assert_eq vda2 "$(resolve PARTUUID=DEADBEEF-02)"
	assert_eq "" "$(resolve PARTUUID=deadbeef-04)" "no fourth partition"
}

a_kernel_partuuid_in_the_uevent_wins() {
	fake_disk vda 64 "$MBR_TABLE"
	echo PARTUUID=CAFEF00D-01 >>"$SYS/class/block/vda1/uevent"
	assert_eq cafef00d-01 "$(partuuid_of vda1)"
	assert_eq vda1 "$(resolve PARTUUID=cafef00d-01)"
}

partitions_of_two_disks_are_told_apart() {
	fake_disk vda 64 "$GPT_TABLE"
	fake_disk vdb 64 "$MBR_TABLE"
	assert_eq vdb3 "$(resolve PARTUUID=deadbeef-03)"
	assert_eq vda3 "$(resolve PARTUUID=d80464ce-a1e9-1141-8ee6-b3a1d2806da1)"
	assert_eq vdb "$(parent_disk vdb1)"
	assert_eq vdb2 "$(part_n vdb 2)"
	assert_eq none "$(part_n vdb 4 || echo none)"
}

dev_names_resolve_when_sysfs_has_them() {
	fake_disk vda 64 "$GPT_TABLE"
	assert_eq vda3 "$(resolve /dev/vda3)"
	assert_eq vda "$(resolve /dev/vda)" "a whole disk"
	assert_eq none "$(resolve /dev/vdz1 || echo none)"
	assert_eq none "$(resolve LABEL=root || echo none)" "only PARTUUID= and /dev/"
}

a_disk_without_a_table_has_no_partuuid() {
	fake_disk vda 64 "$GPT_TABLE"
	dd if=/dev/zero of="$DEV/vda" bs=512 count=1 conv=notrunc 2>/dev/null
	assert_eq none "$(partuuid_of vda1 || echo none)"
}

find_partitions_sets_root_data_and_boot() {
	local out
	fake_disk vda 64 "$GPT_TABLE"
	find_partitions 1 PARTUUID=80db9710-d650-b54c-b155-5240524dceaa \
		PARTUUID=d80464ce-a1e9-1141-8ee6-b3a1d2806da1 PARTUUID=825d84b8-a1df-fd43-83d3-b03044e4b9a7 >"$T/out"
	assert_eq "vda2 vda3 vda1" "$ROOT $DATA $BOOT"
	assert_eq "edgeimg: partitions: root=/dev/vda2 data=/dev/vda3 boot=/dev/vda1" "$(cat "$T/out")"
	find_partitions 1 /dev/vda2 "" "" >"$T/out"
	assert_eq "vda2||" "$ROOT|$DATA|$BOOT"
	assert_eq "edgeimg: partitions: root=/dev/vda2 data=/dev/none boot=/dev/none" "$(cat "$T/out")"
	out=$(find_partitions 0 PARTUUID=00000000-0000-0000-0000-000000000000 "" "")
	assert_eq "edgeimg: FAILED: partitions: root PARTUUID=00000000-0000-0000-0000-000000000000 not found within 0s (missing storage driver module?)" "$out"
	out=$(find_partitions 0 /dev/vda2 PARTUUID=deadbeef-03 "")
	assert_eq "edgeimg: FAILED: partitions: data PARTUUID=deadbeef-03 not found" "$out"
}

tcase "GPT PARTUUIDs come from the partition entries" gpt_partuuids_come_from_the_entries
tcase "MBR PARTUUIDs are disk signature and number" mbr_partuuids_are_signature_and_number
tcase "a PARTUUID in the uevent wins" a_kernel_partuuid_in_the_uevent_wins
tcase "partitions of two disks are told apart" partitions_of_two_disks_are_told_apart
tcase "/dev names resolve when sysfs has them" dev_names_resolve_when_sysfs_has_them
tcase "a disk without a table has no PARTUUID" a_disk_without_a_table_has_no_partuuid
tcase "find_partitions sets ROOT, DATA and BOOT" find_partitions_sets_root_data_and_boot
t_done

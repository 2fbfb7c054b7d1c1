# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of install.sh: where the install setting comes from, the decision taken for a
# target disk (real GPT image files), and the partition table written to the target.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

# A mount that "mounts" the folder $T/fat/<device name> for vfat (the boot partition).
fake_fat() {
	mkdir -p "$T/fat/$1/$EDGEIMG_BOOT_DIR"
	# shellcheck disable=SC2016
	fake mount '[ "$2" = vfat ] || exit 0; src="'"$T"'/fat/${5##*/}"; [ -d "$src" ] || exit 32; cp -R "$src/." "$6"'
	# shellcheck disable=SC2016
	fake umount 'rm -rf "${1:?}"/* 2>/dev/null; exit 0'
}

the_command_line_setting_wins() {
	fake_cmdline "edgeimg.install=/dev/nvme0n1 edgeimg.install_wipe=1"
	cmdline_load
	fake_fat vda1
	echo "INSTALL_DEVICE='/dev/sdb'" >"$T/fat/vda1/$EDGEIMG_BOOT_DIR/node.env"
	assert_eq "1 /dev/nvme0n1" "$(install_setting vda1)"
	assert_eq "" "$(calls)" "the boot partition is not even mounted"
}

the_node_config_on_the_boot_partition_asks() {
	cmdline_load
	fake_fat vda1
	printf "INSTALL_DEVICE='/dev/vdb'\nINSTALL_WIPE='1'\n" >"$T/fat/vda1/$EDGEIMG_BOOT_DIR/node.env"
	assert_eq "1 /dev/vdb" "$(install_setting vda1)"
	assert_has "$(calls)" "mount -t vfat -o ro /dev/vda1 $RUN/bootp"
	assert_has "$(calls)" "umount $RUN/bootp"
	printf "INSTALL_DEVICE=''\nINSTALL_WIPE='0'\n" >"$T/fat/vda1/$EDGEIMG_BOOT_DIR/node.env"
	assert_eq "0 " "$(install_setting vda1)" "no device: no install"
	rm "$T/fat/vda1/$EDGEIMG_BOOT_DIR/node.env"
	assert_eq "0 " "$(install_setting vda1)" "no node.env"
	assert_eq "0 " "$(install_setting "")" "no boot partition"
}

no_setting_means_no_install() {
	fake_disk vda 64 "$GPT_AB_TABLE"
	cmdline_load
	install_maybe vda2 "" >"$T/out"
	assert_eq "" "$(cat "$T/out")"
}

the_plan_for_each_kind_of_target() {
	fake_disk vda 64 "$GPT_AB_TABLE"
	truncate -s 128M "$DEV/vdb"
	fake_sysfs vdb
	assert_eq here "$(install_plan vda vda vda2 0)" "running from the target"
	assert_eq install "$(install_plan vdb vda vda2 0)" "a blank disk"
	printf 'label: dos\n,8M,83\n' | sfdisk -q "$DEV/vdb" >/dev/null
	fake_sysfs vdb
	assert_eq refuse "$(install_plan vdb vda vda2 0)" "another system's partitions"
	assert_eq install "$(install_plan vdb vda vda2 1)" "wipe allows it"
	printf '%s' "$GPT_AB_TABLE" | sfdisk -q "$DEV/vdb" >/dev/null
	fake_sysfs vdb
	assert_eq installed "$(install_plan vdb vda vda2 1)" "the same root PARTUUID"
	assert_eq installed "$(install_plan vdb vda vda2 0)" "boot first, then the same root: not refused"
}

the_target_table_keeps_identifiers_and_fills_the_disk() {
	need sgdisk gdisk
	local table
	fake_disk vda 64 "$GPT_AB_TABLE"
	table=$(sfdisk -d "$DEV/vda" | install_table "$DEV/vda")
	assert_lacks "$table" "$DEV/vda" "no device names"
	assert_lacks "$table" "last-lba:"
	assert_has "$table" "label-id: 8227131A-B6D5-AC47-910F-6AF536B43BC1"
	truncate -s 256M "$DEV/vdb"
	printf '%s\n' "$table" | sfdisk -q "$DEV/vdb" >/dev/null || exit 1
	fake_sysfs vdb
	assert_eq 80db9710-d650-b54c-b155-5240524dceaa "$(partuuid_of vdb2)" "root's PARTUUID on the target"
	assert_eq 825d84b8-a1df-fd43-83d3-b03044e4b9a7 "$(partuuid_of vdb1)"
	assert_eq "$(cat "$SYS/class/block/vda2/start") $(cat "$SYS/class/block/vda2/size")" \
		"$(cat "$SYS/class/block/vdb2/start") $(cat "$SYS/class/block/vdb2/size")" "root copied in place"
	[ "$(free_after vdb4)" -lt 4096 ] || {
		echo "data does not fill the target: $(free_after vdb4) sectors left"
		exit 1
	}
	assert_has "$(sgdisk -v "$DEV/vdb")" "No problems found"
}

the_decisions_are_said() {
	local out
	fake_disk vda 64 "$GPT_AB_TABLE"
	truncate -s 128M "$DEV/vdb"
	printf 'label: dos\n,8M,83\n' | sfdisk -q "$DEV/vdb" >/dev/null
	fake_sysfs vdb
	fake_cmdline "edgeimg.install=/dev/vda"
	cmdline_load
	assert_eq "edgeimg: install: running from the installed disk /dev/vda" "$(install_maybe vda2 vda1)"
	fake_cmdline "edgeimg.install=/dev/vdb"
	cmdline_load
	out=$(install_maybe vda2 vda1) && exit 1
	assert_eq "edgeimg: FAILED: install: /dev/vdb has partitions: not overwriting it (set wipe = true under [install] to allow)" "$out"
	fake_cmdline "edgeimg.install=/dev/vda3"
	cmdline_load
	out=$(install_maybe vda2 vda1) && exit 1
	assert_eq "edgeimg: FAILED: install: /dev/vda3 is a partition; give a whole disk" "$out"
	fake_cmdline "edgeimg.install=/dev/sdz"
	cmdline_load
	out=$(install_maybe vda2 vda1) && exit 1
	assert_eq "edgeimg: FAILED: install: target disk /dev/sdz not found" "$out"
}

a_blank_target_gets_boot_root_and_an_empty_data_partition() {
	fake_disk vda 64 "$GPT_AB_TABLE"
	echo BOOT >"$DEV/vda1"
	echo ROOT >"$DEV/vda2"
	truncate -s 128M "$DEV/vdb"
	fake_sysfs vdb
	# The kernel shows the target's new partitions once sfdisk wrote them (run_root calls it).
	# shellcheck disable=SC2317
	sfdisk() {
		command sfdisk "$@" || return
		fake_sysfs vdb
	}
	fake_cmdline "edgeimg.install=/dev/vdb"
	cmdline_load
	install_maybe vda2 vda1 >"$T/out"
	assert_eq "edgeimg: install: writing the edgeimg layout of /dev/vda to /dev/vdb
edgeimg: install: done, /dev/vdb holds boot, root and an empty data partition; rebooting" "$(cat "$T/out")"
	assert_eq BOOT "$(cat "$DEV/vdb1")"
	assert_eq ROOT "$(cat "$DEV/vdb2")"
	assert_eq 4194304 "$(wc -c <"$DEV/vdb4")" "the start of data zeroed"
	assert_eq 80db9710-d650-b54c-b155-5240524dceaa "$(partuuid_of vdb2)"
	assert_eq "" "$(cat "$DEV/vdb3")" "slot B is not copied"
	assert_has "$(calls)" "umount $NEWROOT"
	assert_lacks "$(calls)" "reboot" "host tests do not reboot"
}

tcase "the command line setting wins" the_command_line_setting_wins
tcase "the node config on the boot partition asks" the_node_config_on_the_boot_partition_asks
tcase "no setting means no install" no_setting_means_no_install
tcase "the plan for each kind of target" the_plan_for_each_kind_of_target
tcase "the target table keeps identifiers and fills the disk" the_target_table_keeps_identifiers_and_fills_the_disk
tcase "the decisions are said" the_decisions_are_said
tcase "a blank target gets boot, root and an empty data partition" a_blank_target_gets_boot_root_and_an_empty_data_partition
t_done

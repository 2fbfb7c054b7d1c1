# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, install.sh: installing to an internal disk ([install] device of the node
# config, or edgeimg.install=). A node booted from a USB stick (or another disk) copies its
# own layout to the target disk: the same partition table identifiers (so the kernel
# arguments on the copied boot partition stay right), boot and root partitions byte for byte,
# the data partition to the end of the target (made ext4 on the target's first boot), then
# reboots. The node config goes along on the boot partition. A target with partitions is
# refused unless wipe is set. Needs common.sh and parts.sh.

# install_setting BOOTPART: prints "WIPE DEVICE" (WIPE 0|1|true|..., DEVICE empty: no
# install) from edgeimg.install= / edgeimg.install_wipe=, else from node.env on the boot
# partition BOOTPART (mounted read-only for the look).
install_setting() {
	local dev="$KARG_INSTALL" wipe="$KARG_INSTALL_WIPE" mnt="$RUN/bootp" s
	if [ -z "$dev" ] && [ -n "$1" ]; then
		mkdir -p "$mnt"
		if mount -t vfat -o ro "/dev/$1" "$mnt" 2>/dev/null; then
			if [ -r "$mnt/$EDGEIMG_BOOT_DIR/node.env" ]; then
				s=$(
					INSTALL_DEVICE="" INSTALL_WIPE=""
					# shellcheck disable=SC1090
					. "$mnt/$EDGEIMG_BOOT_DIR/node.env" >/dev/null 2>&1
					echo "${INSTALL_WIPE:-0} $INSTALL_DEVICE"
				)
				wipe=${s%% *}
				dev=${s#* }
			fi
			umount "$mnt"
		fi
	fi
	echo "${wipe:-0} $dev"
}

# install_plan TARGET SOURCE ROOTPART WIPE: what to do with the whole disk TARGET when the
# system runs from disk SOURCE, its root on partition ROOTPART; WIPE 1 allows overwriting
# partitions. Prints one word: `here` (running from TARGET), `installed` (TARGET holds this
# root already), `refuse` (TARGET has partitions, WIPE is not 1) or `install`.
install_plan() {
	local p rootuuid parts=""
	if [ "$1" = "$2" ]; then
		echo here
		return 0
	fi
	rootuuid=$(partuuid_of "$3")
	# All partitions first: the root is the second one of an installed target.
	for p in "$SYS/class/block/$1/$1"*; do
		[ -e "$p/partition" ] || continue
		if [ "$(partuuid_of "${p##*/}" 2>/dev/null)" = "$rootuuid" ]; then
			echo installed
			return 0
		fi
		parts=1
	done
	if [ -n "$parts" ] && [ "$4" != 1 ]; then
		echo refuse
	else
		echo install
	fi
}

# install_table SOURCEDEV: turns the `sfdisk -d SOURCEDEV` dump on stdin into the table for the
# target on stdout: same identifiers, no device names, no size for partition 4 (data fills
# the target; partitions 2 and 3 are the root slots A and B).
install_table() {
	awk -v d="$1" '
		/^last-lba:/ || /^device:/ { next }
		index($0, d) == 1 { sub(/^[^:]*: */, ""); n++; if (n == 4) sub(/size= *[0-9]+, */, ""); print; next }
		{ print }'
}

# install_write TARGET SOURCE BOOTPART ROOTPART SPEC: writes the layout of disk SOURCE to
# disk TARGET (named SPEC in the messages): the partition table, then BOOTPART and ROOTPART
# (the running slot) copied to the partitions of the same numbers, the start of the data
# partition zeroed. The other root slot stays as it is: nothing boots it until an update.
install_write() {
	local i=0 n from to
	bind_root_api
	run_root sfdisk -d "$DEV/$2" >"$RUN/install.sfdisk" 2>/dev/null ||
		fail "install: reading the partition table of /dev/$2 (sfdisk -d)"
	install_table "$DEV/$2" <"$RUN/install.sfdisk" >"$RUN/install.table"
	run_root sfdisk -q --wipe always --wipe-partitions always "$DEV/$1" <"$RUN/install.table" >/dev/null 2>&1 ||
		fail "install: writing the partition table of $5 (sfdisk)"
	unbind_root_api
	while ! part_n "$1" 4 >/dev/null && [ "$i" -lt 40 ]; do
		sleep 0.25
		i=$((i + 1))
	done
	for from in "$3" "$4"; do
		n=$(cat "$SYS/class/block/$from/partition" 2>/dev/null) || n=
		[ -n "$n" ] || fail "install: /dev/$from is not a partition"
		to=$(part_n "$1" "$n") || fail "install: partition $n of $5 did not show up"
		dd if="$DEV/$from" of="$DEV/$to" bs=1M 2>/dev/null || fail "install: copying /dev/$from to /dev/$to"
	done
	to=$(part_n "$1" 4) || fail "install: partition 4 of $5 did not show up"
	dd if=/dev/zero of="$DEV/$to" bs=1M count=4 2>/dev/null
	sync
}

# install_maybe ROOTPART BOOTPART: installs when asked and not running from the target
# already; reboots after an install (in host tests: returns).
install_maybe() {
	local spec wipe src t
	# shellcheck disable=SC2046
	set -- "$1" "$2" $(install_setting "$2")
	[ -n "${4:-}" ] || return 0
	spec=$4
	case "$3" in 1 | true | yes) wipe=1 ;; *) wipe=0 ;; esac
	src=$(parent_disk "$1")
	t=$(wait_for "$spec" 10) || fail "install: target disk $spec not found"
	[ -e "$SYS/class/block/$t/partition" ] && fail "install: $spec is a partition; give a whole disk"
	case "$(install_plan "$t" "$src" "$1" "$wipe")" in
	here)
		say "install: running from the installed disk $spec"
		return 0
		;;
	installed)
		say "install: $spec already holds this system (remove the boot stick to boot it)"
		return 0
		;;
	refuse)
		fail "install: $spec has partitions: not overwriting it (set wipe = true under [install] to allow)"
		;;
	esac
	say "install: writing the edgeimg layout of /dev/$src to $spec"
	install_write "$t" "$src" "$2" "$1" "$spec"
	say "install: done, $spec holds boot, root and an empty data partition; rebooting"
	umount "$NEWROOT" 2>/dev/null
	[ -n "${EDGEIMG_HOST_TEST:-}" ] && return 0
	reboot -f
	sleep 10
	fail "install: reboot did not happen"
}

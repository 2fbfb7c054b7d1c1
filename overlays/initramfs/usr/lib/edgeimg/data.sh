# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, data.sh: the data partition, the only writable storage of a node. The
# image ships it small and empty: the first boot grows it to the end of the disk and makes
# the ext4; later boots check it and finish a grow the kernel missed. Every step can be cut
# by a power loss and redone: the marker file is written last, and an ext4 without it is
# made again. sfdisk and e2fsprogs are programs of the root (run_root), not of the
# initramfs. Needs common.sh, parts.sh and verity.sh (the root is unmounted and mounted
# again around re-reading the partition table).

DATA_MARKER=.edgeimg-data-v1
# Grow the data partition only when at least this much disk (in 512-byte sectors) is unused
# after it: sfdisk aligns partition ends, so a few sectors always stay free.
GROW_MIN_SECTORS=32768

# has_ext4 DEVICE: true when DEVICE holds an ext2/3/4 superblock.
has_ext4() {
	[ "$(bytes "$1" 1080 2)" = " 53 ef " ]
}

# free_after PART: 512-byte sectors of the disk after the end of PART.
free_after() {
	local disk size start len
	disk=$(parent_disk "$1")
	size=$(cat "$SYS/class/block/$disk/size")
	start=$(cat "$SYS/class/block/$1/start")
	len=$(cat "$SYS/class/block/$1/size")
	echo $((size - start - len))
}

# data_needs_grow PART: true when the disk has room for PART to grow (GROW_MIN_SECTORS).
data_needs_grow() {
	[ "$(free_after "$1")" -ge "$GROW_MIN_SECTORS" ]
}

# fs_slack PART: bytes of PART not used by the ext4 filesystem on it.
fs_slack() {
	local dev blocks hi=0 bsize part
	dev="$DEV/$1"
	blocks=$(u32 "$dev" 1028)
	# 64bit feature (incompat 0x80): the high half of the block count is at 0x150.
	if [ $(($(u32 "$dev" 1120) & 128)) -ne 0 ]; then
		hi=$(u32 "$dev" $((1024 + 336)))
	fi
	bsize=$((1024 << $(u32 "$dev" 1048)))
	part=$(($(cat "$SYS/class/block/$1/size") * 512))
	echo $((part - (hi * 4294967296 + blocks) * bsize))
}

# grow_partition PART: makes PART end at the end of its disk (moving a GPT's backup header
# to the new end first: sfdisk does it when it writes). The partition keeps its number,
# start, type and PARTUUID. The kernel is not told here (see regrow_data).
grow_partition() {
	local disk n
	disk=$(parent_disk "$1")
	n=$(cat "$SYS/class/block/$1/partition")
	echo ',+' | run_root sfdisk -q --force --no-reread --no-tell-kernel -N "$n" "$DEV/$disk" >/dev/null 2>&1
}

# regrow_data PART ROOTPART: on a disk bigger than the image, grows the data partition PART
# and makes the kernel read the new table. The kernel refuses to re-read the table of a disk
# with a partition in use, and sfdisk lives in the root squashfs: so grow with the root
# mounted, unmount it, re-read (BLKRRPART), and mount ROOTPART again. Sets DATA_GROWN to
# "partition grown, " when it grew, else empty (the start of the `data:` line's summary).
regrow_data() {
	local disk
	DATA_GROWN=""
	data_needs_grow "$1" || return 0
	bind_root_api
	grow_partition "$1" || fail "data: growing partition /dev/$1 to the end of the disk (sfdisk)"
	unbind_root_api
	unmount_root || fail "data: unmounting the root to re-read the partition table"
	disk=$(parent_disk "$1")
	blockdev --rereadpt "$DEV/$disk" || say "data: the kernel could not re-read /dev/$disk (the new size shows after a reboot)"
	if ! wait_for "/dev/$2" 10 >/dev/null || ! wait_for "/dev/$1" 10 >/dev/null; then
		fail "data: partitions did not come back after re-reading /dev/$disk"
	fi
	mount_root "$2"
	DATA_GROWN="partition grown, "
}

# data_plan DEVICE: what prepare_data does with DEVICE, as one word: `make` (no
# ext4), `check` (an ext4: e2fsck, mount, then the marker decides). Printed, for tests too.
data_plan() {
	if has_ext4 "$1"; then
		echo check
	else
		echo make
	fi
}

# prepare_data PART MOUNTPOINT: makes sure an ext4 with the edgeimg marker is on PART,
# filling the partition, and mounts it on MOUNTPOINT. Sets DATA_DONE to what it did
# (`created`, `checked`, `made again (no marker)`, each maybe followed by `, resized`).
prepare_data() {
	local dev="$DEV/$1" mnt="$2" rc
	if [ "$(data_plan "$dev")" = check ]; then
		run_root e2fsck -p "$dev" >/dev/null 2>&1
		rc=$?
		if [ "$rc" -ge 4 ]; then
			fail "data: e2fsck -p $dev found errors it could not fix (exit $rc); run e2fsck $dev by hand"
		fi
		mount -t ext4 -o noatime "$dev" "$mnt" || fail "data: mounting ext4 $dev"
		if [ -e "$mnt/$DATA_MARKER" ]; then
			DATA_DONE="checked"
		else
			umount "$mnt"
			DATA_DONE="made again (no marker)"
			make_data "$dev" "$mnt"
		fi
	else
		DATA_DONE="created"
		make_data "$dev" "$mnt"
	fi
	# The filesystem is smaller than its partition after a grow (now or on a boot the
	# kernel missed it): resize it, online.
	if [ "$(fs_slack "$1")" -ge 1048576 ]; then
		run_root resize2fs "$dev" >/dev/null 2>&1 || fail "data: resize2fs $dev"
		DATA_DONE="$DATA_DONE, resized"
	fi
}

# make_data DEVICE MOUNTPOINT: a new ext4 on DEVICE, mounted, with the marker written last.
make_data() {
	run_root mkfs.ext4 -F -q -L edgeimg-data -E lazy_itable_init=1,lazy_journal_init=1 "$1" >/dev/null 2>&1 ||
		fail "data: mkfs.ext4 $1"
	mount -t ext4 -o noatime "$1" "$2" || fail "data: mounting the new ext4 $1"
	: >"$2/$DATA_MARKER" || fail "data: writing the marker"
	sync
}

# data_size MOUNTPOINT: the size of the mounted filesystem, as df -h says it (1.9G).
data_size() {
	df -h "$1" | awk 'NR==2 {print $2}'
}

# setup_data PART ROOTPART: the data step of a disk boot: grows and prepares PART, mounted on
# $NEWROOT/data, or a tmpfs there when there is no data partition (PART empty). Says the
# `data:` line.
setup_data() {
	if [ -z "$1" ]; then
		mount -t tmpfs -o mode=0755 tmpfs "$NEWROOT/data" || fail "data: mounting tmpfs"
		say "data: no edgeimg.data=, using a tmpfs (nothing is kept across reboots)"
		return 0
	fi
	regrow_data "$1" "$2"
	bind_root_api
	prepare_data "$1" "$NEWROOT/data"
	unbind_root_api
	say "data: ext4 /dev/$1 $DATA_GROWN$DATA_DONE ($(data_size "$NEWROOT/data"))"
}

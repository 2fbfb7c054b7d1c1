# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, parts.sh: finding partitions by PARTUUID without udev or blkid.
# Mainline kernels do not put PARTUUID into the uevent, and busybox has no blkid: so the
# PARTUUID is computed from the partition table itself (read with dd | od), the GPT entry's
# unique GUID or the MBR disk signature plus the partition number, and the disk and its
# partitions are found in $SYS/class/block. Needs common.sh.

# bytes DEVICE OFFSET COUNT: hex bytes, space-separated (with a space before and after).
bytes() {
	dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | od -An -tx1 -v | tr -s ' \n' '  '
}

# u32 DEVICE OFFSET: a little-endian 32-bit number, decimal.
u32() {
	# shellcheck disable=SC2046
	set -- $(bytes "$1" "$2" 4)
	echo $((0x$4$3$2$1))
}

# parent_disk PART: the disk holding partition PART (vda3 -> vda, mmcblk0p2 -> mmcblk0).
parent_disk() {
	local p
	p=$(readlink -f "$SYS/class/block/$1")
	basename "$(dirname "$p")"
}

# partuuid_of PART: the PARTUUID the kernel would give PART (lower case). GPT: the entry's
# unique GUID; MBR: `<disk signature>-<partition number, 2 hex digits>`.
partuuid_of() {
	local u disk n d bs lba esz
	u=$(sed -n 's/^PARTUUID=//p' "$SYS/class/block/$1/uevent" 2>/dev/null)
	if [ -n "$u" ]; then
		lower "$u"
		return
	fi
	disk=$(parent_disk "$1")
	n=$(cat "$SYS/class/block/$1/partition")
	d="$DEV/$disk"
	[ -e "$d" ] || return 1
	if [ "$(bytes "$d" 510 2)" != " 55 aa " ]; then
		return 1
	fi
	if [ "$(bytes "$d" 450 1)" = " ee " ]; then
		bs=$(cat "$SYS/class/block/$disk/queue/logical_block_size" 2>/dev/null || echo 512)
		lba=$(u32 "$d" $((bs + 72)))
		esz=$(u32 "$d" $((bs + 84)))
		# shellcheck disable=SC2046
		set -- $(bytes "$d" $((lba * bs + (n - 1) * esz + 16)) 16)
		echo "$4$3$2$1-$6$5-$8$7-$9${10}-${11}${12}${13}${14}${15}${16}"
	else
		printf '%08x-%02x\n' "$(u32 "$d" 440)" "$n"
	fi
}

# find_partuuid UUID: the device name (vda3) of the partition with that PARTUUID.
find_partuuid() {
	local want b name
	want=$(lower "$1")
	for b in "$SYS"/class/block/*; do
		[ -e "$b/partition" ] || continue
		name=${b##*/}
		if [ "$(partuuid_of "$name" 2>/dev/null)" = "$want" ]; then
			echo "$name"
			return 0
		fi
	done
	return 1
}

# resolve SPEC: the device name for `PARTUUID=...` or `/dev/NAME`.
resolve() {
	case "$1" in
	PARTUUID=*) find_partuuid "${1#PARTUUID=}" ;;
	/dev/*) [ -e "$SYS/class/block/${1#/dev/}" ] && echo "${1#/dev/}" ;;
	*) return 1 ;;
	esac
}

# wait_for SPEC SECONDS: like resolve, polling until the device shows up.
wait_for() {
	local i=0 r
	while [ "$i" -le $(($2 * 4)) ]; do
		if r=$(resolve "$1") && [ -n "$r" ] && [ -e "$DEV/$r" ]; then
			echo "$r"
			return 0
		fi
		sleep 0.25 2>/dev/null || sleep 1
		i=$((i + 1))
	done
	return 1
}

# part_n DISK N: the device name of partition N of DISK.
part_n() {
	local p
	for p in "$SYS/class/block/$1/$1"*; do
		[ -e "$p/partition" ] && [ "$(cat "$p/partition")" = "$2" ] && echo "${p##*/}" && return 0
	done
	return 1
}

# find_partitions WAIT ROOTSPEC DATASPEC BOOTSPEC: sets ROOT, DATA and BOOT to the device
# names (vda2) of the partitions the specs name (edgeimg.root=, edgeimg.data=, edgeimg.boot=;
# DATA and BOOT stay empty for an empty spec). Waits up to WAIT seconds for the root, 5 for
# the others; says the `partitions:` line.
find_partitions() {
	ROOT=$(wait_for "$2" "$1") ||
		fail "partitions: root $2 not found within ${1}s (missing storage driver module?)"
	DATA=""
	BOOT=""
	if [ -n "$3" ]; then
		DATA=$(wait_for "$3" 5) || fail "partitions: data $3 not found"
	fi
	if [ -n "$4" ]; then
		BOOT=$(wait_for "$4" 5) || fail "partitions: boot $4 not found"
	fi
	say "partitions: root=/dev/$ROOT data=/dev/${DATA:-none} boot=/dev/${BOOT:-none}"
}

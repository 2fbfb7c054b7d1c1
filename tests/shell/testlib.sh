# shellcheck shell=sh disable=SC3043,SC2034
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it. SC2034: the tables
# at the end are used by the test files.)
# tests/shell/testlib.sh: what every host test of the on-device scripts shares, in the manner
# of Alpine mkinitfs's tests/initramfs-init.test: each case runs in a subshell with a fresh
# temporary folder $T holding a fake sysfs ($T/sys), fake devices ($T/dev: real GPT/MBR
# image files), a fake kernel command line ($T/cmdline) and fake programs ($T/bin) that
# append `NAME ARGS` to $T/calls. Every library of the initramfs is sourced from
# $EDGEIMG_LIB (run.sh points it at the repository's libraries and the contract fixture).
#
# Host programs that would change this machine (mount, umount, modprobe, blockdev, reboot,
# chroot, ifconfig, route, udhcpc, wget, switch_root) are always faked, and sleep returns at
# once. The fakes are files
# on PATH and functions of the same name: the host's busybox sh runs its own applets before
# anything on PATH, but never before a function.

: "${EDGEIMG_LIB:?run the shell tests with tests/shell/run.sh}"
T_FILE=${0##*/}
T_PASSED=0
T_FAILED=0
export EDGEIMG_HOST_TEST=1 EDGEIMG_ROOT_EXEC=direct

# tcase NAME FUNCTION: runs FUNCTION as one test case; prints `ok` or `FAIL` with its output.
tcase() {
	local out rc
	T=$(mktemp -d)
	out=$( (t_setup && "$2") 2>&1)
	rc=$?
	rm -rf "$T"
	if [ "$rc" -eq 0 ]; then
		T_PASSED=$((T_PASSED + 1))
		echo "ok   $T_FILE: $1"
	else
		T_FAILED=$((T_FAILED + 1))
		echo "FAIL $T_FILE: $1"
		echo "$out" | sed 's/^/     | /'
	fi
}

# t_done: the summary line; the exit status of the test file.
t_done() {
	echo "$T_FILE: $T_PASSED passed, $T_FAILED failed"
	[ "$T_FAILED" -eq 0 ]
}

t_setup() {
	export EDGEIMG_SYS="$T/sys" EDGEIMG_DEV="$T/dev" EDGEIMG_NEWROOT="$T/newroot" \
		EDGEIMG_RUN="$T/run" EDGEIMG_DMSETUP="$T/bin/dmsetup" EDGEIMG_CMDLINE="$T/cmdline"
	mkdir -p "$T/bin" "$T/sys/class/block" "$T/sys/class/net" "$T/sys/block" "$T/dev" "$T/run"
	for d in data boot dev proc sys run var root etc; do
		mkdir -p "$T/newroot/$d"
	done
	PATH="$T/bin:$PATH"
	: >"$T/calls"
	: >"$T/cmdline"
	for c in mount umount modprobe blockdev reboot chroot ifconfig route udhcpc wget switch_root; do
		fake "$c"
	done
	# Polling loops (wait_for) need no real waiting here.
	# shellcheck disable=SC2317
	sleep() { :; }
	for f in contract common early cmdline parts verity install data netroot newroot; do
		# shellcheck disable=SC1090
		. "$EDGEIMG_LIB/$f.sh" || return 1
	done
}

# need TOOL PACKAGE: fails the case unless TOOL is on the host.
need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "this test needs $1 on the host: apt-get install $2"
		exit 1
	}
}

# fake NAME [BODY]: a fake program NAME that records its arguments, then runs BODY (sh; its
# arguments are "$@"; default: succeed).
fake() {
	{
		echo '#!/bin/sh'
		echo "echo \"$1 \$*\" >>'$T/calls'"
		printf '%s\n' "${2:-exit 0}"
	} >"$T/bin/$1"
	chmod +x "$T/bin/$1"
	case "$1" in
	*[!a-z0-9_]*) ;;
	*) eval "$1() { \"\$T/bin/$1\" \"\$@\"; }" ;;
	esac
}

# fake_cmdline WORDS: the kernel command line cmdline_load reads.
fake_cmdline() {
	echo "$*" >"$T/cmdline"
}

# calls: what the fake programs were called with, one call a line.
calls() {
	cat "$T/calls"
}

# fake_disk NAME SIZE_MIB TABLE: $DEV/NAME, a SIZE_MIB MiB image partitioned by sfdisk with
# TABLE (an sfdisk script; the table is made on 64 MiB, so a bigger disk has room after it),
# and its sysfs entries (fake_sysfs).
fake_disk() {
	need sfdisk fdisk
	truncate -s 64M "$DEV/$1"
	printf '%b' "$3" | sfdisk -q "$DEV/$1" >/dev/null || return 1
	truncate -s "${2}M" "$DEV/$1"
	fake_sysfs "$1"
}

# fake_sysfs NAME: the sysfs files the kernel would show for disk $DEV/NAME and its current
# partition table (partition devices NAME1.. are files in $DEV, kept when they exist). Like
# mainline kernels, no PARTUUID in the uevent: the scripts must compute it.
fake_sysfs() {
	local disk="$SYS/devices/virtual/block/$1" n start size
	rm -rf "$disk" "$SYS/class/block/$1"*
	mkdir -p "$disk/queue"
	echo $(($(wc -c <"$DEV/$1") / 512)) >"$disk/size"
	echo 512 >"$disk/queue/logical_block_size"
	ln -s "$disk" "$SYS/class/block/$1"
	command sfdisk -d "$DEV/$1" 2>/dev/null | sed -n "s|^$DEV/$1\([0-9]*\) : start= *\([0-9]*\), size= *\([0-9]*\).*|\1 \2 \3|p" >"$T/parts.$1"
	while read -r n start size; do
		mkdir -p "$disk/$1$n"
		echo "$n" >"$disk/$1$n/partition"
		echo "$start" >"$disk/$1$n/start"
		echo "$size" >"$disk/$1$n/size"
		printf 'MAJOR=254\nMINOR=%s\nDEVNAME=%s\nDEVTYPE=partition\nPARTN=%s\n' "$n" "$1$n" "$n" >"$disk/$1$n/uevent"
		ln -s "$disk/$1$n" "$SYS/class/block/$1$n"
		[ -e "$DEV/$1$n" ] || : >"$DEV/$1$n"
	done <"$T/parts.$1"
}

# A wget that serves $T/srv/PATH for http://srv/PATH (-O FILE URL, as the scripts call it).
fake_server() {
	mkdir -p "$T/srv"
	# shellcheck disable=SC2016
	fake wget '
out="" url=""
while [ "$#" -gt 0 ]; do
	case "$1" in
	-O) out=$2; shift ;;
	-T) shift ;;
	-q) ;;
	*) url=$1 ;;
	esac
	shift
done
src="'"$T"'/srv/${url#http://srv/}"
[ -f "$src" ] || exit 8
cp "$src" "$out"'
}

# srv_file PATH TEXT: a file the fake server serves.
srv_file() {
	mkdir -p "$(dirname "$T/srv/$1")"
	printf '%s' "$2" >"$T/srv/$1"
}

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
	[ "$1" = "$2" ] && return 0
	printf 'expected: [%s]\nactual:   [%s]\n' "$1" "$2"
	[ -z "${3:-}" ] || echo "($3)"
	exit 1
}

# assert_has TEXT PART [WHAT]: TEXT contains PART.
assert_has() {
	case "$1" in
	*"$2"*) return 0 ;;
	esac
	printf 'expected [%s] in:\n%s\n' "$2" "$1"
	[ -z "${3:-}" ] || echo "($3)"
	exit 1
}

# assert_lacks TEXT PART [WHAT]: TEXT does not contain PART.
assert_lacks() {
	case "$1" in
	*"$2"*)
		printf 'did not expect [%s] in:\n%s\n' "$2" "$1"
		[ -z "${3:-}" ] || echo "($3)"
		exit 1
		;;
	esac
}

# GPT_TABLE: boot, root (x86-64 root type) and a small data partition, fixed identifiers.
GPT_TABLE='label: gpt
label-id: 8227131A-B6D5-AC47-910F-6AF536B43BC1
size=16M, type=U, uuid=825D84B8-A1DF-FD43-83D3-B03044E4B9A7
size=32M, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=80DB9710-D650-B54C-B155-5240524DCEAA
size=4M, type=L, uuid=D80464CE-A1E9-1141-8EE6-B3A1D2806DA1
'
# GPT_AB_TABLE: the A/B layout every image has: boot, root slots A and B, data.
GPT_AB_TABLE='label: gpt
label-id: 8227131A-B6D5-AC47-910F-6AF536B43BC1
size=16M, type=U, uuid=825D84B8-A1DF-FD43-83D3-B03044E4B9A7
size=16M, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=80DB9710-D650-B54C-B155-5240524DCEAA
size=16M, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=1C5A4D3E-7B2F-4E11-9A0B-2D3C4E5F6A7B
size=4M, type=L, uuid=D80464CE-A1E9-1141-8EE6-B3A1D2806DA1
'
# MBR_TABLE: the same on MBR (a Raspberry Pi card), disk signature 0xdeadbeef.
MBR_TABLE='label: dos
label-id: 0xdeadbeef
,16M,c
,32M,83
,4M,83
'

# on SLOT: the next boot runs SLOT (what the loader chose), with a boot id of its own (the
# slot tests: $T/boot_id).
on() {
	fake_cmdline "edgeimg.slot=$1"
	echo $(($(cat "$T/boot_id") + 1)) >"$T/boot_id"
}

# no_leftovers: no half-written file (*.new) on the fake boot FAT $T/fat.
no_leftovers() {
	local left
	left=$(find "$T/fat" -name '*.new')
	[ -z "$left" ] || {
		echo "left behind: $left"
		return 1
	}
}

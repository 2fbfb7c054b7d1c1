# shellcheck shell=sh disable=SC3043,SC2034
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it. SC2034: the paths set
# here are used by the libraries that source this file.)
# edgeimg initramfs, common.sh: the console line protocol (say, fail, rescue) and running
# programs of the mounted root (run_root, bind_root_api). Every other library of the init
# uses these, so they sit in one file that everything sources first (after contract.sh).
#
# The paths are variables so that host tests (tests/shell/) run the libraries against a fake
# sysfs, fake devices and host tools: EDGEIMG_SYS, EDGEIMG_DEV, EDGEIMG_NEWROOT, EDGEIMG_RUN,
# EDGEIMG_ROOT_EXEC; EDGEIMG_HOST_TEST=1 makes fail and rescue exit instead of opening a
# shell on the console.

SYS=${EDGEIMG_SYS:-/sys}
DEV=${EDGEIMG_DEV:-/dev}
NEWROOT=${EDGEIMG_NEWROOT:-/newroot}
# The initramfs's own state (lease, downloaded root, install table).
RUN=${EDGEIMG_RUN:-/run/edgeimg}
# How commands from the root filesystem (sfdisk, e2fsprogs) run: in the mounted root via
# chroot on the device; directly in tests.
ROOT_EXEC=${EDGEIMG_ROOT_EXEC:-chroot}

# say WORDS: one console line `edgeimg: WORDS` (the marker comes from contract.sh).
say() {
	echo "$EDGEIMG_SAY $*"
}

# rescue: a shell on the console; booting goes on when it exits (edgeimg.break=).
rescue() {
	if [ -n "${EDGEIMG_HOST_TEST:-}" ]; then
		exit 1
	fi
	say "rescue shell (exit to continue booting)"
	sh </dev/console >/dev/console 2>&1
}

# fail WHAT: the `edgeimg: FAILED: WHAT` line, then a shell on the console instead of the
# boot. Never returns. Do not call it inside $(...): the subshell would take the console.
fail() {
	say "$EDGEIMG_FAILED $*"
	if [ -n "${EDGEIMG_HOST_TEST:-}" ]; then
		exit 1
	fi
	exec sh </dev/console >/dev/console 2>&1
}

# lower TEXT: TEXT with A-F in lower case (hex digits, PARTUUIDs, digests).
lower() {
	echo "$1" | tr 'A-F' 'a-f'
}

# run_root CMD...: runs a program of the root filesystem (mounted on $NEWROOT).
run_root() {
	if [ "$ROOT_EXEC" = chroot ]; then
		chroot "$NEWROOT" "$@"
	else
		"$@"
	fi
}

# bind_root_api / unbind_root_api: /dev, /proc, /sys inside the root for run_root.
bind_root_api() {
	local m
	[ "$ROOT_EXEC" = chroot ] || return 0
	for m in dev proc sys; do
		mount -o bind "/$m" "$NEWROOT/$m" || fail "bind-mounting /$m into the root"
	done
}

unbind_root_api() {
	local m
	[ "$ROOT_EXEC" = chroot ] || return 0
	for m in sys proc dev; do
		umount "$NEWROOT/$m" 2>/dev/null
	done
}

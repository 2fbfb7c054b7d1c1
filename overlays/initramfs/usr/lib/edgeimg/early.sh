# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, early.sh: what PID 1 does before it looks for disks: the API
# filesystems, the busybox applets, the build's initrd.conf, the kernel check and the
# modules. Needs common.sh.

# early_mounts: /proc /sys /dev /run, the busybox applets in /bin, the console reopened.
early_mounts() {
	/bin/busybox mkdir -p /proc /sys /dev /run /newroot
	/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
	/bin/busybox --install -s /bin
	mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
	mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
	mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
	mkdir -p "$RUN"
	# The kernel opened the console before /dev existed if the initramfs has no
	# /dev/console node: open it again.
	exec </dev/console >/dev/console 2>&1
}

# read_initrd_conf FILE: sets KVER, MODULES and EDGEIMG_VERSION from the build's
# initrd.conf (/etc/edgeimg/initrd.conf); all empty without one.
read_initrd_conf() {
	KVER="" MODULES="" EDGEIMG_VERSION=""
	# shellcheck disable=SC1090
	[ -r "$1" ] && . "$1"
	return 0
}

# check_kernel: the first line of the boot; fails when the modules are for another kernel.
check_kernel() {
	local running
	running=$(uname -r)
	say "initramfs: edgeimg ${EDGEIMG_VERSION:-?}, kernel $running"
	if [ -n "$KVER" ] && [ "$KVER" != "$running" ]; then
		fail "initramfs: its modules are for kernel $KVER but kernel $running is running"
	fi
}

# load_modules: loads MODULES in order; says how many loaded and which did not.
load_modules() {
	local ok=0 bad="" m
	for m in $MODULES; do
		if modprobe "$m" 2>/dev/null; then
			ok=$((ok + 1))
		else
			bad="$bad $m"
		fi
	done
	if [ -n "$bad" ]; then
		say "modules: loaded $ok, could not load:$bad"
	else
		say "modules: loaded $ok"
	fi
}

# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of /init as a whole (Alpine's initramfs-init.test style): main runs with a fake
# command line, a real GPT image file behind a fake sysfs and fake mount/modprobe, and the
# console lines it prints are compared in full. Only early_mounts (proc, sysfs, devtmpfs on
# this machine) is left out.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

# boot_init: sources /init for its functions and runs main; output in $T/out.
boot_init() {
	# shellcheck source=../../overlays/initramfs/init
	. "$EDGEIMG_REPO/overlays/initramfs/init"
	early_mounts() { :; }
	printf "KVER='6.12.0-test'\nMODULES='squashfs nope ext4'\nEDGEIMG_VERSION='0.9.0'\n" >"$T/initrd.conf"
	export EDGEIMG_INITRD_CONF="$T/initrd.conf"
	fake uname "echo 6.12.0-test"
	# shellcheck disable=SC2016
	fake modprobe '[ "$1" != nope ]'
	fake df "echo 'Filesystem Size Used Available Use% Mounted on'; echo '/dev/x 190.0M 24.0K 180.0M 0% /newroot/data'"
	(main) >"$T/out" 2>&1
}

GPT_ARGS="edgeimg.boot=PARTUUID=825d84b8-a1df-fd43-83d3-b03044e4b9a7 edgeimg.root=PARTUUID=80db9710-d650-b54c-b155-5240524dceaa edgeimg.data=PARTUUID=d80464ce-a1e9-1141-8ee6-b3a1d2806da1"

# calls_of NAME: the calls of the fake NAME, in order.
calls_of() {
	grep "^$1 " "$T/calls"
}

a_first_disk_boot_grows_and_makes_data() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 256 "$GPT_TABLE"
	truncate -s 4M "$DEV/vda3"
	fake_cmdline "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 $GPT_ARGS edgeimg.test=node-arg"
	boot_init || {
		cat "$T/out"
		exit 1
	}
	assert_eq "edgeimg: initramfs: edgeimg 0.9.0, kernel 6.12.0-test
edgeimg: cmdline: ignoring unknown edgeimg.test
edgeimg: modules: loaded 2, could not load: nope
edgeimg: partitions: root=/dev/vda2 data=/dev/vda3 boot=/dev/vda1
edgeimg: root: squashfs /dev/vda2 mounted read-only (no dm-verity)
edgeimg: data: ext4 /dev/vda3 partition grown, created (190.0M)
edgeimg: mounts: /etc overlay, /var /root on data, /boot vfat /dev/vda1
edgeimg: switch_root: starting /sbin/init" "$(cat "$T/out")"
	assert_eq "mount -t squashfs -o ro $DEV/vda2 $NEWROOT
mount -t vfat -o ro /dev/vda1 $RUN/bootp
mount -t squashfs -o ro $DEV/vda2 $NEWROOT
mount -t ext4 -o noatime $DEV/vda3 $NEWROOT/data
mount -t overlay overlay -o lowerdir=$NEWROOT/etc,upperdir=$NEWROOT/data/etc-upper,workdir=$NEWROOT/data/etc-work $NEWROOT/etc
mount -o bind $NEWROOT/data/var $NEWROOT/var
mount -o bind $NEWROOT/data/root $NEWROOT/root
mount -t vfat -o rw,noatime,fmask=0077,dmask=0077 /dev/vda1 $NEWROOT/boot
mount --move /dev $NEWROOT/dev
mount --move /proc $NEWROOT/proc
mount --move /sys $NEWROOT/sys
mount --move /run $NEWROOT/run" "$(calls_of mount)"
	assert_eq "modprobe squashfs
modprobe nope
modprobe ext4" "$(calls_of modprobe)"
	[ -e "$NEWROOT/data/.edgeimg-data-v1" ] && [ -d "$NEWROOT/data/etc-upper" ] || exit 1
}

a_later_boot_checks_data_and_mounts_no_boot_partition() {
	need mkfs.ext4 e2fsprogs
	fake_disk vda 64 "$GPT_TABLE"
	truncate -s 4M "$DEV/vda3"
	mkfs.ext4 -F -q "$DEV/vda3"
	: >"$NEWROOT/data/.edgeimg-data-v1"
	fake_cmdline "edgeimg.root=/dev/vda2 edgeimg.data=/dev/vda3 edgeimg.wait=1"
	boot_init || {
		cat "$T/out"
		exit 1
	}
	assert_eq "edgeimg: initramfs: edgeimg 0.9.0, kernel 6.12.0-test
edgeimg: modules: loaded 2, could not load: nope
edgeimg: partitions: root=/dev/vda2 data=/dev/vda3 boot=/dev/none
edgeimg: root: squashfs /dev/vda2 mounted read-only (no dm-verity)
edgeimg: data: ext4 /dev/vda3 checked (190.0M)
edgeimg: mounts: /etc overlay, /var /root on data, /boot none
edgeimg: switch_root: starting /sbin/init" "$(cat "$T/out")"
	assert_lacks "$(calls)" blockdev "nothing to grow"
}

a_break_stops_before_the_modules() {
	fake_cmdline "edgeimg.root=/dev/vda2 edgeimg.break=initramfs"
	boot_init && exit 1
	assert_eq "edgeimg: initramfs: edgeimg 0.9.0, kernel 6.12.0-test" "$(cat "$T/out")"
	assert_eq "" "$(calls_of modprobe)"
}

a_break_at_switch_root_stops_before_the_moves() {
	fake_disk vda 64 "$GPT_TABLE"
	fake_cmdline "edgeimg.root=/dev/vda2 edgeimg.break=switch_root"
	boot_init && exit 1
	assert_has "$(cat "$T/out")" "edgeimg: mounts: /etc overlay, /var /root on data, /boot none"
	assert_lacks "$(cat "$T/out")" "switch_root: starting"
	assert_lacks "$(calls)" "--move"
}

modules_for_another_kernel_stop_the_boot() {
	fake_cmdline "edgeimg.root=/dev/vda2"
	boot_init
	fake uname "echo 6.1.0-other"
	(main) >"$T/out" 2>&1 && exit 1
	assert_eq "edgeimg: initramfs: edgeimg 0.9.0, kernel 6.1.0-other
edgeimg: FAILED: initramfs: its modules are for kernel 6.12.0-test but kernel 6.1.0-other is running" "$(cat "$T/out")"
}

no_root_argument_stops_the_boot() {
	fake_cmdline "console=ttyS0"
	boot_init && exit 1
	assert_eq "edgeimg: initramfs: edgeimg 0.9.0, kernel 6.12.0-test
edgeimg: modules: loaded 2, could not load: nope
edgeimg: FAILED: partitions: no edgeimg.root= on the kernel command line" "$(cat "$T/out")"
}

a_network_boot_runs_from_ram() {
	local sum
	fake_server
	head -c 1048576 /dev/zero >"$T/srv/root.squashfs"
	sum=$(sha256sum "$T/srv/root.squashfs" | cut -d' ' -f1)
	srv_file node/default/index "node.env
"
	srv_file node/default/node.env "NODE_HOSTNAME='pxe-node-1'"
	mkdir -p "$SYS/class/net/lo" "$SYS/class/net/eth0"
	fake udhcpc "echo 'eth0 10.0.2.15' >'$RUN/net.lease'"
	fake_cmdline "edgeimg.root=http://srv/root.squashfs edgeimg.root_sha256=$sum edgeimg.config=http://srv/node/52-54-00-12-34-56/ edgeimg.config_default=http://srv/node/default/"
	boot_init || {
		cat "$T/out"
		exit 1
	}
	assert_eq "edgeimg: initramfs: edgeimg 0.9.0, kernel 6.12.0-test
edgeimg: modules: loaded 2, could not load: nope
edgeimg: network: eth0 10.0.2.15 by DHCP
edgeimg: root: http://srv/root.squashfs fetched into RAM (1 MiB), sha256 ok
edgeimg: root: squashfs from the network mounted read-only
edgeimg: config: node config from http://srv/node/default/ (1 files)
edgeimg: data: no [storage] device, /var and /etc changes are in RAM (lost on reboot)
edgeimg: mounts: /etc overlay, /var /root on data, /boot tmpfs (node config from the network)
edgeimg: switch_root: starting /sbin/init" "$(cat "$T/out")"
}

tcase "a first disk boot grows and makes data" a_first_disk_boot_grows_and_makes_data
tcase "a later boot checks data and mounts no boot partition" a_later_boot_checks_data_and_mounts_no_boot_partition
tcase "edgeimg.break=initramfs stops before the modules" a_break_stops_before_the_modules
tcase "edgeimg.break=switch_root stops before the moves" a_break_at_switch_root_stops_before_the_moves
tcase "modules for another kernel stop the boot" modules_for_another_kernel_stop_the_boot
tcase "no edgeimg.root= stops the boot" no_root_argument_stops_the_boot
tcase "a network boot runs from RAM" a_network_boot_runs_from_ram
t_done

# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of the root's sysinfo.sh (k0s's pre-flight probes on the node) against a fake
# /proc, /sys, /dev and root: a node that has everything, then one thing missing at a time.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/sysinfo.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/sysinfo.sh"

KREL=6.12.0-test

# good_node: a worker with every option, module, controller and mount k0s and kubelet want.
good_node() {
	export EDGEIMG_PROC="$T/proc" EDGEIMG_SYS="$T/fsys" EDGEIMG_DEV="$T/fdev" EDGEIMG_SYSROOT="$T/root"
	mkdir -p "$T/proc/sys/kernel" "$T/proc/self" "$T/fsys/fs/cgroup/k0s" "$T/fdev" \
		"$T/root/etc" "$T/root/var/lib/k0s" "$T/root/usr/lib/modules/$KREL" "$T/root/boot"
	ln -s usr/lib "$T/root/lib"
	echo Linux >"$T/proc/sys/kernel/ostype"
	echo "$KREL" >"$T/proc/sys/kernel/osrelease"
	printf 'MemTotal:        2000000 kB\nMemFree:          100 kB\n' >"$T/proc/meminfo"
	echo "0::/k0s" >"$T/proc/self/cgroup"
	: >"$T/fsys/fs/cgroup/k0s/cgroup.freeze"
	echo "cpuset cpu io memory hugetlb pids rdma misc" >"$T/fsys/fs/cgroup/cgroup.controllers"
	cat >"$T/proc/self/mountinfo" <<EOF
20 1 254:0 / / ro,relatime shared:1 - squashfs /dev/dm-0 ro
22 20 0:21 / /proc rw,relatime shared:12 - proc proc rw
23 20 0:22 / /sys rw,relatime shared:2 - sysfs sysfs rw
26 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
30 20 8:3 /var /var rw,relatime shared:20 - ext4 /dev/vda3 rw
EOF
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n' >"$T/root/etc/hosts"
	ln -s /dev/null "$T/fdev/kmsg"
	printf '# comment\nCONFIG_NET=y\nCONFIG_INET=y\n' >"$T/kconfig"
	for o in CGROUPS CGROUP_FREEZER CGROUP_PIDS CGROUP_DEVICE CPUSETS CGROUP_CPUACCT MEMCG \
		CGROUP_HUGETLB CGROUP_SCHED FAIR_GROUP_SCHED CFS_BANDWIDTH BLK_CGROUP CGROUP_BPF \
		BPF_SYSCALL NAMESPACES UTS_NS IPC_NS PID_NS NET_NS NETFILTER NETFILTER_ADVANCED PROC_FS; do
		echo "CONFIG_$o=y" >>"$T/kconfig"
	done
	for o in NF_CONNTRACK NETFILTER_XTABLES NETFILTER_XT_TARGET_REDIRECT NETFILTER_XT_MATCH_COMMENT EXT4_FS; do
		echo "CONFIG_$o=m" >>"$T/kconfig"
	done
	# As in Debian's kernels: the old name is a module option too (it selects the new one).
	echo "CONFIG_IP_NF_TARGET_REDIRECT=m" >>"$T/kconfig"
	cp "$T/kconfig" "$T/root/usr/lib/modules/$KREL/config"
	for m in netfilter/nf_conntrack netfilter/x_tables netfilter/xt_REDIRECT netfilter/xt_comment fs/ext4; do
		echo "kernel/$m.ko.xz:"
	done >"$T/root/usr/lib/modules/$KREL/modules.dep"
	# df of the data dir: plenty of room.
	fake df 'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; echo "/dev/vda3 9000000 1000 8000000 1% /var"'
	# What k0s-run sets before k0s starts (a function: the host's hard limit may be lower).
	# shellcheck disable=SC2317
	ulimit() { echo 1048576; }
}

# summary: the sysinfo line of the last run.
summary() {
	grep '^edgeimg: sysinfo:' "$T/out"
}

a_good_worker_passes_every_probe() {
	good_node
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" || { cat "$T/out"; exit 1; }
	assert_eq "edgeimg: sysinfo: 52 passed, 0 warnings, 0 errors" "$(cat "$T/out")" "one line only"
	# shellcheck disable=SC2317
	ulimit() { echo 1024; }
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" || exit 1
	assert_eq "edgeimg: sysinfo: 51 passed, 1 warnings (RLIMIT_NOFILE 1024 < 65536), 0 errors" "$(cat "$T/out")"
}

a_controller_runs_only_the_probes_of_its_role() {
	good_node
	sysinfo_run controller /var/lib/k0s x86-64 >"$T/out" || exit 1
	# Host probes and NET/INET, no cgroups, mounts or worker kernel options.
	assert_has "$(summary)" "passed, "
	assert_eq 0 "$(grep -c FAILED "$T/out")"
	[ "$(summary | cut -d' ' -f3)" -lt 15 ] || exit 1
}

a_missing_module_names_the_option_and_the_profile_setting() {
	good_node
	grep -v xt_REDIRECT "$T/root/usr/lib/modules/$KREL/modules.dep" >"$T/dep"
	mv "$T/dep" "$T/root/usr/lib/modules/$KREL/modules.dep"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_eq 'edgeimg: FAILED: sysinfo: CONFIG_NETFILTER_XT_TARGET_REDIRECT (REDIRECT target support) is a module, but this image lacks xt_REDIRECT: add "xt_REDIRECT" to [kubernetes] modules in profiles/base.toml (or to root_modules of boards/x86-64.toml)' \
		"$(grep FAILED "$T/out")"
	assert_has "$(summary)" "1 errors (CONFIG_NETFILTER_XT_TARGET_REDIRECT)"
}

the_alternative_option_is_really_tried() {
	good_node
	sed -i -e 's/^CONFIG_NETFILTER_XT_TARGET_REDIRECT=m/# CONFIG_NETFILTER_XT_TARGET_REDIRECT is not set/' \
		-e 's/^CONFIG_IP_NF_TARGET_REDIRECT=m/CONFIG_IP_NF_TARGET_REDIRECT=y/' \
		"$T/root/usr/lib/modules/$KREL/config"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" || { cat "$T/out"; exit 1; }
	sed -i 's/^CONFIG_IP_NF_TARGET_REDIRECT=y/# nothing/' "$T/root/usr/lib/modules/$KREL/config"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_has "$(grep FAILED "$T/out")" "CONFIG_NETFILTER_XT_TARGET_REDIRECT (REDIRECT target support) is not set in kernel $KREL (nor CONFIG_IP_NF_TARGET_REDIRECT): the kernel package of boards/x86-64.toml"
}

the_kernel_config_is_read_where_k0s_looks_first() {
	good_node
	# /proc/config.gz wins over the file in the root.
	grep -v CGROUP_BPF "$T/kconfig" | gzip >"$T/proc/config.gz"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_has "$(grep FAILED "$T/out")" "CONFIG_CGROUP_BPF (eBPF device filter of the cgroup v2 devices controller) is not set"
	rm "$T/proc/config.gz" "$T/root/usr/lib/modules/$KREL/config"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_has "$(grep FAILED "$T/out")" "no kernel config for $KREL"
	cp "$T/kconfig" "$T/root/boot/config-$KREL"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" || exit 1
}

missing_cgroups_mounts_and_devices_are_errors() {
	good_node
	echo "cpu io memory" >"$T/fsys/fs/cgroup/cgroup.controllers"
	rm "$T/fsys/fs/cgroup/k0s/cgroup.freeze" "$T/fdev/kmsg"
	sed -i 's/ shared:1 / /' "$T/proc/self/mountinfo"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_has "$(summary)" "5 errors (cgroup cpuset; cgroup pids; cgroup freezer; / shared; /dev/kmsg)"
	assert_has "$(summary)" "1 warnings (cgroup hugetlb missing"
	assert_eq 5 "$(grep -c '^edgeimg: FAILED: sysinfo: ' "$T/out")"
}

cgroup_v1_and_a_data_dir_on_overlay_are_errors() {
	good_node
	sed -i -e 's/cgroup2 cgroup2/tmpfs tmpfs/' -e 's/ext4 \/dev\/vda3/overlay overlay/' "$T/proc/self/mountinfo"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_has "$(summary)" "2 errors (data dir filesystem; cgroup v2)"
	assert_has "$(cat "$T/out")" "/var/lib/k0s is on overlay (/var), not on a writable filesystem overlayfs can use"
	good_node
	sed -i 's/ext4 \/dev\/vda3/tmpfs tmpfs/' "$T/proc/self/mountinfo"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" || exit 1
	assert_has "$(summary)" "1 warnings (/var/lib/k0s on tmpfs (lost on reboot)), 0 errors"
}

small_nodes_get_warnings_not_errors() {
	good_node
	printf 'MemTotal:        400000 kB\n' >"$T/proc/meminfo"
	fake df 'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; echo "/dev/vda3 900000 1000 800000 1% /var"'
	rm "$T/root/etc/hosts"
	sysinfo_run worker /var/lib/k0s x86-64 >"$T/out" && exit 1
	assert_has "$(summary)" "memory 390 MiB < 500 MiB; free space in /var/lib/k0s 781 MiB < 1300 MiB"
	assert_has "$(summary)" "1 errors (localhost)"
}

tcase "a good worker passes every probe, in one line" a_good_worker_passes_every_probe
tcase "a controller runs only the probes of its role" a_controller_runs_only_the_probes_of_its_role
tcase "a missing module names the option and the profile setting" a_missing_module_names_the_option_and_the_profile_setting
tcase "the alternative kernel option is really tried" the_alternative_option_is_really_tried
tcase "the kernel config is read where k0s looks, in its order" the_kernel_config_is_read_where_k0s_looks_first
tcase "missing cgroup controllers, freezer, shared / and /dev/kmsg are errors" missing_cgroups_mounts_and_devices_are_errors
tcase "cgroup v1 and a data dir on overlayfs are errors, on tmpfs a warning" cgroup_v1_and_a_data_dir_on_overlay_are_errors
tcase "small nodes get warnings; no localhost is an error" small_nodes_get_warnings_not_errors
t_done

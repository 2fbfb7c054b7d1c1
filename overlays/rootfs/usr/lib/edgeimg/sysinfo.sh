# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash has it.)
# Owns k0s's pre-flight checks, run on the node before k0s starts (sourced by k0s-run after
# lib.sh, whose contract.sh gives EDGEIMG_SAY, EDGEIMG_SYSINFO and EDGEIMG_FAILED). The same probes k0s runs at
# every start (`k0s sysinfo`; internal/pkg/sysinfo/** in k0s's source) for the node's role,
# plus what kubelet needs beyond them (`/` with shared propagation, /dev/kmsg). Differences
# from k0s, on purpose:
# - k0s's alternative kernel options (REDIRECT: NETFILTER_XT_TARGET_REDIRECT or
#   IP_NF_TARGET_REDIRECT) are really tried (k0s looks at the first option twice);
# - an option built as a module passes only when the module is in this root (k0s cannot know
#   that edgeimg's root carries a subset of the kernel's modules);
# - the cgroup v2 `devices` controller is an eBPF program k0s attaches to a fresh cgroup; a
#   shell cannot make that system call, so it passes when the kernel has CONFIG_CGROUP_BPF and
#   CONFIG_BPF_SYSCALL (what that attach needs);
# - the data dir on overlayfs or squashfs is an error (containerd's overlayfs snapshotter
#   cannot stack on overlayfs, squashfs is read-only), on tmpfs a warning; k0s only reports
#   its type.
#
# sysinfo_run ROLE DATA_DIR BOARD prints each error as `edgeimg: FAILED: sysinfo: ...` (what
# is missing and which board or profile setting adds it), then the one summary line
# `edgeimg: sysinfo: N passed, W warnings (...), E errors (...)`; returns 1 on an error.
#
# Paths tests move: EDGEIMG_PROC (/proc), EDGEIMG_SYS (/sys), EDGEIMG_DEV (/dev),
# EDGEIMG_SYSROOT (prefix of /boot, /usr, /lib, /etc).

# k0s's kernel config probes, one a line: LEVEL ROLES OPTION[|ALTERNATIVE] MODULE DESCRIPTION.
# LEVEL: error (k0s: Require) or warn (Assert); ROLES: all or worker; MODULE: the module that
# provides the option when it is built as one (- for options that are never modules).
SYSINFO_KCONFIG='error all NET - Networking support
error all INET - TCP/IP networking
error worker CGROUPS - Control Group support
error worker CGROUP_FREEZER - Freezer cgroup subsystem
error worker CGROUP_PIDS - PIDs cgroup subsystem
error worker CGROUP_DEVICE - Device controller for cgroups
error worker CPUSETS - Cpuset support
error worker CGROUP_CPUACCT - Simple CPU accounting cgroup subsystem
error worker MEMCG - Memory Resource Controller for Control Groups
warn worker CGROUP_HUGETLB - HugeTLB Resource Controller for Control Groups
error worker CGROUP_SCHED - Group CPU scheduler
error worker FAIR_GROUP_SCHED - Group scheduling for SCHED_OTHER
warn worker CFS_BANDWIDTH - CPU bandwidth provisioning for FAIR_GROUP_SCHED
warn worker BLK_CGROUP - Block IO controller
error worker CGROUP_BPF - eBPF device filter of the cgroup v2 devices controller
error worker BPF_SYSCALL - bpf() system call of the cgroup v2 devices controller
error worker NAMESPACES - Namespaces support
error worker UTS_NS - UTS namespace
error worker IPC_NS - IPC namespace
error worker PID_NS - PID namespace
error worker NET_NS - Network namespace
error worker NETFILTER - Network packet filtering framework (Netfilter)
warn worker NETFILTER_ADVANCED - Advanced netfilter configuration
error worker NF_CONNTRACK nf_conntrack Netfilter connection tracking support
error worker NETFILTER_XTABLES x_tables Netfilter Xtables support
error worker NETFILTER_XT_TARGET_REDIRECT|IP_NF_TARGET_REDIRECT xt_REDIRECT REDIRECT target support
error worker NETFILTER_XT_MATCH_COMMENT xt_comment "comment" match support
error worker EXT4_FS ext4 The Extended 4 (ext4) filesystem
error worker PROC_FS - /proc file system support'

SYSINFO_PROFILE='[kubernetes] modules in profiles/base.toml'

# sysinfo_pass / sysinfo_warn WHAT / sysinfo_error WHAT: count a probe's outcome.
sysinfo_pass() {
	SI_PASSED=$((SI_PASSED + 1))
}

sysinfo_warn() {
	SI_WARNED=$((SI_WARNED + 1))
	SI_WARNINGS="${SI_WARNINGS:+$SI_WARNINGS; }$1"
}

sysinfo_error() {
	SI_ERRED=$((SI_ERRED + 1))
	SI_ERRORS="${SI_ERRORS:+$SI_ERRORS; }$1"
	echo "$EDGEIMG_SAY $EDGEIMG_FAILED sysinfo: $2"
}

# sysinfo_mount_of DIR: `MOUNTPOINT FSTYPE OPTIONAL-FIELDS` of the mount holding DIR (the
# longest mount point of mountinfo that is DIR or above it).
sysinfo_mount_of() {
	awk -v d="$1" '
		{
			mp = $5
			if (!(d == mp || mp == "/" || index(d, mp "/") == 1)) next
			opt = ""
			for (i = 7; i <= NF && $i != "-"; i++) opt = opt " " $i
			if (length(mp) >= best) { best = length(mp); line = mp " " $(i + 1) opt }
		}
		END { if (line != "") print line }' "$SI_PROC/self/mountinfo" 2>/dev/null
}

# sysinfo_kconfig_load: the kernel config where k0s looks for it (the first file found), as
# CONFIG_*=[ymn] lines in $SI_KCONFIG; fails when there is none.
sysinfo_kconfig_load() {
	local r="$SI_KREL" p
	for p in "$SI_PROC/config.gz" "$SI_ROOT/boot/config-$r" "$SI_ROOT/usr/src/linux-$r/.config" \
		"$SI_ROOT/usr/src/linux/.config" "$SI_ROOT/usr/lib/modules/$r/config" \
		"$SI_ROOT/usr/lib/ostree-boot/config-$r" "$SI_ROOT/usr/lib/kernel/config-$r" \
		"$SI_ROOT/usr/src/linux-headers-$r/.config" "$SI_ROOT/lib/modules/$r/build/.config"; do
		[ -e "$p" ] || continue
		case "$p" in
		*.gz) zcat "$p" ;;
		*) cat "$p" ;;
		esac 2>/dev/null | grep -E '^[[:space:]]*CONFIG_[A-Z0-9_]+=[ymn]' | tr -d ' \t' >"$SI_KCONFIG"
		return 0
	done
	return 1
}

# sysinfo_kconfig OPTION: y, m, n or nothing.
sysinfo_kconfig() {
	sed -n "s/^CONFIG_$1=\\([ymn]\\).*/\\1/p" "$SI_KCONFIG" | head -n 1
}

# sysinfo_module_present NAME: whether the root carries module NAME (modules.dep lists it).
sysinfo_module_present() {
	grep -q "/$1\\.ko[.a-z]*:" "$SI_ROOT/lib/modules/$SI_KREL/modules.dep" 2>/dev/null
}

sysinfo_kernel_options() {
	local level roles opts module desc opt v found alt
	if ! sysinfo_kconfig_load; then
		sysinfo_error "kernel config" "no kernel config for $SI_KREL in /proc/config.gz, /boot/config-$SI_KREL or /usr/lib/modules/$SI_KREL/config (k0s reads it from there): the build copies it from the kernel package of boards/$SI_BOARD.toml"
		return
	fi
	sysinfo_pass
	while read -r level roles opts module desc; do
		[ "$roles" = worker ] && [ "$SI_WORKER" != 1 ] && continue
		found=""
		for opt in $(echo "$opts" | tr '|' ' '); do
			v=$(sysinfo_kconfig "$opt")
			case "$v" in
			y) found=$opt ;;
			m)
				# As a module, the option is there when the root carries the module.
				if [ "$module" = - ] || sysinfo_module_present "$module"; then
					found=$opt
				else
					# Named by the first option built as a module.
					found=${found:--$opt}
				fi
				;;
			esac
			case "$found" in "" | -*) ;; *) break ;; esac
		done
		alt=""
		case "$opts" in *"|"*) alt=" (nor CONFIG_${opts#*|})" ;; esac
		case "$found" in
		"")
			if [ "$level" = error ]; then
				sysinfo_error "CONFIG_${opts%%|*}" "CONFIG_${opts%%|*} ($desc) is not set in kernel $SI_KREL$alt: the kernel package of boards/$SI_BOARD.toml (kernel_package) must be one built with it"
			else
				sysinfo_warn "CONFIG_${opts%%|*} not set"
			fi
			;;
		-*)
			if [ "$level" = error ]; then
				sysinfo_error "CONFIG_${found#-}" "CONFIG_${found#-} ($desc) is a module, but this image lacks $module: add \"$module\" to $SYSINFO_PROFILE (or to root_modules of boards/$SI_BOARD.toml)"
			else
				sysinfo_warn "CONFIG_${found#-} module $module missing"
			fi
			;;
		*) sysinfo_pass ;;
		esac
	done <<EOF
$SYSINFO_KCONFIG
EOF
}

sysinfo_cgroups() {
	local cg="$SI_SYS/fs/cgroup" m controllers c self tmp
	m=$(sysinfo_mount_of "${SI_SYS_MOUNT:-/sys}/fs/cgroup")
	# shellcheck disable=SC2086
	set -- $m
	if [ "$2" != cgroup2 ]; then
		sysinfo_error "cgroup v2" "cgroup v2 is not mounted on /sys/fs/cgroup (found: ${2:-nothing}; k0s's kubelet needs cgroup v2): /usr/lib/edgeimg/boot mounts it"
		return
	fi
	sysinfo_pass
	controllers=" $(cat "$cg/cgroup.controllers" 2>/dev/null) "
	for c in cpu cpuset memory pids; do
		case "$controllers" in
		*" $c "*) sysinfo_pass ;;
		*) sysinfo_error "cgroup $c" "the cgroup v2 controller $c is missing (cgroup.controllers: ${controllers# }): the kernel of boards/$SI_BOARD.toml must have it" ;;
		esac
	done
	# cpuacct comes with cpu in cgroup v2 (counted above); blkio is io; hugetlb is optional.
	for c in io hugetlb; do
		case "$controllers" in
		*" $c "*) sysinfo_pass ;;
		*) sysinfo_warn "cgroup $c missing" ;;
		esac
	done
	# freezer: cgroup.freeze in a cgroup other than the root (k0s makes a temporary one).
	self=$(sed -n 's/^0:://p' "$SI_PROC/self/cgroup" 2>/dev/null)
	if [ -n "$self" ] && [ "$self" != / ]; then
		tmp=""
		[ -f "$cg$self/cgroup.freeze" ] && tmp=ok
	else
		tmp="$cg/k0s-freezer-detection-$$"
		if mkdir "$tmp" 2>/dev/null; then
			[ -f "$tmp/cgroup.freeze" ] && tmp=ok
			rmdir "$cg/k0s-freezer-detection-$$" 2>/dev/null
		fi
	fi
	if [ "$tmp" = ok ]; then
		sysinfo_pass
	else
		sysinfo_error "cgroup freezer" "the cgroup v2 freezer is missing (no cgroup.freeze in a child cgroup): the kernel of boards/$SI_BOARD.toml must be 5.2 or newer"
	fi
	# devices: counted with CONFIG_CGROUP_BPF and CONFIG_BPF_SYSCALL (kernel options above).
}

sysinfo_host() {
	local v mem min free want m
	v=$(cat "$SI_PROC/sys/kernel/ostype" 2>/dev/null)
	if [ "$v" = Linux ]; then sysinfo_pass; else sysinfo_error "operating system" "the operating system is '$v', k0s needs Linux"; fi
	case "$SI_KREL" in
	[4-9].* | [1-9][0-9].* | 3.1[0-9]*) sysinfo_pass ;;
	*) sysinfo_warn "kernel $SI_KREL older than 3.10" ;;
	esac
	# Machine ID: k0s falls back to a hash of the hostname, so this always passes.
	sysinfo_pass
	# shellcheck disable=SC3045
	v=$(ulimit -n)
	if [ "$v" = unlimited ] || [ "$v" -ge 65536 ] 2>/dev/null; then sysinfo_pass; else sysinfo_warn "RLIMIT_NOFILE $v < 65536"; fi
	mem=$(awk '/^MemTotal:/ { print $2; exit }' "$SI_PROC/meminfo" 2>/dev/null)
	min=512000
	[ "$SI_WORKER" = 1 ] && min=$((500 * 1024))
	[ "$SI_CONTROLLER" = 1 ] && min=$((1024 * 1024))
	if [ "${mem:-0}" -ge "$min" ]; then sysinfo_pass; else sysinfo_warn "memory $((${mem:-0} / 1024)) MiB < $((min / 1024)) MiB"; fi
	# Free space in the data dir (or the nearest folder above it that exists).
	v=$SI_DATA
	while [ ! -d "$SI_ROOT$v" ] && [ "$v" != / ]; do v=$(dirname "$v"); done
	free=$(df -Pk "$SI_ROOT$v" 2>/dev/null | awk 'NR == 2 { print $4 }')
	want=0
	[ "$SI_CONTROLLER" = 1 ] && want=$((want + 500 * 1024))
	[ "$SI_WORKER" = 1 ] && want=$((want + 1300 * 1024))
	if [ "${free:-0}" -ge "$want" ]; then sysinfo_pass; else sysinfo_warn "free space in $SI_DATA $((${free:-0} / 1024)) MiB < $((want / 1024)) MiB"; fi
	m=$(sysinfo_mount_of "$v")
	# shellcheck disable=SC2086
	set -- $m
	case "$2" in
	overlay | squashfs | "")
		sysinfo_error "data dir filesystem" "$SI_DATA is on ${2:-no filesystem} ($1), not on a writable filesystem overlayfs can use: it must be on the data partition (the initramfs mounts it on /var)"
		;;
	tmpfs | ramfs) sysinfo_warn "$SI_DATA on $2 (lost on reboot)" ;;
	*) sysinfo_pass ;;
	esac
	if awk '!/^[[:space:]]*#/ { for (i = 2; i <= NF; i++) if ($i == "localhost") f = 1 } END { exit !f }' "$SI_ROOT/etc/hosts" 2>/dev/null; then
		sysinfo_pass
	else
		sysinfo_error "localhost" "localhost does not resolve (no entry in /etc/hosts): /usr/lib/edgeimg/boot writes it"
	fi
}

sysinfo_worker() {
	local p m
	for p in modprobe mount umount; do
		if command -v "$p" >/dev/null 2>&1; then sysinfo_pass; else sysinfo_warn "$p not on PATH"; fi
	done
	m=$(sysinfo_mount_of "${SI_PROC_MOUNT:-/proc}")
	# shellcheck disable=SC2086
	set -- $m
	if [ "$2" = proc ]; then sysinfo_pass; else sysinfo_error "procfs" "/proc is not procfs (${2:-not mounted})"; fi
	sysinfo_cgroups
	# kubelet: mount propagation for pods that ask for it (CSI drivers, node exporters).
	m=$(sysinfo_mount_of /)
	case " $m " in
	*" shared:"*) sysinfo_pass ;;
	*) sysinfo_error "/ shared" "/ is not mounted with shared propagation (kubelet's mountPropagation needs it): /usr/lib/edgeimg/boot runs mount --make-rshared /" ;;
	esac
	if [ -c "$SI_DEV/kmsg" ]; then sysinfo_pass; else sysinfo_error "/dev/kmsg" "/dev/kmsg is missing (kubelet watches the kernel log): the kernel needs CONFIG_PRINTK and devtmpfs"; fi
}

sysinfo_run() {
	SI_PROC=${EDGEIMG_PROC:-/proc}
	SI_SYS=${EDGEIMG_SYS:-/sys}
	SI_DEV=${EDGEIMG_DEV:-/dev}
	SI_ROOT=${EDGEIMG_SYSROOT:-}
	SI_DATA=$2
	SI_BOARD=${3:-BOARD}
	SI_KREL=$(cat "$SI_PROC/sys/kernel/osrelease" 2>/dev/null)
	SI_PASSED=0 SI_WARNED=0 SI_ERRED=0 SI_WARNINGS="" SI_ERRORS=""
	SI_WORKER=0 SI_CONTROLLER=0
	case "$1" in
	worker) SI_WORKER=1 ;;
	controller) SI_CONTROLLER=1 ;;
	*) SI_WORKER=1 SI_CONTROLLER=1 ;;
	esac
	SI_KCONFIG=$(mktemp "${TMPDIR:-/tmp}/sysinfo.XXXXXX") || SI_KCONFIG=/dev/null
	sysinfo_host
	[ "$SI_WORKER" = 1 ] && sysinfo_worker
	sysinfo_kernel_options
	rm -f "$SI_KCONFIG"
	echo "$EDGEIMG_SAY $EDGEIMG_SYSINFO $SI_PASSED passed, $SI_WARNED warnings${SI_WARNINGS:+ ($SI_WARNINGS)}, $SI_ERRED errors${SI_ERRORS:+ ($SI_ERRORS)}"
	[ "$SI_ERRED" -eq 0 ]
}

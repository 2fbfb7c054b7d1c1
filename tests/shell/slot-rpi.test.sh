# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of slot.sh's Raspberry Pi side (BOOT_METHOD=rpi: os_prefix folders,
# tryboot.txt, `reboot '0 tryboot'`) on a fake boot FAT ($T/fat) holding what the build writes.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/lib.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/lib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/slot.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/slot.sh"
BOOT_METHOD=rpi

CONFIG='# edgeimg pi3 worker
arm_64bit=1
upstream_kernel=1
enable_uart=1
os_prefix=slot-a/
kernel=vmlinuz
initramfs initrd.img followkernel
dtparam=audio=off'

# card RUNNING: the FAT as the build leaves it, booted on slot RUNNING; version 1 installed.
card() {
	SLOT_ESP="$T/fat" SLOT_STATE="$T/fat/edgeimg/update" SLOT_CMDLINE="$T/cmdline"
	SLOT_RPI_REBOOT="$T/bin/klibc-reboot" IMAGE_VERSION=1 SLOT_BOOT_ID="$T/boot_id"
	SLOT_KALLSYMS="$T/kallsyms"
	# A Raspberry Pi kernel's: the reboot notifier that passes tryboot on.
	printf 'ffffffc080a1b2c0 t rpi_firmware_probe\nffffffc080a1b3d0 t rpi_firmware_notify_reboot\n' >"$T/kallsyms"
	echo 1 >"$T/boot_id"
	mkdir -p "$T/fat/slot-a" "$T/fat/edgeimg"
	printf '%s\n' "$CONFIG" >"$T/fat/config.txt"
	for f in vmlinuz initrd.img bcm2837-rpi-3-b.dtb; do
		echo "a $f" >"$T/fat/slot-a/$f"
	done
	echo "edgeimg.root=PARTUUID=1234abcd-02 edgeimg.slot=a" >"$T/fat/slot-a/cmdline.txt"
	local part=2
	[ "$1" = a ] || part=3
	fake_cmdline "console=ttyS1,115200 edgeimg.root=PARTUUID=1234abcd-0$part edgeimg.slot=$1"
	fake klibc-reboot
	# The verified boot files of version 2 for slot b, laid out as on the FAT, as
	# edgeimg-update leaves them.
	mkdir -p "$T/new/slot-b"
	for f in vmlinuz initrd.img bcm2837-rpi-3-b.dtb; do
		echo "b $f" >"$T/new/slot-b/$f"
	done
	echo "edgeimg.root=PARTUUID=1234abcd-03 edgeimg.slot=b" >"$T/new/slot-b/cmdline.txt"
}

t_current_slot_comes_from_the_command_line() {
	card a
	[ "$(slot_current)" = a ] || return 1
	on b
	[ "$(slot_current)" = b ] || return 1
	[ "$(slot_method)" = rpi ]
}

t_install_then_arm_writes_slot_b_and_tryboot_txt() {
	card a
	slot_install_boot b "$T/new" || return 1
	[ "$(cat "$T/fat/slot-b/vmlinuz")" = "b vmlinuz" ] || return 1
	grep -q 'edgeimg.slot=b' "$T/fat/slot-b/cmdline.txt" || return 1
	# Installed, not armed: nothing names slot b yet.
	[ ! -e "$T/fat/tryboot.txt" ] || return 1
	slot_arm b 2 || return 1
	# tryboot.txt is config.txt with the other prefix, every other line kept.
	printf '%s\n' "$CONFIG" | sed 's|os_prefix=slot-a/|os_prefix=slot-b/|' >"$T/want"
	cmp "$T/want" "$T/fat/tryboot.txt" || {
		diff "$T/want" "$T/fat/tryboot.txt"
		return 1
	}
	# config.txt is untouched: any boot but the one tryboot boot takes slot a.
	printf '%s\n' "$CONFIG" | cmp - "$T/fat/config.txt" || return 1
	[ "$(cat "$T/fat/edgeimg/update/trial")" = "b 2 1 1" ] || return 1
	no_leftovers
}

t_arm_refuses_a_slot_without_a_kernel() {
	card a
	if out=$(slot_arm b 2 2>&1); then
		echo "armed an empty slot: $out"
		return 1
	fi
	echo "$out" | grep -q 'slot-b/ has no kernel' || return 1
	[ ! -e "$T/fat/tryboot.txt" ]
}

t_reboot_trial_passes_0_tryboot_as_one_argument() {
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	out=$(slot_reboot_trial) || return 1
	echo "$out" | grep -q "edgeimg: update: rebooting into slot b on trial (reboot '0 tryboot')" || {
		echo "$out"
		return 1
	}
	# The fake records "NAME ARGS"; the argument count tells one word from two.
	calls | grep -qx 'klibc-reboot 0 tryboot' || {
		calls
		return 1
	}
	fake klibc-reboot "echo \"\$#\" >'$T/argc'"
	slot_reboot_trial >/dev/null || return 1
	[ "$(cat "$T/argc")" = 1 ]
}

t_a_kernel_without_the_tryboot_notifier_is_named_before_the_reboot() {
	local warn="edgeimg: update: warning: this kernel cannot pass the tryboot flag to the Pi firmware"
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	out=$(slot_reboot_trial) || return 1
	case "$out" in *"$warn"*) echo "a Pi kernel was warned about: $out" && return 1 ;; esac
	# Mainline's (Debian's) driver: a shutdown hook, no notifier; as a module too.
	printf 'ffffffc080a1b2c0 t rpi_firmware_probe\nffffffc080a1b3d0 t rpi_firmware_shutdown\n' >"$T/kallsyms"
	out=$(slot_reboot_trial) || return 1
	case "$out" in *"$warn"*) ;; *) echo "no warning: $out" && return 1 ;; esac
	printf 'ffffffc0a1b3d0 t rpi_firmware_notify_reboot\t[raspberrypi]\n' >"$T/kallsyms"
	out=$(slot_reboot_trial) || return 1
	case "$out" in *"$warn"*) echo "a module's notifier was missed: $out" && return 1 ;; esac
	# It warns and still reboots: the firmware may be one that honours the flag anyway.
	[ "$(calls | grep -c 'klibc-reboot 0 tryboot')" = 3 ]
}

t_reboot_trial_needs_an_armed_slot_and_klibc_reboot() {
	card a
	if slot_reboot_trial 2>"$T/err"; then
		return 1
	fi
	grep -q 'no tryboot.txt: arm a slot first' "$T/err" || return 1
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	rm "$T/bin/klibc-reboot"
	if slot_reboot_trial 2>"$T/err" >/dev/null; then
		return 1
	fi
	grep -q 'klibc-reboot is missing (klibc-utils)' "$T/err"
}

t_on_trial_is_the_slot_config_txt_does_not_name() {
	card a
	if slot_on_trial; then
		echo "a normal boot on slot a is no trial"
		return 1
	fi
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	on b
	slot_on_trial || return 1
	# The firmware went back to config.txt (the trial crashed): no trial.
	on a
	! slot_on_trial
}

t_commit_rewrites_config_txt_and_ends_the_trial() {
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	on b
	slot_commit || return 1
	printf '%s\n' "$CONFIG" | sed 's|os_prefix=slot-a/|os_prefix=slot-b/|' | cmp - "$T/fat/config.txt" || return 1
	[ ! -e "$T/fat/tryboot.txt" ] || return 1
	[ ! -e "$T/fat/edgeimg/update/trial" ] || return 1
	! slot_on_trial || return 1
	# Nothing to roll back afterwards.
	[ -z "$(slot_check_rollback)" ] || return 1
	no_leftovers
}

t_a_failed_trial_is_said_once_and_left_unbootable() {
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	# The trial boot gave up (its reason on the FAT), then the firmware booted config.txt.
	echo "no ready line within 900 s" >"$T/fat/edgeimg/update/result"
	on a
	out=$(slot_check_rollback) || return 1
	[ "$out" = "edgeimg: update: v2 failed (no ready line within 900 s), back on v1" ] || {
		echo "$out"
		return 1
	}
	[ ! -e "$T/fat/tryboot.txt" ] || return 1
	[ ! -e "$T/fat/slot-b/vmlinuz" ] || return 1
	[ -e "$T/fat/slot-a/vmlinuz" ] || return 1
	[ -z "$(slot_check_rollback)" ] || return 1
	# A trial that died without a word (a kernel crash, a power cut) says so too, also to a
	# caller under set -e (boot_cmd.sh).
	slot_install_boot b "$T/new" && slot_arm b 3 || return 1
	on a
	out=$(
		set -e
		slot_check_rollback
	) || return 1
	[ "$out" = "edgeimg: update: v3 failed (it did not come up), back on v1" ] || {
		echo "$out"
		return 1
	}
}

t_the_trial_boot_itself_is_no_rollback() {
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	on b
	[ -z "$(slot_check_rollback)" ] || return 1
	[ -e "$T/fat/tryboot.txt" ] && [ -e "$T/fat/edgeimg/update/trial" ]
}

t_disarm_refuses_the_running_and_the_configured_slot() {
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	slot_disarm a 2>"$T/err" && return 1
	grep -q 'slot a is running' "$T/err" || return 1
	slot_disarm b || return 1
	[ ! -e "$T/fat/tryboot.txt" ] && [ ! -e "$T/fat/slot-b/vmlinuz" ] || return 1
	# On trial on b (config.txt still says a): a is not running but config.txt boots it.
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	on b
	slot_disarm a 2>"$T/err" && return 1
	grep -q 'slot a is the one config.txt boots' "$T/err" || return 1
	slot_disarm c 2>"$T/err" && return 1
	grep -q 'no slot c' "$T/err"
}

t_install_leaves_the_old_folder_when_the_copy_fails() {
	card a
	slot_install_boot b "$T/new" || return 1
	rm "$T/new/slot-b/vmlinuz"
	slot_install_boot b "$T/new" 2>"$T/err" && return 1
	grep -q "has no vmlinuz (config.txt's kernel=)" "$T/err" || return 1
	[ "$(cat "$T/fat/slot-b/vmlinuz")" = "b vmlinuz" ] || return 1
	no_leftovers
}

t_give_up_removes_tryboot_txt() {
	card a
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	on b
	slot_note_result "not ready within 900s" && slot_give_up || return 1
	[ ! -e "$T/fat/tryboot.txt" ] || return 1
	printf '%s\n' "$CONFIG" | cmp - "$T/fat/config.txt" || return 1
	on a
	out=$(slot_check_rollback) || return 1
	[ "$out" = "edgeimg: update: v2 failed (not ready within 900s), back on v1" ] || {
		echo "$out"
		return 1
	}
	[ ! -e "$T/fat/slot-b/vmlinuz" ]
}

tcase "the running slot comes from edgeimg.slot= on the command line" t_current_slot_comes_from_the_command_line
tcase "install then arm: slot-b/ written, tryboot.txt is config.txt naming slot-b/" t_install_then_arm_writes_slot_b_and_tryboot_txt
tcase "arm refuses a slot without a kernel" t_arm_refuses_a_slot_without_a_kernel
tcase "the trial reboot passes '0 tryboot' as one argument to klibc's reboot" t_reboot_trial_passes_0_tryboot_as_one_argument
tcase "a kernel without the tryboot notifier is named before the reboot" t_a_kernel_without_the_tryboot_notifier_is_named_before_the_reboot
tcase "the trial reboot needs an armed slot and klibc's reboot" t_reboot_trial_needs_an_armed_slot_and_klibc_reboot
tcase "on trial: the running slot is not the one config.txt names" t_on_trial_is_the_slot_config_txt_does_not_name
tcase "commit rewrites config.txt atomically and ends the trial" t_commit_rewrites_config_txt_and_ends_the_trial
tcase "a failed trial is said once, and its slot left unbootable" t_a_failed_trial_is_said_once_and_left_unbootable
tcase "the trial boot itself rolls nothing back" t_the_trial_boot_itself_is_no_rollback
tcase "disarm refuses the running and the configured slot" t_disarm_refuses_the_running_and_the_configured_slot
tcase "a failed install keeps the old folder" t_install_leaves_the_old_folder_when_the_copy_fails
tcase "giving up a trial leaves config.txt's slot for the next boot" t_give_up_removes_tryboot_txt
t_done

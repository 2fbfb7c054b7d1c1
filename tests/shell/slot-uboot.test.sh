# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of slot.sh's Raspberry Pi with U-Boot side (BOOT_METHOD=uboot: the same os_prefix
# folders, slots.txt naming the good slot and trial.txt the trial boot.scr counts down, a
# plain reboot) on a fake boot FAT ($T/fat) holding what the build writes.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/lib.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/lib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/slot.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/slot.sh"
BOOT_METHOD=uboot

# config.txt of a U-Boot Pi: the firmware starts u-boot.bin from the good slot's folder; no
# initramfs line (boot.scr loads it).
CONFIG='# edgeimg pi3 worker
arm_64bit=1
upstream_kernel=1
enable_uart=1
os_prefix=slot-a/
kernel=u-boot.bin
dtparam=audio=off'

SLOT_FILES='vmlinuz initrd.img u-boot.bin bcm2837-rpi-3-b.dtb'

# card RUNNING: the FAT as the build leaves it, booted on slot RUNNING; version 1 installed.
card() {
	SLOT_ESP="$T/fat" SLOT_STATE="$T/fat/edgeimg/update" SLOT_CMDLINE="$T/cmdline"
	IMAGE_VERSION=1 SLOT_BOOT_ID="$T/boot_id"
	echo 1 >"$T/boot_id"
	mkdir -p "$T/fat/slot-a" "$T/fat/edgeimg"
	printf '%s\n' "$CONFIG" >"$T/fat/config.txt"
	printf 'boot.scr\0\001\002 any bytes\n' >"$T/fat/boot.scr"
	echo "good=a" >"$T/fat/slots.txt"
	for f in $SLOT_FILES; do
		echo "a $f" >"$T/fat/slot-a/$f"
	done
	echo "edgeimg.root=PARTUUID=1234abcd-02 edgeimg.slot=a" >"$T/fat/slot-a/cmdline.txt"
	echo "bootargs=edgeimg.root=PARTUUID=1234abcd-02 edgeimg.slot=a" >"$T/fat/slot-a/bootargs.txt"
	local part=2
	[ "$1" = a ] || part=3
	fake_cmdline "console=ttyS1,115200 edgeimg.root=PARTUUID=1234abcd-0$part edgeimg.slot=$1"
	# testlib fakes reboot already; once more here, so that no case can reboot this machine.
	fake reboot
	# The verified boot files of version 2 for slot b, laid out as on the FAT, as
	# edgeimg-update leaves them.
	mkdir -p "$T/new/slot-b"
	for f in $SLOT_FILES; do
		echo "b $f" >"$T/new/slot-b/$f"
	done
	echo "edgeimg.root=PARTUUID=1234abcd-03 edgeimg.slot=b" >"$T/new/slot-b/cmdline.txt"
	echo "bootargs=edgeimg.root=PARTUUID=1234abcd-03 edgeimg.slot=b" >"$T/new/slot-b/bootargs.txt"
	# What the FAT holds before any update, to tell an untouched file from a rewritten one.
	cp "$T/fat/config.txt" "$T/config.orig"
	cp "$T/fat/slots.txt" "$T/slots.orig"
}

# same WANT FILE: FILE holds exactly WANT's bytes (a file), or says how it differs.
same() {
	cmp "$1" "$2" || {
		diff "$1" "$2"
		return 1
	}
}

# armed: slot b installed and armed for version 2 from this boot.
armed() {
	slot_install_boot b "$T/new" && slot_arm b 2
}

t_method_is_uboot_and_the_slot_comes_from_the_command_line() {
	card a
	[ "$(slot_method)" = uboot ] || {
		echo "method: $(slot_method)"
		return 1
	}
	[ "$(slot_current)" = a ] || return 1
	on b
	[ "$(slot_current)" = b ] || return 1
	on a
	[ "$(slot_current)" = a ]
}

t_install_then_arm_writes_slot_b_and_trial_txt() {
	card a
	slot_install_boot b "$T/new" || return 1
	[ "$(cat "$T/fat/slot-b/vmlinuz")" = "b vmlinuz" ] || return 1
	# The whole folder, every file as it was.
	diff -r "$T/new/slot-b" "$T/fat/slot-b" || return 1
	# Installed, not armed: nothing names slot b yet.
	[ ! -e "$T/fat/trial.txt" ] || {
		echo "trial.txt before arming"
		return 1
	}
	[ ! -e "$T/fat/edgeimg/update/trial" ] || return 1
	slot_arm b 2 || return 1
	printf 'trial=b\ntries=1\n' >"$T/want"
	same "$T/want" "$T/fat/trial.txt" || return 1
	# config.txt and slots.txt are untouched: any boot boot.scr does not count boots slot a.
	same "$T/config.orig" "$T/fat/config.txt" || return 1
	same "$T/slots.orig" "$T/fat/slots.txt" || return 1
	[ "$(cat "$T/fat/edgeimg/update/trial")" = "b 2 1 1" ] || {
		echo "trial record: $(cat "$T/fat/edgeimg/update/trial")"
		return 1
	}
	no_leftovers
}

t_install_refuses_a_folder_without_the_kernel_or_bootargs() {
	card a
	rm "$T/new/slot-b/vmlinuz"
	slot_install_boot b "$T/new" 2>"$T/err" && {
		echo "installed a folder without vmlinuz"
		return 1
	}
	grep -q "$T/new/slot-b has no vmlinuz" "$T/err" || {
		cat "$T/err"
		return 1
	}
	echo "b vmlinuz" >"$T/new/slot-b/vmlinuz"
	rm "$T/new/slot-b/bootargs.txt"
	slot_install_boot b "$T/new" 2>"$T/err" && {
		echo "installed a folder without bootargs.txt"
		return 1
	}
	grep -q "$T/new/slot-b has no bootargs.txt" "$T/err" || {
		cat "$T/err"
		return 1
	}
	if [ -e "$T/fat/slot-b" ] || [ -e "$T/fat/slot-b.new" ]; then
		ls -la "$T/fat"
		return 1
	fi
	no_leftovers
}

t_arm_refuses_a_slot_without_a_kernel_and_the_good_slot() {
	card a
	if out=$(slot_arm b 2 2>&1); then
		echo "armed an empty slot: $out"
		return 1
	fi
	echo "$out" | grep -q 'slot-b/ has no kernel' || {
		echo "$out"
		return 1
	}
	[ ! -e "$T/fat/trial.txt" ] && [ ! -e "$T/fat/edgeimg/update/trial" ] || return 1
	# Slot a has its kernel, but it is the good one: no trial of it.
	if out=$(slot_arm a 2 2>&1); then
		echo "armed the good slot: $out"
		return 1
	fi
	echo "$out" | grep -q 'slot a is already the good one' || {
		echo "$out"
		return 1
	}
	[ ! -e "$T/fat/trial.txt" ] && [ ! -e "$T/fat/edgeimg/update/trial" ] || return 1
	same "$T/slots.orig" "$T/fat/slots.txt"
}

t_reboot_trial_needs_trial_txt_and_reboots_plainly() {
	card a
	if slot_reboot_trial >"$T/out" 2>"$T/err"; then
		echo "rebooted with no trial"
		return 1
	fi
	grep -q 'no trial.txt: arm a slot first' "$T/err" || {
		cat "$T/err"
		return 1
	}
	[ -z "$(calls)" ] || {
		echo "called without a trial:"
		calls
		return 1
	}
	armed || return 1
	out=$(slot_reboot_trial) || return 1
	[ "$out" = "edgeimg: update: rebooting into slot b on trial (U-Boot counts its tries)" ] || {
		echo "$out"
		return 1
	}
	# The fake records "NAME ARGS": a plain reboot is "reboot " and nothing else.
	[ "$(calls)" = "reboot " ] || {
		calls
		return 1
	}
	fake reboot "echo \"\$#\" >'$T/argc'"
	slot_reboot_trial >/dev/null || return 1
	[ "$(cat "$T/argc")" = 0 ]
}

t_on_trial_is_the_slot_slots_txt_does_not_name() {
	card a
	if slot_on_trial; then
		echo "a normal boot on the good slot a is no trial"
		return 1
	fi
	armed || return 1
	if slot_on_trial; then
		echo "armed, not yet booted: no trial"
		return 1
	fi
	on b
	slot_on_trial || {
		echo "booted on b while slots.txt says good=a: a trial"
		return 1
	}
	# U-Boot's `env export -t` may end the file in a NUL.
	printf 'trial=b\ntries=0\n\0' >"$T/fat/trial.txt"
	[ "$(slot_uboot_value "$T/fat/trial.txt" tries)" = 0 ] || {
		echo "tries: [$(slot_uboot_value "$T/fat/trial.txt" tries)]"
		return 1
	}
	[ "$(slot_uboot_value "$T/fat/trial.txt" trial)" = b ] || {
		echo "trial: [$(slot_uboot_value "$T/fat/trial.txt" trial)]"
		return 1
	}
	# Also a NUL right after the last value. The shell drops NULs in $(...), so the bytes
	# are compared: "0" (30), with no NUL (00) after it.
	printf 'trial=b\ntries=0\0' >"$T/fat/trial.txt"
	out=$(slot_uboot_value "$T/fat/trial.txt" tries | tr -d '\n' | od -An -tx1 | tr -d ' \n')
	[ "$out" = 30 ] || {
		echo "tries, in hex: [$out]"
		return 1
	}
}

t_commit_rewrites_slots_txt_and_config_txt_and_ends_the_trial() {
	card a
	armed || return 1
	on b
	slot_commit || return 1
	printf 'good=b\n' >"$T/want"
	same "$T/want" "$T/fat/slots.txt" || return 1
	# config.txt names slot-b/ (the firmware starts its U-Boot), every other line kept.
	sed 's|^os_prefix=slot-a/$|os_prefix=slot-b/|' "$T/config.orig" >"$T/want"
	grep -qx 'os_prefix=slot-b/' "$T/want" || return 1
	same "$T/want" "$T/fat/config.txt" || return 1
	[ ! -e "$T/fat/trial.txt" ] || return 1
	[ ! -e "$T/fat/edgeimg/update/trial" ] || return 1
	! slot_on_trial || {
		echo "still on trial after the commit"
		return 1
	}
	# Nothing to roll back afterwards.
	[ -z "$(slot_check_rollback)" ] || return 1
	no_leftovers
}

t_a_failed_trial_is_said_once_and_left_unbootable() {
	card a
	armed || return 1
	# boot.scr used the trial's one try (tries=0 written back), the trial died without a
	# word, and the next boot was the good slot.
	printf 'trial=b\ntries=0\n' >"$T/fat/trial.txt"
	on a
	out=$(slot_check_rollback) || return 1
	[ "$out" = "edgeimg: update: v2 failed (it did not come up), back on v1" ] || {
		echo "$out"
		return 1
	}
	[ ! -e "$T/fat/trial.txt" ] || return 1
	[ ! -e "$T/fat/slot-b/vmlinuz" ] || return 1
	[ ! -e "$T/fat/edgeimg/update/trial" ] || return 1
	[ -e "$T/fat/slot-a/vmlinuz" ] || return 1
	same "$T/slots.orig" "$T/fat/slots.txt" || return 1
	out=$(slot_check_rollback) || return 1
	[ -z "$out" ] || {
		echo "said twice: $out"
		return 1
	}
}

t_the_boot_that_armed_the_trial_rolls_nothing_back() {
	card a
	armed || return 1
	out=$(slot_check_rollback) || return 1
	[ -z "$out" ] || {
		echo "$out"
		return 1
	}
	[ -e "$T/fat/trial.txt" ] && [ -e "$T/fat/edgeimg/update/trial" ] &&
		[ -e "$T/fat/slot-b/vmlinuz" ]
}

t_disarm_refuses_the_running_and_the_good_slot() {
	card a
	armed || return 1
	slot_disarm a 2>"$T/err" && return 1
	grep -q 'slot a is running: it cannot be disarmed' "$T/err" || {
		cat "$T/err"
		return 1
	}
	slot_disarm c 2>"$T/err" && return 1
	grep -q 'no slot c' "$T/err" || return 1
	# b is neither running nor good: its kernel and the trial.txt naming it go.
	slot_disarm b || return 1
	[ ! -e "$T/fat/trial.txt" ] && [ ! -e "$T/fat/slot-b/vmlinuz" ] || return 1
	[ -e "$T/fat/slot-b/u-boot.bin" ] || return 1
	# A trial.txt naming the other slot is not b's to remove.
	slot_install_boot b "$T/new" || return 1
	printf 'trial=a\ntries=1\n' >"$T/fat/trial.txt"
	slot_disarm b || return 1
	[ ! -e "$T/fat/slot-b/vmlinuz" ] || return 1
	printf 'trial=a\ntries=1\n' >"$T/want"
	same "$T/want" "$T/fat/trial.txt" || return 1
	# On trial on b (slots.txt still says a): a is not running but it is the good one.
	slot_install_boot b "$T/new" && slot_arm b 2 || return 1
	on b
	slot_disarm a 2>"$T/err" && return 1
	grep -q 'slot a is the good one in slots.txt: commit the running slot first' "$T/err" || {
		cat "$T/err"
		return 1
	}
	[ -e "$T/fat/slot-a/vmlinuz" ] && [ -e "$T/fat/trial.txt" ]
}

t_give_up_removes_trial_txt() {
	card a
	armed || return 1
	on b
	slot_note_result "not ready within 900s" && slot_give_up || return 1
	[ ! -e "$T/fat/trial.txt" ] || return 1
	same "$T/config.orig" "$T/fat/config.txt" || return 1
	same "$T/slots.orig" "$T/fat/slots.txt" || return 1
	on a
	out=$(slot_check_rollback) || return 1
	[ "$out" = "edgeimg: update: v2 failed (not ready within 900s), back on v1" ] || {
		echo "$out"
		return 1
	}
	[ ! -e "$T/fat/slot-b/vmlinuz" ]
}

t_offline_trials_need_no_help_from_the_running_slot() {
	card a
	slot_install_boot b "$T/new" || return 1
	printf 'trial=b\ntries=1\n' >"$T/fat/trial.txt"
	mkdir -p "$T/fat/edgeimg/update"
	echo "b 2 1 offline" >"$T/fat/edgeimg/update/trial"
	# The same record is pending for the firmware's method: it is one slot_offline_pending
	# would act on.
	(
		BOOT_METHOD=rpi
		slot_offline_pending
	) || {
		echo "the offline record is not pending even for rpi"
		return 1
	}
	if slot_offline_pending; then
		echo "an offline trial is pending under U-Boot, which boots it by itself"
		return 1
	fi
}

tcase "the method is uboot; the running slot comes from edgeimg.slot= on the command line" t_method_is_uboot_and_the_slot_comes_from_the_command_line
tcase "install then arm: slot-b/ written, trial.txt names b with one try" t_install_then_arm_writes_slot_b_and_trial_txt
tcase "install refuses a folder without vmlinuz or bootargs.txt" t_install_refuses_a_folder_without_the_kernel_or_bootargs
tcase "arm refuses a slot without a kernel and the good slot" t_arm_refuses_a_slot_without_a_kernel_and_the_good_slot
tcase "the trial reboot needs trial.txt and is a plain reboot" t_reboot_trial_needs_trial_txt_and_reboots_plainly
tcase "on trial: the running slot is not the one slots.txt names; a NUL ends no value" t_on_trial_is_the_slot_slots_txt_does_not_name
tcase "commit rewrites slots.txt and config.txt and ends the trial" t_commit_rewrites_slots_txt_and_config_txt_and_ends_the_trial
tcase "a trial U-Boot counted down is said once, and its slot left unbootable" t_a_failed_trial_is_said_once_and_left_unbootable
tcase "the boot that armed the trial rolls nothing back" t_the_boot_that_armed_the_trial_rolls_nothing_back
tcase "disarm refuses the running and the good slot" t_disarm_refuses_the_running_and_the_good_slot
tcase "giving up a trial removes trial.txt" t_give_up_removes_trial_txt
tcase "an offline trial is never pending under U-Boot" t_offline_trials_need_no_help_from_the_running_slot
t_done

# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# The Raspberry Pi side of slot.sh (BOOT_METHOD=rpi), sourced after lib.sh: the root slots
# as the Pi firmware boots them. The boot FAT (mounted on /boot) holds one folder per slot
# (slot-a/, slot-b/: kernel, initramfs, DTBs, cmdline.txt naming that slot's root) and
# config.txt, whose `os_prefix=slot-X/` names the slot a normal boot takes. A trial is
# tryboot.txt (config.txt with the other prefix), which the firmware reads instead of
# config.txt for one boot only, after `reboot '0 tryboot'`; any later boot (a crash, the
# watchdog, a power cut, a plain reboot) reads config.txt again: the old slot.
#
# Functions (the interface slot.sh shares with the UEFI side): slot_current, slot_disarm S,
# slot_install_boot S DIR, slot_arm S VERSION, slot_reboot_trial, slot_on_trial,
# slot_commit, slot_check_rollback. Each works in a caller running under `set -e`.
#
# The trial's bookkeeping lives on the FAT in edgeimg/update/: `trial` (slot, version,
# version it replaces), `result` (why a trial gave up, written by whoever gave up).
#
# Host tests move the paths: EDGEIMG_FAT (the FAT's mount point), EDGEIMG_CMDLINE,
# EDGEIMG_BUILD_ENV, EDGEIMG_REBOOT_ARG (the program that issues reboot(2) with a command:
# klibc-utils' reboot; busybox's reboot cannot pass one).

SLOT_FAT=${EDGEIMG_FAT:-/boot}
SLOT_CMDLINE=${EDGEIMG_CMDLINE:-/proc/cmdline}
SLOT_BUILD_ENV=${EDGEIMG_BUILD_ENV:-/etc/edgeimg/build.env}
SLOT_REBOOT=${EDGEIMG_REBOOT_ARG:-/usr/lib/klibc/bin/reboot}
SLOT_STATE="$SLOT_FAT/edgeimg/update"

# slot_fail WORDS: the failure line on stderr; returns 1.
slot_fail() {
	echo "edgeimg: update: $*" >&2
	return 1
}

# slot_check S: fails unless S is a slot name.
slot_check() {
	case "$1" in
	a | b) ;;
	*) slot_fail "no slot ${1:-(empty)}: the slots are a and b" ;;
	esac
}

# slot_current: the slot this boot runs (edgeimg.slot= on the kernel command line).
slot_current() {
	local s
	s=$(tr -s ' \t' '\n' <"$SLOT_CMDLINE" | sed -n 's/^edgeimg\.slot=\([ab]\)$/\1/p' | tail -n 1)
	[ -z "$s" ] || {
		echo "$s"
		return 0
	}
	slot_fail "no edgeimg.slot= on the kernel command line ($SLOT_CMDLINE): this image has one slot only"
}

# slot_prefix_in FILE: the slot named by FILE's os_prefix= line (empty when none).
slot_prefix_in() {
	sed -n 's|^[[:space:]]*os_prefix=slot-\([ab]\)/[[:space:]]*$|\1|p' "$1" 2>/dev/null | tail -n 1
}

# slot_configured: the slot config.txt boots.
slot_configured() {
	local s
	s=$(slot_prefix_in "$SLOT_FAT/config.txt")
	[ -n "$s" ] || slot_fail "$SLOT_FAT/config.txt has no os_prefix=slot-a/ or os_prefix=slot-b/ line"
	echo "$s"
}

# slot_kernel: the kernel's file name in a slot folder (config.txt's kernel=).
slot_kernel() {
	local k
	k=$(sed -n 's|^[[:space:]]*kernel=\([^[:space:]]*\).*|\1|p' "$SLOT_FAT/config.txt" | tail -n 1)
	echo "${k:-kernel8.img}"
}

# slot_config_for S FROM TO: writes FROM (a config.txt) to TO with os_prefix=slot-S/, synced.
slot_config_for() {
	sed "s|^[[:space:]]*os_prefix=.*|os_prefix=slot-$1/|" "$2" >"$3" || return 1
	grep -qx "os_prefix=slot-$1/" "$3" || echo "os_prefix=slot-$1/" >>"$3"
	sync
}

# slot_replace FILE TMP: puts TMP in FILE's place (a rename on the same FAT), synced.
slot_replace() {
	mv -f "$2" "$1" && sync
}

# slot_disarm S: makes S unbootable: no tryboot.txt, no kernel in its folder (the firmware
# then ignores the prefix). Refuses the slot that runs and the one config.txt boots.
slot_disarm() {
	local s="$1" cur conf
	slot_check "$s" || return 1
	cur=$(slot_current) || return 1
	conf=$(slot_configured) || return 1
	[ "$s" != "$cur" ] || slot_fail "slot $s is running: it cannot be disarmed" || return 1
	[ "$s" != "$conf" ] || slot_fail "slot $s is the one config.txt boots: commit the running slot first" || return 1
	rm -f "$SLOT_FAT/tryboot.txt" "$SLOT_FAT/slot-$s/$(slot_kernel)" && sync
}

# slot_install_boot S DIR: the verified boot files of DIR become slot-S/ (written beside it,
# then renamed in one step). Not bootable yet: nothing names the folder until slot_arm.
slot_install_boot() {
	local s="$1" dir="$2" new
	slot_check "$s" || return 1
	[ -d "$dir" ] || slot_fail "no boot files in $dir" || return 1
	[ -f "$dir/$(slot_kernel)" ] || slot_fail "$dir has no $(slot_kernel) (config.txt's kernel=)" || return 1
	new="$SLOT_FAT/slot-$s.new"
	if ! { rm -rf "$new" && mkdir -p "$new" && cp -R "$dir/." "$new/" && sync; }; then
		rm -rf "$new"
		slot_fail "writing $new failed (is the boot partition full?)"
		return 1
	fi
	rm -rf "$SLOT_FAT/slot-$s" && mv "$new" "$SLOT_FAT/slot-$s" && sync
}

# slot_arm S VERSION: the next `reboot '0 tryboot'` boots S once: tryboot.txt is config.txt
# naming slot-S/, and edgeimg/update/trial says what is on trial.
slot_arm() {
	local s="$1" version="$2" from
	slot_check "$s" || return 1
	[ -f "$SLOT_FAT/slot-$s/$(slot_kernel)" ] || slot_fail "slot-$s/ has no kernel: install its boot files first" || return 1
	from=$(sed -n 's/^IMAGE_VERSION=//p' "$SLOT_BUILD_ENV" 2>/dev/null | tr -d "'\"")
	mkdir -p "$SLOT_STATE" || return 1
	rm -f "$SLOT_STATE/result"
	printf 'slot=%s\nversion=%s\nfrom=%s\n' "$s" "$version" "${from:-unknown}" >"$SLOT_STATE/trial.new" &&
		slot_replace "$SLOT_STATE/trial" "$SLOT_STATE/trial.new" || return 1
	slot_config_for "$s" "$SLOT_FAT/config.txt" "$SLOT_FAT/tryboot.txt.new" &&
		slot_replace "$SLOT_FAT/tryboot.txt" "$SLOT_FAT/tryboot.txt.new"
}

# slot_reboot_trial: reboots with the command `0 tryboot` (partition 0: the one the firmware
# booted; tryboot: the one-shot flag), after writing everything out.
slot_reboot_trial() {
	[ -f "$SLOT_FAT/tryboot.txt" ] || slot_fail "no tryboot.txt: arm a slot first" || return 1
	[ -x "$SLOT_REBOOT" ] || slot_fail "$SLOT_REBOOT is missing (klibc-utils): it issues the reboot with the tryboot flag" || return 1
	say "update: rebooting into slot $(slot_prefix_in "$SLOT_FAT/tryboot.txt") on trial (reboot '0 tryboot')"
	sync
	"$SLOT_REBOOT" "0 tryboot"
}

# slot_on_trial: succeeds when this boot is a trial (the slot running is not the one
# config.txt boots).
slot_on_trial() {
	local cur conf
	cur=$(slot_current) || return 1
	conf=$(slot_configured) || return 1
	[ "$cur" != "$conf" ]
}

# slot_trial_field NAME: a field of edgeimg/update/trial.
slot_trial_field() {
	sed -n "s/^$1=//p" "$SLOT_STATE/trial" 2>/dev/null | head -n 1
}

# slot_commit: the running slot becomes the one config.txt boots (config.txt rewritten
# beside itself and renamed), and the trial is over.
slot_commit() {
	local cur version
	cur=$(slot_current) || return 1
	slot_config_for "$cur" "$SLOT_FAT/config.txt" "$SLOT_FAT/config.txt.new" &&
		slot_replace "$SLOT_FAT/config.txt" "$SLOT_FAT/config.txt.new" || return 1
	version=$(slot_trial_field version)
	rm -f "$SLOT_FAT/tryboot.txt" "$SLOT_STATE/trial" "$SLOT_STATE/result" && sync
	say "update: ${version:+v$version }committed (slot $cur boots from now on)"
}

# slot_check_rollback: on a normal boot, a trial left behind failed (the firmware went back
# to config.txt's slot): says so once, and leaves the tried slot unbootable.
slot_check_rollback() {
	local s version from reason
	[ -f "$SLOT_STATE/trial" ] || return 0
	slot_on_trial && return 0
	s=$(slot_trial_field slot)
	version=$(slot_trial_field version)
	from=$(slot_trial_field from)
	# (|| :, a missing file must not end a caller running under set -e)
	reason=$(head -n 1 "$SLOT_STATE/result" 2>/dev/null || :)
	[ -n "$reason" ] || reason="slot $s did not come up; the firmware booted slot $(slot_configured)"
	# Cleaned up (and synced) before the line: a power cut after it repeats nothing.
	rm -f "$SLOT_FAT/tryboot.txt" "$SLOT_STATE/trial" "$SLOT_STATE/result"
	case "$s" in
	a | b) [ "$s" = "$(slot_current)" ] || rm -f "$SLOT_FAT/slot-$s/$(slot_kernel)" ;;
	esac
	sync
	say "update: v$version failed ($reason), back on v$from"
}

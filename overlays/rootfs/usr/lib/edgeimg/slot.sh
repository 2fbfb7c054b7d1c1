# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash has it.)
# edgeimg system, slot.sh: the two root slots and how the board's own loader switches them
# (sourced by edgeimg-update). One implementation per boot method, chosen by BOOT_METHOD of
# build.env; the functions every method has (the interface edgeimg-update uses):
#
#   slot_current           a|b, from edgeimg.slot= on the kernel command line
#   slot_disarm S          make slot S unbootable
#   slot_install_boot S D  put the verified boot files of S (folder D, laid out as on the boot
#                          partition) in place, not yet bootable
#   slot_arm S VERSION     make S the next boot's trial
#   slot_reboot_trial      reboot into the trial
#   slot_on_trial          exit 0 when this boot is a trial
#   slot_commit            mark the running slot good
#   slot_check_rollback    on a normal boot: report a failed trial of the other slot once,
#                          clean it up, leave it unbootable
#   slot_give_up           the running trial failed its health check: the next boot is the
#                          other slot (called before `reboot -f`)
#
# Raspberry Pi: see its sections below: the firmware alone (os_prefix folders, tryboot.txt,
# `reboot '0 tryboot'`), or U-Boot (the same folders; slots.txt and trial.txt for boot.scr).
#
# UEFI (systemd-boot): one UKI per slot in EFI/Linux/, edgeimg-S.efi when good and
# edgeimg-S+TRIES.efi on trial; systemd-boot renames it on each try (+2-1, +1-2, +0-3) and
# sorts a +0 entry below the good one, so a trial that never comes up falls back by itself.
# With no `default` in loader.conf the first sorted entry boots: the newest IMAGE_VERSION
# that is not bad.
#
# What a trial is, on every board, is also written to the boot partition
# (edgeimg/update/trial: "SLOT VERSION FROM_VERSION BOOT_ID"), and why it gave up
# (edgeimg/update/result), so that the next boot can say what happened. BOOT_ID is the boot
# that armed it; `offline` when `edgeimg update` wrote the card in a reader (on a Pi the
# running slot must then ask the firmware for the trial: slot_offline_pending).

SLOT_ESP=${EDGEIMG_ESP:-/boot}
SLOT_CMDLINE=${EDGEIMG_CMDLINE:-/proc/cmdline}
SLOT_STATE="$SLOT_ESP/${EDGEIMG_BOOT_DIR:-edgeimg}/${EDGEIMG_SLOT_STATE_DIR:-update}"
# Changes on every boot: a trial armed during this boot has not been tried yet.
SLOT_BOOT_ID=${EDGEIMG_BOOT_ID:-/proc/sys/kernel/random/boot_id}
# Tries a UEFI trial gets before systemd-boot gives up on it.
SLOT_TRIES=${SLOT_TRIES:-3}

slot_current() {
	local w
	# shellcheck disable=SC2013
	for w in $(cat "$SLOT_CMDLINE"); do
		case "$w" in
		edgeimg.slot=a | edgeimg.slot=b)
			echo "${w#edgeimg.slot=}"
			return 0
			;;
		esac
	done
	# An image of the single-root layout boots what is slot A now.
	echo a
}

slot_other() {
	case "$1" in
	a) echo b ;;
	*) echo a ;;
	esac
}

# slot_trial_info: "SLOT VERSION FROM BOOT_ID" of the armed trial, empty when none.
slot_trial_info() {
	cat "$SLOT_STATE/trial" 2>/dev/null
}

# slot_offline_pending: exit 0 when `edgeimg update` armed the other slot of this card
# offline and it has not been tried: a Raspberry Pi's tryboot flag is the firmware's, in its
# RAM, so only the running system can set it (UEFI trials boot by themselves and never wait).
slot_offline_pending() {
	local info
	info=$(slot_trial_info)
	[ -n "$info" ] || return 1
	# shellcheck disable=SC2086
	set -- $info
	[ "$(slot_method)" = rpi ] && [ "${4:-}" = offline ] && [ "$1" != "$(slot_current)" ]
}

# slot_note_trial S VERSION FROM: remembers the trial on the boot partition, with the id of
# the boot that armed it.
slot_note_trial() {
	mkdir -p "$SLOT_STATE" || return 1
	rm -f "$SLOT_STATE/result"
	echo "$1 $2 ${3:-0} $(cat "$SLOT_BOOT_ID" 2>/dev/null || echo none)" >"$SLOT_STATE/trial.new" &&
		mv "$SLOT_STATE/trial.new" "$SLOT_STATE/trial"
}

# slot_note_result REASON: why the running trial gave up.
slot_note_result() {
	mkdir -p "$SLOT_STATE" && echo "$1" >"$SLOT_STATE/result"
	sync
}

slot_method() {
	case "${BOOT_METHOD:-uefi}" in
	rpi) echo rpi ;;
	uboot) echo uboot ;;
	*) echo uefi ;;
	esac
}

slot_disarm() { "slot_$(slot_method)_disarm" "$@"; }
slot_install_boot() { "slot_$(slot_method)_install_boot" "$@"; }
slot_arm() { "slot_$(slot_method)_arm" "$@"; }
slot_reboot_trial() { "slot_$(slot_method)_reboot_trial"; }
slot_on_trial() { "slot_$(slot_method)_on_trial"; }
slot_commit() { "slot_$(slot_method)_commit"; }
slot_give_up() { "slot_$(slot_method)_give_up"; }

# slot_check_rollback: the common part; the method says whether the other slot is still
# bootable (a trial it has not given up on yet).
slot_check_rollback() {
	local info s v from reason cur
	info=$(slot_trial_info)
	[ -n "$info" ] || return 0
	cur=$(slot_current)
	# shellcheck disable=SC2086
	set -- $info
	s=$1 v=$2 from=${3:-}
	# Armed during this boot (edgeimg-update from boot_cmd or a poller): not tried yet.
	[ -n "${4:-}" ] && [ "$4" = "$(cat "$SLOT_BOOT_ID" 2>/dev/null)" ] && return 0
	if [ "$s" = "$cur" ]; then
		# The trial is running (slot_on_trial) or was committed: nothing to report.
		slot_on_trial && return 0
		rm -f "$SLOT_STATE/trial" "$SLOT_STATE/result"
		return 0
	fi
	# (|| :, a missing file must not end a caller under set -e)
	reason=$(cat "$SLOT_STATE/result" 2>/dev/null || :)
	[ -n "$reason" ] || reason="it did not come up"
	# Cleaned up and synced before the line: a power cut right after it leaves nothing to
	# report twice, and no bootable trial.
	slot_disarm "$s"
	rm -f "$SLOT_STATE/trial" "$SLOT_STATE/result"
	sync
	echo "${EDGEIMG_SAY:-edgeimg:} update: v$v failed ($reason), back on v${from:-${IMAGE_VERSION:-?}}"
}

# --- UEFI: systemd-boot boot counting on per-slot UKIs -----------------------------------

SLOT_UKI_DIR="$SLOT_ESP/EFI/Linux"

# slot_uefi_files S: the UKIs of slot S, good or counting, one a line.
slot_uefi_files() {
	local f
	for f in "$SLOT_UKI_DIR/edgeimg-$1.efi" "$SLOT_UKI_DIR/edgeimg-$1+"*.efi; do
		[ -e "$f" ] && echo "$f"
	done
}

slot_uefi_disarm() {
	local f
	for f in $(slot_uefi_files "$1") "$SLOT_UKI_DIR/edgeimg-$1.efi.new"; do
		rm -f "$f" || return 1
	done
	sync
}

# The new UKI waits as edgeimg-S.efi.new: systemd-boot only reads *.efi.
slot_uefi_install_boot() {
	local uki="$2/EFI/Linux/edgeimg-$1.efi"
	[ -s "$uki" ] || {
		echo "slot: no EFI/Linux/edgeimg-$1.efi among the boot files" >&2
		return 1
	}
	mkdir -p "$SLOT_UKI_DIR" || return 1
	cp "$uki" "$SLOT_UKI_DIR/edgeimg-$1.efi.new" && sync
}

slot_uefi_arm() {
	[ -s "$SLOT_UKI_DIR/edgeimg-$1.efi.new" ] || return 1
	slot_note_trial "$1" "$2" "${IMAGE_VERSION:-}" || return 1
	mv "$SLOT_UKI_DIR/edgeimg-$1.efi.new" "$SLOT_UKI_DIR/edgeimg-$1+$SLOT_TRIES.efi" && sync
}

slot_uefi_reboot_trial() {
	sync
	reboot
}

slot_uefi_on_trial() {
	local f
	for f in "$SLOT_UKI_DIR/edgeimg-$(slot_current)+"*.efi; do
		[ -e "$f" ] && return 0
	done
	return 1
}

# slot_uefi_rename_counting NAME: the running slot's counting UKI becomes EFI/Linux/NAME.
slot_uefi_rename_counting() {
	local f
	for f in "$SLOT_UKI_DIR/edgeimg-$(slot_current)+"*.efi; do
		[ -e "$f" ] || continue
		mv "$f" "$SLOT_UKI_DIR/$1" || return 1
	done
}

slot_uefi_commit() {
	slot_uefi_rename_counting "edgeimg-$(slot_current).efi" || return 1
	rm -f "$SLOT_STATE/trial" "$SLOT_STATE/result"
	sync
}

# No tries left: systemd-boot sorts the entry below the good one from now on.
slot_uefi_give_up() {
	slot_uefi_rename_counting "edgeimg-$(slot_current)+0-$SLOT_TRIES.efi" || return 1
	sync
}

# --- Raspberry Pi: os_prefix folders and the firmware's one-shot tryboot -----------------
#
# The boot FAT holds one folder per slot (slot-a/, slot-b/: kernel, initramfs, DTBs,
# cmdline.txt naming that slot's root) and config.txt, whose `os_prefix=slot-X/` names the
# slot a normal boot takes. A trial is tryboot.txt (config.txt with the other prefix), which
# the firmware reads instead of config.txt for one boot only, after `reboot '0 tryboot'`; any
# later boot (a crash, the watchdog, a power cut, `reboot -f`) reads config.txt: the old slot.
# The firmware ignores a prefix whose folder lacks the kernel or the DTB, so a slot without
# its kernel is not bootable. klibc-utils' reboot issues reboot(2) with the command
# (busybox's reboot cannot). Every function works in a caller under `set -e`.

SLOT_RPI_REBOOT=${EDGEIMG_REBOOT_ARG:-/usr/lib/klibc/bin/reboot}
SLOT_KALLSYMS=${EDGEIMG_KALLSYMS:-/proc/kallsyms}

# slot_rpi_kernel_passes_tryboot: fails when the running kernel is known not to hand the
# firmware the tryboot flag. Raspberry Pi's kernels do it in rpi_firmware_notify_reboot
# (drivers/firmware/raspberrypi.c: SET_REBOOT_FLAGS when the reboot command holds
# "tryboot"); mainline, and so Debian's kernel, has no such function. Without
# /proc/kallsyms nothing is known: no complaint.
slot_rpi_kernel_passes_tryboot() {
	[ -r "$SLOT_KALLSYMS" ] || return 0
	grep -Eq '[[:space:]]rpi_firmware_notify_reboot([[:space:]]|$)' "$SLOT_KALLSYMS"
}

# slot_rpi_fail WORDS: the failure line on stderr; returns 1.
slot_rpi_fail() {
	echo "${EDGEIMG_SAY:-edgeimg:} update: $*" >&2
	return 1
}

# slot_rpi_check S: fails unless S is a slot name.
slot_rpi_check() {
	case "$1" in
	a | b) ;;
	*) slot_rpi_fail "no slot ${1:-(empty)}: the slots are a and b" ;;
	esac
}

# slot_rpi_prefix_in FILE: the slot FILE's os_prefix= line names (empty when none).
slot_rpi_prefix_in() {
	sed -n 's|^[[:space:]]*os_prefix=slot-\([ab]\)/[[:space:]]*$|\1|p' "$1" 2>/dev/null | tail -n 1
}

# slot_rpi_configured: the slot config.txt boots.
slot_rpi_configured() {
	local s
	s=$(slot_rpi_prefix_in "$SLOT_ESP/config.txt")
	[ -n "$s" ] || slot_rpi_fail "$SLOT_ESP/config.txt has no os_prefix=slot-a/ or os_prefix=slot-b/ line" || return 1
	echo "$s"
}

# slot_rpi_kernel: the kernel's file name in a slot folder (config.txt's kernel=).
slot_rpi_kernel() {
	local k
	k=$(sed -n 's|^[[:space:]]*kernel=\([^[:space:]]*\).*|\1|p' "$SLOT_ESP/config.txt" 2>/dev/null | tail -n 1)
	echo "${k:-kernel8.img}"
}

# slot_rpi_config_for S FROM TO: FROM (a config.txt) written to TO with os_prefix=slot-S/.
slot_rpi_config_for() {
	sed "s|^[[:space:]]*os_prefix=.*|os_prefix=slot-$1/|" "$2" >"$3" || return 1
	grep -qx "os_prefix=slot-$1/" "$3" || echo "os_prefix=slot-$1/" >>"$3"
	sync
}

# slot_rpi_disarm S: no tryboot.txt, no kernel in slot-S/. Refuses the slot that runs and
# the one config.txt boots.
slot_rpi_disarm() {
	local s="$1" cur conf
	slot_rpi_check "$s" || return 1
	cur=$(slot_current)
	conf=$(slot_rpi_configured) || return 1
	[ "$s" != "$cur" ] || slot_rpi_fail "slot $s is running: it cannot be disarmed" || return 1
	[ "$s" != "$conf" ] || slot_rpi_fail "slot $s is the one config.txt boots: commit the running slot first" || return 1
	rm -f "$SLOT_ESP/tryboot.txt" "$SLOT_ESP/slot-$s/$(slot_rpi_kernel)" && sync
}

# slot_rpi_install_boot S DIR: DIR/slot-S/ (the verified boot files, laid out as on the FAT)
# becomes slot-S/: copied beside it, then renamed in one step. Nothing names it yet.
slot_rpi_install_boot() {
	local s="$1" src="$2/slot-$1" new
	slot_rpi_check "$s" || return 1
	[ -f "$src/$(slot_rpi_kernel)" ] || slot_rpi_fail "$src has no $(slot_rpi_kernel) (config.txt's kernel=)" || return 1
	new="$SLOT_ESP/slot-$s.new"
	if ! { rm -rf "$new" && mkdir -p "$new" && cp -R "$src/." "$new/" && sync; }; then
		rm -rf "$new"
		slot_rpi_fail "writing $new failed (is the boot partition full?)"
		return 1
	fi
	rm -rf "$SLOT_ESP/slot-$s" && mv "$new" "$SLOT_ESP/slot-$s" && sync
}

# slot_rpi_arm S VERSION: the next `reboot '0 tryboot'` boots S once: tryboot.txt is
# config.txt naming slot-S/.
slot_rpi_arm() {
	local s="$1"
	slot_rpi_check "$s" || return 1
	[ -f "$SLOT_ESP/slot-$s/$(slot_rpi_kernel)" ] || slot_rpi_fail "slot-$s/ has no kernel: install its boot files first" || return 1
	slot_note_trial "$s" "$2" "${IMAGE_VERSION:-}" || return 1
	slot_rpi_config_for "$s" "$SLOT_ESP/config.txt" "$SLOT_ESP/tryboot.txt.new" &&
		mv -f "$SLOT_ESP/tryboot.txt.new" "$SLOT_ESP/tryboot.txt" && sync
}

# slot_rpi_reboot_trial: reboot(2) with the command `0 tryboot` (partition 0: the one the
# firmware booted; tryboot: the one-shot flag).
slot_rpi_reboot_trial() {
	[ -f "$SLOT_ESP/tryboot.txt" ] || slot_rpi_fail "no tryboot.txt: arm a slot first" || return 1
	[ -x "$SLOT_RPI_REBOOT" ] || slot_rpi_fail "$SLOT_RPI_REBOOT is missing (klibc-utils): it issues the reboot with the tryboot flag" || return 1
	slot_rpi_kernel_passes_tryboot ||
		echo "${EDGEIMG_SAY:-edgeimg:} update: warning: this kernel cannot pass the tryboot flag to the Pi firmware (no rpi_firmware_notify_reboot; Debian's kernel has none): a real Pi will boot config.txt's slot again and report the trial as failed"
	echo "${EDGEIMG_SAY:-edgeimg:} update: rebooting into slot $(slot_rpi_prefix_in "$SLOT_ESP/tryboot.txt") on trial (reboot '0 tryboot')"
	sync
	"$SLOT_RPI_REBOOT" "0 tryboot"
}

# slot_rpi_on_trial: the running slot is not the one config.txt boots.
slot_rpi_on_trial() {
	local conf
	conf=$(slot_rpi_configured) || return 1
	[ "$(slot_current)" != "$conf" ]
}

# slot_rpi_commit: config.txt names the running slot (written beside itself, renamed over
# it; until the rename the old one boots), tryboot.txt is gone.
slot_rpi_commit() {
	local cur
	cur=$(slot_current)
	slot_rpi_config_for "$cur" "$SLOT_ESP/config.txt" "$SLOT_ESP/config.txt.new" &&
		mv -f "$SLOT_ESP/config.txt.new" "$SLOT_ESP/config.txt" || return 1
	rm -f "$SLOT_ESP/tryboot.txt" "$SLOT_STATE/trial" "$SLOT_STATE/result"
	sync
}

# slot_rpi_give_up: tryboot is one-shot, so the next boot reads config.txt anyway; the
# trial's tryboot.txt goes too, so that nothing can take it again.
slot_rpi_give_up() {
	rm -f "$SLOT_ESP/tryboot.txt"
	sync
}

# --- Raspberry Pi with U-Boot: boot.scr counts a trial's boots on the FAT -----------------
#
# The same slot folders as above, and config.txt's os_prefix names the good slot (the
# firmware loads its u-boot.bin and DTB), but U-Boot decides what runs: boot.scr boots the
# slot slots.txt names (good=a), or, while trial.txt (trial=b, tries=N) has tries left,
# the trial, after writing tries=N-1 back with fatwrite, before the kernel starts. A crash,
# a hang the watchdog resets or a power cut in the trial uses its try, and the next boot is
# the good slot. No reboot flag, so no kernel patch: a plain reboot starts the trial, and a
# card armed offline boots its trial by itself. A slot whose folder has no kernel (the
# vmlinuz, SLOT_UBOOT_KERNEL) is skipped by boot.scr.

SLOT_UBOOT_KERNEL=${SLOT_UBOOT_KERNEL:-vmlinuz}
# Tries a U-Boot trial gets: one, like the firmware's one-shot tryboot.
SLOT_UBOOT_TRIES=${SLOT_UBOOT_TRIES:-1}

# slot_uboot_value FILE NAME: NAME's value in a U-Boot text environment file (U-Boot's
# `env export -t` may end it with a NUL).
slot_uboot_value() {
	tr -d '\000' <"$1" 2>/dev/null | sed -n "s/^$2=//p" | tail -n 1
}

# slot_uboot_good: the slot slots.txt names (a when it names none, as boot.scr does).
slot_uboot_good() {
	local s
	s=$(slot_uboot_value "$SLOT_ESP/slots.txt" good)
	case "$s" in
	a | b) echo "$s" ;;
	*) echo a ;;
	esac
}

# slot_uboot_write NAME TEXT: the FAT file NAME holds TEXT (written beside it, renamed over
# it: until the rename the old file counts).
slot_uboot_write() {
	printf '%s\n' "$2" >"$SLOT_ESP/$1.new" && sync &&
		mv -f "$SLOT_ESP/$1.new" "$SLOT_ESP/$1" && sync
}

# slot_uboot_disarm S: no trial of S, no kernel in slot-S/. Refuses the slot that runs and
# the good one.
slot_uboot_disarm() {
	local s="$1"
	slot_rpi_check "$s" || return 1
	[ "$s" != "$(slot_current)" ] || slot_rpi_fail "slot $s is running: it cannot be disarmed" || return 1
	[ "$s" != "$(slot_uboot_good)" ] || slot_rpi_fail "slot $s is the good one in slots.txt: commit the running slot first" || return 1
	if [ "$(slot_uboot_value "$SLOT_ESP/trial.txt" trial)" = "$s" ]; then
		rm -f "$SLOT_ESP/trial.txt" || return 1
	fi
	rm -f "$SLOT_ESP/slot-$s/$SLOT_UBOOT_KERNEL" && sync
}

# slot_uboot_install_boot S DIR: as the firmware's, checking for the kernel boot.scr loads.
slot_uboot_install_boot() {
	local s="$1"
	slot_rpi_check "$s" || return 1
	[ -f "$2/slot-$s/$SLOT_UBOOT_KERNEL" ] || slot_rpi_fail "$2/slot-$s has no $SLOT_UBOOT_KERNEL (the kernel boot.scr loads)" || return 1
	[ -f "$2/slot-$s/bootargs.txt" ] || slot_rpi_fail "$2/slot-$s has no bootargs.txt (the command line boot.scr reads)" || return 1
	slot_rpi_install_boot "$@"
}

# slot_uboot_arm S VERSION: the next boot is S's trial, with SLOT_UBOOT_TRIES tries.
slot_uboot_arm() {
	local s="$1"
	slot_rpi_check "$s" || return 1
	[ -f "$SLOT_ESP/slot-$s/$SLOT_UBOOT_KERNEL" ] || slot_rpi_fail "slot-$s/ has no kernel: install its boot files first" || return 1
	[ "$s" != "$(slot_uboot_good)" ] || slot_rpi_fail "slot $s is already the good one" || return 1
	slot_note_trial "$s" "$2" "${IMAGE_VERSION:-}" || return 1
	slot_uboot_write trial.txt "trial=$s
tries=$SLOT_UBOOT_TRIES"
}

slot_uboot_reboot_trial() {
	[ -n "$(slot_uboot_value "$SLOT_ESP/trial.txt" trial)" ] || slot_rpi_fail "no trial.txt: arm a slot first" || return 1
	echo "${EDGEIMG_SAY:-edgeimg:} update: rebooting into slot $(slot_uboot_value "$SLOT_ESP/trial.txt" trial) on trial (U-Boot counts its tries)"
	sync
	reboot
}

# slot_uboot_on_trial: the running slot is not the good one.
slot_uboot_on_trial() {
	[ "$(slot_current)" != "$(slot_uboot_good)" ]
}

# slot_uboot_commit: slots.txt names the running slot, then config.txt (the firmware loads
# its U-Boot and DTB from now on); the trial is gone.
slot_uboot_commit() {
	local cur
	cur=$(slot_current)
	slot_uboot_write slots.txt "good=$cur" || return 1
	slot_rpi_config_for "$cur" "$SLOT_ESP/config.txt" "$SLOT_ESP/config.txt.new" &&
		mv -f "$SLOT_ESP/config.txt.new" "$SLOT_ESP/config.txt" || return 1
	rm -f "$SLOT_ESP/trial.txt" "$SLOT_STATE/trial" "$SLOT_STATE/result"
	sync
}

# slot_uboot_give_up: no trial.txt, so the next boot is the good slot.
slot_uboot_give_up() {
	rm -f "$SLOT_ESP/trial.txt"
	sync
}

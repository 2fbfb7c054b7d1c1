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
# UEFI (systemd-boot): one UKI per slot in EFI/Linux/, edgeimg-S.efi when good and
# edgeimg-S+TRIES.efi on trial; systemd-boot renames it on each try (+2-1, +1-2, +0-3) and
# sorts a +0 entry below the good one, so a trial that never comes up falls back by itself.
# With no `default` in loader.conf the first sorted entry boots: the newest IMAGE_VERSION
# that is not bad.
#
# What a trial is, on every board, is also written to the boot partition
# (edgeimg/update/trial: "SLOT VERSION FROM_VERSION"), and why it gave up
# (edgeimg/update/result), so that the next boot can say what happened.

SLOT_ESP=${EDGEIMG_ESP:-/boot}
SLOT_CMDLINE=${EDGEIMG_CMDLINE:-/proc/cmdline}
SLOT_STATE="$SLOT_ESP/${EDGEIMG_BOOT_DIR:-edgeimg}/update"
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

# slot_trial_info: "SLOT VERSION FROM" of the armed trial, empty when none.
slot_trial_info() {
	cat "$SLOT_STATE/trial" 2>/dev/null
}

# slot_note_trial S VERSION FROM: remembers the trial on the boot partition.
slot_note_trial() {
	mkdir -p "$SLOT_STATE" || return 1
	rm -f "$SLOT_STATE/result"
	echo "$1 $2 $3" >"$SLOT_STATE/trial.new" && mv "$SLOT_STATE/trial.new" "$SLOT_STATE/trial"
}

# slot_note_result REASON: why the running trial gave up.
slot_note_result() {
	mkdir -p "$SLOT_STATE" && echo "$1" >"$SLOT_STATE/result"
	sync
}

slot_method() {
	case "${BOOT_METHOD:-uefi}" in
	rpi) echo rpi ;;
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
	if [ "$s" = "$cur" ]; then
		# The trial is running (slot_on_trial) or was committed: nothing to report.
		slot_on_trial && return 0
		rm -f "$SLOT_STATE/trial" "$SLOT_STATE/result"
		return 0
	fi
	reason=$(cat "$SLOT_STATE/result" 2>/dev/null)
	[ -n "$reason" ] || reason="it did not come up"
	echo "${EDGEIMG_SAY:-edgeimg:} update: v$v failed ($reason), back on v${from:-${IMAGE_VERSION:-?}}"
	slot_disarm "$s"
	rm -f "$SLOT_STATE/trial" "$SLOT_STATE/result"
	sync
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

slot_uefi_commit() {
	local s f
	s=$(slot_current)
	for f in "$SLOT_UKI_DIR/edgeimg-$s+"*.efi; do
		[ -e "$f" ] || continue
		mv "$f" "$SLOT_UKI_DIR/edgeimg-$s.efi" || return 1
	done
	rm -f "$SLOT_STATE/trial" "$SLOT_STATE/result"
	sync
}

# No tries left: systemd-boot sorts the entry below the good one from now on.
slot_uefi_give_up() {
	local s f
	s=$(slot_current)
	for f in "$SLOT_UKI_DIR/edgeimg-$s+"*.efi; do
		[ -e "$f" ] || continue
		mv "$f" "$SLOT_UKI_DIR/edgeimg-$s+0-$SLOT_TRIES.efi" || return 1
	done
	sync
}

# --- Raspberry Pi: the firmware's tryboot (the pi15 branch implements these) -------------

slot_rpi_disarm() {
	echo "slot: A/B updates on Raspberry Pi are not implemented in this build" >&2
	return 1
}
slot_rpi_install_boot() { slot_rpi_disarm; }
slot_rpi_arm() { slot_rpi_disarm; }
slot_rpi_reboot_trial() { slot_rpi_disarm; }
slot_rpi_on_trial() { return 1; }
slot_rpi_commit() { return 0; }
slot_rpi_give_up() { return 0; }

# shellcheck shell=sh disable=SC3043,SC2153
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it. SC2153: EDGEIMG_SAY comes
# from contract.sh.)
# Host tests of secureboot.sh: the Secure Boot line from a fake efivarfs tree.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"
# shellcheck source=/dev/null
. "$EDGEIMG_LIB/secureboot.sh"

# efivar NAME 0|1: an efivarfs file: 4 attribute bytes (NV|BS|RT), then the value.
efivar() {
	mkdir -p "$T/sys/firmware/efi/efivars"
	if [ "$2" = 1 ]; then
		printf '\007\000\000\000\001'
	else
		printf '\007\000\000\000\000'
	fi >"$T/sys/firmware/efi/efivars/$1-$EFI_GLOBAL_GUID"
}

enabled_and_user_mode() {
	efivar SecureBoot 1
	efivar SetupMode 0
	mkdir -p "$T/sys/kernel/security"
	echo "none [integrity] confidentiality" >"$T/sys/kernel/security/lockdown"
	assert_eq "$EDGEIMG_SAY secureboot: enabled, setup mode off, lockdown integrity" "$(secureboot_line)"
	assert_eq "" "$(calls)" "nothing mounted when the files are there"
}

disabled_in_setup_mode() {
	efivar SecureBoot 0
	efivar SetupMode 1
	assert_eq "$EDGEIMG_SAY secureboot: disabled, setup mode on" "$(secureboot_line)"
}

efivarfs_is_mounted_when_missing() {
	mkdir -p "$T/sys/firmware/efi/efivars"
	local line
	line=$(secureboot_line)
	assert_eq "$EDGEIMG_SAY secureboot: unknown (no SecureBoot variable), setup mode unknown" "$line"
	calls | grep -q "mount -t efivarfs -o ro,nosuid,nodev,noexec efivarfs $T/sys/firmware/efi/efivars" ||
		{ echo "efivarfs not mounted: $(calls)"; return 1; }
}

# A stream (a FIFO) stands for an efivarfs file: on the guest (kernel 6.12, busybox 1.37)
# `od -j4` on one gave the attribute byte, so efivar_byte reads from the start.
reads_a_file_that_cannot_seek() {
	mkdir -p "$T/v"
	mkfifo "$T/v/var"
	printf '\006\000\000\000\001' >"$T/v/var" &
	assert_eq 1 "$(efivar_byte "$T/v/var")" "the value byte, not the attributes"
	wait
}

no_line_without_efi() {
	assert_eq "" "$(secureboot_line)" "a Raspberry Pi has no EFI"
}

tcase "enabled, user mode, lockdown" enabled_and_user_mode
tcase "disabled, setup mode" disabled_in_setup_mode
tcase "efivarfs mounted when missing" efivarfs_is_mounted_when_missing
tcase "an efivarfs file that cannot seek" reads_a_file_that_cannot_seek
tcase "no line without EFI" no_line_without_efi
t_done

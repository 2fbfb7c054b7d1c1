# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, secureboot.sh: what the firmware says of Secure Boot (its SecureBoot and
# SetupMode variables, read through efivarfs) and the kernel's lockdown, on one console line.
# Needs common.sh.

# The EFI global variable vendor GUID the two variables are stored under.
EFI_GLOBAL_GUID=8be4df61-93ca-11d2-aa0d-00e098032b8c

# efivar_byte FILE: the first data byte of an efivarfs file (after its 4 attribute bytes),
# as a decimal number; empty when the file cannot be read. efivarfs files cannot seek
# (busybox od -j would silently give the first attribute byte): the file is read from its
# start and the fifth byte taken.
efivar_byte() {
	[ -r "$1" ] || return 0
	# (SC2046: the words of od's output are wanted.)
	# shellcheck disable=SC2046
	set -- $(od -An -tu1 -N5 <"$1" 2>/dev/null)
	[ $# -ge 5 ] && echo "$5"
	return 0
}

# secureboot_line: says `secureboot: enabled|disabled, setup mode on|off[, lockdown MODE]`
# on a UEFI boot; nothing on firmware without EFI (Raspberry Pi). Mounts efivarfs and
# securityfs when they are not mounted yet.
secureboot_line() {
	local sys="$SYS" vars sb sm state setup lock why=""
	[ -d "$sys/firmware/efi" ] || return 0
	vars="$sys/firmware/efi/efivars"
	# Debian builds efivarfs as a module (the board's initramfs_modules carry it).
	[ -e "$vars/SecureBoot-$EFI_GLOBAL_GUID" ] || modprobe efivarfs 2>/dev/null
	if [ ! -e "$vars/SecureBoot-$EFI_GLOBAL_GUID" ]; then
		why=$(mount -t efivarfs -o ro,nosuid,nodev,noexec efivarfs "$vars" 2>&1) || true
	fi
	sb=$(efivar_byte "$vars/SecureBoot-$EFI_GLOBAL_GUID")
	sm=$(efivar_byte "$vars/SetupMode-$EFI_GLOBAL_GUID")
	# (OVMF built without Secure Boot has no SecureBoot variable at all.)
	case "$sb" in
	1) state=enabled ;;
	0) state=disabled ;;
	*) state="unknown (no SecureBoot variable${why:+; mount efivarfs: $why})" ;;
	esac
	case "$sm" in
	1) setup="setup mode on" ;;
	0) setup="setup mode off" ;;
	*) setup="setup mode unknown" ;;
	esac
	[ -e "$sys/kernel/security/lockdown" ] ||
		mount -t securityfs -o nosuid,nodev,noexec securityfs "$sys/kernel/security" 2>/dev/null
	# The file reads `none [integrity] confidentiality`: the bracketed word is in force.
	lock=""
	if [ -r "$sys/kernel/security/lockdown" ]; then
		lock=$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' "$sys/kernel/security/lockdown")
	fi
	say "secureboot: $state, $setup${lock:+, lockdown $lock}"
}

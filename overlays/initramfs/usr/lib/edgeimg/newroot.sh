# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, newroot.sh: the root the system init gets. The squashfs stays read-only;
# /etc, /usr/local and /opt become writable through overlays whose changes live on data,
# /var and /root are directories of data, the boot FAT is /boot; then /dev /proc /sys /run
# move into the new root and switch_root starts its /sbin/init. Shared by the disk and the
# network boot. Needs common.sh and KARG_BREAK of cmdline.sh.

# data_layout DATA: the directories the root uses on the data filesystem mounted at DATA.
data_layout() {
	mkdir -p "$1/var" "$1/etc-upper" "$1/etc-work" "$1/root" \
		"$1/usr-local-upper" "$1/usr-local-work" "$1/opt-upper" "$1/opt-work"
	chmod 0700 "$1/root"
	mkdir -p "$1/var/lib" "$1/var/log" "$1/var/cache" "$1/var/tmp"
	chmod 1777 "$1/var/tmp"
	[ -e "$1/var/run" ] || ln -s ../run "$1/var/run"
	[ -e "$1/var/lock" ] || ln -s ../run/lock "$1/var/lock"
}

# overlay DIR NAME: DIR of the root becomes writable, its changes kept on data (NAME-upper).
overlay() {
	[ -d "$NEWROOT$1" ] || return 0
	mount -t overlay overlay \
		-o "lowerdir=$NEWROOT$1,upperdir=$NEWROOT/data/$2-upper,workdir=$NEWROOT/data/$2-work" \
		"$NEWROOT$1" || fail "mounts: overlay on $1"
}

# mount_newroot: the overlays and binds on the root, data being mounted on $NEWROOT/data.
mount_newroot() {
	data_layout "$NEWROOT/data"
	overlay /etc etc
	overlay /usr/local usr-local
	overlay /opt opt
	mount -o bind "$NEWROOT/data/var" "$NEWROOT/var" || fail "mounts: binding data/var on /var"
	if [ -d "$NEWROOT/root" ]; then
		mount -o bind "$NEWROOT/data/root" "$NEWROOT/root" || fail "mounts: binding data/root on /root"
	fi
}

# mount_boot PART: the boot FAT read-write on the root's /boot (nothing when PART is empty);
# says the `mounts:` line.
mount_boot() {
	if [ -n "$1" ]; then
		mount -t vfat -o rw,noatime,fmask=0077,dmask=0077 "/dev/$1" "$NEWROOT/boot" ||
			fail "boot: mounting vfat /dev/$1 (missing vfat or nls modules?)"
	fi
	say "mounts: /etc overlay, /var /root on data, /boot ${1:+vfat /dev/}${1:-none}"
}

# switch_to_root: hands the machine to the root's /sbin/init (edgeimg.break=switch_root
# opens a shell first). Never returns.
switch_to_root() {
	local m
	[ "$KARG_BREAK" = switch_root ] && rescue
	for m in dev proc sys run; do
		mount --move "/$m" "$NEWROOT/$m" || fail "switch_root: moving /$m into the root"
	done
	say "switch_root: starting /sbin/init"
	# Host tests stop here: switch_root empties the running root before it starts init.
	[ -z "${EDGEIMG_HOST_TEST:-}" ] || exit 0
	# shellcheck disable=SC2093
	exec switch_root "$NEWROOT" /sbin/init
	fail "switch_root to $NEWROOT"
}

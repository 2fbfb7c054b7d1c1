# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# edgeimg initramfs, netroot.sh: the network boot (`edgeimg build --format pxe`,
# edgeimg.root=http://...). DHCP with busybox udhcpc, the root squashfs fetched into RAM and
# checked against edgeimg.root_sha256= before it is mounted, the node config files from
# edgeimg.config= (per machine) or edgeimg.config_default=, and data on the [storage] device
# of the node config, else in RAM. Needs common.sh, parts.sh, data.sh and newroot.sh.

# net_dhcp_script: writes $RUN/udhcpc.script, the udhcpc hook that configures the interface
# (busybox has none built in) and records `<interface> <address>` in $RUN/net.lease.
net_dhcp_script() {
	{
		echo '#!/bin/sh'
		echo "lease='$RUN/net.lease'"
		cat <<'EOS'
case "$1" in
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
bound | renew)
	ifconfig "$interface" "$ip" ${subnet:+netmask "$subnet"} up
	for r in $router; do
		route add default gw "$r" dev "$interface" 2>/dev/null
		break
	done
	: >/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	echo "$interface $ip" >"$lease"
	;;
esac
exit 0
EOS
	} >"$RUN/udhcpc.script"
	chmod 0755 "$RUN/udhcpc.script"
}

# net_cards: the network interfaces of $SYS/class/net that can do DHCP, space-separated.
net_cards() {
	local n cards=""
	for n in "$SYS"/class/net/*; do
		case "${n##*/}" in lo | sit* | tunl* | ip6tnl* | '*') continue ;; esac
		cards="$cards ${n##*/}"
	done
	echo "$cards"
}

# net_up SECONDS: DHCP on the first network card that answers, waiting up to SECONDS for a
# card to show up.
net_up() {
	local i=0 nics="" n
	mkdir -p "$RUN" /etc
	net_dhcp_script
	ifconfig lo 127.0.0.1 up 2>/dev/null
	while [ "$i" -le $(($1 * 4)) ]; do
		nics=$(net_cards)
		[ -n "$nics" ] && break
		sleep 0.25
		i=$((i + 1))
	done
	[ -n "$nics" ] || fail "network: no network card within ${1}s (its driver is not in the initramfs?)"
	for n in $nics; do
		ifconfig "$n" up 2>/dev/null
		if udhcpc -i "$n" -n -q -t 8 -T 2 -s "$RUN/udhcpc.script" >/dev/null 2>&1; then
			say "network: $n $(cut -d' ' -f2 "$RUN/net.lease") by DHCP"
			return 0
		fi
	done
	fail "network: no DHCP answer on$nics"
}

# net_fetch_root URL FILE: downloads the root image at URL into FILE and checks it against
# edgeimg.root_sha256= (KARG_ROOT_SHA256); a file that does not match is deleted.
net_fetch_root() {
	local want got
	want=$(lower "$KARG_ROOT_SHA256")
	[ -n "$want" ] || fail "root: no edgeimg.root_sha256= for $1 on the kernel command line"
	wget -q -T 30 -O "$2" "$1" || fail "root: downloading $1 (server down or wrong edgeimg.root=?)"
	got=$(sha256sum "$2" | cut -d' ' -f1)
	if [ "$got" != "$want" ]; then
		rm -f "$2"
		fail "root image digest mismatch: $1 has sha256 $got, the kernel command line wants $want (rebuild or re-copy the pxe files together)"
	fi
	say "root: $1 fetched into RAM ($(($(wc -c <"$2") / 1048576)) MiB), sha256 ok"
}

# net_root URL: fetches the root image into RAM, checks its digest and mounts it.
net_root() {
	local img="$RUN/root.squashfs"
	net_fetch_root "$1" "$img"
	mount -t squashfs -o ro,loop "$img" "$NEWROOT" || fail "root: mounting squashfs $img (loop module missing?)"
	say "root: squashfs from the network mounted read-only"
}

# net_config_fetch URL DIR: downloads the files URL/index lists into DIR; false when there
# is no index at URL. File names that are absolute or climb with .. are skipped.
net_config_fetch() {
	local f
	wget -q -T 15 -O "$RUN/config.index" "${1}index" 2>/dev/null || return 1
	while read -r f; do
		case "$f" in "" | /* | *..*) continue ;; esac
		mkdir -p "$(dirname "$2/$f")"
		wget -q -T 30 -O "$2/$f" "$1$f" || fail "config: downloading $1$f"
	done <"$RUN/config.index"
}

# net_config: the node config files into a tmpfs on the root's /boot (where the system init
# reads them), from the first of edgeimg.config= and edgeimg.config_default= with an index.
net_config() {
	local dir="$NEWROOT/boot/$EDGEIMG_BOOT_DIR" u from=""
	mount -t tmpfs -o mode=0700 tmpfs "$NEWROOT/boot" || fail "config: mounting a tmpfs on /boot"
	mkdir -p "$dir"
	for u in "$KARG_CONFIG" "$KARG_CONFIG_DEFAULT"; do
		[ -n "$u" ] || continue
		net_config_fetch "$u" "$dir" || continue
		from=$u
		break
	done
	if [ -n "$from" ]; then
		say "config: node config from $from ($(wc -l <"$RUN/config.index") files)"
	else
		say "config: no node config at edgeimg.config=/edgeimg.config_default=, image defaults"
	fi
}

# net_storage_spec: [storage] device of the fetched node config, else edgeimg.data=.
net_storage_spec() {
	local s="" env="$NEWROOT/boot/$EDGEIMG_BOOT_DIR/node.env"
	if [ -r "$env" ]; then
		s=$(
			STORAGE_DEVICE=""
			# shellcheck disable=SC1090
			. "$env" >/dev/null 2>&1
			echo "$STORAGE_DEVICE"
		)
	fi
	echo "${s:-$KARG_DATA}"
}

# net_data WAIT: data on the storage device (made ext4 on first boot) or a tmpfs. Sets DATA
# to the device name of the storage device, empty for the tmpfs.
net_data() {
	local spec p
	spec=$(net_storage_spec)
	DATA=""
	if [ -z "$spec" ]; then
		mount -t tmpfs -o mode=0755 tmpfs "$NEWROOT/data" || fail "data: mounting tmpfs"
		say "data: no [storage] device, /var and /etc changes are in RAM (lost on reboot)"
		return 0
	fi
	DATA=$(wait_for "$spec" "$1") || fail "data: [storage] device $spec not found within ${1}s"
	if ! has_ext4 "$DEV/$DATA"; then
		for p in "$SYS/class/block/$DATA/$DATA"*; do
			[ -e "$p/partition" ] &&
				fail "data: /dev/$DATA has partitions and no ext4: not wiping it; use a blank disk, a partition, or wipe it yourself"
		done
	fi
	bind_root_api
	prepare_data "$DATA" "$NEWROOT/data"
	unbind_root_api
	say "data: ext4 /dev/$DATA $DATA_DONE ($(data_size "$NEWROOT/data"))"
}

# net_boot URL WAIT: the whole network path up to the mounts of the new root.
net_boot() {
	net_up "$2"
	net_root "$1"
	net_config
	net_data "$2"
	mount_newroot
	say "mounts: /etc overlay, /var /root on data, /boot tmpfs (node config from the network)"
}

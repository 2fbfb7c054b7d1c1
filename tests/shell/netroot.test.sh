# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of netroot.sh: DHCP on the first card (fake udhcpc), the root image downloaded
# with a fake wget from a folder standing in for the HTTP server and checked against
# edgeimg.root_sha256=, the node config from the per-machine or the default URL.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

the_root_image_is_fetched_and_checked() {
	local sum
	fake_server
	head -c 3145728 /dev/zero >"$T/srv/root.squashfs"
	sum=$(sha256sum "$T/srv/root.squashfs" | cut -d' ' -f1)
	fake_cmdline "edgeimg.root=http://srv/root.squashfs edgeimg.root_sha256=$(echo "$sum" | tr a-f A-F)"
	cmdline_load
	net_root "$KARG_ROOT" >"$T/out"
	assert_eq "edgeimg: root: http://srv/root.squashfs fetched into RAM (3 MiB), sha256 ok
edgeimg: root: squashfs from the network mounted read-only" "$(cat "$T/out")"
	cmp "$T/srv/root.squashfs" "$RUN/root.squashfs" || exit 1
	assert_has "$(calls)" "mount -t squashfs -o ro,loop $RUN/root.squashfs $NEWROOT"
}

a_root_image_with_another_digest_is_refused() {
	local out
	fake_server
	srv_file root.squashfs "not the image"
	fake_cmdline "edgeimg.root=http://srv/root.squashfs edgeimg.root_sha256=0000000000000000000000000000000000000000000000000000000000000000"
	cmdline_load
	out=$(net_root "$KARG_ROOT") && exit 1
	assert_has "$out" "edgeimg: FAILED: root image digest mismatch: http://srv/root.squashfs has sha256 $(printf 'not the image' | sha256sum | cut -d' ' -f1), the kernel command line wants 0000000000000000000000000000000000000000000000000000000000000000"
	[ ! -e "$RUN/root.squashfs" ] || {
		echo "the image that did not match is still in RAM"
		exit 1
	}
	assert_lacks "$(calls)" "mount " "nothing mounted"
}

no_digest_or_no_download_stops_the_boot() {
	local out
	fake_server
	fake_cmdline "edgeimg.root=http://srv/root.squashfs"
	cmdline_load
	out=$(net_root "$KARG_ROOT") && exit 1
	assert_eq "edgeimg: FAILED: root: no edgeimg.root_sha256= for http://srv/root.squashfs on the kernel command line" "$out"
	assert_eq "" "$(calls)" "no download without a digest"
	fake_cmdline "edgeimg.root=http://srv/gone.squashfs edgeimg.root_sha256=00"
	cmdline_load
	out=$(net_root "$KARG_ROOT") && exit 1
	assert_eq "edgeimg: FAILED: root: downloading http://srv/gone.squashfs (server down or wrong edgeimg.root=?)" "$out"
}

the_machine_config_wins_over_the_default() {
	fake_server
	srv_file node/52-54-00-12-34-56/index "node.env
files/0
../escape
/etc/passwd
"
	srv_file node/52-54-00-12-34-56/node.env "NODE_HOSTNAME='pxe-node-1'"
	srv_file node/52-54-00-12-34-56/files/0 "x"
	srv_file node/default/index "node.env
"
	srv_file node/default/node.env "NODE_HOSTNAME='default'"
	fake_cmdline "edgeimg.config=http://srv/node/52-54-00-12-34-56/ edgeimg.config_default=http://srv/node/default/"
	cmdline_load
	net_config >"$T/out"
	assert_eq "edgeimg: config: node config from http://srv/node/52-54-00-12-34-56/ (4 files)" "$(cat "$T/out")"
	assert_eq "NODE_HOSTNAME='pxe-node-1'" "$(cat "$NEWROOT/boot/$EDGEIMG_BOOT_DIR/node.env")"
	assert_eq x "$(cat "$NEWROOT/boot/$EDGEIMG_BOOT_DIR/files/0")"
	assert_lacks "$(calls)" "escape" "names climbing out are not fetched"
	assert_lacks "$(calls)" "passwd" "absolute names are not fetched"
	assert_has "$(calls)" "mount -t tmpfs -o mode=0700 tmpfs $NEWROOT/boot"
}

the_default_config_is_used_without_a_machine_one() {
	fake_server
	srv_file node/default/index "node.env
"
	srv_file node/default/node.env "NODE_HOSTNAME='default'"
	fake_cmdline "edgeimg.config=http://srv/node/52-54-00-12-34-56/ edgeimg.config_default=http://srv/node/default/"
	cmdline_load
	net_config >"$T/out"
	assert_eq "edgeimg: config: node config from http://srv/node/default/ (1 files)" "$(cat "$T/out")"
	assert_eq "NODE_HOSTNAME='default'" "$(cat "$NEWROOT/boot/$EDGEIMG_BOOT_DIR/node.env")"
	rm -rf "$T/srv/node/default"
	net_config >"$T/out"
	assert_eq "edgeimg: config: no node config at edgeimg.config=/edgeimg.config_default=, image defaults" "$(cat "$T/out")"
}

the_storage_device_of_the_node_config_wins() {
	fake_cmdline "edgeimg.data=/dev/vdb"
	cmdline_load
	assert_eq /dev/vdb "$(net_storage_spec)"
	mkdir -p "$NEWROOT/boot/$EDGEIMG_BOOT_DIR"
	echo "STORAGE_DEVICE='/dev/vda'" >"$NEWROOT/boot/$EDGEIMG_BOOT_DIR/node.env"
	assert_eq /dev/vda "$(net_storage_spec)"
	echo "STORAGE_DEVICE=''" >"$NEWROOT/boot/$EDGEIMG_BOOT_DIR/node.env"
	assert_eq /dev/vdb "$(net_storage_spec)"
}

data_is_in_ram_without_a_storage_device() {
	net_data 1 >"$T/out"
	assert_eq "edgeimg: data: no [storage] device, /var and /etc changes are in RAM (lost on reboot)" "$(cat "$T/out")"
	assert_eq "" "$DATA"
}

a_storage_disk_with_partitions_is_not_wiped() {
	local out
	fake_disk vda 64 "$GPT_TABLE"
	fake_cmdline "edgeimg.data=/dev/vda"
	cmdline_load
	out=$(net_data 1) && exit 1
	assert_eq "edgeimg: FAILED: data: /dev/vda has partitions and no ext4: not wiping it; use a blank disk, a partition, or wipe it yourself" "$out"
}

dhcp_runs_on_the_first_card_that_answers() {
	mkdir -p "$SYS/class/net/lo" "$SYS/class/net/eth0" "$SYS/class/net/eth1" "$SYS/class/net/sit0"
	fake udhcpc "[ \"\$2\" = eth1 ] || exit 1; echo 'eth1 10.0.2.15' >'$RUN/net.lease'"
	net_up 1 >"$T/out"
	assert_eq "edgeimg: network: eth1 10.0.2.15 by DHCP" "$(cat "$T/out")"
	assert_has "$(calls)" "udhcpc -i eth0 -n -q -t 8 -T 2 -s $RUN/udhcpc.script"
	assert_lacks "$(calls)" "udhcpc -i sit0"
	assert_has "$(cat "$RUN/udhcpc.script")" "lease='$RUN/net.lease'"
	busybox sh -n "$RUN/udhcpc.script" || exit 1
	[ -x "$RUN/udhcpc.script" ] || exit 1
}

no_card_or_no_answer_stops_the_boot() {
	local out
	mkdir -p "$SYS/class/net/lo"
	out=$(net_up 0) && exit 1
	assert_eq "edgeimg: FAILED: network: no network card within 0s (its driver is not in the initramfs?)" "$out"
	mkdir -p "$SYS/class/net/eth0"
	fake udhcpc "exit 1"
	out=$(net_up 0) && exit 1
	assert_eq "edgeimg: FAILED: network: no DHCP answer on eth0" "$out"
}

tcase "the root image is fetched and checked" the_root_image_is_fetched_and_checked
tcase "a root image with another digest is refused" a_root_image_with_another_digest_is_refused
tcase "no digest or no download stops the boot" no_digest_or_no_download_stops_the_boot
tcase "the machine's config wins over the default" the_machine_config_wins_over_the_default
tcase "the default config is used without a machine one" the_default_config_is_used_without_a_machine_one
tcase "the storage device of the node config wins" the_storage_device_of_the_node_config_wins
tcase "data is in RAM without a storage device" data_is_in_ram_without_a_storage_device
tcase "a storage disk with partitions is not wiped" a_storage_disk_with_partitions_is_not_wiped
tcase "DHCP runs on the first card that answers" dhcp_runs_on_the_first_card_that_answers
tcase "no card or no answer stops the boot" no_card_or_no_answer_stops_the_boot
t_done

# shellcheck shell=sh disable=SC3043,SC2034
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it. SC2034: the node
# variables set here are read by preseed_apply.)
# Host tests of the root's preseed.sh: Raspberry Pi Imager 2.x's rpi-preseed.toml (written
# as its src/customization_generator.cpp writes it) mapped onto the node config, the node
# config winning where both say something.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/preseed.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/preseed.sh"

say() {
	echo "edgeimg: $*"
}

# imager_toml: what Imager 2.x writes for hostname, user, SSH keys, Wi-Fi (encrypted PSK),
# locale and an interface.
imager_toml() {
	cat <<'TOML'
config_version = "1.0"

[system]
hostname = "imager-pi"

[user]
name = "pi"
password = "$y$j9T$abc$def"
password_encrypted = true
groups = ["sudo"]

[ssh]
enabled = true
password_authentication = false
authorized_keys = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q imager@laptop",
  "ssh-rsa AAAAB3Nza \"quoted\" back\\slash",
]

[wlan]
ssid = "Lab \"5G\" net"
password = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
password_encrypted = true
hidden = false
country = "GB"

[locale]
keymap = "gb"
timezone = "Europe/London"

[interfaces]
i2c = true
TOML
}

node_empty() {
	NODE_HOSTNAME="" WIFI_SSID="" WIFI_PSK="" WIFI_COUNTRY="" TIMEZONE=""
	EDGEIMG_BOOT="$T/boot/edgeimg"
	EDGEIMG_PRESEED="$T/boot/rpi-preseed.toml"
	mkdir -p "$EDGEIMG_BOOT"
	AUTHORIZED_KEYS_FILE="$EDGEIMG_BOOT/authorized_keys"
}

parses_the_subset_imager_writes() {
	imager_toml >"$T/p.toml"
	local out
	out=$(preseed_parse "$T/p.toml")
	assert_has "$out" "system.hostname	imager-pi"
	assert_has "$out" "ssh.authorized_keys	ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q imager@laptop"
	assert_has "$out" 'ssh.authorized_keys	ssh-rsa AAAAB3Nza "quoted" back\slash' "\\\" and \\\\ unescaped"
	assert_has "$out" 'wlan.ssid	Lab "5G" net'
	assert_has "$out" "wlan.password_encrypted	true"
	assert_has "$out" "locale.timezone	Europe/London"
	assert_has "$out" "user.groups	sudo"
	assert_eq 2 "$(echo "$out" | grep -c '^ssh.authorized_keys')"
}

an_imager_card_gets_hostname_keys_wifi_and_time_zone() {
	node_empty
	imager_toml >"$EDGEIMG_PRESEED"
	local out
	out=$(
		preseed_apply
		echo "host=$NODE_HOSTNAME ssid=$WIFI_SSID psk=$WIFI_PSK country=$WIFI_COUNTRY tz=$TIMEZONE keys=$AUTHORIZED_KEYS_FILE"
	)
	assert_has "$out" "config: rpi-preseed.toml (Raspberry Pi Imager): hostname=imager-pi wlan=Lab \"5G\" net country=GB timezone=Europe/London ssh-keys=2; not applied: [user] [interfaces]"
	assert_has "$out" "host=imager-pi ssid=Lab \"5G\" net psk=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef country=GB tz=Europe/London keys=$T/run/preseed.keys"
	assert_eq 2 "$(grep -c . "$T/run/preseed.keys")"
	assert_has "$(cat "$T/run/preseed.keys")" "imager@laptop"
	assert_eq 600 "$(stat -c %a "$T/run/preseed.keys")"
}

the_node_config_wins() {
	node_empty
	NODE_HOSTNAME=from-node WIFI_SSID=node-net WIFI_PSK=secret TIMEZONE=UTC
	echo "ssh-ed25519 AAAA node@key" >"$EDGEIMG_BOOT/authorized_keys"
	imager_toml >"$EDGEIMG_PRESEED"
	local out
	out=$(
		preseed_apply
		echo "host=$NODE_HOSTNAME ssid=$WIFI_SSID psk=$WIFI_PSK country=$WIFI_COUNTRY tz=$TIMEZONE keys=$AUTHORIZED_KEYS_FILE"
	)
	assert_has "$out" "nothing taken; node config wins: hostname wlan timezone ssh-keys"
	assert_has "$out" "host=from-node ssid=node-net psk=secret country= tz=UTC keys=$EDGEIMG_BOOT/authorized_keys"
	[ ! -e "$T/run/preseed.keys" ] || exit 1
}

the_builds_default_hostname_gives_way() {
	node_empty
	EDGEIMG_BOARD=pi3 EDGEIMG_ROLE=controller+worker NODE_HOSTNAME=pi3-controller-worker
	imager_toml >"$EDGEIMG_PRESEED"
	assert_has "$(
		preseed_apply
		echo "host=$NODE_HOSTNAME"
	)" "host=imager-pi"
	NODE_HOSTNAME=pi3-worker
	assert_has "$(
		preseed_apply
		echo "host=$NODE_HOSTNAME"
	)" "host=pi3-worker" "another role's name was chosen"
}

ssh_off_or_passwords_take_no_keys() {
	node_empty
	printf '[ssh]\nenabled = false\nauthorized_keys = ["ssh-ed25519 AAAA a@b"]\n[wlan]\nssid = "open"\nhidden = true\n' >"$EDGEIMG_PRESEED"
	local out
	out=$(
		preseed_apply
		echo "keys=$AUTHORIZED_KEYS_FILE psk=[$WIFI_PSK]"
	)
	assert_has "$out" "keys=$EDGEIMG_BOOT/authorized_keys psk=[]"
	assert_has "$out" "wlan=open"
	printf '[ssh]\nenabled = true\npassword_authentication = true\n' >"$EDGEIMG_PRESEED"
	assert_has "$(preseed_apply)" "not applied: ssh-passwords"
}

no_file_no_line() {
	node_empty
	assert_eq "" "$(preseed_apply)"
}

tcase "parses the TOML subset Imager writes" parses_the_subset_imager_writes
tcase "an Imager card gets hostname, keys, Wi-Fi and time zone" an_imager_card_gets_hostname_keys_wifi_and_time_zone
tcase "the node config wins where both say something" the_node_config_wins
tcase "the build's default hostname gives way to Imager's" the_builds_default_hostname_gives_way
tcase "SSH off takes no keys; SSH passwords are not applied" ssh_off_or_passwords_take_no_keys
tcase "without rpi-preseed.toml nothing happens" no_file_no_line
t_done

# shellcheck shell=sh
# Wi-Fi for boards with a radio (Raspberry Pi: brcmfmac + firmware-brcm80211): joins the
# network of the node config (WIFI_SSID, WIFI_PSK, WIFI_COUNTRY in node.env) with
# wpa_supplicant on wlan0, then asks for an address with DHCP in the background.
# Sourced by /usr/lib/edgeimg/boot (step_wifi); tests source it for wifi_conf.

WIFI_RUN=${EDGEIMG_RUN:-/run/edgeimg}

# hexstr TEXT: TEXT as lowercase hex digits (wpa_supplicant takes an unquoted hex ssid, so
# no character of the SSID needs quoting).
hexstr() {
	printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'
}

# wifi_conf SSID PSK COUNTRY: a wpa_supplicant.conf on stdout. PSK: a passphrase, 64 hex
# digits (a raw key), or empty for an open network.
wifi_conf() {
	echo "ctrl_interface=/run/wpa_supplicant"
	echo "update_config=0"
	[ -n "$3" ] && echo "country=$3"
	echo "network={"
	printf '\tssid=%s\n' "$(hexstr "$1")"
	printf '\tscan_ssid=1\n'
	if [ -z "$2" ]; then
		printf '\tkey_mgmt=NONE\n'
	elif [ "${#2}" -eq 64 ] && ! printf '%s' "$2" | grep -q '[^0-9a-fA-F]'; then
		printf '\tpsk=%s\n' "$2"
	else
		# wpa_supplicant reads a quoted value up to the line's last quote.
		printf '\tpsk="%s"\n' "$2"
	fi
	echo "}"
}

# wifi_up: waits up to 10 s for wlan0, starts wpa_supplicant and DHCP on it.
wifi_up() {
	_w=0
	while [ ! -e /sys/class/net/wlan0 ] && [ "$_w" -lt 10 ]; do
		sleep 1
		_w=$((_w + 1))
	done
	if [ ! -e /sys/class/net/wlan0 ]; then
		say "wifi: SSID $WIFI_SSID${WIFI_COUNTRY:+ (country $WIFI_COUNTRY)} configured, but no wireless interface (wlan0) appeared"
		return 0
	fi
	mkdir -p "$WIFI_RUN" /run/wpa_supplicant
	(
		umask 077
		wifi_conf "$WIFI_SSID" "$WIFI_PSK" "$WIFI_COUNTRY" >"$WIFI_RUN/wpa_supplicant.conf"
	)
	ip link set wlan0 up
	if ! wpa_supplicant -B -D nl80211 -i wlan0 -c "$WIFI_RUN/wpa_supplicant.conf" \
		-P /run/wpa_supplicant.wlan0.pid >/dev/null 2>&1; then
		say "wifi: wpa_supplicant failed to start on wlan0 (wired network only)"
		return 0
	fi
	udhcpc -i wlan0 -s /usr/lib/edgeimg/udhcpc.script -p /run/udhcpc.wlan0.pid -b -t 5 -T 2 -A 10 \
		-x "hostname:$HOSTNAME_EFFECTIVE" -F "$HOSTNAME_EFFECTIVE" >/dev/null 2>&1
	_addr=$(ip -4 -o addr show dev wlan0 | awk '{print $4; exit}')
	say "wifi: wlan0 joining SSID ${WIFI_SSID}${WIFI_COUNTRY:+ (country $WIFI_COUNTRY)}${_addr:+, dhcp $_addr}${_addr:-, no lease yet, trying in the background}"
}

# shellcheck shell=sh disable=SC3043,SC2034
# (SC3043: `local` is not POSIX sh, but busybox ash has it. SC2034: the node variables set
# here are read by the boot script that sources this file.)
# Raspberry Pi Imager's OS customisation on edgeimg cards. The Imager list edgeimg writes
# says `init_format = "rpi-preseed"`, so Imager 2.x writes what its dialog asked for as
# rpi-preseed.toml at the top of the boot partition (src/customization_generator.cpp,
# generateRpiPreseedToml: `[system] hostname`, `[ssh] enabled, password_authentication,
# authorized_keys = [...]`, `[wlan] ssid, password, password_encrypted, hidden, country`,
# `[locale] keymap, timezone`, `[user]`, `[connect]`, `[interfaces]`; values are basic strings
# with only \\ and \" escaped, booleans, or one array of strings over several lines).
#
# preseed_apply maps it onto the node config loaded by load_node_env (lib.sh): each setting is
# taken only where node.env says nothing (the node config wins where both say something).
# Read on every boot, like node.env. Sourced by boot (step_config); needs lib.sh.

EDGEIMG_PRESEED=${EDGEIMG_PRESEED:-/boot/rpi-preseed.toml}

# preseed_parse FILE: the settings of FILE on stdout, one `section.key<TAB>value` line each
# (an array gives one line per string). Unknown syntax is skipped.
preseed_parse() {
	awk '
	function unq(s,   out, c, i) {
		out = ""
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (c == "\\") { i++; c = substr(s, i, 1) }
			out = out c
		}
		return out
	}
	# strings LINE: prints every basic string of LINE as a value of key K.
	function strings(line,   rest, m) {
		rest = line
		while (match(rest, /"([^"\\]|\\.)*"/)) {
			m = substr(rest, RSTART + 1, RLENGTH - 2)
			printf "%s\t%s\n", K, unq(m)
			rest = substr(rest, RSTART + RLENGTH)
		}
	}
	{ sub(/\r$/, "") }
	inarr {
		t = $0
		sub(/^[ \t]*#.*/, "", t)
		strings(t)
		if (t ~ /^[ \t]*\]/ || t ~ /"[ \t]*,?[ \t]*\][ \t]*$/) inarr = 0
		next
	}
	/^[ \t]*(#|$)/ { next }
	/^[ \t]*\[[A-Za-z0-9_.-]+\][ \t]*$/ {
		sec = $0
		gsub(/[][ \t]/, "", sec)
		next
	}
	/^[ \t]*[A-Za-z0-9_-]+[ \t]*=/ {
		key = $0
		sub(/^[ \t]*/, "", key)
		sub(/[ \t]*=.*/, "", key)
		val = $0
		sub(/^[^=]*=[ \t]*/, "", val)
		K = (sec == "" ? key : sec "." key)
		if (val ~ /^\[/) {
			strings(val)
			if (val !~ /\][ \t]*$/) inarr = 1
		} else if (val ~ /^"/) {
			if (match(val, /^"([^"\\]|\\.)*"/)) printf "%s\t%s\n", K, unq(substr(val, 2, RLENGTH - 2))
		} else {
			sub(/[ \t]*(#.*)?$/, "", val)
			printf "%s\t%s\n", K, val
		}
	}' "$1"
}

# preseed_apply: applies $EDGEIMG_PRESEED (if there) over the loaded node config: sets
# NODE_HOSTNAME, WIFI_SSID/WIFI_PSK/WIFI_COUNTRY, TIMEZONE where empty, and the SSH keys
# (AUTHORIZED_KEYS_FILE, a copy in EDGEIMG_RUN) when the node config has none
# ($EDGEIMG_BOOT/authorized_keys). Prints one
# `config:` line saying what was taken, what the node config overrode and what edgeimg does
# not do (user accounts, passwords, Pi Connect, interfaces).
preseed_apply() {
	[ -r "$EDGEIMG_PRESEED" ] || return 0
	local line k v took="" kept="" ignored="" keys="$EDGEIMG_RUN/preseed.keys" nkeys=0
	local host="" ssid="" psk="" country="" tz="" ssh_on=""
	mkdir -p "$EDGEIMG_RUN"
	: >"$keys.tmp"
	while IFS= read -r line; do
		k=${line%%"	"*}
		v=${line#*"	"}
		case "$k" in
		system.hostname) host=$v ;;
		ssh.enabled) ssh_on=$v ;;
		ssh.authorized_keys)
			printf '%s\n' "$v" >>"$keys.tmp"
			nkeys=$((nkeys + 1))
			;;
		ssh.password_authentication) [ "$v" = true ] && ignored="$ignored ssh-passwords" ;;
		wlan.ssid) ssid=$v ;;
		wlan.ssid_hex) ignored="$ignored wlan.ssid_hex" ;;
		wlan.password) psk=$v ;;
		wlan.country) country=$v ;;
		wlan.hidden | wlan.password_encrypted) ;;
		locale.timezone) tz=$v ;;
		locale.keymap | config_version) ;;
		user.* | connect.* | interfaces.*)
			case " $ignored " in *" [${k%%.*}] "*) ;; *) ignored="$ignored [${k%%.*}]" ;; esac
			;;
		*) ignored="$ignored $k" ;;
		esac
	done <<EOF
$(preseed_parse "$EDGEIMG_PRESEED")
EOF
	# The build names a node without a hostname <board>-<role> (build.env): that default
	# is no choice of the node config, so Imager's hostname replaces it.
	if [ -n "$host" ]; then
		if [ -n "$NODE_HOSTNAME" ] &&
			[ "$NODE_HOSTNAME" != "$(printf '%s-%s' "${EDGEIMG_BOARD:-}" "${EDGEIMG_ROLE:-}" | tr + -)" ]; then
			kept="$kept hostname"
		else
			NODE_HOSTNAME=$host
			took="$took hostname=$host"
		fi
	fi
	if [ -n "$ssid" ]; then
		if [ -n "$WIFI_SSID" ]; then kept="$kept wlan"; else
			WIFI_SSID=$ssid
			# password_encrypted = true: the 64-hex PSK, which wpa_supplicant takes as is
			# (wifi_conf writes 64 hex digits unquoted; a passphrase has at most 63
			# characters), else a passphrase.
			WIFI_PSK=$psk
			[ -n "$WIFI_COUNTRY" ] || WIFI_COUNTRY=$country
			took="$took wlan=$ssid${country:+ country=$country}"
		fi
	fi
	if [ -n "$tz" ]; then
		if [ -n "$TIMEZONE" ]; then kept="$kept timezone"; else
			TIMEZONE=$tz
			took="$took timezone=$tz"
		fi
	fi
	if [ "$nkeys" -gt 0 ] && [ "$ssh_on" != false ]; then
		if [ -s "$EDGEIMG_BOOT/authorized_keys" ]; then kept="$kept ssh-keys"; else
			chmod 0600 "$keys.tmp"
			mv "$keys.tmp" "$keys"
			AUTHORIZED_KEYS_FILE=$keys
			took="$took ssh-keys=$nkeys"
		fi
	fi
	rm -f "$keys.tmp"
	say "config: rpi-preseed.toml (Raspberry Pi Imager):${took:- nothing taken}${kept:+; node config wins:$kept}${ignored:+; not applied:$ignored}"
}

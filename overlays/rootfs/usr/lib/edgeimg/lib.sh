# shellcheck shell=sh disable=SC2034
# (SC2034: the variables set here are used by the scripts that source this file.)
# Shared by the edgeimg system scripts (sourced, not run). POSIX sh for busybox ash.
# Owns the node config as the device reads it (build.env, node.env), the k0s command line,
# quoting and the clock; the names shared with the build (boot folder, console markers,
# Kubernetes modules and sysctls) come from the generated contract.sh next to it.
#
# Paths can be moved with EDGEIMG_* variables so that tests run these functions on a host
# (EDGEIMG_LIB: the folder holding contract.sh).

# shellcheck source=contract.sh
. "${EDGEIMG_LIB:-/usr/lib/edgeimg}/contract.sh"

EDGEIMG_BOOT=${EDGEIMG_BOOT:-/boot/$EDGEIMG_BOOT_DIR}
EDGEIMG_RUN=${EDGEIMG_RUN:-/run/edgeimg}
EDGEIMG_STATE=${EDGEIMG_STATE:-/var/lib/edgeimg}
EDGEIMG_BUILD_ENV=${EDGEIMG_BUILD_ENV:-/etc/edgeimg/build.env}
K0S_DATA=${K0S_DATA:-/var/lib/k0s}
K0S_CONFIG=${K0S_CONFIG:-/etc/k0s/k0s.yaml}
K0S_TOKEN="$K0S_DATA/join-token"
EDGEIMG_AIRGAP=${EDGEIMG_AIRGAP:-$EDGEIMG_AIRGAP_DIR}

# say WORDS: one console line `edgeimg: WORDS`.
say() {
	echo "$EDGEIMG_SAY $*"
}

# q VALUE: VALUE quoted for sh (single quotes; ' written as '\'').
q() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# sleep_forever: blocks without exiting (a respawn entry that must not loop).
sleep_forever() {
	while :; do
		sleep 3600
	done
}

# select_node_dir: per-MAC node configs (`edgeimg configure --inventory FILE --all-nodes`): a
# node whose NIC's MAC has a directory edgeimg/nodes/<mac, '-' for ':'> uses it instead of
# edgeimg/ itself. On such a card the NIC drivers are loaded first (there is no udev) and the
# NICs get a few seconds to appear; without the directory nothing changes.
select_node_dir() {
	[ -d "$EDGEIMG_BOOT/nodes" ] || return 0
	# shellcheck disable=SC2038
	find /sys/devices -name modalias -type f 2>/dev/null | xargs cat 2>/dev/null | sort -u |
		xargs modprobe -qa 2>/dev/null
	_tries=0
	while [ "$_tries" -lt 10 ]; do
		for _a in /sys/class/net/*/address; do
			[ -r "$_a" ] || continue
			_m=$(tr : - <"$_a")
			if [ -r "$EDGEIMG_BOOT/nodes/$_m/node.env" ]; then
				EDGEIMG_BOOT="$EDGEIMG_BOOT/nodes/$_m"
				return 0
			fi
		done
		_tries=$((_tries + 1))
		sleep 0.5
	done
}

# load_node_env: the image's defaults (build.env), then the node config of the boot
# partition (node.env) over them. Leaves the raw NODE_* and other node.env variables set:
# every name of EDGEIMG_NODE_ENV_VARS (contract.sh) is empty unless node.env sets it.
load_node_env() {
	select_node_dir
	EDGEIMG_BOARD="" EDGEIMG_ROLE="" K0S_VERSION="" KVER="" EDGEIMG_VERSION="" ROOT_MODE=""
	for _k in $EDGEIMG_NODE_ENV_VARS; do
		case "$_k" in
		*[!A-Z0-9_]* | [0-9]*) ;;
		*) eval "$_k=''" ;;
		esac
	done
	HAS_TOKEN=0 HAS_SSH_KEYS=0 FILES_COUNT=0
	NODE_ENV_STATE="absent"
	# shellcheck disable=SC1090
	[ -r "$EDGEIMG_BUILD_ENV" ] && . "$EDGEIMG_BUILD_ENV"
	if [ -r "$EDGEIMG_BOOT/node.env" ]; then
		# shellcheck disable=SC1091
		. "$EDGEIMG_BOOT/node.env"
		# The generation is the sha256 of node.env without its own line: recompute it,
		# so that a node.env edited by hand is a new generation too.
		_actual=$(sed '/^CONFIG_GENERATION=/d' "$EDGEIMG_BOOT/node.env" | sha256sum | cut -d' ' -f1)
		if [ "$_actual" = "$CONFIG_GENERATION" ]; then
			NODE_ENV_STATE="generation ${_actual%"${_actual#????????????}"}"
		else
			NODE_ENV_STATE="edited by hand, generation ${_actual%"${_actual#????????????}"}"
			CONFIG_GENERATION=$_actual
		fi
	fi
	ROLE=${NODE_ROLE:-${EDGEIMG_ROLE:-worker}}
	NET_MODE=${NET_MODE:-dhcp}
}

# save_runtime_env: the effective settings for the other scripts (k0s-run, udhcpc.script).
save_runtime_env() {
	mkdir -p "$EDGEIMG_RUN"
	{
		for _k in ROLE HOSTNAME_EFFECTIVE K0S_ARGS K0S_LABELS K0S_TAINTS K0S_VERSION NET_MODE \
			NET_DNS CONFIG_GENERATION EDGEIMG_VERSION EDGEIMG_BOARD; do
			eval "_v=\${$_k-}"
			# shellcheck disable=SC2154
			echo "$_k=$(q "$_v")"
		done
	} >"$EDGEIMG_RUN/node.env.tmp" && mv "$EDGEIMG_RUN/node.env.tmp" "$EDGEIMG_RUN/node.env"
}

load_runtime_env() {
	# shellcheck disable=SC1091
	. "$EDGEIMG_RUN/node.env"
}

# default_hostname: edgeimg-<MAC of the first Ethernet card, without colons>.
default_hostname() {
	for _n in /sys/class/net/*; do
		case "${_n##*/}" in lo | bonding_masters) continue ;; esac
		_mac=$(tr -d ':' <"$_n/address" 2>/dev/null)
		case "$_mac" in "" | 000000000000) continue ;; esac
		echo "edgeimg-$_mac"
		return
	done
	echo "edgeimg"
}

# k0s_words WORD...: appends WORDs, quoted, to K0S_CMD.
k0s_words() {
	for _w in "$@"; do
		K0S_CMD="$K0S_CMD $(q "$_w")"
	done
}

# k0s_command: sets K0S_CMD to the k0s command line for ROLE, as quoted words for `eval`:
#   worker             k0s worker --token-file T [--labels] [--taints]
#   controller         k0s controller [--config C] [--token-file T]
#   controller+worker  k0s controller --enable-worker [--no-taints] [--config C] [--token-file T] [--labels] [--taints]
#   single             k0s controller --single [--config C] [--labels] [--taints]
# always with --data-dir, then the node's own K0S_ARGS (already quoted words).
k0s_command() {
	K0S_CMD="k0s"
	case "$ROLE" in
	worker) k0s_words worker ;;
	controller) k0s_words controller ;;
	controller+worker)
		k0s_words controller --enable-worker
		# A node given taints wants them; otherwise a combined node schedules workloads.
		[ -n "$K0S_TAINTS" ] || k0s_words --no-taints
		;;
	single) k0s_words controller --single ;;
	*) return 1 ;;
	esac
	k0s_words --data-dir "$K0S_DATA"
	if [ "$ROLE" != worker ] && [ -r "$K0S_CONFIG" ]; then
		k0s_words --config "$K0S_CONFIG"
	fi
	if [ "$ROLE" != single ] && [ -s "$K0S_TOKEN" ]; then
		k0s_words --token-file "$K0S_TOKEN"
	fi
	if [ "$ROLE" != controller ]; then
		[ -z "$K0S_LABELS" ] || k0s_words "--labels=$K0S_LABELS"
		[ -z "$K0S_TAINTS" ] || k0s_words "--taints=$K0S_TAINTS"
	fi
	K0S_CMD="$K0S_CMD $K0S_ARGS"
}

# root_mode: ro or rw, as / is mounted now.
root_mode() {
	awk '$2 == "/" { m = $4 } END { split(m, o, ","); print o[1] }' /proc/mounts
}

# save_clock: keeps the current time on data, never going back below the saved one, so
# that a board without a clock starts from its last known time.
save_clock() {
	mkdir -p "$EDGEIMG_STATE"
	_now=$(date +%s)
	_saved=$(cat "$EDGEIMG_STATE/clock" 2>/dev/null || echo 0)
	[ "$_now" -gt "${_saved:-0}" ] 2>/dev/null || return 0
	echo "$_now" >"$EDGEIMG_STATE/clock.tmp" && mv "$EDGEIMG_STATE/clock.tmp" "$EDGEIMG_STATE/clock"
}

# link_airgap: every airgap bundle the image ships (EDGEIMG_AIRGAP, in the verified root) gets
# a symlink in $K0S_DATA/images, where a k0s worker imports each file (it stats and opens the
# path, so a link is followed); the data partition holds no copy. Links to bundles a previous
# image shipped and this one does not are removed. Prints one line when there is a bundle.
link_airgap() {
	_img="$K0S_DATA/images"
	for _l in "$_img"/*; do
		[ -L "$_l" ] || continue
		case "$(readlink "$_l")" in
		"$EDGEIMG_AIRGAP"/*) [ -e "$_l" ] || rm -f "$_l" ;;
		esac
	done
	[ -d "$EDGEIMG_AIRGAP" ] || return 0
	_n=0
	for _b in "$EDGEIMG_AIRGAP"/*; do
		[ -f "$_b" ] || continue
		mkdir -p "$_img" || return 1
		_l="$_img/${_b##*/}"
		if [ "$(readlink "$_l" 2>/dev/null)" != "$_b" ]; then
			rm -f "$_l" && ln -s "$_b" "$_l" || return 1
		fi
		_n=$((_n + 1))
	done
	[ "$_n" -gt 0 ] && say "airgap: $_n bundle(s) linked into $_img"
	return 0
}

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
			NET_DNS CONFIG_GENERATION EDGEIMG_VERSION EDGEIMG_BOARD UPDATE_URL UPDATE_CHECK_INTERVAL \
			UPDATE_TRIAL_TIMEOUT UPDATE_WATCHDOG; do
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

# restart_delay N: seconds to wait before the Nth restart in a row of k0s: 5, 10, 20, 40,
# then 60 (a worker whose controller is not up yet exits after its retries, again and again).
restart_delay() {
	_d=5
	_i=1
	while [ "$_i" -lt "$1" ] && [ "$_d" -lt 60 ]; do
		_d=$((_d * 2))
		_i=$((_i + 1))
	done
	[ "$_d" -le 60 ] || _d=60
	echo "$_d"
}

# restart_says N: whether the Nth restart in a row prints a line (1, 2, 4, 8, ...: a node that
# waits a day for its controller prints a few dozen lines, not thousands).
restart_says() {
	_p=1
	while [ "$_p" -lt "$1" ]; do
		_p=$((_p * 2))
	done
	[ "$_p" -eq "$1" ]
}

# move_data_files: a cluster's files for k0s's data dir (`edgeimg flash --cluster`: the CA
# keys, the token Secrets), in $EDGEIMG_BOOT/$EDGEIMG_K0S_DATA_FILES/ by their path under
# it, move to $K0S_DATA: all copied first (folders 0700, certificates 0644 as k0s writes
# them, everything else 0600), then each copy on the FAT overwritten with zeros and the
# folder deleted. Prints the number of files moved; returns 1, leaving the FAT as it was,
# when one cannot be copied.
move_data_files() {
	_src="$EDGEIMG_BOOT/$EDGEIMG_K0S_DATA_FILES"
	[ -d "$_src" ] || {
		echo 0
		return 0
	}
	# The build allows only visible ASCII in these names: word splitting is safe.
	_list=$(cd "$_src" && find . -type f | sed 's|^\./||' | sort)
	_n=0
	for _f in $_list; do
		_dst="$K0S_DATA/$_f"
		case "$_f" in
		*.crt | *.pub) _mode=0644 ;;
		*) _mode=0600 ;;
		esac
		(umask 077 && mkdir -p "${_dst%/*}" && cp "$_src/$_f" "$_dst.edgeimg-tmp" &&
			chmod "$_mode" "$_dst.edgeimg-tmp") || return 1
		_n=$((_n + 1))
	done
	sync
	for _f in $_list; do
		mv "$K0S_DATA/$_f.edgeimg-tmp" "$K0S_DATA/$_f" || return 1
	done
	sync
	for _f in $_list; do
		_size=$(wc -c <"$_src/$_f")
		[ "$_size" -eq 0 ] ||
			dd if=/dev/zero of="$_src/$_f" bs="$_size" count=1 conv=notrunc 2>/dev/null
	done
	sync
	rm -rf "$_src"
	sync
	echo "$_n"
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

# write_node_files now|deferred: the [[files]] of node.env (FILE_<n>_PATH, _MODE, _OWNER,
# _APPEND, _DEFER; content in $EDGEIMG_BOOT/files/<n>) whose DEFER is unset (now) or 1
# (deferred), in their order. Each is written atomically (a temporary file beside it, then
# mv) with its mode and owner. An APPEND entry adds its content at the end of the file: once
# per CONFIG_GENERATION (like cloud-init's write_files, once per instance), or on every boot
# when an earlier entry rewrote the same path in this boot. Sets FILES_WROTE (entries
# written) and FILES_FAILED (their paths). Paths are below EDGEIMG_TARGET (empty on the
# device; host tests point it at a folder).
# shellcheck disable=SC2154
write_node_files() {
	if [ "$1" = now ]; then
		FILES_REWRITTEN=""
		FILES_APPEND_DONE=$(cat "$EDGEIMG_STATE/files_append.generation" 2>/dev/null)
	fi
	FILES_WROTE=0 FILES_FAILED=""
	_n=0
	_appends=0
	while [ "$_n" -lt "${FILES_COUNT:-0}" ]; do
		eval "_path=\${FILE_${_n}_PATH} _mode=\${FILE_${_n}_MODE} _owner=\${FILE_${_n}_OWNER-}" \
			"_append=\${FILE_${_n}_APPEND-} _defer=\${FILE_${_n}_DEFER-}"
		_src="$EDGEIMG_BOOT/files/$_n"
		_n=$((_n + 1))
		case "$1:$_defer" in now:1 | deferred:) continue ;; esac
		_t="${EDGEIMG_TARGET-}$_path"
		_tmp="$_t.edgeimg-tmp"
		if [ "$_append" = 1 ]; then
			_appends=$((_appends + 1))
			case "
$FILES_REWRITTEN
" in
			*"
$_path
"*) ;;
			*) [ "$FILES_APPEND_DONE" = "$CONFIG_GENERATION" ] && continue ;;
			esac
		fi
		if mkdir -p "${_t%/*}" &&
			if [ "$_append" = 1 ] && [ -e "$_t" ]; then
				cp "$_t" "$_tmp" && cat "$_src" >>"$_tmp"
			else
				cp "$_src" "$_tmp"
			fi &&
			chmod "$_mode" "$_tmp" &&
			{ [ -z "$_owner" ] || chown "$_owner" "$_tmp"; } &&
			mv "$_tmp" "$_t"; then
			FILES_WROTE=$((FILES_WROTE + 1))
			[ "$_append" = 1 ] || FILES_REWRITTEN="$FILES_REWRITTEN
$_path"
		else
			rm -f "$_tmp"
			FILES_FAILED="$FILES_FAILED $_path"
		fi
	done
	if [ "$_appends" -gt 0 ]; then
		mkdir -p "$EDGEIMG_STATE"
		echo "$CONFIG_GENERATION" >"$EDGEIMG_STATE/files_append.generation"
	fi
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

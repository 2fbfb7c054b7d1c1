# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of the root's A/B update scripts (edgeimg-update, slot.sh) under busybox sh: real
# bundles (busybox tar, signed with openssl's Ed25519), a fake ESP folder and a plain file as
# the inactive slot's partition.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

ROOTFS="$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg"
BOOTUUID=825d84b8-a1df-fd43-83d3-b03044e4b9a7
AUUID=80db9710-d650-b54c-b155-5240524dceaa
BUUID=1c5a4d3e-7b2f-4e11-9a0b-2d3c4e5f6a7b
DATAUUID=d80464ce-a1e9-1141-8ee6-b3a1d2806da1

# node SLOT: a node running v1 from SLOT: the root's lib folder, build.env, the fleet key, an
# ESP with slot A's UKI, the kernel command line.
node() {
	need openssl openssl
	mkdir -p "$T/lib" "$T/esp/EFI/Linux" "$T/etc" "$T/keys" "$T/b"
	for f in "$ROOTFS"/*; do ln -s "$f" "$T/lib/"; done
	ln -sf "$EDGEIMG_LIB/contract.sh" "$T/lib/contract.sh"
	printf "EDGEIMG_BOARD='x86-64'\nEDGEIMG_ARCH='amd64'\nIMAGE_VERSION='1'\nBOOT_METHOD='uefi'\n" >"$T/etc/build.env"
	openssl genpkey -algorithm ed25519 -out "$T/keys/fleet.key" 2>/dev/null
	openssl pkey -in "$T/keys/fleet.key" -pubout -out "$T/keys/fleet.pub"
	openssl genpkey -algorithm ed25519 -out "$T/keys/other.key" 2>/dev/null
	echo "UKI A v1" >"$T/esp/EFI/Linux/edgeimg-a.efi"
	local root
	case "$1" in a) root=$AUUID ;; *) root=$BUUID ;; esac
	echo "console=ttyS0 edgeimg.boot=PARTUUID=$BOOTUUID edgeimg.root=PARTUUID=$root edgeimg.data=PARTUUID=$DATAUUID edgeimg.slot=$1" >"$T/cmdline"
	: >"$T/slot"
	echo boot-1 >"$T/boot_id"
}

# bundle NAME VERSION [BOARD] [KEY]: $T/NAME.update for slot files, as src/bundle writes it.
bundle() {
	local d="$T/mk-$1" v="$2" board="${3:-x86-64}" key="${4:-fleet}"
	rm -rf "$d" && mkdir -p "$d/boot/a/EFI/Linux" "$d/boot/b/EFI/Linux"
	head -c 300000 /dev/urandom >"$d/root.img"
	echo "UKI A v$v" >"$d/boot/a/EFI/Linux/edgeimg-a.efi"
	echo "UKI B v$v" >"$d/boot/b/EFI/Linux/edgeimg-b.efi"
	sha() { sha256sum "$1" | cut -d' ' -f1; }
	size() { wc -c <"$1" | tr -d ' '; }
	cat >"$d/manifest.json" <<JSON
{
  "format_version": 1,
  "board": "$board",
  "arch": "amd64",
  "role": "worker",
  "image_version": "$v",
  "k0s_version": "v1.33.1+k0s.$v",
  "edgeimg_version": "0.1.0",
  "boot_method": "uefi",
  "partitions": {
    "table": "gpt",
    "boot": "$BOOTUUID",
    "root_a": "$AUUID",
    "root_b": "$BUUID",
    "data": "$DATAUUID",
    "slot_size": 1048576
  },
  "root": {
    "size": $(size "$d/root.img"),
    "sha256": "$(sha "$d/root.img")"
  },
  "boot": [
    {
      "path": "EFI/Linux/edgeimg-@SLOT@.efi",
      "slot": "a",
      "member": "boot/a/EFI/Linux/edgeimg-a.efi",
      "size": $(size "$d/boot/a/EFI/Linux/edgeimg-a.efi"),
      "sha256": "$(sha "$d/boot/a/EFI/Linux/edgeimg-a.efi")"
    },
    {
      "path": "EFI/Linux/edgeimg-@SLOT@.efi",
      "slot": "b",
      "member": "boot/b/EFI/Linux/edgeimg-b.efi",
      "size": $(size "$d/boot/b/EFI/Linux/edgeimg-b.efi"),
      "sha256": "$(sha "$d/boot/b/EFI/Linux/edgeimg-b.efi")"
    }
  ]
}
JSON
	openssl pkeyutl -sign -inkey "$T/keys/$key.key" -rawin -in "$d/manifest.json" -out "$d/manifest.sig"
	(cd "$d" && busybox tar -cf "$T/$1.update" manifest.json manifest.sig root.img \
		boot/a/EFI/Linux/edgeimg-a.efi boot/b/EFI/Linux/edgeimg-b.efi)
}

# upd ARGS: edgeimg-update as the node runs it, slot B's partition being $T/slot. It runs
# through a wrapper that records `reboot` in $T/calls and does not sleep: edgeimg-update runs
# itself again (tar's --to-command, the poller), and functions of this shell do not reach
# those processes.
upd() {
	cat >"$T/upd-wrapper" <<WRAPPER
reboot() { echo "reboot \$*" >>"$T/calls"; }
sleep() { :; }
. "$ROOTFS/edgeimg-update"
WRAPPER
	env -u EDGEIMG_HOST_TEST EDGEIMG_LIB="$T/lib" EDGEIMG_ESP="$T/esp" EDGEIMG_CMDLINE="$T/cmdline" \
		EDGEIMG_BOOT="$T/esp/edgeimg" EDGEIMG_BOOT_ID="$T/boot_id" \
		EDGEIMG_BUILD_ENV="$T/etc/build.env" EDGEIMG_UPDATE_PUB="$T/keys/fleet.pub" \
		EDGEIMG_RUN="$T/run" EDGEIMG_STATE="$T/state" K0S="$T/bin/k0s" \
		UPD_SLOT_DEV="$T/slot" EDGEIMG_UPDATE_ANY_DEV=1 EDGEIMG_UPDATE_NO_WATCH=1 \
		EDGEIMG_WATCHDOG="$T/watchdog" EDGEIMG_WATCHDOG_CMD="$T/bin/watchdog" \
		EDGEIMG_UPDATE_SELF="busybox sh $T/upd-wrapper" \
		busybox sh "$T/upd-wrapper" "$@"
}

# runtime ROLE URL: the node's runtime settings (boot's save_runtime_env) and a k0s that
# records what it is asked in $T/calls.
runtime() {
	mkdir -p "$T/run"
	printf "ROLE='%s'\nUPDATE_URL='%s'\nUPDATE_CHECK_INTERVAL='60'\n" "$1" "$2" >"$T/run/node.env"
	printf '#!/bin/sh\necho "k0s $*" >>"%s"\n' "$T/calls" >"$T/bin/k0s"
	chmod +x "$T/bin/k0s"
}

ukis() {
	local f
	for f in "$T/esp/EFI/Linux"/*; do
		[ -e "$f" ] && printf '%s ' "${f##*/}"
	done
}

a_good_bundle_is_written_and_armed_as_a_trial() {
	local out
	node a
	bundle v2 2
	out=$(upd "$T/v2.update") || {
		echo "$out"
		exit 1
	}
	assert_has "$out" "edgeimg: update: v2 (k0s v1.33.1+k0s.2) signed by the fleet key; writing slot b"
	assert_has "$out" "edgeimg: update: v2 armed on slot b as the next boot's trial (3 tries)"
	cmp "$T/mk-v2/root.img" "$T/slot" || exit 1
	assert_eq "edgeimg-a.efi edgeimg-b+3.efi " "$(ukis)"
	assert_eq "UKI B v2" "$(cat "$T/esp/EFI/Linux/edgeimg-b+3.efi")" "slot b's own UKI"
	assert_eq "b 2 1 boot-1" "$(cat "$T/esp/edgeimg/update/trial")"
	# The same boot goes on (boot_cmd applied it): nothing failed yet.
	assert_eq "" "$(upd --boot)" "a trial armed during this boot is not a failed one"
	assert_eq "edgeimg-a.efi edgeimg-b+3.efi " "$(ukis)"
	assert_eq "" "$(ls "$T/run")" "the work folder is gone"
}

tries_can_be_set() {
	node a
	bundle v2 2
	upd "$T/v2.update" --tries 1 >/dev/null || exit 1
	assert_eq "edgeimg-a.efi edgeimg-b+1.efi " "$(ukis)"
}

damaged_truncated_and_foreign_bundles_are_refused() {
	local out size
	node a
	echo "old B" >"$T/esp/EFI/Linux/edgeimg-b.efi"
	bundle v2 2
	# Another key: refused at the signature, nothing written.
	bundle other 2 x86-64 other
	out=$(upd "$T/other.update") && exit 1
	assert_has "$out" "edgeimg: update: refused: bad signature"
	assert_eq "" "$(cat "$T/slot")" "slot B untouched"
	# A flipped byte in root.img (past the headers of the first three members).
	cp "$T/v2.update" "$T/flip.update"
	printf 'X' | dd of="$T/flip.update" bs=1 seek=200000 conv=notrunc 2>/dev/null
	out=$(upd "$T/flip.update") && exit 1
	assert_has "$out" "edgeimg: update: refused: root.img's sha256 is"
	assert_eq "edgeimg-a.efi " "$(ukis)" "slot b disarmed, nothing armed"
	[ ! -e "$T/esp/edgeimg/update/trial" ] || exit 1
	# Cut in the middle of root.img.
	size=$(wc -c <"$T/v2.update")
	head -c $((size / 2)) "$T/v2.update" >"$T/cut.update"
	out=$(upd "$T/cut.update") && exit 1
	assert_has "$out" "edgeimg: update: refused:"
	assert_eq "edgeimg-a.efi " "$(ukis)"
	# Another board.
	bundle pi 2 pi4
	out=$(upd "$T/pi.update") && exit 1
	assert_has "$out" "edgeimg: update: refused: the bundle is for board pi4, this node is x86-64"
}

an_older_version_needs_force() {
	local out
	node a
	bundle v1 1
	out=$(upd "$T/v1.update") && exit 1
	assert_has "$out" "edgeimg: update: refused: v1 is not newer than the running v1 (--force to install it anyway)"
	assert_eq "edgeimg-a.efi " "$(ukis)"
	upd "$T/v1.update" --force >/dev/null || exit 1
	assert_eq "edgeimg-a.efi edgeimg-b+3.efi " "$(ukis)"
}

no_key_in_the_image_is_refused() {
	local out
	node a
	bundle v2 2
	rm "$T/keys/fleet.pub"
	out=$(upd "$T/v2.update") && exit 1
	assert_has "$out" "edgeimg: update: refused: this image has no fleet key"
}

a_ready_trial_is_marked_good() {
	local out
	node b
	echo "b 2 1" >"$T/esp/edgeimg/update/trial" 2>/dev/null || {
		mkdir -p "$T/esp/edgeimg/update"
		echo "b 2 1" >"$T/esp/edgeimg/update/trial"
	}
	echo "UKI B v2" >"$T/esp/EFI/Linux/edgeimg-b+2-1.efi"
	sed -i "s/IMAGE_VERSION='1'/IMAGE_VERSION='2'/" "$T/etc/build.env"
	out=$(upd --boot)
	assert_eq "edgeimg: update: v2 on trial in slot b; marked good once ready within 900s
edgeimg: update: no hardware watchdog ($T/watchdog): a trial that hangs stays hung until a power cycle" "$out"
	echo "UPDATE_TRIAL_TIMEOUT='120'" >"$T/esp/edgeimg/node.env"
	assert_has "$(upd --boot)" "edgeimg: update: v2 on trial in slot b; marked good once ready within 120s" "[update] trial_timeout"
	out=$(upd --ready)
	assert_eq "edgeimg: update: v2 is ready: slot b marked good" "$out"
	assert_eq "edgeimg-a.efi edgeimg-b.efi " "$(ukis)"
	[ ! -e "$T/esp/edgeimg/update/trial" ] || exit 1
	assert_eq "" "$(upd --ready)" "once"
}

a_failed_trial_is_reported_once_and_cleaned_up() {
	local out
	node a
	mkdir -p "$T/esp/edgeimg/update"
	echo "b 3 2 boot-0" >"$T/esp/edgeimg/update/trial"
	echo "UKI B v3" >"$T/esp/EFI/Linux/edgeimg-b+0-3.efi"
	out=$(upd --boot)
	assert_eq "edgeimg: update: v3 failed (it did not come up), back on v2" "$out"
	assert_eq "edgeimg-a.efi " "$(ukis)"
	assert_eq "" "$(upd --boot)" "said once"
	# A trial that gave up on its health check says why.
	echo "b 3 2" >"$T/esp/edgeimg/update/trial"
	echo "not ready within 900s" >"$T/esp/edgeimg/update/result"
	echo "UKI B v3" >"$T/esp/EFI/Linux/edgeimg-b+0-1.efi"
	assert_eq "edgeimg: update: v3 failed (not ready within 900s), back on v2" "$(upd --boot)"
}

giving_up_leaves_no_tries() {
	node b
	echo "UKI B v2" >"$T/esp/EFI/Linux/edgeimg-b+2-1.efi"
	(
		EDGEIMG_ESP="$T/esp" EDGEIMG_CMDLINE="$T/cmdline"
		# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/slot.sh
		. "$ROOTFS/slot.sh"
		slot_give_up
	)
	assert_eq "edgeimg-a.efi edgeimg-b+0-3.efi " "$(ukis)"
}

# await_call TEXT: until $T/calls holds TEXT (a background process writes it), 10 s at most.
await_call() {
	local n=0
	until grep -qF "$1" "$T/calls" 2>/dev/null; do
		n=$((n + 1))
		[ "$n" -lt 100 ] || {
			echo "never in calls: $1"
			calls
			return 1
		}
		sleep 0.1
	done
}

# await_gone PID: until process PID has ended (or is a zombie nobody reaped yet), 10 s at most.
await_gone() {
	local n=0
	while kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; do
		n=$((n + 1))
		[ "$n" -lt 100 ] || {
			echo "process $1 still runs"
			return 1
		}
		sleep 0.1
	done
}

# A trial on v2 in slot b, and a watchdog device with a fake daemon that records how it was
# started and runs until it is stopped (SIGTERM: busybox watchdog's magic close).
trial_with_watchdog() {
	node b
	mkdir -p "$T/esp/edgeimg/update"
	echo "b 2 1" >"$T/esp/edgeimg/update/trial"
	echo "UKI B v2" >"$T/esp/EFI/Linux/edgeimg-b+2-1.efi"
	sed -i "s/IMAGE_VERSION='1'/IMAGE_VERSION='2'/" "$T/etc/build.env"
	: >"$T/watchdog"
	: >"$T/calls"
	cat >"$T/bin/watchdog" <<FAKE
#!/bin/sh
echo "watchdog \$*" >>"$T/calls"
exec sleep 1000
FAKE
	chmod +x "$T/bin/watchdog"
}

a_trial_runs_under_the_watchdog_until_it_is_good() {
	local out pid
	trial_with_watchdog
	out=$(upd --boot)
	assert_has "$out" "edgeimg: update: the hardware watchdog resets this trial if it stops running for 60s"
	await_call "watchdog -F -T 60 -t 15 $T/watchdog"
	pid=$(cat "$T/run/watchdog.pid")
	kill -0 "$pid" || exit 1
	out=$(upd --ready)
	assert_has "$out" "edgeimg: update: v2 is ready: slot b marked good"
	assert_has "$out" "edgeimg: update: the trial's watchdog is stopped"
	await_gone "$pid"
	[ ! -e "$T/run/watchdog.pid" ] || exit 1
}

the_watchdog_follows_the_node_config() {
	local out
	trial_with_watchdog
	echo "UPDATE_WATCHDOG='5'" >"$T/esp/edgeimg/node.env"
	upd --boot >/dev/null
	await_call "watchdog -F -T 5 -t 2 $T/watchdog"
	kill "$(cat "$T/run/watchdog.pid")"
	await_gone "$(cat "$T/run/watchdog.pid")"
	rm -f "$T/run/watchdog.pid"
	# The boot's effective settings win (a per-MAC node config): off there.
	mkdir -p "$T/run"
	echo "UPDATE_WATCHDOG='0'" >"$T/run/node.env"
	: >"$T/calls"
	out=$(upd --boot)
	assert_has "$out" "edgeimg: update: the watchdog is off for this trial ([update] watchdog = 0)"
	[ ! -e "$T/run/watchdog.pid" ] || exit 1
	# A boot that is not a trial arms nothing.
	node a
	out=$(upd --boot)
	case "$out" in *watchdog*) echo "not a trial, yet: $out" && exit 1 ;; esac
	sleep 0.3
	assert_eq "" "$(calls)" "no daemon started"
}

the_manifest_reader_flattens_nested_keys() {
	node a
	bundle v2 2
	out=$(EDGEIMG_UPDATE_SOURCED=1 EDGEIMG_LIB="$T/lib" busybox sh -c '. "$0"; manifest_flat' "$ROOTFS/edgeimg-update" <"$T/mk-v2/manifest.json")
	assert_has "$out" "partitions.root_b=$BUUID"
	assert_has "$out" "boot.1.member=boot/b/EFI/Linux/edgeimg-b.efi"
	assert_has "$out" "boot.0.slot=a"
	assert_has "$out" "image_version=2"
}

a_running_trial_is_not_overwritten() {
	local out
	node b
	echo "UKI B v2" >"$T/esp/EFI/Linux/edgeimg-b+2-1.efi"
	sed -i "s/IMAGE_VERSION='1'/IMAGE_VERSION='2'/" "$T/etc/build.env"
	bundle v3 3
	out=$(upd "$T/v3.update") && exit 1
	assert_has "$out" "edgeimg: update: refused: slot b is on trial and slot a is its way back"
	assert_eq "edgeimg-a.efi edgeimg-b+2-1.efi " "$(ukis)" "the way back is still there"
	assert_eq "" "$(cat "$T/slot")"
}

the_poller_applies_a_newer_bundle_drains_and_reboots() {
	local out host
	node a
	bundle v2 2
	runtime controller+worker "$T/v2.update"
	host=$(hostname)
	out=$(EDGEIMG_UPDATE_POLL_ONCE=1 upd --poll) || {
		echo "$out"
		exit 1
	}
	assert_has "$out" "edgeimg: update: looking for bundles at $T/v2.update every 60s"
	assert_has "$out" "edgeimg: update: v2 armed on slot b as the next boot's trial"
	assert_has "$out" "edgeimg: update: draining $host before the reboot"
	assert_eq "edgeimg-a.efi edgeimg-b+3.efi " "$(ukis)"
	assert_eq "k0s kubectl drain $host --ignore-daemonsets --delete-emptydir-data --timeout=300s
reboot " "$(cat "$T/calls")" "drained, then rebooted"
	[ -e "$T/state/update-drained" ] || exit 1
	# The next ready line (whichever slot) takes pods again, once.
	: >"$T/calls"
	assert_eq "edgeimg: update: $host takes pods again (uncordoned)" "$(upd --ready)"
	assert_eq "k0s kubectl uncordon $host" "$(cat "$T/calls")"
	assert_eq "" "$(upd --ready)" "once"
}

the_poller_is_quiet_when_nothing_is_newer_and_a_worker_is_not_drained() {
	local out
	node a
	bundle v1 1
	runtime worker "$T/v1.update"
	out=$(EDGEIMG_UPDATE_POLL_ONCE=1 upd --poll) || exit 1
	assert_eq "edgeimg: update: looking for bundles at $T/v1.update every 60s" "$out" "no news is no line"
	assert_eq "edgeimg-a.efi " "$(ukis)"
	assert_eq "" "$(cat "$T/calls")"
	assert_eq "node.env" "$(ls "$T/run")" "no work folder left"
	bundle v2 2
	runtime worker "$T/v2.update"
	out=$(EDGEIMG_UPDATE_POLL_ONCE=1 upd --poll) || exit 1
	assert_has "$out" "edgeimg: update: rebooting into slot b"
	assert_eq "reboot " "$(cat "$T/calls")" "a worker has no credentials to drain itself"
}

# A Raspberry Pi card that `edgeimg update` wrote in a reader: slot-b/, tryboot.txt and a
# trial record marked offline (src/update). The next boot is slot a's: it asks the firmware for
# the trial with `reboot '0 tryboot'`; when the firmware (or a kernel without tryboot support)
# boots config.txt's slot again, that boot says the trial failed.
an_offline_pi_trial_is_taken_by_the_next_boot() {
	local out
	node a
	sed -i "s/BOOT_METHOD='uefi'/BOOT_METHOD='rpi'/" "$T/etc/build.env"
	mkdir -p "$T/esp/slot-a" "$T/esp/slot-b" "$T/esp/edgeimg/update"
	printf 'kernel=vmlinuz\nos_prefix=slot-a/\n' >"$T/esp/config.txt"
	printf 'kernel=vmlinuz\nos_prefix=slot-b/\n' >"$T/esp/tryboot.txt"
	echo "a" >"$T/esp/slot-a/vmlinuz"
	echo "b" >"$T/esp/slot-b/vmlinuz"
	echo "b 2 1 offline" >"$T/esp/edgeimg/update/trial"
	printf '#!/bin/sh\necho "klibc-reboot $*" >>"%s"\n' "$T/calls" >"$T/bin/klibc-reboot"
	chmod +x "$T/bin/klibc-reboot"
	out=$(
		export EDGEIMG_REBOOT_ARG="$T/bin/klibc-reboot"
		upd --boot
	) || exit 1
	assert_has "$out" "edgeimg: update: v2 was written into slot b offline (edgeimg update); rebooting into it on trial"
	assert_has "$out" "edgeimg: update: rebooting into slot b on trial (reboot '0 tryboot')"
	assert_eq "klibc-reboot 0 tryboot" "$(cat "$T/calls")"
	assert_eq "b 2 1 boot-1" "$(cat "$T/esp/edgeimg/update/trial")" "armed by this boot now"
	# The firmware booted config.txt's slot anyway: the trial did not run, and is said once.
	echo boot-2 >"$T/boot_id"
	out=$(upd --boot)
	assert_eq "edgeimg: update: v2 failed (it did not come up), back on v1" "$out"
	[ ! -e "$T/esp/tryboot.txt" ] && [ ! -e "$T/esp/slot-b/vmlinuz" ] || exit 1
	# On UEFI an offline trial boots by itself: an `offline` record there is no reboot.
	node a
	mkdir -p "$T/esp/edgeimg/update"
	echo "b 2 1 offline" >"$T/esp/edgeimg/update/trial"
	: >"$T/calls"
	upd --boot >/dev/null
	assert_eq "" "$(cat "$T/calls")" "no reboot on UEFI"
}

tcase "a good bundle is written and armed as a trial" a_good_bundle_is_written_and_armed_as_a_trial
tcase "tries can be set" tries_can_be_set
tcase "damaged, truncated and foreign bundles are refused" damaged_truncated_and_foreign_bundles_are_refused
tcase "an older version needs --force" an_older_version_needs_force
tcase "no key in the image is refused" no_key_in_the_image_is_refused
tcase "a ready trial is marked good" a_ready_trial_is_marked_good
tcase "a failed trial is reported once and cleaned up" a_failed_trial_is_reported_once_and_cleaned_up
tcase "giving up leaves no tries" giving_up_leaves_no_tries
tcase "a trial runs under the hardware watchdog until it is good" a_trial_runs_under_the_watchdog_until_it_is_good
tcase "the trial's watchdog follows [update] watchdog" the_watchdog_follows_the_node_config
tcase "the manifest reader flattens nested keys" the_manifest_reader_flattens_nested_keys
tcase "a running trial is not overwritten" a_running_trial_is_not_overwritten
tcase "the poller applies a newer bundle, drains and reboots" the_poller_applies_a_newer_bundle_drains_and_reboots
tcase "the poller is quiet when nothing is newer; a worker is not drained" the_poller_is_quiet_when_nothing_is_newer_and_a_worker_is_not_drained
tcase "an offline Pi trial is taken by the next boot of the running slot" an_offline_pi_trial_is_taken_by_the_next_boot
t_done

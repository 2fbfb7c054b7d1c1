# shellcheck shell=sh disable=SC3043,SC2034
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it. SC2034: the FILE_*
# variables are read by write_node_files through eval.)
# Host tests of write_node_files (overlays/rootfs/usr/lib/edgeimg/lib.sh): the [[files]] of a
# node config (cloud-config's write_files) with modes, owners, append and defer, written
# below $T/root instead of /.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"
# shellcheck source=../../overlays/rootfs/usr/lib/edgeimg/lib.sh
. "$EDGEIMG_REPO/overlays/rootfs/usr/lib/edgeimg/lib.sh"

# node N PATH CONTENT [MODE]: entry N of the node config (FILES_COUNT follows).
node() {
	mkdir -p "$T/boot/files"
	printf '%s' "$3" >"$T/boot/files/$1"
	eval "FILE_$1_PATH=\$2 FILE_$1_MODE=${4:-0644} FILE_$1_OWNER='' FILE_$1_APPEND='' FILE_$1_DEFER=''"
	FILES_COUNT=$(($1 + 1))
}

files_setup() {
	EDGEIMG_BOOT="$T/boot" EDGEIMG_STATE="$T/state" EDGEIMG_TARGET="$T/root"
	CONFIG_GENERATION=gen1 FILES_COUNT=0
	mkdir -p "$T/root"
	fake chown
}

mode_of() {
	stat -c %a "$T/root$1"
}

files_are_written_with_their_modes() {
	files_setup
	node 0 /etc/motd.d/edge "hello
" 0600
	node 1 /opt/app/run.sh "#!/bin/sh
echo it's run
" 0755
	printf '\377\000\001' >"$T/boot/files/2"
	FILE_2_PATH=/var/lib/blob FILE_2_MODE=0444 FILES_COUNT=3
	write_node_files now
	assert_eq 3 "$FILES_WROTE"
	assert_eq "" "$FILES_FAILED"
	assert_eq "hello" "$(cat "$T/root/etc/motd.d/edge")"
	assert_eq 600 "$(mode_of /etc/motd.d/edge)"
	assert_eq 755 "$(mode_of /opt/app/run.sh)"
	assert_eq 444 "$(mode_of /var/lib/blob)"
	cmp "$T/boot/files/2" "$T/root/var/lib/blob" || return 1
	assert_eq "" "$(find "$T/root" -name '*.edgeimg-tmp')" "no temporary file left"
	assert_eq "" "$(calls)" "no chown without an owner"
}

owners_are_given_with_chown() {
	files_setup
	node 0 /etc/app.conf "x"
	FILE_0_OWNER=app:staff
	write_node_files now
	assert_eq "chown app:staff $T/root/etc/app.conf.edgeimg-tmp" "$(calls)" "before the file takes its place"
	assert_eq 1 "$FILES_WROTE"
}

an_owner_the_root_lacks_is_reported_and_nothing_half_written() {
	files_setup
	fake chown "exit 1"
	node 0 /etc/a "new"
	FILE_0_OWNER=nobody-here
	node 1 /etc/b "b"
	printf 'old' >"$T/root/etc/a" 2>/dev/null || { mkdir -p "$T/root/etc" && printf 'old' >"$T/root/etc/a"; }
	write_node_files now
	assert_eq " /etc/a" "$FILES_FAILED"
	assert_eq 1 "$FILES_WROTE"
	assert_eq old "$(cat "$T/root/etc/a")" "the old file stays whole"
	assert_eq "" "$(find "$T/root" -name '*.edgeimg-tmp')"
	assert_eq b "$(cat "$T/root/etc/b")"
}

appends_happen_once_per_generation() {
	files_setup
	mkdir -p "$T/root/etc"
	printf 'base\n' >"$T/root/etc/hosts.allow"
	node 0 /etc/hosts.allow "more
"
	FILE_0_APPEND=1
	write_node_files now
	assert_eq "base
more" "$(cat "$T/root/etc/hosts.allow")"
	assert_eq 644 "$(mode_of /etc/hosts.allow)" "the entry's mode is applied"
	# The next boot, same generation: not appended again.
	write_node_files now
	assert_eq "base
more" "$(cat "$T/root/etc/hosts.allow")"
	assert_eq 0 "$FILES_WROTE"
	# A new node config appends once more.
	CONFIG_GENERATION=gen2
	write_node_files now
	assert_eq "base
more
more" "$(cat "$T/root/etc/hosts.allow")"
}

an_append_after_a_rewrite_repeats_every_boot() {
	files_setup
	node 0 /etc/x.conf "a
"
	node 1 /etc/x.conf "b
"
	FILE_1_APPEND=1
	for boot in 1 2 3; do
		write_node_files now
		assert_eq "a
b" "$(cat "$T/root/etc/x.conf")" "boot $boot" || return 1
	done
}

deferred_files_wait_for_their_phase() {
	files_setup
	node 0 /etc/early "e"
	node 1 /etc/late "l"
	FILE_1_DEFER=1
	node 2 /etc/early " and late"
	FILE_2_APPEND=1 FILE_2_DEFER=1
	write_node_files now
	assert_eq 1 "$FILES_WROTE"
	[ ! -e "$T/root/etc/late" ] || { echo "deferred file written early" && return 1; }
	assert_eq e "$(cat "$T/root/etc/early")"
	write_node_files deferred
	assert_eq 2 "$FILES_WROTE"
	assert_eq l "$(cat "$T/root/etc/late")"
	assert_eq "e and late" "$(cat "$T/root/etc/early")"
	# Next boot: the early file is rewritten, so the deferred append follows it again.
	write_node_files now
	write_node_files deferred
	assert_eq "e and late" "$(cat "$T/root/etc/early")"
}

a_path_that_cannot_be_made_fails_alone() {
	files_setup
	mkdir -p "$T/root/etc"
	: >"$T/root/etc/plain"
	node 0 /etc/plain/under "x"
	node 1 /etc/ok "y"
	write_node_files now
	assert_eq " /etc/plain/under" "$FILES_FAILED"
	assert_eq y "$(cat "$T/root/etc/ok")"
}

tcase "files are written with their modes" files_are_written_with_their_modes
tcase "owners are given with chown" owners_are_given_with_chown
tcase "an owner the root lacks is reported, nothing half-written" an_owner_the_root_lacks_is_reported_and_nothing_half_written
tcase "appends happen once per generation" appends_happen_once_per_generation
tcase "an append after a rewrite repeats every boot" an_append_after_a_rewrite_repeats_every_boot
tcase "deferred files wait for their phase" deferred_files_wait_for_their_phase
tcase "a path that cannot be made fails alone" a_path_that_cannot_be_made_fails_alone
t_done

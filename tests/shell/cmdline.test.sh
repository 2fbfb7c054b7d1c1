# shellcheck shell=sh disable=SC3043
# (SC3043: `local` is not POSIX sh, but busybox ash and dash have it.)
# Host tests of cmdline.sh: the kernel command line read once into KARG_* variables.
# shellcheck source=testlib.sh
. "${0%/*}/testlib.sh"

known_arguments_become_variables() {
	fake_cmdline "BOOT_IMAGE=/vmlinuz root=/dev/sda1 console=ttyS0,115200 edgeimg.root=PARTUUID=80db9710-d650-b54c-b155-5240524dceaa edgeimg.verity_salt=00ff edgeimg.wait=7 quiet"
	cmdline_load
	assert_eq "PARTUUID=80db9710-d650-b54c-b155-5240524dceaa" "$KARG_ROOT" "a value holding ="
	assert_eq 00ff "$KARG_VERITY_SALT"
	assert_eq 7 "$KARG_WAIT"
	assert_eq "" "$KARG_DATA" "absent"
	assert_eq "" "$KARGS_UNKNOWN"
}

the_last_word_wins() {
	fake_cmdline "edgeimg.wait=5 edgeimg.break=initramfs edgeimg.wait=9 edgeimg.break=switch_root"
	cmdline_load
	assert_eq 9 "$KARG_WAIT"
	assert_eq switch_root "$KARG_BREAK"
}

values_keep_every_equals_sign() {
	fake_cmdline "edgeimg.config=http://10.0.2.100:8080/node/?a=b&c=d= edgeimg.data="
	cmdline_load
	assert_eq "http://10.0.2.100:8080/node/?a=b&c=d=" "$KARG_CONFIG"
	assert_eq "" "$KARG_DATA" "an empty value"
}

old_values_do_not_survive() {
	KARG_DATA=stale KARG_INSTALL=/dev/sdz
	fake_cmdline "edgeimg.root=/dev/vda2"
	cmdline_load
	assert_eq "" "$KARG_DATA"
	assert_eq "" "$KARG_INSTALL"
}

every_contract_name_gets_a_variable() {
	local n name
	cmdline_load
	n=0
	for name in $EDGEIMG_KARGS; do
		# shellcheck disable=SC2016
		eval '[ "${KARG_'"$(karg_var "$name")"'+set}" = set ]' || {
			echo "no variable for edgeimg.$name"
			exit 1
		}
		n=$((n + 1))
	done
	assert_eq 16 "$n" "the contract fixture lists 16 arguments"
}

words_are_not_file_names() {
	mkdir "$T/cwd" && cd "$T/cwd" && : >a1 && : >a2
	fake_cmdline "edgeimg.config=a* edgeimg.test=*"
	cmdline_load
	assert_eq "a*" "$KARG_CONFIG"
	assert_eq "edgeimg.test" "$KARGS_UNKNOWN"
}

unknown_names_get_one_warning_line() {
	fake_cmdline "edgeimg.test=node-arg edgeimg.verity=ab edgeimg.test=again edgeimg.bogus root=/dev/sda edgeimg.rooot=/dev/vda2"
	cmdline_load
	assert_eq "edgeimg.test edgeimg.bogus edgeimg.rooot" "$KARGS_UNKNOWN" "each name once, in order"
	assert_eq ab "$KARG_VERITY"
	assert_eq "edgeimg: cmdline: ignoring unknown edgeimg.test edgeimg.bogus edgeimg.rooot" "$(cmdline_warn_unknown)"
	fake_cmdline "edgeimg.root=/dev/vda2"
	cmdline_load
	assert_eq "" "$(cmdline_warn_unknown)" "no line without unknown names"
}

a_missing_command_line_reads_as_empty() {
	rm -f "$T/cmdline"
	cmdline_load
	assert_eq "" "$KARG_ROOT"
}

# Every KARG_* a library or the init reads is an argument of the contract and the other way
# round, so that the build (which writes the arguments) and the device cannot drift apart
# unnoticed.
the_scripts_read_only_contract_arguments() {
	local used v name found
	used=$(cat "$EDGEIMG_LIB"/*.sh "$EDGEIMG_REPO/overlays/initramfs/init" |
		grep -o 'KARG_[A-Z0-9_][A-Z0-9_]*' | sort -u)
	assert_has "$used" KARG_ROOT_SHA256 "the grep finds the variables"
	for v in $used; do
		found=""
		for name in $EDGEIMG_KARGS; do
			[ "KARG_$(karg_var "$name")" = "$v" ] && found=1
		done
		[ -n "$found" ] || {
			echo "$v is read by the scripts but edgeimg.${v#KARG_} is not in EDGEIMG_KARGS"
			exit 1
		}
	done
	for name in $EDGEIMG_KARGS; do
		echo "$used" | grep -qx "KARG_$(karg_var "$name")" || {
			echo "edgeimg.$name is in the contract but no script reads KARG_$(karg_var "$name")"
			exit 1
		}
	done
}

tcase "known arguments become KARG_ variables" known_arguments_become_variables
tcase "the last word wins" the_last_word_wins
tcase "values keep every = sign" values_keep_every_equals_sign
tcase "old values do not survive a new load" old_values_do_not_survive
tcase "every contract name gets a variable" every_contract_name_gets_a_variable
tcase "words are not file names" words_are_not_file_names
tcase "unknown names get one warning line" unknown_names_get_one_warning_line
tcase "a missing command line reads as empty" a_missing_command_line_reads_as_empty
tcase "the scripts read only contract arguments" the_scripts_read_only_contract_arguments
t_done

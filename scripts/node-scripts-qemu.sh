#!/bin/sh
# Boots the edgeimg device scripts (overlays/) in QEMU without the edgeimg build: a
# hand-made initramfs and squashfs root from the host's busybox-static, e2fsprogs and fdisk
# plus a Debian kernel, on a GPT disk image made with sfdisk/mkfs.vfat/mtools (no mounts,
# no root needed). Checks the console lines of two boots: first boot (data created, grown,
# token moved, run_cmd run, ready line), second boot (data checked, run_cmd not re-run).
#
# usage: scripts/node-scripts-qemu.sh VMLINUZ MODULES_DIR [WORKDIR]
#   VMLINUZ      a Debian amd64 kernel (from linux-image-*.deb, data.tar unpacked)
#   MODULES_DIR  its /usr/lib/modules/<kver>
#   EXTRA_ROOT   optional: a directory of unpacked .debs (dropbear-bin, libtomcrypt1,
#                libtommath1, openntpd) laid into the root; then SSH login and ntpd are
#                checked too.
# Needs: busybox (busybox-static), sfdisk, mkfs.ext4, mksquashfs, mkfs.vfat, mcopy, cpio,
# depmod (kmod), qemu-system-x86_64.
set -eu

VMLINUZ=$1
KMOD=$2
W=${3:-$(mktemp -d)}
KVER=$(basename "$KMOD")
HERE=$(cd "$(dirname "$0")/.." && pwd)
OV="$HERE/overlays"

rm -rf "$W/initramfs" "$W/root"
mkdir -p "$W"

# --- initramfs ------------------------------------------------------------------------
I="$W/initramfs"
mkdir -p "$I/bin" "$I/usr/lib/modules/$KVER" "$I/etc/edgeimg" "$I/dev"
ln -s usr/lib "$I/lib"
cp "$(command -v busybox)" "$I/bin/busybox"
cp "$OV/initramfs/init" "$I/init"
INITRD_MODULES="virtio_blk crc16 mbcache crc32c_generic jbd2 ext4 squashfs overlay fat vfat nls_cp437 nls_ascii"
for m in $INITRD_MODULES; do
	f=$(find "$KMOD/kernel" -name "$m.ko*" | head -n 1)
	mkdir -p "$I/usr/lib/modules/$KVER/$(dirname "${f#"$KMOD"/}")"
	cp "$f" "$I/usr/lib/modules/$KVER/${f#"$KMOD"/}"
done
depmod -b "$I" "$KVER"
cat >"$I/etc/edgeimg/initrd.conf" <<EOF
KVER='$KVER'
MODULES='$INITRD_MODULES'
EDGEIMG_VERSION='test'
EOF
(cd "$I" && find . | sort | cpio -o -H newc --quiet | gzip -1) >"$W/initrd.gz"

# --- root squashfs --------------------------------------------------------------------
R="$W/root"
mkdir -p "$R/usr/bin" "$R/usr/sbin" "$R/usr/lib" "$R/usr/lib64" "$R/usr/local/bin" "$R/etc/edgeimg"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
for d in proc sys dev run tmp var boot data root opt; do mkdir -p "$R/$d"; done
cp "$(command -v busybox)" "$R/usr/bin/busybox"
for a in $(busybox --list); do
	[ -e "$R/usr/bin/$a" ] || ln -s busybox "$R/usr/bin/$a"
done
ln -s ../bin/busybox "$R/usr/sbin/init"
# e2fsprogs and sfdisk of the host, with their libraries.
for b in /usr/sbin/sfdisk /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/resize2fs; do
	cp "$b" "$R/usr/sbin/"
	for l in $(ldd "$b" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
		mkdir -p "$R$(dirname "$l")"
		[ -e "$R$l" ] || cp "$l" "$R$l"
	done
done
ln -sf mke2fs "$R/usr/sbin/mkfs.ext4"
if [ -n "${EXTRA_ROOT:-}" ]; then
	cp -a "$EXTRA_ROOT/usr/." "$R/usr/"
	for b in "$R"/usr/sbin/dropbear "$R"/usr/sbin/ntpd; do
		[ -e "$b" ] || continue
		for l in $(LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu" ldd "$b" | awk '/=>/ {print $3}'); do
			case "$l" in "$R"/*) continue ;; esac
			[ -e "$R$l" ] || cp "$l" "$R$l"
		done
	done
	printf 'ntpd:x:101:101::/run/openntpd:/usr/sbin/nologin\n' >>"$R/etc/passwd.extra"
fi
cp /etc/mke2fs.conf "$R/etc/"
cp -a "$OV/rootfs/." "$R/"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
if [ -e "$R/etc/passwd.extra" ]; then
	cat "$R/etc/passwd.extra" >>"$R/etc/passwd" && rm "$R/etc/passwd.extra"
	printf 'ntpd:x:101:\n' >>"$R/etc/group"
fi
printf 'EDGEIMG_BOARD=qemu\nEDGEIMG_ROLE=worker\nK0S_VERSION=v0.0.0-stand-in\nKVER=%s\nEDGEIMG_VERSION=test\nROOT_MODE=ro\n' "$KVER" >"$R/etc/edgeimg/build.env"
# The k0s test double (see the device contract).
cat >"$R/usr/local/bin/k0s" <<'EOF'
#!/bin/sh
if [ "$1" = version ]; then echo v0.0.0-stand-in; exit 0; fi
mkdir -p /var/lib/k0s
echo "$*" >>/var/lib/k0s/stand-in.calls
echo "k0s-stand-in: $*" >/dev/console
case "$1" in controller | worker) while :; do sleep 3600; done ;; esac
EOF
chmod +x "$R/usr/local/bin/k0s"
mkdir -p "$R/usr/lib/modules/$KVER"
cp -a "$KMOD/kernel" "$R/usr/lib/modules/$KVER/" 2>/dev/null || true
rm -rf "$R/usr/lib/modules/$KVER/kernel/drivers/gpu" "$R/usr/lib/modules/$KVER/kernel/sound" \
	"$R/usr/lib/modules/$KVER/kernel/drivers/media" "$R/usr/lib/modules/$KVER/kernel/drivers/infiniband" \
	"$R/usr/lib/modules/$KVER/kernel/drivers/net/wireless"
depmod -b "$R" "$KVER"
rm -f "$W/root.sqfs"
mksquashfs "$R" "$W/root.sqfs" -comp zstd -quiet -all-root -noappend >/dev/null

# --- boot partition -------------------------------------------------------------------
B="$W/boot"
rm -rf "$B" && mkdir -p "$B/edgeimg/files"
cat >"$B/edgeimg/node.env" <<'EOF'
NODE_HOSTNAME='qemu-node'
NODE_ROLE=''
K0S_ARGS=''\''--debug'\'''
K0S_LABELS='zone=a'
K0S_TAINTS=''
NET_MODE='dhcp'
NET_ADDRESS=''
NET_GATEWAY=''
NET_DNS=''
NTP_SERVERS='10.0.2.2'
TIMEZONE='UTC'
HAS_TOKEN='1'
HAS_SSH_KEYS='1'
FILES_COUNT='1'
FILE_0_PATH='/etc/app/app.conf'
FILE_0_MODE='0640'
EOF
echo "CONFIG_GENERATION='$(sha256sum <"$B/edgeimg/node.env" | cut -d' ' -f1)'" >>"$B/edgeimg/node.env"
echo 'listen = 8080' >"$B/edgeimg/files/0"
rm -f "$W/id_ed25519" "$W/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -f "$W/id_ed25519"
cp "$W/id_ed25519.pub" "$B/edgeimg/authorized_keys"
echo 'test-token' >"$B/edgeimg/token"
printf '#!/bin/sh\nset -e\necho run-cmd-ran-once\n' >"$B/edgeimg/run_cmd.sh"
printf '#!/bin/sh\nset -e\necho boot-cmd-ran\n' >"$B/edgeimg/boot_cmd.sh"
rm -f "$W/boot.fat"
mkfs.vfat -C -F 32 -n EDGEBOOT "$W/boot.fat" 40960 >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$W/boot.fat" "$B/edgeimg" ::/

# --- disk -----------------------------------------------------------------------------
D="$W/disk.img"
rm -f "$D"
SQ_MIB=$((($(stat -c %s "$W/root.sqfs") + 1048575) / 1048576 + 1))
truncate -s $((1 + 40 + SQ_MIB + 4 + 1))M "$D"
P1=11111111-1111-4111-8111-111111111111
P2=22222222-2222-4222-8222-222222222222
P3=33333333-3333-4333-8333-333333333333
sfdisk -q "$D" <<EOF
label: gpt
start=2048, size=40M, type=U, uuid=$P1
size=${SQ_MIB}M, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$P2
size=4M, type=L, uuid=$P3
EOF
dd if="$W/boot.fat" of="$D" bs=1M seek=1 conv=notrunc status=none
dd if="$W/root.sqfs" of="$D" bs=1M seek=41 conv=notrunc status=none
# A bigger disk than the image: the first boot grows partition 3.
truncate -s 512M "$D"

boot() {
	timeout "${QEMU_TIMEOUT:-240}" qemu-system-x86_64 -m 1024 -smp 2 -nographic -no-reboot \
		-kernel "$VMLINUZ" -initrd "$W/initrd.gz" \
		-append "console=ttyS0,115200 panic=-1 edgeimg.boot=PARTUUID=$P1 edgeimg.root=PARTUUID=$P2 edgeimg.data=PARTUUID=$P3" \
		-drive "file=$D,format=raw,if=virtio" -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:${SSH_PORT:-10022}-:22" -device virtio-net-pci,netdev=n0 \
		</dev/null >"$1" 2>&1 &
	qpid=$!
	i=0
	while [ "$i" -lt "${QEMU_TIMEOUT:-240}" ] && ! grep -q 'edgeimg: ready \|FAILED' "$1"; do
		sleep 1
		i=$((i + 1))
	done
	sleep 3
	if [ -n "${EXTRA_ROOT:-}" ]; then
		ssh -i "$W/id_ed25519" -p "${SSH_PORT:-10022}" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
			-o ConnectTimeout=20 -o BatchMode=yes root@127.0.0.1 \
			'echo ssh-login-ok $(hostname) $(cat /etc/app/app.conf) $(stat -c %a /etc/app/app.conf); ls -l /var/lib/k0s/join-token' \
			>"$1.ssh" 2>&1 || true
		cat "$1.ssh"
	fi
	kill "$qpid" 2>/dev/null || true
	wait "$qpid" 2>/dev/null || true
}

expect() {
	if grep -q "$2" "$1"; then
		echo "ok: $2"
	else
		echo "MISSING in $1: $2"
		FAILS=$((FAILS + 1))
	fi
}

FAILS=0
boot "$W/console1.log"
grep 'edgeimg:\|k0s-stand-in\|run-cmd\|boot-cmd' "$W/console1.log" || true
expect "$W/console1.log" 'edgeimg: data: ext4 /dev/vda3 partition grown, created ('
expect "$W/console1.log" 'edgeimg: token: moved to /var/lib/k0s/join-token'
expect "$W/console1.log" 'run-cmd-ran-once'
expect "$W/console1.log" 'boot-cmd-ran'
expect "$W/console1.log" 'k0s-stand-in: worker --data-dir /var/lib/k0s --token-file /var/lib/k0s/join-token --labels=zone=a --debug'
expect "$W/console1.log" 'edgeimg: ready role=worker hostname=qemu-node root=ro k0s=v0.0.0-stand-in'
if [ -n "${EXTRA_ROOT:-}" ]; then
	expect "$W/console1.log.ssh" 'ssh-login-ok qemu-node listen = 8080 640'
	expect "$W/console1.log.ssh" '^-rw------- .* /var/lib/k0s/join-token'
	expect "$W/console1.log" 'edgeimg: ssh: dropbear on port 22, 1 key'
	expect "$W/console1.log" 'edgeimg: time: ntpd started (10.0.2.2)'
fi
boot "$W/console2.log"
grep 'edgeimg:\|k0s-stand-in\|run-cmd\|boot-cmd' "$W/console2.log" || true
expect "$W/console2.log" 'edgeimg: data: ext4 /dev/vda3 checked'
expect "$W/console2.log" 'edgeimg: run_cmd: already run'
expect "$W/console2.log" 'edgeimg: token: present in /var/lib/k0s/join-token'
expect "$W/console2.log" 'edgeimg: ready role=worker'
if MTOOLS_SKIP_CHECK=1 mdir -i "$D@@1M" ::/edgeimg/token >/dev/null 2>&1; then
	echo "token still on the boot partition"
	FAILS=$((FAILS + 1))
fi
sfdisk -d "$D" | grep -q "uuid=$P3" || FAILS=$((FAILS + 1))
echo "failures: $FAILS (logs in $W)"
[ "$FAILS" -eq 0 ]

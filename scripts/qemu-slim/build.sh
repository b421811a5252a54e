#!/usr/bin/env bash
# Build a QEMU for this node's x86_64 guests with only what they use, from the source of the
# very Debian package the node runs (same version, same patches, same compiler flags): the
# devices in devices.mak, TCG (and KVM), user-mode networking and seccomp, nothing else (no
# display, audio, USB, block protocols, TLS or capstone). Debian's binary links 51 libraries and
# maps ~27 MiB of code into every QEMU; this one links 12. `UKEDGE_QEMU=<dest>/bin/qemu-system-x86_64`
# makes a node use it (docs/operations.md); bench/boot.py and bench/density.py measure it beside
# Debian's when it is there.
#
# Usage: scripts/qemu-slim/build.sh DEST   (make qemu-slim: DEST is the ukedge cache's qemu-slim)
# Idempotent: a DEST built from the installed package's version is left alone.
set -euo pipefail
dest=${1:?usage: build.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86)
if [ "$(cat "$dest/version" 2>/dev/null)" = "$version" ] && [ -x "$dest/bin/qemu-system-x86_64" ]; then
	echo "slim QEMU $version already at $dest"
	exit 0
fi

# Debian's source packages: the node's own package sources, as deb-src, when none are listed.
# (Process substitution, not a pipe: grep -q stops reading early, and under pipefail the
# writer's SIGPIPE would read as "not listed".)
if ! grep -qxF "Version: $version" <(apt-cache showsrc qemu 2>/dev/null); then
	echo "adding deb-src entries for the node's package sources"
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		case $f in */ukedge-src.sources) continue ;; esac
		sed -n 's/^Types: *deb$/Types: deb-src/; p' "$f"
		echo
	done > /etc/apt/sources.list.d/ukedge-src.sources.tmp
	mv /etc/apt/sources.list.d/ukedge-src.sources.tmp /etc/apt/sources.list.d/ukedge-src.sources
	if [ -e /etc/apt/sources.list ]; then
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/ukedge-src.list
	fi
	apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	dpkg-dev ninja-build meson pkg-config libglib2.0-dev libpixman-1-dev libslirp-dev \
	libseccomp-dev libfdt-dev zlib1g-dev >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/ukedge-qemu-slim.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# Unpacks and applies Debian's patches (the stable releases up to the package's version).
apt-get source -qq "qemu=$version" >/dev/null 2>&1
src=$(find . -maxdepth 1 -type d -name 'qemu-*' | head -n1)
cp "$here/devices.mak" "$src/configs/devices/x86_64-softmmu/ukedge.mak"
mkdir "$src/b"
cd "$src/b"
# Debian's flags, so that TCG's speed compares; --firmwarepath finds Debian's qboot and option
# ROMs (the binary is relocatable: its share/qemu is linked to them below as well).
../configure --prefix=/usr --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
	--extra-cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" \
	--extra-ldflags="$(dpkg-buildflags --get LDFLAGS) -Wl,--as-needed" \
	--with-pkgversion="ukedge slim build of Debian $version" \
	--target-list=x86_64-softmmu --disable-user --disable-docs \
	--without-default-features --without-default-devices --with-devices-x86_64=ukedge \
	--enable-tcg --enable-kvm --enable-slirp --enable-seccomp --enable-fdt=system \
	--enable-malloc-trim --enable-attr --enable-avx2 --enable-coroutine-pool \
	--audio-drv-list="" >configure.log 2>&1 || { tail -30 configure.log; exit 1; }
make -j"$(nproc)" qemu-system-x86_64 >build.log 2>&1 || { tail -30 build.log; exit 1; }

# Written beside DEST and renamed into place: an interrupted build leaves no half a QEMU.
rm -rf "$dest.new"
mkdir -p "$dest.new/bin" "$dest.new/share"
strip -o "$dest.new/bin/qemu-system-x86_64" qemu-system-x86_64
ln -s /usr/share/qemu "$dest.new/share/qemu"
# The node's other architecture (emulated arm64 guests) runs Debian's binary: the backend looks
# for it beside this one.
for other in /usr/bin/qemu-system-aarch64; do
	[ -x "$other" ] && ln -s "$other" "$dest.new/bin/"
done
echo "$version" > "$dest.new/version"
rm -rf "$dest"
mv "$dest.new" "$dest"
echo "slim QEMU $version: $dest/bin/qemu-system-x86_64 ($(du -h "$dest/bin/qemu-system-x86_64" | cut -f1), $(ldd "$dest/bin/qemu-system-x86_64" | wc -l) libraries)"

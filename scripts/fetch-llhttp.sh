#!/usr/bin/env bash
# Fetch llhttp's C sources from the httptools sdist on PyPI (the same llhttp the
# Python twin runs through httptools), verify the archive hash, and build a static
# library into build/deps/llhttp. Nothing of llhttp is ever committed to the repo.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
ver=0.9.0                                  # httptools 0.9.0 vendors llhttp 9.4.3
sha=d484ebb7e3a3f3597b0f645fbd1b85633674ca808c1f5ba11c2caf7c66f5c8b6
out="$top/build/deps/llhttp"
[ -f "$out/lib/libllhttp.a" ] && [ -f "$out/.sha" ] && [ "$(cat "$out/.sha")" = "$sha" ] && exit 0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pip="$top/.venv/bin/pip"; [ -x "$pip" ] || pip="python3 -m pip"
$pip download --quiet --no-deps --no-binary :all: "httptools==$ver" -d "$tmp"
echo "$sha  $tmp/httptools-$ver.tar.gz" | sha256sum -c --quiet -
tar -xzf "$tmp/httptools-$ver.tar.gz" -C "$tmp"
src="$tmp/httptools-$ver/vendor/llhttp"
rm -rf "$out"; mkdir -p "$out/include" "$out/lib" "$out/src"
cp "$src/include/llhttp.h" "$out/include/"
cp "$src"/src/*.c "$out/src/"
cp "$src/LICENSE-MIT" "$out/" 2>/dev/null || true
for f in api http llhttp; do
  ${CC:-cc} -O2 -fPIC -I"$out/include" -c "$out/src/$f.c" -o "$out/src/$f.o"
done
ar rcs "$out/lib/libllhttp.a" "$out"/src/*.o
# An ASan/UBSan build of the parser too, so `make asan` instruments it as well.
for f in api http llhttp; do
  ${CC:-cc} -O1 -g -fPIC -fsanitize=address,undefined -I"$out/include" -c "$out/src/$f.c" -o "$out/src/$f.asan.o"
done
ar rcs "$out/lib/libllhttp-asan.a" "$out"/src/*.asan.o
echo "$sha" > "$out/.sha"
echo "llhttp $(grep -E 'LLHTTP_VERSION_(MAJOR|MINOR|PATCH)' "$out/include/llhttp.h" | awk '{printf "%s.", $3}' | sed 's/\.$//') ready in $out"

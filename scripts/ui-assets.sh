#!/usr/bin/env bash
# ui-assets.sh refreshes the browser libraries that sbuml ui embeds
# (ui/web/static/vendor) from npm, at the versions pinned below, with their
# licence files. The result is checked in: building sbuml needs no npm.
#
# xterm.js ships a minified ES module; noVNC ships sources only, so its RFB
# client (core/rfb.js and what it imports, pako included) is bundled into
# one minified ES module with esbuild.
set -euo pipefail

XTERM=6.0.0
XTERM_FIT=0.11.0
NOVNC=1.7.0
ESBUILD=0.28.2

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/ui/web/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent --save-exact \
	"@xterm/xterm@$XTERM" "@xterm/addon-fit@$XTERM_FIT" "@novnc/novnc@$NOVNC" "esbuild@$ESBUILD"
nm=$work/node_modules

rm -rf "$out"
mkdir -p "$out/xterm" "$out/novnc"
cp "$nm/@xterm/xterm/lib/xterm.mjs" "$nm/@xterm/xterm/css/xterm.css" "$out/xterm/"
cp "$nm/@xterm/xterm/LICENSE" "$out/xterm/LICENSE"
cp "$nm/@xterm/addon-fit/lib/addon-fit.mjs" "$out/xterm/"
cp "$nm/@xterm/addon-fit/LICENSE" "$out/xterm/LICENSE.addon-fit"
# The source maps the modules name are not shipped.
sed -i '/^\/\/# sourceMappingURL=/d' "$out/xterm/xterm.mjs" "$out/xterm/addon-fit.mjs"

"$nm/.bin/esbuild" "$nm/@novnc/novnc/core/rfb.js" --bundle --minify --format=esm \
	--target=es2022 --legal-comments=none --log-level=warning --outfile="$out/novnc/rfb.min.mjs"
cp "$nm/@novnc/novnc/LICENSE.txt" "$out/novnc/LICENSE.txt"
cp "$nm/@novnc/novnc/AUTHORS" "$out/novnc/AUTHORS"
cp "$nm/@novnc/novnc/docs/LICENSE.MPL-2.0" "$out/novnc/LICENSE.MPL-2.0"
cp "$nm/@novnc/novnc/vendor/pako/LICENSE" "$out/novnc/LICENSE.pako"

cat >"$out/VERSIONS" <<END
# Written by scripts/ui-assets.sh: the npm packages vendored here.
@xterm/xterm $XTERM (MIT): xterm/xterm.mjs, xterm/xterm.css
@xterm/addon-fit $XTERM_FIT (MIT): xterm/addon-fit.mjs
@novnc/novnc $NOVNC (MPL-2.0; pako MIT): novnc/rfb.min.mjs, bundled and minified by esbuild $ESBUILD
END
du -sh "$out"

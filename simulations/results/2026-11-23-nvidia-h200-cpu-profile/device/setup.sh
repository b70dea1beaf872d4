#!/bin/bash
# On the device: unpack what this call carried (.devA or .devB) into the image's Python and /tmp/data.
set -e
SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
BIN=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")
mkdir -p /tmp/data/retina /tmp/data/polyp /tmp/res
for pack in .devA .devB; do
  [ -d $pack ] || continue
  for t in $pack/*.tar.xz; do tar -C "$SP" -xJf "$t"; echo "unpacked $t"; done
  cp -r $pack/retina/* /tmp/data/retina/
  [ -d $pack/prior-retina ] && cp -r $pack/prior-retina /tmp/data/
done
python3 .devrun/scripts.py "$SP" "$BIN"
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r fedseg sites server simulations pyproject.toml README.md /tmp/repo/ && cp -r .flwr /tmp/repo/ 2>/dev/null || true
echo /tmp/repo > "$SP/fedseg-repo.pth"
printf '#!%s\nimport sys\nfrom fedseg.cli import main\nsys.exit(main())\n' "$BIN/python3" > "$BIN/fedseg" && chmod +x "$BIN/fedseg"
ls /tmp/data/retina; du -sh /tmp/data; echo "site: $SP bin: $BIN"

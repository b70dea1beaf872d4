"""Console scripts for the packages unpacked into site-packages (what pip would write): scripts.py SP BIN."""
import configparser
import sys
from pathlib import Path

site, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
for entry_points in site.glob("*.dist-info/entry_points.txt"):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(entry_points)
    if not parser.has_section("console_scripts"):
        continue
    for name, target in parser.items("console_scripts"):
        module, _, attr = target.strip().partition(":")
        head = attr.split(".")[0]
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {head}\n"
            f"if __name__ == '__main__':\n    sys.exit({attr}())\n"
        )
        script.chmod(0o755)
print("scripts written")

"""Rewrite README.md's parameter table from the node's schema (`python3 tools/readme_params.py`,
after `. install/setup.sh`); test/test_launch.py checks that README holds exactly this table."""
from pathlib import Path

from emodan_ros.ros.params import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
HEAD = "| parameter | default | run-time | range / choices | meaning |"

text = README.read_text()
start = text.index(HEAD)
end = text.index("\n\n", start)
README.write_text(text[:start] + markdown_table() + text[end:])
print(f"README.md: parameter table rewritten ({markdown_table().count(chr(10)) - 1} parameters)")

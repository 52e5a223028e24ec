"The README's library quick start must run as written."

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_python_blocks():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_quick_start_runs(tmp_path, monkeypatch):
    blocks = readme_python_blocks()
    assert blocks, "README has no ```python block"
    monkeypatch.chdir(tmp_path)  # the block writes adapted.smn in the working directory
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "adapted.smn").stat().st_size > 0

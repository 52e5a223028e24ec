"""Wrap the `__all__` lists nbdev writes within 120 columns (it wraps at 120 *after* the `__all__ = ` prefix)."""

import ast, re, sys, textwrap
from pathlib import Path

for f in sorted(Path(sys.argv[1] if len(sys.argv) > 1 else "smn_nb").glob("*.py")):
    src = f.read_text()
    m = re.search(r"^__all__ = (\[.*?\])$", src, re.S | re.M)
    if m is None:
        continue
    names = ast.literal_eval(m.group(1))
    wrapped = textwrap.fill(str(names), 120, initial_indent="__all__ = ", subsequent_indent=" " * 11)
    wrapped = wrapped.replace("__all__ = ", "", 1)  # `fill` counts the prefix; it stays in `src`
    if wrapped != m.group(1):
        f.write_text(src[: m.start(1)] + wrapped + src[m.end(1) :])

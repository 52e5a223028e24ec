"""Golden test: a fixed set of stored records renders to exactly the stored Markdown and LaTeX tables.

The records in tests/golden/records/ are real: five digits runs of the mini profile (kNN, LP, M, FFT, SMN; seed 0), made
with `run_experiment` and kept as their result.json alone. A change to how records are read, matched to cells or
rendered that moves a published number fails here. When a change is meant to alter the tables, regenerate them and
review the diff:

    python tests/test_report_golden.py --update

The committed mini-paper is held the same way: figures/mini/tables must be what figures/mini/records.jsonl.gz (its runs'
records, written by the report) renders to; the README's report command writes both.
"""

import re
import sys
from pathlib import Path

from smn_nb.records import RECORDS_ARCHIVE, load_results
from smn_nb.report import report_tables, write_tables

GOLDEN = Path(__file__).resolve().parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "figures" / "mini"  # the committed mini-paper


def render(out: Path) -> list[Path]:
    "Every table of the mini profile from the stored records, as `write_tables` writes them under `out`."
    write_tables(report_tables(load_results(GOLDEN / "records"), "mini"), out)
    return sorted((out / "tables").iterdir())


def test_stored_records_render_to_the_stored_tables(tmp_path):
    got = render(tmp_path)
    want = sorted((GOLDEN / "tables").iterdir())
    assert [p.name for p in got] == [p.name for p in want]
    for g, w in zip(got, want):
        assert g.read_text() == w.read_text(), f"{w.name} changed: regenerate with --update if that is intended"


def test_the_stored_records_fill_cells():
    "The golden tables are not all 'missing': the five runs' numbers appear in Table 1 as recorded."
    table1 = (GOLDEN / "tables" / "published__table1.md").read_text()
    recs = load_results(GOLDEN / "records")
    assert sorted(recs.method) == ["FFT", "M", "SMN", "knn", "lp"]  # the fixtures are there (git keeps them)
    for rec in recs.itertuples():
        if rec.method in ("knn", "lp", "M", "FFT"):
            assert f"{rec.test_acc:.3f}" in table1, (rec.method, rec.test_acc)


def test_the_committed_mini_paper_renders_from_its_records(tmp_path):
    "figures/mini/tables are exactly what the records archive beside them renders to: no number drifts from its runs."
    recs = load_results(MINI / RECORDS_ARCHIVE)
    assert len(recs) > 100 and set(recs.model) == {"resnet-fmnist", "resnet-fmnist-swav"}
    write_tables(report_tables(recs, "mini"), tmp_path)
    got, want = sorted((tmp_path / "tables").iterdir()), sorted((MINI / "tables").iterdir())
    assert [p.name for p in got] == [p.name for p in want]
    for g, w in zip(got, want):
        assert g.read_text() == w.read_text(), f"figures/mini/tables/{w.name} is not what its records render to"


def test_the_readme_quotes_the_committed_mini_paper():
    "Every number in the README's mini-paper headline is one REPORT.md prints, sign and all."
    block = re.search(r"<!-- mini-headline.*?-->(.*?)<!-- /mini-headline -->", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no <!-- mini-headline --> block"
    nums = re.findall(r"[+-]?\d[\d,]*\.\d+", block.group(1))
    assert len(nums) >= 20, nums
    report = (MINI / "REPORT.md").read_text()
    missing = [n for n in nums if n not in report]
    assert not missing, f"README quotes numbers that figures/mini/REPORT.md does not print: {missing}"


if __name__ == "__main__" and "--update" in sys.argv:
    for p in render(GOLDEN):
        print("wrote", p.relative_to(GOLDEN.parent.parent))

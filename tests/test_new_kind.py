"""A new corruption kind touches 3 files (issue 24): how it draws its masks (ambient/corruption.py),
which family it belongs to (ambient/layout.py, MASKED_KINDS) and the config schema's kind enums.

The test adds a throwaway masked kind, `rows` (whole pixel rows erased with probability p, the
further corruption erasing rows with probability delta), to a copy of the workflow and its library,
checks that nothing else changed, and that the copy plans, trains and samples it: the loss, the
delta and the run name all follow from the layout, with no fourth file. If a fourth place ever
has to learn the kind, this test fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import yaml
from conftest import TINY_NET_ARGS, run_cli
from test_layout_branches import changed_files, copy_workflow_and_library, snakemake

from ambient.data import MANIFEST

# (file, text in it, the text it becomes): the whole change
ROWS_KIND = (
    (
        "ambient/corruption.py",
        '        if self.kind == "box":\n            return self._box_mask(resolution, *self._box(g, resolution))\n',
        '        if self.kind == "box":\n            return self._box_mask(resolution, *self._box(g, resolution))\n'
        '        if self.kind == "rows":\n'
        "            rows = torch.rand(1, resolution, 1, generator=g) >= self.p\n"
        "            return rows.float().expand(1, resolution, resolution).clone()\n",
    ),
    (
        "ambient/corruption.py",
        '        if self.kind != "box":\n            return torch.ones(1, resolution, resolution)\n',
        '        if self.kind == "rows" and self.delta > 0:\n'
        "            rows = torch.rand(1, resolution, 1, generator=g) >= self.delta\n"
        "            return rows.float().expand(1, resolution, resolution).clone()\n"
        '        if self.kind != "box":\n            return torch.ones(1, resolution, resolution)\n',
    ),
    ("ambient/layout.py", 'MASKED_KINDS = ("dust", "box")', 'MASKED_KINDS = ("dust", "box", "rows")'),
    (
        "workflow/schemas/config.schema.yaml",
        "enum: [clean, dust, box, noise, gauss]",
        "enum: [clean, dust, box, rows, noise, gauss]",
    ),
    ("workflow/schemas/config.schema.yaml", "kind: {enum: [dust, box]}", "kind: {enum: [dust, box, rows]}"),
)


def add_rows_kind(wd):
    for name, old, new in ROWS_KIND:
        path = wd / name
        text = path.read_text()
        assert text.count(old) == 1, f"{name}: the text the kind is added after moved; update ROWS_KIND"
        path.write_text(text.replace(old, new))


def test_a_new_corruption_kind_is_three_files(tmp_path, tiny_dataset):
    wd = copy_workflow_and_library(tmp_path / "wf")
    add_rows_kind(wd)
    assert changed_files(wd) == {"ambient/corruption.py", "ambient/layout.py", "workflow/schemas/config.schema.yaml"}

    # the workflow plans it: a train job with the ambient loss and its delta, a naive twin with edm
    (wd / "rows.yaml").write_text(
        yaml.safe_dump(
            {
                "corruptions": [
                    {"kind": "clean"},
                    {"kind": "rows", "p": 0.3, "delta": 0.1},
                    {"kind": "rows", "p": 0.3, "loss": "edm"},
                ]
            }
        )
    )
    out = snakemake(wd, "-n", "--forceall", "--cores", "1", "-p", "models", "--configfile", "rows.yaml")
    assert "--corruption rows-p0.30 --delta 0.1 --settings " in out, out[-3000:]
    assert "--corruption rows-p0.30 --delta 0.0 --loss edm --settings " in out
    assert "results/models/faces16/rows-p0.30-naive/model.pt" in out

    # the library trains and samples it (a few steps): its masks erase whole rows, about p of them
    run = tmp_path / "rows"
    train = ["train", "--dataset", tiny_dataset, "--corruption", "rows-p0.30", "--delta", 0.1, "--steps", 3]
    r = run_cli([*train, "--batch-size", 4, *TINY_NET_ARGS, "--device", "cpu", "--run-dir", run, "--quiet"], cwd=wd)
    assert r.returncode == 0, r.stderr
    r = run_cli(
        ["sample", "--checkpoint", run / "model.pt", "--num", 4, "--steps", 3, "--out", run / "s.zip", "--quiet"],
        cwd=wd,
    )
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(run / "s.zip") as zf:
        manifest = json.loads(zf.read(MANIFEST))
    assert manifest["corruption"] == "rows-p0.30" and manifest["loss"] == "ambient", manifest
    probe = (
        "from ambient.corruption import Corruption\n"
        "c = Corruption.from_name('rows-p0.30', delta=0.1)\n"
        "a = [c.observation_mask(i, 64) for i in range(50)]\n"
        "print(all(bool((m == m[:, :, :1]).all()) for m in a), 1 - sum(float(m.mean()) for m in a) / 50)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], cwd=wd, capture_output=True, text=True, timeout=120)
    rows_only, erased = r.stdout.split()
    assert r.returncode == 0 and rows_only == "True" and abs(float(erased) - 0.3) < 0.05, r.stdout + r.stderr

"""Real smear fields: the heads table read as field truth, and folds over fields that never share one."""

from __future__ import annotations

from pathlib import Path

import pytest

from sperm_edge.data.smears import field_folds, fields_of_fold, is_smear_folder, load_smears
from sperm_edge.errors import SpermEdgeError
from tests.conftest import SHARED_DATA

SMEARS = SHARED_DATA / "smears"
needs_smears = pytest.mark.skipif(not is_smear_folder(SMEARS), reason=f"real smear fields not found at {SMEARS}")


@needs_smears
def test_the_real_fields_load_with_every_head_and_its_edge_flag() -> None:
    fields = load_smears(SMEARS)
    assert len(fields) == 512
    assert sum(len(f.cells) for f in fields) == 3154
    assert sum(f.heads for f in fields) == sum(not c["partial"] for f in fields for c in f.cells) > 3000
    first = fields[0]
    assert first.path.is_file() and first.truth()["cells"][0]["box"][2] > first.truth()["cells"][0]["box"][0]


@needs_smears
def test_folds_split_the_fields_evenly_and_never_share_one() -> None:
    fields = load_smears(SMEARS)
    folds = field_folds(fields)
    assert sorted(set(folds.values())) == [1, 2, 3, 4]
    held = {f.name for f in fields_of_fold(fields, 2)}
    rest = {f.name for f in fields_of_fold(fields, 2, held_out=False)}
    assert len(held) == 128 and not held & rest and len(held | rest) == 512
    assert field_folds(fields) == folds  # seeded: the same every time


def test_a_folder_without_its_heads_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(SpermEdgeError, match="heads.csv"):
        load_smears(tmp_path)
    (tmp_path / "heads.csv").write_text("image,what\nx.jpg,1\n")
    with pytest.raises(SpermEdgeError, match="not a heads table"):
        load_smears(tmp_path)
    with pytest.raises(SpermEdgeError, match="2 or more"):
        field_folds([], folds=1)


def test_train_verifier_refuses_a_fields_folder_that_is_not_one_and_a_fold_without_fields(
    tmp_path: Path, capsys
) -> None:
    from tests.conftest import run_cli

    (tmp_path / "sets").mkdir()
    args = ["train-verifier", "--data", str(tmp_path / "sets"), "--out", str(tmp_path / "v")]
    assert run_cli([*args, "--fields", str(tmp_path)]) != 0
    assert "not a smear-field folder" in capsys.readouterr().err
    assert run_cli([*args, "--field-fold", "2"]) != 0
    assert "needs smear fields" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()  # nothing written

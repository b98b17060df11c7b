"""Writing one session's derivatives: images, sidecars, lesion table, transforms, atomicity."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_outputs_fakes import ITK_IDENTITY, MODEL_CARD, SHA, ball, fake, make_session  # noqa: F401

from bids_mdpp.errors import ModelError, OutputError
from bids_mdpp.imageio import remove_stale_temporaries
from bids_mdpp.lesions import COLUMNS
from bids_mdpp.outputs import derivative_paths, session_is_done, write_session_outputs

PROVENANCE = {"Sources", "SpatialReference", "ModalityCode", "ModelContrasts", "ContrastsUsed",
              "ContrastsMissing", "ContrastsIgnored", "ReferenceContrast", "Model"}
MASK_KEYS = PROVENANCE | {"Type", "Description", "Threshold", "MinimumLesionSize", "Connectivity",
                          "LesionCount", "TotalLesionVolume", "QC"}


def write(session, out, **kwargs):
    options = {"model_card": MODEL_CARD, "model_sha256": SHA, **kwargs}
    return write_session_outputs(out, session.inputs, session.preproc, session.prob, **options)


def test_mask_sidecar_holds_the_contract_keys(fake, tmp_path):
    result = write(fake, tmp_path / "out", qc={"RegistrationCost": {"T1w": -0.5}})
    sidecar = json.loads(result.paths["mask_json"].read_text())
    assert set(sidecar) == MASK_KEYS
    assert sidecar["Type"] == "Lesion"
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz",
                                  "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"]
    assert sidecar["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"
    assert sidecar["ModalityCode"] == "11000"
    assert sidecar["ModelContrasts"] == MODEL_CARD["contrasts"]
    assert sidecar["ContrastsUsed"] == ["T1w", "FLAIR"]
    assert sidecar["ContrastsMissing"] == ["T2w", "PDw", "ceT1w"]
    assert sidecar["ContrastsIgnored"] == []
    assert sidecar["ReferenceContrast"] == "FLAIR"
    assert sidecar["Threshold"] == 0.5 and sidecar["MinimumLesionSize"] == 0.0
    assert sidecar["Connectivity"] == 26
    assert sidecar["LesionCount"] == 2
    n_voxels = ball((32,) * 3, (10, 12, 14), 2).sum() + ball((32,) * 3, (22, 20, 16), 3).sum()
    assert sidecar["TotalLesionVolume"] == pytest.approx(float(n_voxels))
    assert sidecar["Model"] == {"Name": "tiny", "Version": "1.2.3", "Mode": "moddrop++", "SHA256": SHA}
    assert sidecar["QC"] == {"EmptyMask": False, "RegistrationCost": {"T1w": -0.5}}
    assert result.summary == sidecar


def test_how_the_network_ran_is_in_both_sidecars(fake, tmp_path):
    settings = {"Precision": "bf16", "TestTimeAugmentation": ["left-right flip"]}
    result = write(fake, tmp_path / "out", inference=settings)
    for key in ("mask_json", "probseg_json"):
        assert json.loads(result.paths[key].read_text())["Inference"] == settings


def test_probseg_sidecar_has_provenance_but_no_counts(fake, tmp_path):
    result = write(fake, tmp_path / "out")
    sidecar = json.loads(result.paths["probseg_json"].read_text())
    assert set(sidecar) == PROVENANCE | {"Description"}
    assert sidecar["ModalityCode"] == "11000"


def test_images_are_on_the_reference_grid_with_the_right_types(fake, tmp_path):
    result = write(fake, tmp_path / "out")
    reference = nib.load(fake.preproc.reference_native)
    mask, prob = nib.load(result.mask), nib.load(result.probseg)
    for img in (mask, prob):
        assert img.shape == reference.shape
        assert np.allclose(img.affine, reference.affine)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
    assert prob.get_data_dtype() == np.float32
    data = np.asarray(prob.dataobj)
    assert data.min() >= 0 and data.max() <= 1
    assert np.allclose(data, np.asarray(fake.prob.dataobj))


def test_stats_table_and_its_data_dictionary(fake, tmp_path):
    result = write(fake, tmp_path / "out")
    lines = result.stats.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    rows = [dict(zip(COLUMNS, line.split("\t"))) for line in lines[1:]]
    assert len(rows) == result.summary["LesionCount"] == 2
    assert rows[0]["n_voxels"] == "123" and rows[1]["n_voxels"] == "33"  # largest first
    total = sum(float(r["volume_mm3"]) for r in rows)
    assert total == pytest.approx(result.summary["TotalLesionVolume"])
    # ball centred on voxel (22, 20, 16) of a grid whose origin is at -16 mm
    assert [float(rows[0][f"centroid_{a}_mm"]) for a in "xyz"] == pytest.approx([6.0, 4.0, 0.0])
    dictionary = json.loads(result.paths["stats_json"].read_text())
    assert list(dictionary) == list(COLUMNS)
    assert dictionary["volume_mm3"]["Units"] == "mm^3"


def test_transforms_are_copied_with_bids_names(fake, tmp_path):
    result = write(fake, tmp_path / "out")
    assert list(result.xfms) == ["T1w"]
    assert result.xfms["T1w"].name == "sub-01_from-T1w_to-FLAIR_mode-image_xfm.txt"
    assert result.xfms["T1w"].read_text() == ITK_IDENTITY


def test_threshold_and_minimum_size(tmp_path):
    session = make_session(tmp_path)
    result = write(session, tmp_path / "out", min_lesion_mm3=50.0)
    assert result.summary["LesionCount"] == 1 and result.summary["MinimumLesionSize"] == 50.0
    assert np.asarray(nib.load(result.mask).dataobj).sum() == 123
    result = write(session, tmp_path / "out2", threshold=0.95)
    assert result.summary["LesionCount"] == 0 and result.summary["QC"]["EmptyMask"] is True
    assert result.stats.read_text() == "\t".join(COLUMNS) + "\n"


def test_contrasts_the_model_does_not_know_are_listed_as_ignored(tmp_path):
    session = make_session(tmp_path, names={"FLAIR": "FLAIR", "T1w": "T1w", "PDw": "PDw"})
    card = {**MODEL_CARD, "contrasts": ["T1w", "FLAIR", "T2w"]}
    preproc = replace(session.preproc, images={c: session.inputs.files[c] for c in ("T1w", "FLAIR")})
    result = write_session_outputs(tmp_path / "out", session.inputs, preproc, session.prob,
                                   model_card=card, model_sha256=SHA)
    assert result.summary["ContrastsIgnored"] == ["PDw"]
    assert result.summary["ModalityCode"] == "110"
    assert result.summary["ContrastsMissing"] == ["T2w"]


def test_a_model_card_dataclass_is_accepted(fake, tmp_path):
    @dataclass(frozen=True)
    class Card:
        name: str
        version: str
        mode: str
        contrasts: tuple

    result = write(fake, tmp_path / "out", model_card=Card("c", "9", "moddrop", ("FLAIR", "T1w")))
    assert result.summary["ModalityCode"] == "11"
    assert result.summary["Model"]["Mode"] == "moddrop"


def test_a_model_card_without_contrasts_is_a_model_error(fake, tmp_path):
    with pytest.raises(ModelError, match="does not list the contrasts"):
        write(fake, tmp_path / "out", model_card={"name": "x"})


def test_reference_with_unset_sform_keeps_its_affine(tmp_path):
    session = make_session(tmp_path)
    img = nib.load(session.preproc.reference_native)
    img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(None, code=0)  # as many scanners write it: the qform alone holds the affine
    nib.save(img, session.preproc.reference_native)
    result = write(session, tmp_path / "out")
    assert np.allclose(nib.load(result.mask).affine, img.affine)


def test_probability_off_the_reference_grid_or_not_finite_is_refused(fake, tmp_path):
    shifted = nib.Nifti1Image(np.asarray(fake.prob.dataobj), fake.prob.affine + np.eye(4) * 0.5)
    with pytest.raises(ValueError, match="not on the native grid of .*sub-01_FLAIR.nii.gz"):
        write_session_outputs(tmp_path / "o", fake.inputs, fake.preproc, shifted,
                              model_card=MODEL_CARD, model_sha256=SHA)
    data = np.asarray(fake.prob.dataobj).copy()
    data[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_session_outputs(tmp_path / "o", fake.inputs, fake.preproc,
                              nib.Nifti1Image(data, fake.prob.affine), model_card=MODEL_CARD,
                              model_sha256=SHA)


def test_session_is_done_only_when_every_core_file_exists(fake, tmp_path):
    out = tmp_path / "out"
    assert not session_is_done(out, fake.inputs, "FLAIR")
    result = write(fake, out)
    assert session_is_done(out, fake.inputs, "FLAIR")
    result.paths["stats_json"].unlink()
    assert not session_is_done(out, fake.inputs, "FLAIR")


def test_a_failure_mid_write_leaves_no_file(fake, tmp_path, monkeypatch):
    def full_disk(img, filename):
        Path(filename).write_bytes(b"\x00" * 1000)  # part of the image reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", full_disk)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="no space left") as err:
        write(fake, out)
    assert err.value.exit_code == 74
    anat = out / "sub-01" / "anat"
    leftovers = sorted(p.name for p in anat.iterdir() if p.name.endswith(".nii.gz"))
    assert leftovers == []  # neither a final-named image nor a temporary one
    assert not session_is_done(out, fake.inputs, "FLAIR")


KILLED_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np, nibabel as nib
    sys.path.insert(0, {tests!r})
    from test_outputs_fakes import MODEL_CARD, SHA, make_session
    from bids_mdpp.outputs import write_session_outputs
    root = Path({root!r})
    shape = (224, 224, 224)
    session = make_session(root, shape=shape, qc=False, lesions=(((100, 100, 100), 5.0),),
                           prob_data=np.random.default_rng(0).random(shape, dtype=np.float32),
                           extension=".nii")
    print("ready", flush=True)
    write_session_outputs(root / "out", session.inputs, session.preproc, session.prob,
                          model_card=MODEL_CARD, model_sha256=SHA)
    print("finished", flush=True)
""")


def test_killed_while_writing_leaves_no_final_named_partial_file(tmp_path):
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    anat = tmp_path / "out" / "sub-01" / "anat"
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    temporary = []
    while time.monotonic() < deadline and not temporary:
        temporary = [p for p in anat.glob(".*probseg*")] if anat.is_dir() else []
        time.sleep(0.01)
    assert temporary, "the writer never started the probability map"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    paths = derivative_paths(tmp_path / "out", make_session(tmp_path / "x").inputs, "FLAIR")
    assert not paths["probseg"].exists() and not paths["mask"].exists()
    assert not session_is_done(tmp_path / "out", make_session(tmp_path / "x").inputs, "FLAIR")
    assert remove_stale_temporaries(tmp_path / "out") >= 1
    assert not list(anat.glob(".*"))

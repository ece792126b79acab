"""evaluate_chunked(): chunks of a caller's folder (the CIFAR-10-5k campaign's use: not keyed, kept) are
named by official image index, checked before reuse, equal to one uninterrupted evaluate(), and only its own
files are removed. (verify's use, a keyed folder removed after a complete run, is tests/test_publish.py's.)"""

import json

import torch

import cure_zoo.evaluation as evaluation
from cure_zoo.evaluation import evaluate, evaluate_chunked
from cure_zoo.io import checked_sidecar
from tests.tiny_models import save_run_dir

QUIET = dict(progress=False, log=lambda message: None)


def test_kept_chunks_are_named_by_image_index_reused_and_equal_one_evaluation(tmp_path, cifar10_test, monkeypatch):
    run = save_run_dir(tmp_path / "run")
    images = cifar10_test.slice(4, 12)
    folder = tmp_path / "chunks"
    kwargs = dict(state_dir=folder, keyed=False, keep=True, chunk_size=4, batch_size=4, device="cpu", **QUIET)
    merged = evaluate_chunked(str(run), images, "nat,pgd20", chunk_name="c_{start:03d}_{stop:03d}.json", **kwargs)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["c_004_008.json", "c_004_008.json.sha256", "c_008_012.json", "c_008_012.json.sha256"]
    whole = evaluate(str(run), images, "nat,pgd20", batch_size=4, device="cpu", progress=False)
    assert all(torch.equal(merged.masks[k], whole.masks[k]) for k in whole.masks) and merged.indices == whole.indices
    assert merged.protocol["chunks"] == [4, 4]
    made_from = json.loads(json.loads(checked_sidecar(folder / "c_008_012.json").read_text())["made_from"])
    assert made_from["indices"] == [[8, 12]] and "norm" not in made_from  # L-inf: the keys verify had before

    calls, real = [], evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda m, chunk, *a, **k: calls.append(chunk.indices.tolist()) or real(
        m, chunk, *a, **k))  # fmt: skip
    (folder / "c_004_008.json").write_text((folder / "c_004_008.json").read_text().replace('"nat"', '"nat" ', 1))
    again = evaluate_chunked(str(run), images, "nat,pgd20", chunk_name="c_{start:03d}_{stop:03d}.json", **kwargs)
    assert calls == [[4, 5, 6, 7]]  # the changed chunk measured again, the intact one reused
    assert again.n_examples == 8 and (folder / "c_008_012.json").is_file()


def test_not_kept_chunks_in_a_callers_folder_leave_its_other_files(tmp_path, cifar10_test):
    run = save_run_dir(tmp_path / "run")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    evaluate_chunked(str(run), cifar10_test.take(8), ["nat"], state_dir=folder, keyed=False, chunk_size=4,
                     batch_size=4, device="cpu", **QUIET)  # fmt: skip
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]

"""``crossent eval``: results equal torch on files the test writes, in every format and chunking;
each kind of bad input is one line on stderr with exit code 2."""

from __future__ import annotations

import builtins
import errno
import json
import os
import pickle
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

N, C = 203, 7
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, C, (N,), generator=generator)
    logits = 2 * torch.randn(N, C, generator=generator, dtype=torch.float64)
    logits[torch.arange(N), labels] += 1.0  # better than chance, so accuracy and calibration mean something
    return logits, labels


def _expected_ece(probabilities: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    """Expected calibration error written out plainly, bin by bin."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    ece = 0.0
    for b in range(bins):
        upper_closed = b == bins - 1
        inside = (confidence >= b / bins) & ((confidence <= 1) if upper_closed else (confidence < (b + 1) / bins))
        if inside.any():
            ece += inside.double().mean().item() * abs(correct[inside].mean().item() - confidence[inside].mean().item())
    return ece


def _check_multiclass(
    result: dict, logits: torch.Tensor, labels: torch.Tensor, topk: list[int], bins: int = 15
) -> None:
    probabilities = torch.softmax(logits, dim=1)
    assert result["task"] == "multiclass"
    assert result["samples"] == len(labels) and result["classes"] == logits.shape[1]
    expected_ce = F.cross_entropy(logits, labels).item()
    assert result["cross_entropy"] == pytest.approx(expected_ce, rel=1e-12)
    assert result["perplexity"] == pytest.approx(np.exp(expected_ce), rel=1e-12)
    predicted = logits.argmax(dim=1)
    assert result["accuracy"] == (predicted == labels).double().mean().item()
    for k in topk:
        hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).double().mean().item()
        assert result["top_k_accuracy"][str(k)] == hits
    assert result["ece"] == pytest.approx(_expected_ece(probabilities, labels, bins), rel=1e-9, abs=1e-12)
    for entry in result["per_class"]:
        mine = labels == entry["class"]
        assert entry["support"] == int(mine.sum())
        assert entry["predicted"] == int((predicted == entry["class"]).sum())
        assert entry["recall"] == pytest.approx((predicted[mine] == labels[mine]).double().mean().item())
        assert entry["cross_entropy"] == pytest.approx(F.cross_entropy(logits[mine], labels[mine]).item(), rel=1e-12)


def _eval_json(cli, *argv: str) -> dict:
    result = cli("eval", *argv, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_logits_npy_equals_torch(cli, tmp_path, data) -> None:
    logits, labels = data
    np.save(tmp_path / "logits.npy", logits.numpy())
    np.save(tmp_path / "labels.npy", labels.numpy())
    result = _eval_json(cli, str(tmp_path / "logits.npy"), str(tmp_path / "labels.npy"), "--topk", "1", "3")
    assert result["kind"] == "logits"
    _check_multiclass(result, logits, labels, [1, 3])


@pytest.mark.parametrize("chunk_rows", [None, "1", "17"])
def test_probabilities_npz_equal_torch_in_any_chunking(cli, tmp_path, data, chunk_rows) -> None:
    logits, labels = data
    np.savez(tmp_path / "outputs.npz", probs=torch.softmax(logits, 1).numpy(), labels=labels.numpy())
    chunking = ["--chunk-rows", chunk_rows] if chunk_rows else []
    path = str(tmp_path / "outputs.npz")
    result = _eval_json(cli, f"{path}:probs", f"{path}:labels", "--bins", "10", *chunking)
    assert result["kind"] == "probabilities"
    _check_multiclass(result, logits, labels, [5], bins=10)


def test_csv_with_header_read_in_chunks_equals_torch(cli, tmp_path, data) -> None:
    logits, labels = data
    header = ",".join(f"class_{c}" for c in range(C))
    np.savetxt(tmp_path / "logits.csv", logits.numpy(), delimiter=",", header=header, comments="", fmt="%.17g")
    np.savetxt(tmp_path / "labels.csv", labels.numpy(), fmt="%d", header="label", comments="")
    result = _eval_json(cli, str(tmp_path / "logits.csv"), str(tmp_path / "labels.csv"), "--chunk-rows", "50")
    _check_multiclass(result, logits, labels, [5])


def test_pt_dict_float32_equals_torch(cli, tmp_path, data) -> None:
    logits, labels = data
    torch.save({"logits": logits.float(), "labels": labels}, tmp_path / "run.pt")
    path = str(tmp_path / "run.pt")
    result = _eval_json(cli, f"{path}:logits", f"{path}:labels")
    _check_multiclass(result, logits.float().double(), labels, [5])


def test_ignore_index_skips_samples_like_torch(cli, tmp_path, data) -> None:
    logits, labels = data
    padded = labels.clone()
    padded[::5] = -100
    np.save(tmp_path / "logits.npy", logits.numpy())
    np.save(tmp_path / "labels.npy", padded.numpy())
    result = _eval_json(cli, str(tmp_path / "logits.npy"), str(tmp_path / "labels.npy"), "--ignore-index", "-100")
    assert result["ignored"] == int((padded == -100).sum())
    assert result["cross_entropy"] == pytest.approx(
        F.cross_entropy(logits, padded, ignore_index=-100).item(), rel=1e-12
    )
    kept = padded != -100
    _check_multiclass(result, logits[kept], labels[kept], [5])


def test_kind_override_reads_probabilities_as_logits(cli, tmp_path, data) -> None:
    logits, labels = data
    probabilities = torch.softmax(logits, 1)
    np.save(tmp_path / "p.npy", probabilities.numpy())
    np.save(tmp_path / "labels.npy", labels.numpy())
    result = _eval_json(cli, str(tmp_path / "p.npy"), str(tmp_path / "labels.npy"), "--kind", "logits")
    assert result["kind"] == "logits"
    assert result["cross_entropy"] == pytest.approx(F.cross_entropy(probabilities, labels).item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_multilabel_equals_torch_bce(cli, tmp_path, kind) -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(97, 5, generator=generator, dtype=torch.float64)
    labels = (torch.rand(97, 5, generator=generator, dtype=torch.float64) < torch.sigmoid(logits)).double()
    scores = logits if kind == "logits" else torch.sigmoid(logits)
    np.save(tmp_path / "scores.npy", scores.numpy())
    np.save(tmp_path / "labels.npy", labels.numpy().astype(np.int8))
    result = _eval_json(
        cli, str(tmp_path / "scores.npy"), str(tmp_path / "labels.npy"), "--multilabel", "--chunk-rows", "10"
    )
    if kind == "logits":
        expected = F.binary_cross_entropy_with_logits(logits, labels)
    else:
        expected = F.binary_cross_entropy(scores, labels)
    assert result["kind"] == kind
    assert result["labels"] == str(tmp_path / "labels.npy")
    assert (result["samples"], result["labels_per_sample"]) == (97, 5)
    assert result["binary_cross_entropy"] == pytest.approx(expected.item(), rel=1e-12)
    on = logits > 0
    assert result["accuracy"] == (on == labels.bool()).double().mean().item()
    assert result["exact_match"] == (on == labels.bool()).all(dim=1).double().mean().item()
    for entry in result["per_label"]:
        j = entry["label"]
        assert entry["positives"] == int(labels[:, j].sum())
        per_label = F.binary_cross_entropy_with_logits(logits[:, j], labels[:, j])
        assert entry["binary_cross_entropy"] == pytest.approx(per_label.item(), rel=1e-9)


def test_tables_and_reliability_diagram(cli, tmp_path, data) -> None:
    logits, labels = data
    np.save(tmp_path / "logits.npy", logits.numpy())
    np.save(tmp_path / "labels.npy", labels.numpy())
    plot = tmp_path / "reliability.png"
    result = cli("eval", str(tmp_path / "logits.npy"), str(tmp_path / "labels.npy"), "--plot", str(plot))
    assert result.code == 0, result.err
    assert f"{F.cross_entropy(logits, labels).item():.4f}" in result.out
    for words in ("perplexity", "top-5 accuracy", "expected calibration error", "per class", "recall"):
        assert words in result.out
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert plot.stat().st_size > 10_000


def test_probability_of_zero_on_the_true_class_is_infinite_loss(cli, tmp_path) -> None:
    np.save(tmp_path / "p.npy", np.array([[1.0, 0.0], [0.5, 0.5]]))
    np.save(tmp_path / "labels.npy", np.array([1, 0]))
    result = _eval_json(cli, str(tmp_path / "p.npy"), str(tmp_path / "labels.npy"))
    assert result["cross_entropy"] is None  # inf, written as null in strict JSON
    assert "inf" in cli("eval", str(tmp_path / "p.npy"), str(tmp_path / "labels.npy")).out


class Unpicklable:
    """A class a safe loader must refuse to reconstruct."""


def _write_bad_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    good_p = tmp_path / "p.npy"
    np.save(good_p, np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))
    good_y = tmp_path / "y.npy"
    np.save(good_y, np.array([1, 0, 1]))
    files = {
        "nan.npy": np.array([[0.2, 0.8], [np.nan, 1.0], [0.5, 0.5]]),
        "outside.npy": np.array([[0.2, 0.8], [1.5, -0.5], [0.5, 0.5]]),
        "unnormalised.npy": np.array([[0.2, 0.8], [0.6, 0.3], [0.5, 0.5]]),
        "three_d.npy": np.zeros((3, 2, 2)),
        "one_column.npy": np.zeros((3, 1)),
        "empty.npy": np.zeros((0, 2)),
        "y_range.npy": np.array([1, 2, 0]),
        "y_negative.npy": np.array([1, -1, 0]),
        "y_fraction.npy": np.array([1, 0.5, 0]),
        "y_short.npy": np.array([1, 0]),
        "y_2d.npy": np.array([[1, 0], [0, 1], [1, 1]]),
        "y_binary_bad.npy": np.array([[1, 0], [0, 2], [1, 1]]),
    }
    for name, array in files.items():
        np.save(tmp_path / name, array)
    np.save(tmp_path / "objects.npy", np.array([Unpicklable(), 1], dtype=object), allow_pickle=True)
    with open(tmp_path / "pickle.npy", "wb") as file:
        pickle.dump({"predictions": [[0.1, 0.9]]}, file)
    torch.save({"model": Unpicklable()}, tmp_path / "objects.pt")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros(3))
    (tmp_path / "bad.csv").write_text("0.2,0.8\n0.6,0.4\n0.5,oops\n")
    (tmp_path / "ragged.csv").write_text("0.2,0.8\n0.6,0.4,0.0\n0.5,0.5\n")
    (tmp_path / "p.txt").write_text("0.2 0.8\n")
    p, y = str(good_p), str(good_y)
    t = str(tmp_path)
    return {
        "missing file": ([f"{t}/missing.npy", y], "no such file"),
        "directory": ([t, y], "is a directory"),
        "unsupported type": ([f"{t}/p.txt", y], "unsupported file type"),
        "NaN probabilities": ([f"{t}/nan.npy", y], "row 1 has NaN probabilities"),
        "probability outside [0, 1]": ([f"{t}/outside.npy", y, "--kind", "probabilities"], "outside [0, 1]"),
        "rows not summing to 1": ([f"{t}/unnormalised.npy", y, "--kind", "probabilities"], "sums to 0.9"),
        "3-D predictions": ([f"{t}/three_d.npy", y], "got shape (3, 2, 2)"),
        "one column": ([f"{t}/one_column.npy", y], "--multilabel"),
        "no samples": ([f"{t}/empty.npy", f"{t}/empty.npy"], "no samples"),
        "label out of range": ([p, f"{t}/y_range.npy"], "row 1 is 2, out of range for 2 classes"),
        "negative label": ([p, f"{t}/y_negative.npy"], "row 1 is -1, out of range"),
        "fractional label": ([p, f"{t}/y_fraction.npy"], "row 1 is 0.5, not a class index"),
        "row counts differ": ([p, f"{t}/y_short.npy"], "3 rows but labels have 2"),
        "labels are not indices": ([p, f"{t}/y_2d.npy"], "one class index per sample"),
        "multilabel labels not 0/1": ([p, f"{t}/y_binary_bad.npy", "--multilabel"], "are 0 or 1"),
        "pickled object array": ([f"{t}/objects.npy", y], "pickled Python objects"),
        "pickle in .npy clothing": ([f"{t}/pickle.npy", y], "pickled Python objects"),
        "pickled object in .pt": ([f"{t}/objects.pt", y], "pickled Python objects"),
        "npz without a name": ([f"{t}/two.npz", y], "pick one array"),
        "npz with a wrong name": ([f"{t}/two.npz:c", y], "has no array 'c'"),
        "CSV with a word": ([f"{t}/bad.csv", y], "line 3 is not a row of numbers"),
        "ragged CSV": ([f"{t}/ragged.csv", y, "--chunk-rows", "1"], "line 2 has 3 values"),
        "top-k with multilabel": ([p, y, "--multilabel", "--topk", "2"], "not to --multilabel"),
        "plot not PNG": ([p, y, "--plot", f"{t}/plot.pdf"], "ending in .png"),
        "plot in missing folder": ([p, y, "--plot", f"{t}/nowhere/plot.png"], "cannot write"),
    }


def test_each_bad_input_is_one_line_with_exit_code_two(cli, tmp_path) -> None:
    for name, (argv, message) in _write_bad_inputs(tmp_path).items():
        line = cli("eval", *argv).one_line_error()
        assert line.startswith("crossent eval: error: "), name
        assert message in line, (name, line)


def test_console_script_refuses_a_pickle_in_one_line(script_cli, tmp_path) -> None:
    torch.save({"model": Unpicklable()}, tmp_path / "objects.pt")
    np.save(tmp_path / "labels.npy", np.array([0, 1]))
    refused = script_cli("eval", str(tmp_path / "objects.pt"), str(tmp_path / "labels.npy"))
    assert "pickled Python objects" in refused.one_line_error()


def test_rows_pair_up_across_blank_lines_and_chunk_sizes(cli, tmp_path, data) -> None:
    logits, labels = data
    np.save(tmp_path / "logits.npy", logits.numpy())
    lines = [f"{int(y)}\n" + ("\n" if i % 3 == 0 else "") for i, y in enumerate(labels)]
    (tmp_path / "labels.csv").write_text("label\n" + "".join(lines))
    result = _eval_json(cli, str(tmp_path / "logits.npy"), str(tmp_path / "labels.csv"), "--chunk-rows", "4")
    _check_multiclass(result, logits, labels, [5])


def _with_autograd(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The logits as a training script might save them: not detached, or as a parameter."""
    leaf = logits.clone().requires_grad_()
    return {
        "output of an op": leaf * 1,
        "leaf requiring grad": leaf,
        "nn.Parameter": torch.nn.Parameter(logits.clone()),
        "float32 output": leaf.float() * 1,
        "bfloat16 output": leaf.bfloat16() * 1,
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip format", "legacy format"])
@pytest.mark.parametrize("how", list(_with_autograd(torch.zeros(1))))
def test_pt_outputs_saved_with_autograd_state_are_scored(cli, tmp_path, data, how: str, legacy: bool) -> None:
    logits, labels = data
    saved = _with_autograd(logits)[how]
    assert saved.requires_grad
    torch.save(saved, tmp_path / "outputs.pt", _use_new_zipfile_serialization=not legacy)
    np.save(tmp_path / "labels.npy", labels.numpy())
    result = _eval_json(cli, str(tmp_path / "outputs.pt"), str(tmp_path / "labels.npy"))
    _check_multiclass(result, saved.detach().double(), labels, [5])


def _containers(outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[object, str, str]]:
    """(what is saved, how the predictions are named, how the labels are named)."""
    return {
        "dict": ({"logits": outputs, "labels": labels}, ":logits", ":labels"),
        "nested dict": (
            {"outputs": {"logits": outputs}, "targets": {"labels": labels}},
            ":outputs.logits",
            ":targets.labels",
        ),
        "list": ([outputs, labels], ":0", ":1"),
        "tuple": ((outputs, labels), ":0", ":1"),
        "dict of lists": ({"batch": [{"logits": outputs}], "labels": labels}, ":batch.0.logits", ":labels"),
        "metadata besides one tensor": ({"epoch": 3, "note": "val", "logits": outputs}, "", None),
    }


@pytest.mark.parametrize("container", list(_containers(torch.zeros(1), torch.zeros(1))))
def test_pt_tensors_nested_in_containers_are_named_by_path(cli, tmp_path, data, container: str) -> None:
    logits, labels = data
    outputs = logits.clone().requires_grad_() * 1
    content, prediction_name, label_name = _containers(outputs, labels)[container]
    path = str(tmp_path / "run.pt")
    torch.save(content, path)
    if label_name is None:
        np.save(tmp_path / "labels.npy", labels.numpy())
        labels_spec = str(tmp_path / "labels.npy")
    else:
        labels_spec = path + label_name
    result = _eval_json(cli, path + prediction_name, labels_spec)
    _check_multiclass(result, logits, labels, [5])


FLOAT8 = [getattr(torch, name) for name in dir(torch) if name.startswith("float8_")]
ROWS = [torch.randn(2, 4), torch.randn(3, 4)]

# How to make each tensor without a plain array of real numbers behind it, and what the error says it holds
UNUSUAL_TENSORS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "sparse COO": (lambda t: t.to_sparse(), "a sparse tensor (torch.sparse_coo)"),
    "sparse CSR": (lambda t: t.to_sparse_csr(), "a sparse tensor (torch.sparse_csr)"),
    "sparse CSC": (lambda t: t.to_sparse_csc(), "a sparse tensor (torch.sparse_csc)"),
    "sparse BSR": (lambda t: t.to_sparse_bsr((2, 2)), "a sparse tensor (torch.sparse_bsr)"),
    "sparse BSC": (lambda t: t.to_sparse_bsc((2, 2)), "a sparse tensor (torch.sparse_bsc)"),
    "sparse, requiring grad": (lambda t: t.to_sparse().requires_grad_(), "a sparse tensor"),
    "nested": (lambda t: torch.nested.nested_tensor(ROWS), "a nested tensor"),
    "nested, jagged layout": (lambda t: torch.nested.nested_tensor(ROWS, layout=torch.jagged), "a nested tensor"),
    "meta": (lambda t: t.to("meta"), "a tensor on the meta device"),
    **{str(dtype): (lambda t, dtype=dtype: t.to(dtype), f"{dtype} values") for dtype in FLOAT8},
    "complex": (lambda t: t.to(torch.complex64), "torch.complex64 values"),
    "quantized": (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), "torch.qint8 values"),
}


@pytest.mark.parametrize("container", ["alone", "in a dict"])
@pytest.mark.parametrize("kind", list(UNUSUAL_TENSORS))
def test_unusual_tensors_are_one_line_exit_two(cli, tmp_path, kind: str, container: str) -> None:
    make, message = UNUSUAL_TENSORS[kind]
    with warnings.catch_warnings():  # torch warns that sparse CSR and nested tensors are beta, quantized deprecated
        warnings.simplefilter("ignore")
        tensor = make(torch.randn(6, 4))
        torch.save(tensor if container == "alone" else {"logits": tensor}, tmp_path / "odd.pt")
    np.save(tmp_path / "labels.npy", np.zeros(6, dtype=np.int64))
    # the test session turns warnings into errors, so one escaping the loader would fail here too
    line = cli("eval", str(tmp_path / "odd.pt"), str(tmp_path / "labels.npy")).one_line_error()
    assert f"odd.pt holds {message}" in line, line


def _write_bad_files(tmp_path) -> None:
    """The files of ``BAD_FILES``, none of which can be scored."""
    t = tmp_path
    for suffix in (".npy", ".npz", ".pt", ".csv"):
        (t / f"empty{suffix}").write_bytes(b"")
        (t / f"garbage{suffix}").write_bytes(bytes(range(256)) * 4)
    np.save(t / "scalar.npy", np.array(3.0))
    torch.save(torch.tensor(3.0), t / "scalar.pt")
    np.savez(t / "scalar.npz", logits=np.array(3.0))
    np.save(t / "whole.npy", np.zeros((40, 4)))
    (t / "truncated.npy").write_bytes((t / "whole.npy").read_bytes()[:200])
    torch.save(torch.zeros(40, 4), t / "whole.pt")
    (t / "truncated.pt").write_bytes((t / "whole.pt").read_bytes()[:300])
    (t / "text.npy").write_text("0.2,0.8\n0.6,0.4\n")
    (t / "text.pt").write_text("0.2,0.8\n0.6,0.4\n")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), t / "module.pt")
    torch.save({"epoch": 3, "note": "no tensors"}, t / "no_tensors.pt")
    torch.save(torch.zeros(3, 2), t / "one.pt")
    torch.save({f"layer{i}.weight": torch.zeros(3, 2) for i in range(20)}, t / "checkpoint.pt")
    (t / "words.csv").write_text("first,second\nthird,fourth\n0.5,0.5\n")


# what is wrong with a file: (the file, what the error says about it)
BAD_FILES = {
    "empty .npy": ("empty.npy", "empty.npy is empty"),
    "empty .npz": ("empty.npz", "empty.npz is empty"),
    "empty .pt": ("empty.pt", "empty.pt is empty"),
    "empty .csv": ("empty.csv", "empty.csv is empty"),
    "garbage .npy": ("garbage.npy", "garbage.npy is not a readable .npy file"),
    "garbage .npz": ("garbage.npz", "garbage.npz is not a readable .npz file"),
    "garbage .pt": ("garbage.pt", "garbage.pt is not a readable .pt file"),
    "garbage .csv": ("garbage.csv", "garbage.csv: line 2 is not a row of numbers"),
    "0-d .npy": ("scalar.npy", "scalar.npy holds a single number"),
    "0-d .pt": ("scalar.pt", "scalar.pt holds a single number"),
    "0-d in an .npz": ("scalar.npz", "scalar.npz holds a single number"),
    "truncated .npy": ("truncated.npy", "truncated.npy is not a readable .npy file"),
    "truncated .pt": ("truncated.pt", "truncated.pt is not a readable .pt file"),
    "text named .npy": ("text.npy", "text.npy is not a readable .npy file (not written by NumPy"),
    "text named .pt": ("text.pt", "text.pt is not a readable .pt file (not written by torch.save"),
    "TorchScript module": ("module.pt", "module.pt is a TorchScript module"),
    ".pt without tensors": ("no_tensors.pt", "no_tensors.pt holds no arrays"),
    "name of a single tensor": ("one.pt:logits", "one.pt holds a single tensor; drop :logits"),
    "checkpoint of many tensors": ("checkpoint.pt", "layer7.weight, ... (20 in all); pick one array"),
    "two header lines": ("words.csv", "words.csv: line 2 is not a row of numbers"),
}


@pytest.mark.parametrize("side", ["predictions", "labels"])
@pytest.mark.parametrize("bad", BAD_FILES)
def test_bad_files_are_one_line_naming_the_file(cli, tmp_path, bad: str, side: str) -> None:
    with warnings.catch_warnings():  # torch.jit.script is deprecated; it still writes the archive users have
        warnings.simplefilter("ignore")
        _write_bad_files(tmp_path)
    name, message = BAD_FILES[bad]
    np.save(tmp_path / "p.npy", np.full((40, 4), 0.25))
    np.save(tmp_path / "y.npy", np.zeros(40, dtype=np.int64))
    bad_file = str(tmp_path / name)
    argv = [bad_file, str(tmp_path / "y.npy")] if side == "predictions" else [str(tmp_path / "p.npy"), bad_file]
    line = cli("eval", *argv).one_line_error()
    assert message in line, line


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_file_without_read_permission_is_one_line(cli, tmp_path, monkeypatch, suffix: str) -> None:
    path, values = tmp_path / f"p{suffix}", np.full((4, 2), 0.5)
    save = {
        ".npy": lambda: np.save(path, values),
        ".npz": lambda: np.savez(path, p=values),
        ".pt": lambda: torch.save(torch.from_numpy(values), path),
        ".csv": lambda: np.savetxt(path, values, delimiter=","),
    }
    save[suffix]()
    np.save(tmp_path / "y.npy", np.zeros(4, dtype=np.int64))
    # chmod cannot keep root (as tests often run) from reading, so opening the file is refused instead
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    line = cli("eval", str(path), str(tmp_path / "y.npy")).one_line_error()
    assert f"p{suffix}: cannot read it (Permission denied)" in line


@pytest.mark.parametrize("kind", ["sparse CSR", "quantized"])
def test_loader_warnings_add_no_lines_in_a_fresh_interpreter(module_cli, tmp_path, kind: str) -> None:
    # outside pytest Python's own warning filters apply: torch.load warns about these tensors once per process
    make, message = UNUSUAL_TENSORS[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(make(torch.randn(6, 4)), tmp_path / "odd.pt")
    np.save(tmp_path / "labels.npy", np.zeros(6, dtype=np.int64))
    line = module_cli("eval", str(tmp_path / "odd.pt"), str(tmp_path / "labels.npy")).one_line_error()
    assert f"odd.pt holds {message}" in line


def test_torchscript_warning_adds_no_line_in_a_fresh_interpreter(module_cli, tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "module.pt")
    np.save(tmp_path / "labels.npy", np.zeros(2, dtype=np.int64))
    line = module_cli("eval", str(tmp_path / "module.pt"), str(tmp_path / "labels.npy")).one_line_error()
    assert "module.pt is a TorchScript module" in line


# CSV files as spreadsheets, pandas-less scripts and np.savetxt write them: (text before the rows, line ending)
CSV_LAYOUTS = {
    "header, then a blank line": ("{header}\n\n", "\n"),
    "blank lines, then a header": ("\n\n{header}\n", "\n"),
    "header, blank lines around": ("\n{header}\n\n\n", "\n"),
    "np.savetxt comment header": ("# {header}\n", "\n"),
    "byte order mark and header": ("\ufeff{header}\n", "\n"),
    "byte order mark, no header": ("\ufeff", "\n"),
    "Windows line endings": ("{header}\r\n\r\n", "\r\n"),
}


@pytest.mark.parametrize("layout", list(CSV_LAYOUTS))
def test_csv_header_and_blank_line_variants_are_read(cli, tmp_path, data, layout: str) -> None:
    logits, labels = data
    before, ending = CSV_LAYOUTS[layout]
    for name, rows, header, fmt in [
        ("logits.csv", logits.numpy(), "a,b,c,d,e,f,g", "%.17g"),
        ("labels.csv", labels.numpy(), "label", "%d"),
    ]:
        lines = [",".join(fmt % v for v in np.atleast_1d(row)) for row in rows]
        text = before.format(header=header) + "".join(line + ending for line in lines)
        (tmp_path / name).write_bytes(text.encode("utf-8"))
    result = _eval_json(cli, str(tmp_path / "logits.csv"), str(tmp_path / "labels.csv"), "--chunk-rows", "64")
    _check_multiclass(result, logits, labels, [5])


@pytest.mark.parametrize("kind", ["auto", "probabilities"])
@pytest.mark.parametrize("classes", [3, 4, 10])
def test_probabilities_rounded_to_three_decimals_are_probabilities(cli, tmp_path, kind: str, classes: int) -> None:
    generator = torch.Generator().manual_seed(classes)
    labels = torch.randint(0, classes, (300,), generator=generator)
    raw = torch.rand(300, classes, generator=generator, dtype=torch.float64) + 0.2  # none rounds to 0
    rounded = raw / raw.sum(dim=1, keepdim=True)
    rounded = (rounded * 1000).round() / 1000
    sums = rounded.sum(dim=1)
    assert (sums - 1).abs().max() >= 0.001 - 1e-12  # rows summing to 0.999 or 1.001, as such files hold
    np.savetxt(tmp_path / "p.csv", rounded.numpy(), fmt="%.3f", delimiter=",")
    np.save(tmp_path / "y.npy", labels.numpy())
    result = _eval_json(cli, str(tmp_path / "p.csv"), str(tmp_path / "y.npy"), "--kind", kind)
    assert result["kind"] == "probabilities"
    expected = F.nll_loss(torch.log(rounded), labels)  # the probabilities as written, not renormalised
    assert result["cross_entropy"] == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_auto_detected_kind_is_stated_with_its_override(cli, tmp_path, data, kind: str) -> None:
    logits, labels = data
    np.save(tmp_path / "p.npy", (logits if kind == "logits" else torch.softmax(logits, 1)).numpy())
    np.save(tmp_path / "y.npy", labels.numpy())
    out = cli("eval", str(tmp_path / "p.npy"), str(tmp_path / "y.npy")).out
    other = "probabilities" if kind == "logits" else "logits"
    assert f"{kind} (auto-detected)" in out
    assert f"Predictions read as {kind}; pass --kind {other} if they are {other}." in out
    stated = cli("eval", str(tmp_path / "p.npy"), str(tmp_path / "y.npy"), "--kind", kind).out
    assert "auto-detected" not in stated and "Predictions read as" not in stated


# NumPy files as other tools write them: how each writes the logits (float64 values kept exactly)
NUMPY_VARIANTS: dict[str, Callable[[object, np.ndarray], None]] = {
    "compressed .npz": lambda path, x: np.savez_compressed(path, logits=x),
    "Fortran order": lambda path, x: np.save(path, np.asfortranarray(x)),
    "big-endian": lambda path, x: np.save(path, x.astype(">f8")),
    "a transposed view": lambda path, x: np.save(path, np.ascontiguousarray(x.T).T),
    "float128": lambda path, x: np.save(path, x.astype(np.longdouble)),
}


@pytest.mark.parametrize("variant", list(NUMPY_VARIANTS))
def test_numpy_file_variants_are_read(cli, tmp_path, data, variant: str) -> None:
    logits, labels = data
    path = tmp_path / ("logits.npz" if "npz" in variant else "logits.npy")
    NUMPY_VARIANTS[variant](path, logits.numpy())
    np.save(tmp_path / "labels.npy", labels.numpy().astype(np.uint8))
    result = _eval_json(cli, str(path), str(tmp_path / "labels.npy"))
    _check_multiclass(result, logits, labels, [5])

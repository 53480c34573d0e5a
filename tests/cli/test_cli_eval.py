"""``crossent eval``: results equal torch on files the test writes, in every format and chunking;
each kind of bad input is one line on stderr with exit code 2."""

from __future__ import annotations

import json
import pickle

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

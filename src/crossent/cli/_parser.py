"""Every command, option and default of the ``crossent`` command line, in one place.

Only argparse lives here, so ``crossent --help`` works, and the parser can be built, without the
optional ``cli`` extra (rich, matplotlib) installed.
"""

from __future__ import annotations

import argparse

EXPLAIN_EPILOG = """\
examples:
  crossent explain                                   the worked example: logits [[1,2],[1,3],[1,3]], targets [0,1,1]
  crossent explain --weight '[1,2]' --reduction sum
  crossent explain --targets '[[0.9,0.1],[0.2,0.8],[0,1]]'       probability targets
  crossent explain --label-smoothing 0.1 --ignore-index 1
  crossent explain --binary --logits '[0.8,-1.2,0.1]' --targets '[1,0,1]' --pos-weight 3
  crossent explain --binary probabilities --logits '[0.7,0.2,0.6]' --targets '[1,0,1]'
  crossent explain --loss focal --gamma 2            focal loss next to cross-entropy on the worked example
"""

EXPLAIN_GAMMA = 2.0  # the focusing exponent of ``explain --loss focal`` when --gamma is not given

EXPLAIN_ROWS = 10  # rows of each table of ``explain``: enough to follow the steps, few enough to read

# How far a row of probabilities may sum from 1: files written with 3 decimals round each value by up to
# 5e-4, and rows of a few classes then sum to 0.999 or 1.002; a float32 softmax is off by far less.
ROW_SUM_TOLERANCE = 1e-2

EVAL_EPILOG = f"""\
files: .npy / .npz / .csv / .pt. Pick one array of an .npz, or one tensor of a saved dict, list or
tuple, with FILE:NAME (e.g. outputs.npz:logits, run.pt:outputs.logits, pair.pt:0). A CSV holds one
sample per line, after an optional header line. Nothing pickled is ever loaded:
np.load(allow_pickle=False), torch.load(weights_only=True).

--kind auto reads the predictions as probabilities when every value is in [0, 1] and (without
--multilabel) every row sums to 1 within {ROW_SUM_TOLERANCE:g}, else as logits; the table says which it assumed.

examples:
  crossent eval logits.npy labels.npy
  crossent eval outputs.npz:probs outputs.npz:labels --topk 1 5 --plot reliability.png
  crossent eval scores.csv tags.csv --multilabel --json
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _rows(text: str) -> int | None:
    """``--rows``: a positive count, or ``all`` (None)."""
    if text == "all":
        return None
    try:
        return _positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text}") from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}") from None
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _add_explain(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "explain",
        help="compute a loss step by step, as you would by hand",
        description="Compute cross-entropy (or binary cross-entropy) step by step: softmax, log-softmax,\n"
        "the picked target term, each sample's loss and the reduction, then confirm the number with torch.nn.",
        epilog=EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--logits",
        "--input",
        dest="input",
        metavar="JSON|FILE",
        help="model outputs: logits, or probabilities with --binary probabilities (JSON or a file)",
    )
    p.add_argument(
        "--targets",
        metavar="JSON|FILE",
        help="class indices, or one probability row per sample (same shape as the logits)",
    )
    p.add_argument("--weight", metavar="JSON", help="class weights (length C); elementwise weights with --binary")
    p.add_argument("--ignore-index", type=int, help="target value that is skipped (default -100)")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS", help="in [0, 1] (default 0)")
    p.add_argument("--reduction", choices=("mean", "sum", "none"), default="mean", help="(default mean)")
    p.add_argument(
        "--binary",
        nargs="?",
        const="logits",
        choices=("logits", "probabilities"),
        help="binary cross-entropy: BCEWithLogitsLoss on logits (default) or BCELoss on probabilities",
    )
    p.add_argument("--pos-weight", metavar="JSON", help="weight of the positive term, with --binary logits")
    p.add_argument(
        "--rows",
        type=_rows,
        default=EXPLAIN_ROWS,
        metavar="N|all",
        help=f"rows shown in each table (default {EXPLAIN_ROWS}); the loss always uses every sample",
    )
    p.add_argument(
        "--loss",
        choices=("cross_entropy", "focal"),
        default="cross_entropy",
        help="cross_entropy (default), or focal: the focal loss next to cross-entropy, sample by sample",
    )
    p.add_argument(
        "--gamma",
        type=_non_negative_float,
        metavar="G",
        help=f"focusing exponent of --loss focal, >= 0 (default {EXPLAIN_GAMMA:g}; 0 is cross-entropy)",
    )


def _add_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="score saved predictions: cross-entropy, perplexity, accuracy, calibration",
        description="Evaluate saved model outputs against labels: cross-entropy, perplexity, accuracy,\n"
        "top-k accuracy, expected calibration error and a per-class breakdown.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("predictions", metavar="PREDICTIONS", help="(N, C) logits or probabilities")
    p.add_argument("labels", metavar="LABELS", help="(N,) class indices; (N, C) 0/1 labels with --multilabel")
    p.add_argument(
        "--kind",
        choices=("auto", "logits", "probabilities"),
        default="auto",
        help="what the predictions are (default: auto, see below)",
    )
    p.add_argument(
        "--multilabel",
        action="store_true",
        help="independent binary labels per column, scored with binary cross-entropy",
    )
    p.add_argument(
        "--topk",
        type=_positive_int,
        nargs="+",
        metavar="K",
        help="top-k accuracies to report (default: 5, when there are more than 5 classes)",
    )
    p.add_argument("--bins", type=_positive_int, default=15, help="calibration bins (default 15)")
    p.add_argument("--ignore-index", type=int, metavar="LABEL", help="skip samples with this label (e.g. -100)")
    p.add_argument("--plot", metavar="FILE.png", help="write a reliability diagram")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument(
        "--chunk-rows",
        type=_positive_int,
        metavar="ROWS",
        help="rows read at a time (default: about 64 MiB of predictions per chunk)",
    )


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo",
        help="train a small language model twice: fused linear_cross_entropy vs naive torch",
        description="Train a small next-token language model twice, identically seeded: once with "
        "crossent.linear_cross_entropy(h, W, y) and once with torch's cross_entropy(h @ W.T, y). "
        "Prints final losses, tokens/s, peak memory of the loss step and how far the loss curves "
        "ever differ, and writes a plot of both curves.",
    )
    p.add_argument("--steps", type=_positive_int, default=100, help="training steps of each run (default 100)")
    p.add_argument(
        "--text",
        metavar="FILE",
        help="train on this UTF-8 text (default: Python's own pydoc_data.topics, no download)",
    )
    p.add_argument("--out", metavar="FILE.png", default="crossent-demo.png", help="plot (default crossent-demo.png)")
    p.add_argument("--vocab", type=_positive_int, default=4096, help="vocabulary size (default 4096)")
    p.add_argument("--batch", type=_positive_int, default=4096, help="tokens per step (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="(default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_bench(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "bench",
        help="time crossent against torch: speed, peak memory, error (from a source checkout)",
        description="Run the benchmark harness (the benchmarks/ folder of a crossent checkout) with a progress "
        "bar: print the table with the speed ratios, write the CSV, and with --plot a PNG of the ratios.",
    )
    p.add_argument("--ops", type=_names, help="comma-separated op names (default: all; see --list)")
    p.add_argument("--shapes", type=_names, help="comma-separated shape sets (default: the harness's; see --list)")
    p.add_argument("--dtypes", type=_names, help="comma-separated dtypes (default: the harness's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--rounds", type=_positive_int, default=10, help="timed calls per implementation (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before them (default 1)")
    p.add_argument("--compile", action="store_true", help="add torch.compile'd torch as a baseline")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--out", metavar="FILE.csv", help="CSV path (default: benchmarks/results/<UTC time>.csv)")
    output.add_argument("--no-csv", action="store_true", help="print the table only")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG of the speed and memory ratios")
    p.add_argument("--list", action="store_true", help="list the ops and shape sets, then exit")


def _add_env(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "env",
        help="versions, devices, Triton, and what impl='auto' picks",
        description="Show versions, devices, whether Triton is importable, and which implementation "
        "impl='auto' resolves to for each op on each device.",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The ``crossent`` parser; each subcommand's name is stored in ``args.command``."""
    parser = argparse.ArgumentParser(
        prog="crossent",
        description="crossent: the cross-entropy loss family for PyTorch, from the command line.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(commands)
    _add_explain(commands)
    _add_eval(commands)
    _add_bench(commands)
    _add_env(commands)
    return parser

"""``python -m crossent.native build``: compile the kernels into the package (or the user cache)."""

from __future__ import annotations

import sys

from crossent.native import _build, _library


def main() -> int:
    if sys.argv[1:] != ["build"]:
        print("usage: python -m crossent.native build", file=sys.stderr)
        return 2
    try:
        paths = _build.build(_library.PACKAGE_DIR)
    except (OSError, RuntimeError) as exc:
        print(f"crossent: the native kernels were not built: {exc}", file=sys.stderr)
        return 1
    loaded = _library.load()
    print(f"built {len(paths)} libraries in {paths[0].parent}; this CPU runs: {getattr(loaded, 'level', loaded)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

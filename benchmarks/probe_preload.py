"""Imported by the memory probes' fork server only: loads every implementation once, so that each
probe forked from it starts with them imported instead of paying seconds of imports."""

from .ops import OPS

for _op in OPS.values():
    for _subject in _op.subjects(compiled=False):
        try:
            _subject.load()
        except Exception:  # the probe that needs it loads it again, and reports the failure
            pass

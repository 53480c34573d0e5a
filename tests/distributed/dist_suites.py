"""The check suites the pytest entry points spawn: one spawn per world size runs them all."""

from __future__ import annotations

import dist_checks_cross_entropy
import dist_checks_linear
import dist_checks_lm_options
import dist_checks_normalization
import dist_checks_public_api
from dist_harness import Check


def all_checks() -> list[tuple[str, Check]]:
    """Every correctness check; the failure checks (``dist_checks_failures``) run in a spawn of their own."""
    return [
        *dist_checks_cross_entropy.checks(),
        *dist_checks_linear.checks(),
        *dist_checks_lm_options.checks(),
        *dist_checks_normalization.checks(),
        *dist_checks_public_api.checks(),
    ]

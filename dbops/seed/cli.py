"""`dbops seed --scale N [--reset]`: load the deterministic reference data set."""

from __future__ import annotations

import argparse

from dbops.embedded import ensure_embedded
from dbops.redact import redact_url
from dbops.seed import seed
from dbops.settings import Settings


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops seed", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="1 is about 100,000 orders (default 1)")
    parser.add_argument("--reset", action="store_true", help="empty the application tables first")
    parser.add_argument("--seed", type=int, default=42, help="hash seed; the same seed gives the same rows")
    args = parser.parse_args(argv)

    ensure_embedded(settings)
    url = settings.target_url()
    result = seed(url, args.scale, random_seed=args.seed, reset=args.reset)
    print(result.render())
    print(f"into {redact_url(url)}")
    return 0

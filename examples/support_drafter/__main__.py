"""``python -m examples.support_drafter [--port N] [--via-gateway URL --key K]``."""

from __future__ import annotations

import asyncio

from .main import serve
from .settings import parse_args


def main() -> None:
    asyncio.run(serve(parse_args()))
    print("Support drafter stopped.", flush=True)


if __name__ == "__main__":
    main()

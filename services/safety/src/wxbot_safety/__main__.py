"""`python -m wxbot_safety`: run the safety service."""

import asyncio

from wxbot_safety.app import main


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()

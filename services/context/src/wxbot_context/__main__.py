"""`python -m wxbot_context`: run the context service."""

import asyncio

from wxbot_context.app import main


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()

"""`python -m wxbot_gateway`: run the gateway."""

import asyncio

from wxbot_gateway.app import main


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()

"""`python -m wxbot_nlp`: run the nlp service."""

import asyncio

from wxbot_nlp.app import main


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()

"""`python -m wxbot_nlp`: run the nlp service."""

from wxbot_common.runtime import run_service
from wxbot_nlp.app import main


def run() -> None:
    run_service(main)


if __name__ == "__main__":
    run()

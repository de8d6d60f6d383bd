"""`python -m wxbot_skills`: run the built-in skills."""

from wxbot_common.runtime import run_service
from wxbot_skills.app import main


def run() -> None:
    run_service(main)


if __name__ == "__main__":
    run()

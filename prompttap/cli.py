"""The ``prompttap`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from prompttap.collector import config
from prompttap.schemas.credentials import ScrubFilter


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a usage dump
        self.exit(2, f"prompttap: {message} (see `prompttap {self.prog.split()[-1]} --help`)\n")


def _version() -> str:
    try:
        return version("prompttap")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prompttap", description="Record and inspect what LLM apps send to the model.")
    parser.add_argument("--version", action="version", version=f"prompttap {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the recording proxy and the inspector")
    serve.add_argument("--listen", metavar="HOST:PORT", help=f"proxy address (default {config.DEFAULT_LISTEN})")
    serve.add_argument("--ui", metavar="HOST:PORT", help=f"inspector address (default {config.DEFAULT_UI})")
    serve.add_argument("--no-ui", action="store_true", default=None, help="do not serve the inspector")
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help=f"default upstream (default {config.DEFAULT_UPSTREAM}; env PROMPTTAP_UPSTREAM)",
    )
    serve.add_argument(
        "--route",
        metavar="NAME=URL",
        action="append",
        dest="routes",
        help="forward /NAME/... to URL/... and label captures route=NAME (repeatable)",
    )
    serve.add_argument(
        "--store", metavar="DSN", help="chdb:///path (embedded, default) or http(s)://user:pass@host:8123/db"
    )
    serve.add_argument("--home", metavar="DIR", help="data folder: spool and embedded store (default ./.prompttap)")
    serve.add_argument("--config", metavar="FILE", help="prompttap.toml with the same settings")
    serve.add_argument("--max-body-bytes", type=int, metavar="N", help="bodies larger than this are stored truncated")
    serve.add_argument(
        "--upstream-timeout",
        type=float,
        metavar="SECONDS",
        help="give up on a silent upstream after this long (default 600)",
    )
    serve.add_argument(
        "--spool-max-bytes", type=int, metavar="N", help="cap on spool disk use (default: until the disk is full)"
    )
    serve.add_argument("--retention-days", type=int, metavar="N", help="drop captures older than N days (0 = never)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--ui-token",
        metavar="TOKEN",
        help="protect the inspector with this token (env PROMPTTAP_UI_TOKEN, preferred: flags show in `ps`); "
        "required when --ui is not a loopback address",
    )
    serve.add_argument(
        "--ui-allowed-host",
        metavar="NAME",
        action="append",
        dest="ui_allowed_hosts",
        help="another host name the inspector answers to, e.g. a reverse proxy's (repeatable; "
        "env PROMPTTAP_UI_ALLOWED_HOSTS, comma-separated); other names get 421",
    )
    limits = serve.add_argument_group("limits on what a client may send (answered before anything is forwarded)")
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        metavar="N",
        help="request line and headers, in all (default 65536; larger: 431; env PROMPTTAP_MAX_HEADER_BYTES)",
    )
    limits.add_argument(
        "--max-headers", type=int, metavar="N", help="header fields per request (default 100; more: 431)"
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="a client must send its whole request head within this (default 10; slower: 408, closed)",
    )
    serve.add_argument(
        "--upstream-key",
        metavar="ROUTE=ENV_VAR",
        action="append",
        dest="upstream_keys",
        help="the inspector's replays to ROUTE ('default' or a --route) use the key in ENV_VAR (repeatable)",
    )

    from prompttap.inspector.export import cli as export_cli

    export = sub.add_parser("export", help="export captured conversations as fine-tuning data")
    export_cli.add_arguments(export)

    from prompttap.collector import demo

    demo.add_arguments(sub.add_parser("demo", help="run prompttap on a simulated upstream with sample traffic"))

    from prompttap import intercept_cli, rejected_cli

    intercept_cli.add_serve_arguments(serve)
    intercept_cli.add_commands(sub)
    rejected_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":  # the demo configures the `prompttap serve` it starts itself
        from prompttap.collector.demo import run_demo

        return run_demo(args)
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = config.load(flags)
    except config.ConfigError as exc:
        print(f"prompttap: {exc}", file=sys.stderr)
        return 2
    if args.command in ("ca", "env", "run"):  # before logging is set up: `run` replaces this process
        from prompttap import intercept_cli

        return intercept_cli.main(args, settings)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Every line any library logs passes the one credential scrubber, with the secrets configured here.
    secrets = [u.authorization.split(" ", 1)[-1] for u in [settings.upstream, *settings.routes.values()]]
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubFilter([*secrets, settings.ui_token, settings.intercept_token]))
    import clickhouse_connect.driver.httputil  # noqa: F401 - it sets urllib3's level on import; override after

    for noisy in ("urllib3", "clickhouse_connect"):  # their retries are reported by us, once
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.command == "serve":
        import os

        from prompttap.collector.server import StartupError
        from prompttap.serve import serve

        try:
            return serve(settings, os.environ)
        except StartupError as exc:
            print(f"prompttap: {exc}", file=sys.stderr)
            return 1
    if args.command == "rejected":
        from prompttap import rejected_cli

        return rejected_cli.run(args, settings)
    if args.command == "export":
        from prompttap.inspector.export.cli import run
        from prompttap.inspector.export.sources import Where

        return run(args, Where(settings.home, settings.store_dsn, settings.ui, settings.ui_token))
    return 2


if __name__ == "__main__":
    sys.exit(main())

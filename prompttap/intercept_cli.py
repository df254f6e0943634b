"""HTTPS interception on the command line: ``serve``'s flags, and ``prompttap ca``, ``prompttap env``
and ``prompttap run``, which set a client up to be intercepted.

``env`` and ``run`` use the CA as it is (creating it on first use): re-issuing it for another host
list is ``serve``'s job, so a ``run`` never swaps the CA under a running forward proxy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import sys
import textwrap
from typing import TYPE_CHECKING

from prompttap.collector import config

if TYPE_CHECKING:
    from prompttap.collector.intercept.ca import LocalCA

COMMANDS = ("ca", "env", "run")


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("HTTPS interception, for apps that cannot change their base URL")
    group.add_argument(
        "--intercept",
        action="store_true",
        default=None,
        help="also run a forward proxy (CONNECT) that records the LLM API hosts' traffic; see `prompttap run`",
    )
    _add_client_arguments(group)
    group.add_argument(
        "--intercept-only",
        action="store_true",
        default=None,
        help="refuse (403) CONNECT to hosts that are not intercepted, instead of tunnelling them untouched",
    )
    group.add_argument(
        "--upstream-ca",
        metavar="FILE",
        help="also trust these PEM CAs for upstream TLS, e.g. a corporate gateway's (env PROMPTTAP_UPSTREAM_CA)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("ca", help="show prompttap's local CA and how to trust it")
    _add_where_arguments(ca)
    ca.add_argument("--rotate", action="store_true", help="replace the CA with a new one (new key)")
    env = sub.add_parser("env", help='print shell exports that route a client through the forward proxy: eval "$(...)"')
    _add_where_arguments(env)
    run = sub.add_parser("run", help="run a command with its LLM API calls intercepted: prompttap run -- CMD ARGS...")
    _add_where_arguments(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run")


def _add_where_arguments(parser: argparse.ArgumentParser) -> None:
    """What a client-side command needs to find the same CA and forward proxy as ``serve``."""
    parser.add_argument("--home", metavar="DIR", help="data folder, as given to serve (default ./.prompttap)")
    parser.add_argument("--config", metavar="FILE", help="prompttap.toml, as given to serve")
    _add_client_arguments(parser)


def _add_client_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--intercept-listen",
        metavar="HOST:PORT",
        help=f"forward proxy address (default {config.DEFAULT_INTERCEPT_LISTEN}; env PROMPTTAP_INTERCEPT_LISTEN)",
    )
    parser.add_argument(
        "--intercept-host",
        metavar="HOST[=URL]",
        action="append",
        dest="intercept_hosts",
        help="intercept HOST too, besides the built-in LLM API hosts; with =URL send its traffic to URL "
        "instead (repeatable)",
    )
    parser.add_argument(
        "--intercept-token",
        metavar="TOKEN",
        help="forward-proxy clients must send this as Proxy-Authorization (env PROMPTTAP_INTERCEPT_TOKEN, "
        "preferred); required when --intercept-listen is not a loopback address",
    )


def main(args: argparse.Namespace, settings: config.Settings) -> int:
    from prompttap.collector.intercept.ca import CAError, LocalCA

    try:
        if args.command == "ca" and args.rotate:
            ca = LocalCA.rotate(settings.ca_dir, settings.intercept_hosts)
        else:
            ca = LocalCA.load_or_create(settings.ca_dir, settings.intercept_hosts, update_hosts=False)
    except CAError as exc:
        print(f"prompttap: {exc}", file=sys.stderr)
        return 1
    if args.command == "ca":
        print(describe(ca, settings))
        return 0
    if ca.created:  # to stderr: stdout of `env` is for eval
        print(f"prompttap: created a local CA in {ca.directory} (see `prompttap ca`)", file=sys.stderr)
    from prompttap.collector.intercept.clients import client_env

    env = client_env(settings, ca)
    if args.command == "env":
        print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items()))
        return 0
    return run(args.cmd, env, settings.intercept_listen)


def run(cmd: list[str], env: dict[str, str], listen: tuple[str, int]) -> int:
    """Replace this process with ``cmd`` and ``env`` added to the environment: the command gets the
    signals, the terminal and the exit status directly, as under ``env VAR=... CMD``."""
    from prompttap.collector.intercept.clients import connect_address

    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print("prompttap: run needs a command: prompttap run -- CMD ARGS...", file=sys.stderr)
        return 2
    host, port = connect_address(listen)
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        print(
            f"prompttap: warning: no forward proxy answers at {host}:{port} (start `prompttap serve --intercept`); "
            f"running {cmd[0]} anyway",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    # Python ignores these at start-up and an ignored signal stays ignored across exec: restore them,
    # as subprocess does, so a pipeline like `prompttap run -- yes | head` ends as it should.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvpe(cmd[0], cmd, {**os.environ, **env})
    except OSError as exc:
        print(f"prompttap: cannot run {cmd[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return 0  # not reached: exec does not return


def describe(ca: LocalCA, settings: config.Settings) -> str:
    """``prompttap ca``: where the CA is, what it may sign, and how each runtime trusts it."""
    cert, bundle = ca.cert_path.resolve(), ca.bundle_path.resolve()
    lines = []
    if ca.created:
        lines += [f"Created a new CA ({ca.reason}).", ""]
    elif ca.reissued:
        lines += [
            f"Re-issued the CA ({ca.reason}): trust the new one again wherever you trusted the old one,",
            "and restart `prompttap serve --intercept` if it is running.",
            "",
        ]
    wanted = sorted(settings.intercept_hosts)
    lines += [
        f"prompttap's CA certificate: {cert}",
        f"  SHA-256 fingerprint  {ca.fingerprint}",
        f"  valid until          {ca.not_after:%Y-%m-%d}",
        *textwrap.wrap(
            f"{', '.join(ca.hosts)} (and names under them; X.509 name constraints: no other site, no IP address)",
            width=100,
            initial_indent="  may sign only for    ",
            subsequent_indent=" " * 23,
        ),
        f"  bundle for clients   {bundle}",
        f"                       (the system CAs from {ca.system_bundle}, plus this CA)"
        if ca.system_bundle
        else "                       (no system CA bundle was found: it holds this CA alone)",
    ]
    if list(ca.hosts) != wanted:
        added = sorted(set(wanted) - set(ca.hosts))
        removed = sorted(set(ca.hosts) - set(wanted))
        change = " ".join([f"+{h}" for h in added] + [f"-{h}" for h in removed])
        lines += [
            "",
            f"The configured hosts differ ({change}): `prompttap serve --intercept` will re-issue the CA for them",
            "when it starts (or run `prompttap ca --rotate` now); trust the new one then.",
        ]
    lines += [
        "",
        'The easy way: `prompttap run -- CMD ARGS...` or `eval "$(prompttap env)"` set the variables below.',
        "Otherwise, trust it where your client looks:",
        "",
        *_trust_steps(str(cert), str(bundle)),
    ]
    return "\n".join(lines)


def _trust_steps(cert: str, bundle: str) -> list[str]:
    q, b = shlex.quote(cert), shlex.quote(bundle)
    steps = [
        ("Python: ssl, httpx, aiohttp, openai, anthropic", f"export SSL_CERT_FILE={b}"),
        ("Python: requests", f"export REQUESTS_CA_BUNDLE={b}"),
        ("curl", f"export CURL_CA_BUNDLE={b}    # or: curl --cacert {b} ..."),
        ("Node.js", f"export NODE_EXTRA_CA_CERTS={q}"),
        ("Go, Ruby and most OpenSSL programs on Linux", f"export SSL_CERT_FILE={b}"),
        ("Java (9 or later)", f"keytool -importcert -noprompt -cacerts -storepass changeit -alias prompttap -file {q}"),
        (
            "Debian / Ubuntu system store",
            f"sudo cp {q} /usr/local/share/ca-certificates/prompttap-ca.crt && sudo update-ca-certificates",
        ),
        (
            "Fedora / RHEL system store",
            f"sudo cp {q} /etc/pki/ca-trust/source/anchors/prompttap-ca.pem && sudo update-ca-trust",
        ),
        (
            "macOS keychain (Safari, Chrome, Swift apps, Go on macOS)",
            f"sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {q}",
        ),
        ("Windows (current user)", f"certutil -user -addstore Root {q}"),
    ]
    return [line for what, how in steps for line in (f"  {what}", f"      {how}")]

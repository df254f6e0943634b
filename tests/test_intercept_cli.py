"""HTTPS interception's settings and client-side commands: ``prompttap env``, ``prompttap run`` and
``prompttap ca`` run for real, with real clients (sh, Python's ssl and httpx, curl, Node) checking that
the environment they are given routes them to the forward proxy and makes them trust prompttap's CA."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from prompttap.collector import config
from prompttap.collector.intercept.ca import LocalCA
from prompttap.collector.intercept.clients import authorized
from prompttap.collector.intercept.hosts import BUILTIN_HOSTS
from prompttap.collector.intercept.targets import upstream_for
from tests.harness import ROOT, free_port
from tests.test_intercept_ca import tls_server

VARIABLES = {
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_") and k not in VARIABLES}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def prompttap(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prompttap", *args],
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def refusing_proxy() -> Iterator[tuple[int, list[bytes]]]:
    """Stands where the forward proxy listens: records each request head a client sends it and
    answers 403, so a test sees what the client sent to the proxy."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    heads: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    if head:
                        heads.append(head)
                        conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], heads
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


# -- settings ------------------------------------------------------------------------------------


def test_settings_defaults():
    s = config.load({}, environ={})
    assert s.intercept is False and s.intercept_only is False
    assert s.intercept_listen == ("127.0.0.1", 8789)
    assert s.intercept_hosts == dict.fromkeys(BUILTIN_HOSTS)
    assert s.intercept_token == "" and s.upstream_ca is None
    assert s.ca_dir == s.home / "ca"
    for host in ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "openrouter.ai"):
        assert host in s.intercept_hosts
    assert len(BUILTIN_HOSTS) >= 11


def test_intercept_hosts_from_flags_file_and_overrides(tmp_path: Path):
    s = config.load(
        {"intercept": True, "intercept_hosts": ["api.openai.com=https://127.0.0.1:9443/v1", "LLM.Corp.Example."]},
        environ={},
    )
    assert s.intercept is True
    up = s.intercept_hosts["api.openai.com"]
    assert up is not None and up.name == "api.openai.com" and up.base == "https://127.0.0.1:9443" and up.prefix == "/v1"
    assert s.intercept_hosts["llm.corp.example"] is None
    assert set(BUILTIN_HOSTS) < set(s.intercept_hosts)

    toml = tmp_path / "prompttap.toml"
    toml.write_text('intercept = true\nintercept_only = true\nintercept_hosts = ["gw.example=http://127.0.0.1:4000"]\n')
    s = config.load({"config": str(toml)}, environ={})
    assert s.intercept and s.intercept_only
    assert s.intercept_hosts["gw.example"].base == "http://127.0.0.1:4000"
    toml.write_text('[prompttap.intercept_hosts]\n"api.x.ai" = "http://127.0.0.1:5000"\n"extra.example" = ""\n')
    s = config.load({"config": str(toml)}, environ={})
    assert s.intercept_hosts["api.x.ai"].base == "http://127.0.0.1:5000" and s.intercept_hosts["extra.example"] is None

    for bad in ("1.2.3.4", "*.openai.com", "https://api.openai.com", "api.openai.com:443", "localhost", "x.example="):
        with pytest.raises(config.ConfigError, match="intercept-host"):
            config.load({"intercept_hosts": [bad]}, environ={})
    with pytest.raises(config.ConfigError, match="http"):
        config.load({"intercept_hosts": ["api.openai.com=ftp://x"]}, environ={})


def test_upstream_for_a_host():
    hosts = config.load(
        {"intercept_hosts": ["api.openai.com=http://127.0.0.1:4000/openai"]}, environ={}
    ).intercept_hosts
    assert upstream_for(hosts, "api.openai.com", 443).base == "http://127.0.0.1:4000"
    assert upstream_for(hosts, "api.openai.com", 443).prefix == "/openai"
    anthropic = upstream_for(hosts, "API.anthropic.com", 443)
    assert (anthropic.name, anthropic.base, anthropic.prefix) == ("api.anthropic.com", "https://api.anthropic.com", "")
    assert upstream_for(hosts, "api.anthropic.com", 8443).base == "https://api.anthropic.com:8443"
    assert upstream_for(hosts, "api.anthropic.com", 80, "http").base == "http://api.anthropic.com"
    assert upstream_for(hosts, "github.com", 443) is None


def test_listen_token_and_upstream_ca_settings(tmp_path: Path):
    s = config.load({}, environ={"PROMPTTAP_INTERCEPT_LISTEN": "127.0.0.1:9999"})
    assert s.intercept_listen == ("127.0.0.1", 9999)
    with pytest.raises(config.ConfigError, match="reachable from other machines") as exc:
        config.load({"intercept_listen": "0.0.0.0:8789"}, environ={})
    assert "\n" not in str(exc.value)
    s = config.load({"intercept_listen": "0.0.0.0:8789"}, environ={"PROMPTTAP_INTERCEPT_TOKEN": "t0ken"})
    assert s.intercept_token == "t0ken" and "t0ken" not in repr(s)
    assert config.load({"intercept_listen": "[::1]:8789"}, environ={}).intercept_listen == ("::1", 8789)
    assert config.load({"intercept_listen": "localhost:8789"}, environ={}).intercept_listen == ("localhost", 8789)

    private = trustme.CA()
    ca_file = tmp_path / "private-ca.pem"
    private.cert_pem.write_to_path(str(ca_file))
    assert config.load({"upstream_ca": str(ca_file)}, environ={}).upstream_ca == ca_file
    assert config.load({}, environ={"PROMPTTAP_UPSTREAM_CA": str(ca_file)}).upstream_ca == ca_file
    with pytest.raises(config.ConfigError, match="upstream-ca"):
        config.load({"upstream_ca": str(tmp_path / "missing.pem")}, environ={})
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(config.ConfigError, match="upstream-ca"):
        config.load({"upstream_ca": str(tmp_path / "junk.pem")}, environ={})


def test_serve_refuses_a_non_loopback_intercept_listen_without_a_token(tmp_path: Path):
    port = free_port()
    for args, env in (
        (["--intercept-listen", f"0.0.0.0:{port}"], clean_env()),
        ([], clean_env(PROMPTTAP_INTERCEPT_LISTEN=f"0.0.0.0:{port}")),
    ):
        result = prompttap("serve", "--intercept", *args, "--home", str(tmp_path), "--no-ui", env=env)
        assert result.returncode == 2
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert lines == [
            f"prompttap: --intercept-listen 0.0.0.0:{port} is reachable from other machines: set --intercept-token "
            "or PROMPTTAP_INTERCEPT_TOKEN so the forward proxy is not an open relay, or bind it to 127.0.0.1"
        ]
        assert not (tmp_path / "store").exists()  # refused before anything started
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_proxy_authorization():
    import base64

    def basic(userpass: str) -> str:
        return "Basic " + base64.b64encode(userpass.encode()).decode()

    assert authorized(None, "") and authorized("anything", "")
    assert authorized(basic("prompttap:s3cret"), "s3cret")
    assert authorized(basic("any-user:s3cret"), "s3cret")
    assert authorized(basic("s3cret:"), "s3cret")
    assert authorized("basic   " + basic("u:s3cret")[6:], "s3cret")
    for bad in (None, "", basic("u:wrong"), basic("u:"), basic("s3cret:x"), "Bearer s3cret", "Basic !!!", "Basic"):
        assert not authorized(bad, "s3cret"), bad


# -- prompttap env -------------------------------------------------------------------------------


def test_env_exports_eval_in_sh(tmp_path: Path):
    home = tmp_path / "home"
    script = f'eval "$({sys.executable} -m prompttap env --home {home})" && env'
    result = subprocess.run(["sh", "-c", script], env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    ca_dir = (home / "ca").resolve()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert env[name] == "http://127.0.0.1:8789"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == str(ca_dir / "bundle.pem")
    assert env["NODE_EXTRA_CA_CERTS"] == str(ca_dir / "prompttap-ca.pem")
    assert env["NODE_USE_ENV_PROXY"] == "1"
    assert (ca_dir / "bundle.pem").is_file() and (ca_dir / "prompttap-ca.pem").is_file()
    assert "created a local CA" in result.stderr  # said on stderr, out of eval's way

    # Only the variables, each one export: nothing else for eval to run.
    printed = prompttap("env", "--home", str(home)).stdout.splitlines()
    assert len(printed) == len(VARIABLES) and all(line.startswith("export ") for line in printed)
    assert {line.split("=", 1)[0].removeprefix("export ") for line in printed} == VARIABLES


def test_env_with_a_token_and_a_wildcard_bind(tmp_path: Path):
    port = free_port()
    token = "s3cr t/@:x"
    script = (
        f'eval "$({sys.executable} -m prompttap env --home {tmp_path} --intercept-listen 0.0.0.0:{port})" '
        '&& printf "%s" "$HTTPS_PROXY"'
    )
    result = subprocess.run(
        ["sh", "-c", script],
        env=clean_env(PROMPTTAP_INTERCEPT_TOKEN=token),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"http://prompttap:s3cr%20t%2F%40%3Ax@127.0.0.1:{port}"
    ipv6 = prompttap("env", "--home", str(tmp_path), "--intercept-listen", f"[::]:{port}", "--intercept-token", "t")
    assert f"export HTTPS_PROXY='http://prompttap:t@[::1]:{port}'" in ipv6.stdout.splitlines()


# -- prompttap run -------------------------------------------------------------------------------

CHILD = """
import json, os, socket, ssl, sys
import httpx

def fetch(context):
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="api.openai.com") as tls:
            tls.sendall(b"GET / HTTP/1.1\\r\\nhost: api.openai.com\\r\\n\\r\\n")
            return tls.recv(4096).split(b"\\r\\n\\r\\n", 1)[1].decode()

print(json.dumps({
    "env": {k: os.environ.get(k) for k in VARIABLES},
    "ssl": fetch(ssl.create_default_context()),  # OpenSSL's defaults: SSL_CERT_FILE
    "httpx": fetch(httpx.create_ssl_context()),  # what the openai and anthropic SDKs use
}))
sys.exit(5)
"""


def test_run_python_gets_the_env_and_trusts_the_ca(tmp_path: Path):
    ca = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    with tls_server(ca.server_context("api.openai.com"), b"through prompttap's certificate") as (port, _):
        code = CHILD.replace("PORT", str(port)).replace("VARIABLES", repr(sorted(VARIABLES)))
        result = prompttap("run", "--home", str(tmp_path), "--", sys.executable, "-c", code)
    assert result.returncode == 5, result.stderr
    out = json.loads(result.stdout)
    assert set(out["env"]) == VARIABLES and all(out["env"].values())
    assert out["env"]["SSL_CERT_FILE"] == str(ca.bundle_path.resolve())
    assert out["ssl"] == out["httpx"] == "through prompttap's certificate"
    # Nothing listens on the forward proxy's port here: a warning, and the command ran anyway.
    assert "no forward proxy answers at 127.0.0.1:8789" in result.stderr

    # Without `prompttap run` the same client refuses prompttap's certificate.
    with tls_server(ca.server_context("api.openai.com")) as (port, _):
        code = CHILD.replace("PORT", str(port)).replace("VARIABLES", repr(sorted(VARIABLES)))
        plain = subprocess.run(
            [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
        )
    assert plain.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in plain.stderr


def test_run_curl_trusts_the_ca(tmp_path: Path):
    ca = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    with tls_server(ca.server_context("api.anthropic.com"), b"hello curl") as (port, _):
        url = f"https://api.anthropic.com:{port}/v1/models"
        curl = ["curl", "-sS", "--noproxy", "*", "--resolve", f"api.anthropic.com:{port}:127.0.0.1", url]
        result = prompttap("run", "--home", str(tmp_path), "--", *curl)
        plain = subprocess.run(curl, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello curl"
    assert plain.returncode == 60  # the control: curl on its own does not trust prompttap's CA


def test_run_curl_goes_to_the_forward_proxy_with_the_token(tmp_path: Path):
    with refusing_proxy() as (port, heads):
        result = prompttap(
            "run",
            "--home",
            str(tmp_path),
            "--intercept-listen",
            f"127.0.0.1:{port}",
            "--",
            "curl",
            "-sS",
            "https://api.openai.com/v1/models",
            env=clean_env(PROMPTTAP_INTERCEPT_TOKEN="tok3n"),
        )
    assert result.returncode != 0  # the stand-in proxy answered 403
    assert "no forward proxy answers" not in result.stderr
    assert len(heads) == 1
    assert heads[0].startswith(b"CONNECT api.openai.com:443 HTTP/1.1\r\n")
    credentials = header(heads[0], "proxy-authorization")
    assert authorized(credentials, "tok3n") and not authorized(credentials, "other")


def test_run_node_trusts_the_ca(tmp_path: Path):
    ca = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    script = (
        "require('https').get({host: '127.0.0.1', port: PORT, servername: 'api.openai.com', path: '/'}, r => {"
        " let d = ''; r.on('data', c => d += c); r.on('end', () => console.log(r.statusCode, d)); })"
        ".on('error', e => { console.log('error', e.code); process.exit(3); });"
    )
    with tls_server(ca.server_context("api.openai.com"), b"hello node") as (port, _):
        code = script.replace("PORT", str(port))
        result = prompttap("run", "--home", str(tmp_path), "--", "node", "-e", code)
        plain = subprocess.run(["node", "-e", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200 hello node"
    assert plain.returncode == 3 and "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in plain.stdout


def test_run_returns_the_exit_status_and_the_command_gets_signals(tmp_path: Path):
    assert prompttap("run", "--home", str(tmp_path), "--", "sh", "-c", "exit 0").returncode == 0
    assert prompttap("run", "--home", str(tmp_path), "--", "sh", "-c", "exit 42").returncode == 42
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(8))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
        "sys.exit(1)\n"
    )
    for sig, code in ((signal.SIGTERM, 7), (signal.SIGINT, 8)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "prompttap", "run", "--home", str(tmp_path), "--", sys.executable, "-c", child],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code
    # A command killed by a signal is reported the way a shell reports it.
    killed = subprocess.run(
        ["sh", "-c", f'{sys.executable} -m prompttap run --home {tmp_path} -- sh -c "kill -9 \\$\\$"; echo $?'],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.stdout.strip() == "137"


def ignored_signals(status: str) -> int:
    return int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)


def test_run_does_not_pass_on_pythons_ignored_signals(tmp_path: Path):
    """Python ignores SIGPIPE, and an ignored signal stays ignored across exec: the command must get
    the default back, or `prompttap run -- CMD | head` leaves CMD writing into a closed pipe."""
    sigpipe = 1 << (signal.SIGPIPE - 1)
    result = prompttap("run", "--home", str(tmp_path), "--", "cat", "/proc/self/status")
    assert result.returncode == 0
    assert not ignored_signals(result.stdout) & sigpipe
    # The control: what a command started by Python without restoring signals inherits.
    control = subprocess.run(
        ["cat", "/proc/self/status"], capture_output=True, text=True, restore_signals=False, check=True
    )
    assert ignored_signals(control.stdout) & sigpipe


def test_run_errors_are_one_line(tmp_path: Path):
    missing = prompttap("run", "--home", str(tmp_path), "--", "no-such-command-prompttap")
    assert missing.returncode == 127
    assert (
        missing.stderr.splitlines()[-1] == "prompttap: cannot run no-such-command-prompttap: No such file or directory"
    )
    empty = prompttap("run", "--home", str(tmp_path))
    assert (
        empty.returncode == 2 and empty.stderr.strip() == "prompttap: run needs a command: prompttap run -- CMD ARGS..."
    )


# -- prompttap ca --------------------------------------------------------------------------------


def test_ca_shows_the_certificate_and_how_to_trust_it(tmp_path: Path):
    first = prompttap("ca", "--home", str(tmp_path))
    assert first.returncode == 0, first.stderr
    ca = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    assert not ca.reissued
    out = first.stdout
    assert out.startswith("Created a new CA")
    assert f"prompttap's CA certificate: {ca.cert_path.resolve()}" in out
    assert ca.fingerprint in out
    for host in BUILTIN_HOSTS:
        assert host in out
    for runtime in ("Python", "requests", "curl", "Node.js", "Go", "Java", "Debian / Ubuntu", "macOS", "Windows"):
        assert runtime in out, runtime
    assert f"export NODE_EXTRA_CA_CERTS={ca.cert_path.resolve()}" in out
    assert f"export SSL_CERT_FILE={ca.bundle_path.resolve()}" in out
    assert "update-ca-certificates" in out and "keytool -importcert" in out

    again = prompttap("ca", "--home", str(tmp_path))
    assert not again.stdout.startswith(("Created", "Re-issued")) and ca.fingerprint in again.stdout


def test_ca_rotate_and_a_changed_host_list(tmp_path: Path):
    before = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    changed = prompttap("ca", "--home", str(tmp_path), "--intercept-host", "llm.corp.example")
    assert "The configured hosts differ (+llm.corp.example)" in changed.stdout
    assert LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS).fingerprint == before.fingerprint  # not re-issued

    rotated = prompttap("ca", "--home", str(tmp_path), "--rotate", "--intercept-host", "llm.corp.example")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("Re-issued the CA (rotated on request): trust the new one again")
    after = LocalCA.load_or_create(tmp_path / "ca", [*BUILTIN_HOSTS, "llm.corp.example"])
    assert not after.reissued and after.fingerprint != before.fingerprint
    assert after.fingerprint in rotated.stdout and "llm.corp.example" in after.hosts
    assert (tmp_path / "ca" / "bundle.pem").read_bytes().endswith(after.cert_pem)
    assert oct((tmp_path / "ca" / "prompttap-ca-key.pem").stat().st_mode & 0o777) == "0o600"


def test_env_and_run_do_not_reissue_the_ca(tmp_path: Path):
    """Re-issuing is serve's job: a client command never swaps the CA under a running forward proxy."""
    before = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    prompttap("env", "--home", str(tmp_path), "--intercept-host", "new.example")
    prompttap("run", "--home", str(tmp_path), "--intercept-host", "new.example", "--", "true")
    assert LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS).fingerprint == before.fingerprint

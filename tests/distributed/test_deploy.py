"""The launch recipes (deploy/) and the README's distributed section: manifests parse, commands exist.

The manifests (both variants: a shared volume, or an object store in deploy/kubernetes/object-store)
are validated offline against Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: an
unknown or misspelt field fails), and the Slurm script passes shellcheck.

Every `mnist-hpo ...` command line in the Kubernetes manifests, the Slurm script and the README's
"Launching a distributed study" must name a real command, and each of its flags must appear in that
command's --help. No cluster is needed: this keeps the recipes from rotting as the CLI changes.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml
from typer.testing import CliRunner

from mnist_hpo.cli import app

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
OBJECT_STORE = sorted((ROOT / "deploy" / "kubernetes" / "object-store").glob("*.yaml"))  # replaces the shared-volume files
SBATCH = sorted((ROOT / "deploy" / "slurm").glob("*.sbatch"))
KUBERNETES_VERSION = "1.30.0"  # the oldest release still commonly run; the manifests use nothing newer


def documents(paths: list[Path] = KUBERNETES) -> list[tuple[Path, dict]]:
    return [(path, doc) for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str, name: str, paths: list[Path] = KUBERNETES) -> dict:
    matches = [doc for _, doc in documents(paths) if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"one {kind} {name}"
    return matches[0]


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict) -> list[dict]:
    if doc["kind"] not in ("Job", "Deployment", "StatefulSet"):
        return []
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


LAUNCHERS = {"srun", "exec", "sudo", "nohup", "time", "env"}


def command_lines_in_text(text: str) -> list[list[str]]:
    """`mnist-hpo ...` commands in shell text or markdown, commented-out examples and continuation lines included.

    A command is `mnist-hpo` where a shell command starts: first in its line or after ; && || |,
    after VAR=value assignments or a launcher (srun, exec...), or after `--` (kubectl exec ... --).
    """
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if "mnist-hpo" not in line:
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            parts = re.split(r"(;|&&|\|\||\|)$", token)
            word, ended = parts[0], len(parts) > 1
            if word:
                segment.append(word)
            if not ended:
                continue
            for index, part in enumerate(segment):
                if part == "mnist-hpo":
                    before = segment[:index]
                    if all("=" in b or b in LAUNCHERS for b in before) or before[-1:] == ["--"]:
                        found.append(segment[index:])
                    break
            segment = []
    return found


def all_command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for path, doc in documents([*KUBERNETES, *OBJECT_STORE]):
        for container in containers(doc):
            command = [*container.get("command", []), *container.get("args", [])]
            if command[:1] == ["mnist-hpo"]:
                lines.append((f"{path.name}: {container['name']}", command))
            elif command[:2] in (["sh", "-c"], ["bash", "-c"]):
                lines += [(f"{path.name}: {container['name']}", c) for c in command_lines_in_text(command[2])]
    for path in SBATCH:
        lines += [(path.name, c) for c in command_lines_in_text(path.read_text())]
    lines += [("README.md", c) for c in command_lines_in_text(readme_section())]
    return lines


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Launching a distributed study\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "README.md has a section '## Launching a distributed study'"
    return match.group(1)


@functools.cache
def help_text(*path: str) -> str:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def resolve(tokens: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The command path (e.g. ("study", "create")) and the remaining arguments of a `mnist-hpo` line."""
    command = typer.main.get_command(app)
    path: list[str] = []
    rest = tokens[1:]
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command = command.commands[rest[0]]
        path.append(rest.pop(0))
    assert not hasattr(command, "commands") or rest == ["--help"], f"`{shlex.join(tokens)}` names no command"
    return tuple(path), rest


def test_every_kubernetes_manifest_parses_and_names_itself():
    assert KUBERNETES, "deploy/kubernetes holds the manifests"
    for path, doc in documents():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path


def test_the_kubernetes_recipe_has_its_parts():
    database = by_kind("StatefulSet", "mnist-hpo-postgres")
    assert pod_spec(database)["containers"][0]["image"].startswith("postgres:")
    secrets = [doc for _, doc in documents() if doc["kind"] == "Secret" and doc["metadata"]["name"] == "mnist-hpo-db"]
    assert len(secrets) == 2 and all("MNIST_HPO_STORAGE" in s["stringData"] for s in secrets), "the in-cluster and the external database"

    create = by_kind("Job", "mnist-hpo-study-create")
    assert pod_spec(create)["containers"][0]["command"][:3] == ["mnist-hpo", "study", "create"]

    workers = by_kind("Job", "mnist-hpo-workers")
    assert workers["spec"]["parallelism"] >= 2 and "completions" not in workers["spec"], "a work queue: parallel, no completion count"
    worker = pod_spec(workers)["containers"][0]
    assert worker["command"][:2] == ["mnist-hpo", "worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod_spec(workers)["terminationGracePeriodSeconds"] >= 30, "time to fail and re-queue the trial on SIGTERM"

    service = by_kind("Service", "mnist-hpo-dashboard")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "the dashboard stays inside the cluster"
    dashboard = pod_spec(by_kind("Deployment", "mnist-hpo-dashboard"))["containers"][0]
    assert "--read-write" not in dashboard["command"] and "--token-file" not in dashboard["command"], "read-only, token from a Secret"
    token = next(e for e in dashboard["env"] if e["name"] == "MNIST_HPO_DASHBOARD_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token["key"] in by_kind("Secret", token["name"])["stringData"]
    ingress = by_kind("Ingress", "mnist-hpo-dashboard")
    host = ingress["spec"]["rules"][0]["host"]
    assert dashboard["command"][dashboard["command"].index(host) - 1] == "--allowed-host", "the Ingress's host is an --allowed-host"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == service["metadata"]["name"]

    # Every pod that mounts the shared volume names the same claim, and the claim can be shared.
    claim = by_kind("PersistentVolumeClaim", "mnist-hpo-shared")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_every_mnist_hpo_flag_in_the_recipes_and_the_readme_exists():
    lines = all_command_lines()
    assert len(lines) >= 8, lines
    used = set()
    for where, tokens in lines:
        path, rest = resolve(tokens)
        used.add(path)
        shown = help_text(*path)
        for token in rest:
            if token.startswith("--"):
                flag = token.split("=", 1)[0]
                assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", shown, re.M), f"{where}: `mnist-hpo {' '.join(path)}` has no {flag}"
    assert {("worker",), ("study", "create")} <= used


def test_environment_variables_in_the_recipes_are_read_by_mnist_hpo():
    source = "".join(p.read_text() for p in (ROOT / "mnist_hpo").rglob("*.py"))
    text = "".join(p.read_text() for p in [*KUBERNETES, *OBJECT_STORE, *SBATCH])
    for name in set(re.findall(r"MNIST_HPO_[A-Z_]+", text)) - {
        "MNIST_HPO_STORAGE_FILE",
        "MNIST_HPO_SHARED",
        "MNIST_HPO_STUDY",
        "MNIST_HPO_SLURM_ARTIFACTS",
    }:
        assert f'"{name}"' in source, f"{name} is set by a recipe but read nowhere"


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
def test_slurm_scripts_are_valid_bash_with_one_gpu_per_array_task(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert re.search(r"^#SBATCH --array=", text, re.M) and re.search(r"^#SBATCH --gres=gpu:1$", text, re.M)


@pytest.mark.parametrize("path", [*KUBERNETES, *OBJECT_STORE], ids=lambda p: str(p.relative_to(ROOT / "deploy" / "kubernetes")))
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError, naming the field


def test_the_object_store_variant_needs_no_shared_volume():
    assert OBJECT_STORE, "deploy/kubernetes/object-store holds the S3 variant"
    secret = by_kind("Secret", "mnist-hpo-object-store", OBJECT_STORE)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    for kind, name in (("Job", "mnist-hpo-workers"), ("Deployment", "mnist-hpo-dashboard"), ("Job", "mnist-hpo-study-create")):
        doc = by_kind(kind, name, OBJECT_STORE)
        assert all("persistentVolumeClaim" not in volume for volume in pod_spec(doc).get("volumes", [])), f"{kind} {name} mounts a claim"
        if kind == "Job" and name == "mnist-hpo-study-create":
            continue
        command = [*pod_spec(doc)["containers"][0]["command"]]
        assert command[command.index("--artifacts") + 1].startswith("s3://"), command
        sources = [source["secretRef"]["name"] for source in pod_spec(doc)["containers"][0]["envFrom"]]
        assert "mnist-hpo-object-store" in sources and "mnist-hpo-db" in sources
    assert by_kind("Service", "mnist-hpo-dashboard", OBJECT_STORE)["spec"].get("type", "ClusterIP") == "ClusterIP"


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
def test_slurm_scripts_pass_shellcheck(script):
    if shutil.which("shellcheck") is None:  # a failure in CI (tests/conftest.py), where .ci/run installs it
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    done = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout

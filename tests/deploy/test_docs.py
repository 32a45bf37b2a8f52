"""docs/kubernetes.md says what deploy/ does: its Deployment arguments, its workload
snippet and its RBAC tables are the rendered manifests'."""

from __future__ import annotations

import re

import yaml

from tests.deploy.manifests import CONTROL_PLANE, ROOT, container, find, grants, render

DOC = (ROOT / "docs" / "kubernetes.md").read_text()


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def code_blocks(text: str, language: str = "") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_deployment_arguments() -> None:
    (block,) = [b for b in code_blocks(section("What runs where"))
                if b.startswith("control-plane")]
    args = container(find(render("base"), "Deployment", CONTROL_PLANE))["args"]
    assert block.split() == args


def test_workload_snippet_is_the_example_apps() -> None:
    (block,) = code_blocks(section("Workloads: the CA root and tokens"), "yaml")
    snippet = yaml.safe_load(block)["spec"]
    deployment = find(render("example-app"), "Deployment", "cart")
    pod = deployment["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "automountServiceAccountToken"):
        assert snippet[field] == pod[field]
    (doc_container,) = snippet["containers"]
    assert doc_container["env"] == container(deployment)["env"]
    assert all(m in container(deployment)["volumeMounts"]
               for m in doc_container["volumeMounts"])
    assert all(v in pod["volumes"] for v in snippet["volumes"])


def table_grants(title: str) -> set[tuple[str, str, str, str | None]]:
    """The (group, resource, verb, name) rows of the RBAC table after ``title``."""
    text = section("RBAC")
    table = text[text.index(title):].split("\n\n")[1]
    out = set()
    for row in table.splitlines()[2:]:
        group, resources, verbs, _ = [c.strip() for c in row.strip("|").split("|")]
        group = group.strip("`").replace('""', "")
        name = None
        if " named " in resources:
            resources, _, named = resources.partition(" named ")
            name = named.strip("`")
        for resource in re.findall(r"`([^`]+)`", resources):
            for verb in verbs.split(", "):
                out.add((group, resource, verb, name))
    return out


def test_rbac_tables() -> None:
    objects = render("base")
    assert table_grants("ClusterRole `meshlib-control-plane`:") == grants(
        find(objects, "ClusterRole", CONTROL_PLANE))
    assert table_grants("Role `meshlib-control-plane` in `meshlib-system`:") == grants(
        find(objects, "Role", CONTROL_PLANE))

"""The cluster launcher's needs are installable (issue 15, item 3): the `aws` extra pins boto3, its pins
agree with constraints.txt (which must allow botocore's python-dateutil < 3), and the head node installs it."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_aws_extra_pinned_in_both_places():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = _constraints()
    for requirement in extras["aws"]:
        name, _, version = requirement.partition("==")
        assert version and pins[name.lower()] == version, requirement
    for dependency in ("botocore", "jmespath", "s3transfer"):
        assert dependency in pins, f"{dependency} (a boto3 dependency) is not pinned in constraints.txt"
    assert int(re.match(r"\d+", pins["python-dateutil"]).group()) < 3, "botocore requires python-dateutil < 3"


def test_head_node_installs_the_aws_extra():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = " ".join(cluster["head_setup_commands"])
    assert "-c constraints.txt" in head and ".[aws]" in head
    assert any("make install" in c for c in cluster["setup_commands"])

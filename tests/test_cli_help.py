"""CLIs users can read (issue 15, item 6): every option in every `--help` states its default, the
shipped predictor's recorded train command reproduces it, and feature caches go to the documented cache directory."""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
# module -> how to ask it for --help in-process
CLIS = {
    "proxy_model.train": "parse_args", "proxy_model.evaluate": "parse_args", "proxy_model.compare": "main",
    "proxy_model.calibrate": "parse_args", "proxy_model.label": "parse_args", "bench.engine": "parse_args",
    "bench.overhead": "main",
    "bench.load": "main", "bench.replay": "build_parser", "bench.sim": "parse_args", "bench.sim.live": "parse_args",
    "bench.demo": "parse_args", "deployments.serve_config": "parse_args", "deployments.serve_local": "parse_args",
    "bench.capacity": "parse_args", "bench.adapt": "parse_args", "bench.adapt.models": "parse_args", "bench.guidellm_run": "parse_args",
}
ENTRY_MODULES = {"bench.load": "bench.load.run", "bench.replay": "bench.replay.cli", "bench.sim": "bench.sim.run",
                 "bench.capacity": "bench.capacity.run", "bench.adapt": "bench.adapt.cli"}
REQUIRED = {"--data", "--out", "--checkpoint", "--run"}


def _help_text(module: str, entry: str, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    mod = importlib.import_module(ENTRY_MODULES.get(module, module))
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit):
        if entry == "build_parser":
            getattr(mod, entry)().parse_args(["--help"])
        elif module == "bench.overhead":
            getattr(mod, entry)()
        else:
            getattr(mod, entry)(["--help"])
    return capsys.readouterr().out


def _options(help_text: str) -> dict[str, str]:
    """option string -> its help block."""
    entries, current = {}, None
    for line in help_text.split("options:", 1)[1].splitlines():
        match = re.match(r"^  (-{1,2}[\w-]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
    return entries


@pytest.mark.parametrize("module", sorted(CLIS))
def test_every_option_shows_its_default(module, monkeypatch, capsys):
    options = _options(_help_text(module, CLIS[module], monkeypatch, capsys))
    assert options, module
    missing = [o for o, text in options.items()
               if o not in ("-h", "--help") and "default" not in text.lower() and o not in REQUIRED]
    assert not missing, f"{module}: options without a default in --help: {missing}"


def test_shipped_recipe_reproduces_the_default_checkpoint():
    """The command recorded in the shipped default checkpoint parses and builds that checkpoint's shape."""
    import shlex

    from proxy_model.train import parse_args

    shipped = json.loads((ROOT / "proxy_model" / "checkpoints" / "default" / "config.json").read_text())
    command = shlex.split(shipped["train"]["command"])
    assert command[:3] == ["python", "-m", "proxy_model.train"]
    args = parse_args(command[3:])
    assert args.head == shipped["head"]["kind"]
    assert args.hidden * args.ensemble == shipped["head"]["hidden"]  # ensemble heads sit side by side
    assert args.num_buckets == shipped["head"]["num_buckets"]
    assert args.num_layers == shipped["encoder"]["num_layers"]
    assert [int(x) for x in args.feature_layers.split(",")] == shipped["features"]["layers"]
    assert args.lexical == shipped["features"]["lexical"]
    assert args.max_prompt_tokens == shipped["encoder"]["max_prompt_tokens"]
    assert args.init_encoder == shipped["encoder"].get("init_encoder")
    assert args.runtime == shipped["encoder"].get("runtime", "torch")
    assert parse_args(["--data", "x", "--out", "y", "--num-layers", "0"]).num_layers is None  # 0 = all layers


def test_feature_cache_is_under_the_cache_dir(monkeypatch, tmp_path):
    from proxy_model.cli import default_cache_dir
    from proxy_model.train import parse_args

    monkeypatch.delenv("SSJF_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == str(Path.home() / ".cache" / "ssjf-serve" / "proxy_features")
    monkeypatch.setenv("SSJF_CACHE_DIR", str(tmp_path))
    assert parse_args(["--data", "x", "--out", "y"]).cache_dir == str(tmp_path / "proxy_features")
    assert "runs" not in Path(default_cache_dir()).relative_to(tmp_path).parts

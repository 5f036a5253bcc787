"""The main job: `mlconnector demo` on the embedded default (SQLite, eager Celery, in-process
sandboxes), run as a newcomer runs it, in a fresh directory with no server configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RECORDS = "6"
AGAIN = ("--pair", "servicetitan-epicor", "--pair", "epicor-servicenow")  # the second run: two pairs, to stay quick


def _run(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLCONNECTOR_", "DATABASE_URL", "CELERY_", "FLOWER_"))}
    env.update(MLCONNECTOR_HOME=str(home), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "mlconnector.cli", *args], cwd=home, env=env, text=True,
                          capture_output=True, timeout=timeout)


def _story(pairs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must not change between two runs of one seed: per flow what ended held, failed or
    pending, and per pair which planted cases were handled."""
    return [(p["pair"], tuple((f["flow"], f["held"], f["failed"], f["pending"]) for f in p["flows"]),
             tuple((c["case"], c["handled"]) for c in p["planted"])) for p in pairs]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("demo")
    first = _run(home, "demo", "--json", "--records", RECORDS)
    second = _run(home, "demo", "--json", "--records", RECORDS, *AGAIN)
    return home, first, second, _run(home, "demo", "--records", RECORDS, "--pair", "servicetitan-epicor")


def test_every_pair_runs_and_every_planted_case_is_handled(demo_runs: Any) -> None:
    from mlconnector.demo import demo_pairs

    _, first, _, _ = demo_runs
    story = json.loads(first.stdout)  # stdout is the JSON document alone; progress went to stderr
    problems = [(p["pair"], p["unexplained"], [c for c in p["planted"] if not c["handled"]])
                for p in story["pairs"] if not p["ok"]]
    assert first.returncode == 0 and not problems, problems or first.stderr[-3000:]
    assert [p["pair"] for p in story["pairs"]] == [p.name for p in demo_pairs()]
    assert len(story["pairs"]) >= 3
    for pair in story["pairs"]:
        assert pair["ok"] and not pair["unexplained"], pair
        assert all(c["handled"] for c in pair["planted"]), pair["planted"]
        assert sum(f["created"] + f["updated"] for f in pair["flows"]) > 0, pair
        assert "could not read the target back" not in pair["target"]
        cases = " ".join(c["case"] for c in pair["planted"])
        assert "429" in cases and "token expiring" in cases
    for system, figures in story["vendors"].items():
        assert figures["calls"] > 0, system
    targets = {p["flows"][0]["target"] for p in story["pairs"]}
    assert all(story["vendors"][t]["throttled"] >= 3 and story["vendors"][t]["token_refreshes"] >= 2 for t in targets)
    planted = {c["case"] for p in story["pairs"] for c in p["planted"]}
    assert {"a webhook delivered twice, and one with a bad signature", "near-duplicate vendor names",
            "an unmapped GL account", "a record re-sent to a stock ServiceNow instance"} <= planted


def test_a_second_run_tells_the_same_story_on_a_fresh_database(demo_runs: Any) -> None:
    _, first, second, _ = demo_runs
    assert second.returncode == 0, second.stderr[-4000:]
    assert "the previous demo's database was replaced" in second.stderr
    again = _story(json.loads(second.stdout)["pairs"])
    before = [p for p in _story(json.loads(first.stdout)["pairs"]) if p[0] in AGAIN]
    assert again == before, [(a, b) for a, b in zip(again, before) if a != b]


def test_the_words_say_what_happened_in_each_target_and_where_to_look(demo_runs: Any) -> None:
    home, _, _, words = demo_runs
    assert words.returncode == 0, words.stderr[-4000:]
    assert "Traceback" not in words.stdout + words.stderr
    assert "planted:" in words.stdout and "NOT HANDLED" not in words.stdout
    assert "Epicor, read back through its OData API:" in words.stdout
    assert "mlconnector records list --status held" in words.stdout
    for noise in ("alembic", "kombu", "INFO"):
        assert noise not in words.stdout
    # The database stays: the operator's commands work on it afterwards.
    held = _run(home, "records", "list", "--status", "held", "--json")
    assert held.returncode == 0 and json.loads(held.stdout), held.stderr
    shown = _run(home, "records", "show", str(json.loads(held.stdout)[0]["id"]))
    assert shown.returncode == 0 and "Traceback" not in shown.stdout + shown.stderr
    assert _run(home, "status").returncode == 0


def _readme_block(after_heading: str) -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split(f"## {after_heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_commands_after_the_demo_run_as_written(demo_runs: Any) -> None:
    home = demo_runs[0]
    commands = _readme_block("What the demo just did")
    assert len(commands) >= 5 and all(c.startswith("mlconnector ") for c in commands)
    for command in commands:
        done = _run(home, *command.split()[1:])
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        assert "Traceback" not in done.stdout + done.stderr, command
    # The first lines of "Connecting a real system" that need no vendor run offline too.
    template = _readme_block("Connecting a real system")[0]
    done = _run(home, *template.split(">")[0].split()[1:])
    assert done.returncode == 0 and json.loads(done.stdout)["systems"], done.stderr

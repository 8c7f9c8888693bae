"""A newcomer's first run, as real processes in an empty folder: `custodes init` writes a commented configuration,
`custodes serve` starts on the shipped rules, playbooks and hunts (package data), and a shipped playbook runs with
the default configuration (the `soc` channel logs). Errors name the setting and the path looked at."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import orjson

from conftest import ROOT
from custodes.config import SHIPPED, load_settings

CUSTODES = str(ROOT / ".venv" / "bin" / "custodes")


def custodes(*args: str, cwd: Path, expect: int = 0) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CUSTODES_")}
    done = subprocess.run(
        [CUSTODES, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "200"}
    )
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout if expect == 0 else done.stderr


def test_init_writes_a_commented_configuration_that_loads_to_the_defaults(tmp_path: Path) -> None:
    out = custodes("init", cwd=tmp_path)
    assert "wrote custodes.yaml" in " ".join(out.split())
    written = (tmp_path / "custodes.yaml").read_text()
    assert written.count("\n#") > 20 and "connectors:" in written and "env:" in written
    settings = load_settings(tmp_path / "custodes.yaml", environ={})
    assert settings.detection.rules == [SHIPPED / "detections" / "rules"]
    assert settings.playbooks.paths == [SHIPPED / "playbooks"] and settings.hunts.paths == [SHIPPED / "hunts"]
    refused = custodes("init", cwd=tmp_path, expect=2)
    assert f"{tmp_path / 'custodes.yaml'}: exists already" in refused and "--force" in refused
    assert "Traceback" not in refused


def test_serve_starts_in_an_empty_folder_on_the_shipped_content(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CUSTODES_")}
    process = subprocess.Popen(
        [CUSTODES, "serve", "--port", "0"], cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        started = None
        while time.monotonic() < deadline and started is None:
            line = process.stderr.readline()
            if not line:
                break
            if "serving on" in line:
                started = orjson.loads(line)
        assert started is not None, "serve did not start"
        assert started["rules"] >= 30 and started["playbooks"] == 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "var" / "custodes.db").exists()


def test_a_shipped_playbook_runs_with_the_default_configuration(tmp_path: Path) -> None:
    trail = tmp_path / "trail.json"
    record = {
        "eventVersion": "1.09",
        "eventID": "5d2c1a7e-0b7f-4f43-9a52-3f4b8e1c2d11",
        "eventTime": "2026-12-01T22:14:05Z",
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": "StopLogging",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.23",
        "userIdentity": {"type": "IAMUser", "userName": "mallory", "arn": "arn:aws:iam::111122223333:user/mallory"},
        "requestParameters": {"name": "arn:aws:cloudtrail:us-east-1:111122223333:trail/org-trail"},
    }
    trail.write_bytes(orjson.dumps({"Records": [record]}))
    summary = orjson.loads(custodes("replay", str(trail), "--source", "cloudtrail", "--json", cwd=tmp_path))
    assert summary["new_findings"] >= 1 and summary["runs"] >= 1
    runs = orjson.loads(custodes("run", "list", "--json", cwd=tmp_path))
    tampering = next(run for run in runs if run["playbook"] == "logging-tampering@1")
    steps = {step["step"]: step for step in tampering["steps"]}
    assert steps["notify_soc"]["status"] == "succeeded", steps["notify_soc"]
    assert steps["notify_soc"]["result"]["logged"] is True
    assert "logging tampering" in steps["notify_soc"]["result"]["text"]
    assert tampering["status"] == "waiting", "the suspension waits for its approval"


def test_a_missing_path_names_the_setting_and_the_path(tmp_path: Path) -> None:
    (tmp_path / "custodes.yaml").write_text("playbooks:\n  paths: [my-playbooks]\n")
    out = custodes("serve", "--port", "0", cwd=tmp_path, expect=2)
    assert f"(playbooks.paths[0]): {tmp_path / 'my-playbooks'}: no such file or folder" in out
    assert len([line for line in out.splitlines() if line.startswith("error")]) == 1


def test_playbook_validate_with_a_configuration_catches_an_unknown_channel(tmp_path: Path) -> None:
    shipped = (SHIPPED / "playbooks" / "logging-tampering.yml").read_text()
    (tmp_path / "book.yml").write_text(
        shipped.replace("channel: soc\n      text: >-", "channel: secops\n      text: >-")
    )
    (tmp_path / "custodes.yaml").write_text("responder:\n  channels:\n    soc-pager: {url: env:PAGER_URL}\n")
    os.environ.setdefault("PAGER_URL", "https://hooks.example.com/x")
    out = custodes("playbook", "validate", "book.yml", "-c", "custodes.yaml", cwd=tmp_path, expect=2)
    assert re.search(r"book\.yml:\d+:\d+ .*no notify channel 'secops' under responder\.channels", out), out
    assert "soc-pager" in out
    assert "ok" in custodes("playbook", "validate", "book.yml", cwd=tmp_path)


def test_the_wheel_carries_every_shipped_rule_playbook_and_hunt() -> None:
    """The package-data globs of pyproject.toml cover every file of the shipped folders (what a wheel holds)."""
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["custodes"]
    package = ROOT / "src" / "custodes"
    carried = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    shipped = {
        package / "content" / folder / path.relative_to(ROOT / folder)
        for folder in ("detections", "playbooks", "hunts")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
    }
    assert shipped and shipped <= carried, sorted(str(p) for p in shipped - carried)
    assert package / "content" / "custodes.yaml" in carried

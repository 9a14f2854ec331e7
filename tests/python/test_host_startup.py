"""The Python API's start-up has a deadline (DESIGN §10): ``Bridge(...)`` on a service
module whose import never finishes raises ``CallTimeoutError`` after
``invoke.start_timeout_ms``, and the host interpreter still exits promptly."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = REPO_ROOT / "tests" / "hostile" / "services"


@pytest.mark.parametrize("module", ["host_spin_import", "host_sleep_import"])
def test_a_module_whose_import_never_finishes_fails_the_bridge_start(
    module: str, tmp_path: Path
) -> None:
    config = tmp_path / "cerebros.toml"
    config.write_text("[invoke]\nstart_timeout_ms = 1000\n")
    code = f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT / "python")!r})
        from cerebros_service import _bridge
        try:
            _bridge.Bridge(config={str(config)!r}, module={module!r}, repo_path={str(SERVICES)!r})
        except _bridge.CallTimeoutError as err:
            print("timeout:", err.message)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREBROS_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=REPO_ROOT,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "invoke.start_timeout_ms" in done.stdout, (done.stdout, done.stderr)
    # The deadline, plus the grace, plus a second, plus the interpreter's own start.
    assert elapsed < 1.0 + 0.25 + 1.0 + 2.0, elapsed

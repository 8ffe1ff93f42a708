"""Doc tests: every shell and Python example of README.md and docs/*.md runs, as written, against
a running ``beats demo`` on its default ports (the ports the examples use).

Each shell command runs on its own, in a working directory holding the page's files
(``<!-- file: NAME -->`` blocks): ``curl -N`` (an endless stream) runs for ``STREAM_SECONDS`` and
must print an event; a command ending in ``&`` runs in the background until the block is done
(when it names a ``--port``, the next command waits for that port to answer); every other command
must exit 0 with output. A Python example runs in a fresh interpreter and must exit 0 with output
and nothing on stderr that looks like an error. A block that is not run says why
(``<!-- not run: REASON -->``).

The dashboard's screenshot in docs/ is taken here, from the demo: with
``BEATS_UPDATE_SCREENSHOT=1`` the one taken replaces ``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import CHROMIUM, DRIVER, chromium
from tests.docs.examples import Block, commands, examples, files

pytestmark = pytest.mark.slow

STREAM_SECONDS = 4.0
HIVEMQ = "http://127.0.0.1:8101"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
# the checkout on the path stands for `pip install ./spark_receiver` (the Spark examples)
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    "PYTHONPATH": str(ROOT),
    "PYTHONUNBUFFERED": "1",
}


def _wait_ready(url: str, *, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {seconds} s")


def _head(url: str) -> int:
    with httpx.stream("GET", f"{url}/events?last_event_id=0", timeout=10) as response:
        head = 0
        for line in response.iter_lines():
            if line.startswith("id:"):
                head = int(line[3:])
                if head >= 50:
                    return head
    return head


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """``beats demo`` on its default ports, with at least 50 sensor readings logged."""
    data = tmp_path_factory.mktemp("demo")
    log = (data / "demo.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "beats", "demo", "--data-dir", str(data / "logs")],
        stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_ready("http://127.0.0.1:8080/readyz")
        assert _head(HIVEMQ) >= 50
        yield process
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        log.close()


def _port(command: str) -> int | None:
    match = re.search(r"--port[ =](\d+)", command)
    return int(match.group(1)) if match else None


def _run_command(command: str, cwd: Path) -> None:
    if "curl -N" in command:
        with pytest.raises(subprocess.TimeoutExpired) as stream:
            subprocess.run(
                command, shell=True, cwd=cwd, env=ENV, capture_output=True,
                timeout=STREAM_SECONDS, check=False,
            )  # fmt: skip
        output = (stream.value.stdout or b"").decode()
        assert "data:" in output, f"{command!r} printed no event: {output[-500:]!r}"
        return
    done = subprocess.run(
        command, shell=True, cwd=cwd, env=ENV, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{command!r}: {done.stderr.decode()[-1000:]}"
    assert done.stdout.strip(), f"{command!r} printed nothing"


def _run_shell(block: Block, cwd: Path) -> None:
    background: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands(block.text):
            if command.endswith("&"):
                argv = shlex.split(command.removesuffix("&"))
                background.append(subprocess.Popen(argv, cwd=cwd, env=ENV, stderr=subprocess.PIPE))
                if (port := _port(command)) is not None:
                    _wait_ready(f"http://127.0.0.1:{port}/healthz", seconds=30)
                continue
            _run_command(command, cwd)
        for process in background:
            assert process.poll() is None, f"{block.label}: a background command ended early"
    finally:
        for process in background:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)


# Python's own reports; Spark's JVM logs stack traces at WARN as a matter of course (a query
# stopped mid-batch), which are not the example's errors
_ERRORS = ("Traceback", "Exception ignored")


def _run_python(block: Block, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", block.text], cwd=cwd, env=ENV, capture_output=True, timeout=180
    )
    stderr = done.stderr.decode()
    assert done.returncode == 0, f"{block.label}: {stderr[-2000:]}"
    assert done.stdout.strip(), f"{block.label} printed nothing"
    assert not any(word in stderr for word in _ERRORS), f"{block.label}: {stderr[-2000:]}"


RUN = [b for b in examples() if b.directive is None]


def test_every_example_either_runs_or_says_why_not() -> None:
    assert len(RUN) >= 5
    for block in examples():
        if block.directive is not None:
            kind, reason = block.directive
            assert kind == "not run" and len(reason) > 20, f"{block.label}: {block.directive}"


@pytest.mark.parametrize("block", RUN, ids=[b.label for b in RUN])
def test_example_runs_against_the_demo(
    block: Block, demo: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    for name, text in files(block.page).items():
        (tmp_path / name).write_text(text)
    if block.language == "sh":
        _run_shell(block, tmp_path)
    else:
        _run_python(block, tmp_path)
    assert demo.poll() is None, "the demo stopped"


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs chromium and chromedriver")
def test_the_dashboard_of_the_demo_in_chromium(
    demo: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    shot = tmp_path / "dashboard.png"
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
    with chromium() as driver:
        driver.get("http://127.0.0.1:8080/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script(script, ".card .badge") == ["ready"] * 4)
        wait.until(lambda d: len(d.execute_script(script, "#events tr")) >= 20)
        history = "return (sensorHistory.temperature || {})['station-001'] || []"
        wait.until(lambda d: len(d.execute_script(history)) >= 15)
        driver.set_window_size(1600, 1000)
        driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("BEATS_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")

"""The README's commands work as printed: the curl examples run against a live server and download files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import start_server
from mediarelay.media import probe

README = Path(__file__).parent.parent / "README.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_first_two_commands_are_install_run_and_test() -> None:
    blocks = bash_blocks(README.read_text())
    assert "mediarelay serve" in blocks[0] and "pip install" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci, ".ci/run must call the README's test command"


def test_curl_examples_run_as_printed(tmp_path: Path) -> None:
    text = README.read_text()
    examples = bash_blocks(text.split("## Try it with curl", 1)[1].split("\n## ", 1)[0])
    assert len(examples) >= 2, "a setup block and at least one dialect example"
    # The README runs from the checkout: `.venv/bin/mediarelay` and the default ./mediarelay-data.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    server = start_server(tmp_path, data_name="mediarelay-data")
    try:
        script = "set -euo pipefail\n" + "\n".join(examples)
        script = script.replace("http://127.0.0.1:8000", server.base_url)
        out = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=server.env, capture_output=True, text=True, timeout=240,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        server.stop()
    downloads = sorted(p for p in tmp_path.iterdir() if p.suffix in (".mp4", ".png", ".jpg", ".webp"))
    assert len(downloads) == len(examples) - 1, (downloads, out.stdout)
    for path in downloads:
        info = probe(path)  # a real media file, not an error body
        assert info.width and info.height, path

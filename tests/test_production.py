"""docs/poolers.md's "In your training and in production" snippets run as written: DDP under
torchrun (two CPU processes), torch.compile, mixed precision, ONNX export and ONNX Runtime."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "poolers.md"
SECTION = "## In your training and in production"
LAUNCH = re.compile(r"^# (\S+\.py), run as: torchrun (.+) \1$")  # a snippet's own launch line


def snippets() -> list[str]:
    text = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_section_has_a_snippet_for_each_topic():
    code = "\n".join(snippets())
    for topic in ("DistributedDataParallel", "torch.compile", "torch.autocast", "torch.onnx.export", "onnxruntime"):
        assert topic in code, topic
    ddp = [c for c in snippets() if "DistributedDataParallel(" in c]
    assert ddp and all(LAUNCH.match(c.splitlines()[0]) for c in ddp)  # launched by torchrun, as users do


@pytest.mark.parametrize("index", range(len(snippets())))
def test_snippet_runs_as_written(index, tmp_path):
    code = snippets()[index]
    launch = LAUNCH.match(code.splitlines()[0])
    script = tmp_path / (launch.group(1) if launch else "snippet.py")
    script.write_text(code)
    command = [sys.executable, script.name]
    if launch:  # torchrun, as its first line says: the module behind the console script
        command = [sys.executable, "-m", "torch.distributed.run", *launch.group(2).split(), script.name]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

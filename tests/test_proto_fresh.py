"""The checked-in protobuf modules are what ``proto/generate.py`` makes of ``proto/``."""

from __future__ import annotations

import importlib.util
import pathlib
import tempfile
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATE_SCRIPT = REPO_ROOT / "proto" / "generate.py"
CHECKED_IN = ["gochat/v1/logic_pb2.py", "gochat/v1/logic_pb2.pyi", "gochat/v1/logic_pb2_grpc.py"]


def load_generator() -> ModuleType:
    """``proto/generate.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gochat_proto_generate", GENERATE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class GeneratedModulesAreFreshTests(SynchronousTestCase):
    """Regenerating the protobuf modules reproduces the checked-in ones byte for byte."""

    def test_checked_in_modules_match_a_fresh_generation(self) -> None:
        generator = load_generator()
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = pathlib.Path(tmp)
            generated = {path.relative_to(out_dir).as_posix() for path in generator.generate(out_dir)}
            self.assertEqual(generated, set(CHECKED_IN))
            stale = [name for name in CHECKED_IN if (out_dir / name).read_bytes() != (REPO_ROOT / name).read_bytes()]
        self.assertEqual(
            stale,
            [],
            f"generated protobuf modules are out of date: {', '.join(stale)}; "
            "run `python proto/generate.py` from the repository root and commit the result",
        )

"""PythonInterpreter: model-written code, run only in a sandbox (embedded bubblewrap or remote)."""

from workers.tools.python.build import build_python_tool
from workers.tools.python.tool import PythonInterpreterTool
from workers.tools.python.types import RunResult, Sandbox

__all__ = ["PythonInterpreterTool", "RunResult", "Sandbox", "build_python_tool"]

"""Launch files: statically, that they name only things that exist; dynamically where launch_pytest is.

`launch`/`launch_ros`/`launch_pytest` are not installable from PyPI (see the README), so here the
launch files are read as Python syntax trees: every executable they start is installed by
CMakeLists.txt, every package file they point to exists and is installed, every parameter they
set is declared by the node, every launch argument they read is declared. On a real ROS 2
install (with ros2cli and launch_ros) the last test also runs `ros2 launch` on emotion.launch.py.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import signal
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import HAS_MSGS

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
CMAKE = (ROOT / "CMakeLists.txt").read_text()


def _tree(name: str) -> ast.Module:
    return ast.parse((LAUNCH / name).read_text(), filename=name)


def _calls(tree: ast.AST, func: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == func]


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _value(tree: ast.Module, expr: ast.expr | None) -> object:
    """A literal, or a module-level constant it names (``PACKAGE = "emodan_ros"``)."""
    if isinstance(expr, ast.Name):
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == expr.id for t in stmt.targets):
                return ast.literal_eval(stmt.value)
    return ast.literal_eval(expr)


def _declared_arguments(tree: ast.AST) -> set[str]:
    return {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}


def _used_configurations(tree: ast.AST) -> set[str]:
    return {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}


def _share_paths(tree: ast.AST) -> list[list[str]]:
    """String parts of PathJoinSubstitution([FindPackageShare(...), 'dir', 'file'])."""
    out = []
    for call in _calls(tree, "PathJoinSubstitution"):
        parts = call.args[0].elts  # type: ignore[attr-defined]
        out.append([ast.literal_eval(p) for p in parts if isinstance(p, ast.Constant)])
    return out


def _installed_programs() -> set[str]:
    block = re.search(r"install\(PROGRAMS(.*?)DESTINATION", CMAKE, re.S)
    assert block, "CMakeLists.txt installs no programs"
    return {Path(p).name for p in block.group(1).split()}


def _installed_dirs() -> set[str]:
    block = re.search(r"install\(DIRECTORY ([^)]*?) DESTINATION share", CMAKE)
    assert block, "CMakeLists.txt installs no share directories"
    return set(block.group(1).split())


@pytest.mark.parametrize("name", ["emotion.launch.py", "replay.launch.py"])
def test_every_launch_configuration_is_declared(name: str) -> None:
    tree = _tree(name)
    assert _used_configurations(tree) <= _declared_arguments(tree)


def test_emotion_launch_declares_the_documented_arguments() -> None:
    assert {"image_topic", "compressed", "params_file", "device", "model_path", "namespace", "use_sim_time",
            "debug_image"} <= _declared_arguments(_tree("emotion.launch.py"))


def _node_options(tree: ast.Module) -> ast.Call:
    """The ``node_options = dict(...)`` both node actions (plain and lifecycle) share."""
    (options,) = [c for c in _calls(tree, "dict") if _kw(c, "package") is not None]
    return options


def test_launched_executables_exist_and_are_installed() -> None:
    programs = _installed_programs()
    tree = _tree("emotion.launch.py")
    assert _value(tree, _kw(_node_options(tree), "package")) == "emodan_ros"
    nodes = _calls(tree, "Node") + _calls(tree, "LifecycleNode")
    assert {_value(tree, _kw(n, "executable")) for n in nodes} == {"emotion_node", "emotion_lifecycle_node"}
    for node in nodes:
        exe = _value(tree, _kw(node, "executable"))
        assert (ROOT / "scripts" / exe).is_file() and exe in programs


@pytest.mark.parametrize("name", ["emotion.launch.py", "replay.launch.py"])
def test_package_files_named_by_launch_files_exist_and_are_installed(name: str) -> None:
    paths = _share_paths(_tree(name))
    assert paths
    for parts in paths:
        assert (ROOT.joinpath(*parts)).is_file(), parts
        assert parts[0] in _installed_dirs()


def test_replay_passes_only_arguments_that_emotion_launch_declares() -> None:
    tree = _tree("replay.launch.py")
    (include,) = _calls(tree, "IncludeLaunchDescription")
    keys = {ast.literal_eval(k) for k in _kw(include, "launch_arguments").func.value.keys}  # type: ignore
    assert keys <= _declared_arguments(_tree("emotion.launch.py"))


def _node_parameter_keys() -> set[str]:
    params = _kw(_node_options(_tree("emotion.launch.py")), "parameters")
    keys: set[str] = set()
    for item in params.elts:  # type: ignore[union-attr]
        if isinstance(item, ast.Dict):
            keys |= {ast.literal_eval(k) for k in item.keys}
    return keys


def _yaml_params() -> dict:
    return yaml.safe_load((ROOT / "config" / "emotion.yaml").read_text())["/**"]["ros__parameters"]


@pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the built package: run `make test`")
def test_launch_and_yaml_parameters_are_declared_by_the_node_with_the_same_defaults() -> None:
    from emodan_ros.ros.params import PARAMS

    assert _node_parameter_keys() - {"use_sim_time"} <= set(PARAMS)
    params = _yaml_params()
    assert set(params) == set(PARAMS)
    for name, spec in PARAMS.items():
        assert params[name] == spec.default, name
        assert type(params[name]) is type(spec.default), name


@pytest.mark.skipif(shutil.which("ros2") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="ros2 launch / launch_ros are not on PyPI: this test runs on a real ROS 2 install only")
def test_emotion_launch_starts_the_node_on_a_real_ros_install() -> None:

    proc = subprocess.Popen(["ros2", "launch", "emodan_ros", "emotion.launch.py", "image_topic:=/test/image"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # SIGINT to the group, as a user's Ctrl-C: ros2 launch stops the node (SIGTERM to ros2 launch
        # alone left the node running, orphaned; SIGINT to it alone took about 40 s)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        try:  # anything of this launch still alive (its group), e.g. a node that missed the signal
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    # without a default model the node refuses to start with its clear message; with one it runs
    assert "emotion_node ready" in out or "cannot start" in out


@pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the built package: run `make test`")
def test_readme_parameter_table_is_the_schema() -> None:
    """README's table is generated from the parameter schema (`python3 tools/readme_params.py`)."""
    from emodan_ros.ros.params import markdown_table

    assert markdown_table() in (ROOT / "README.md").read_text()


def test_wait_until_stops_at_the_first_check_that_holds() -> None:
    """A discovery-based check can hold once and miss when asked again; the wait must not ask again."""
    from launch_helpers import wait_until

    answers = iter([False, True, False])
    calls: list[int] = []

    def check() -> bool:
        calls.append(1)
        return next(answers)

    assert wait_until(check, 10.0) and len(calls) == 2
    assert not wait_until(lambda: False, 0.1)

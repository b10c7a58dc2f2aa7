"""Shared test setup: DDS isolation and rclpy helpers.

Runs before any test module imports rclpy, so every node in this pytest session (and the
subprocesses it starts, which inherit the environment) talks only on loopback in a random
ROS domain: parallel test runs on a shared machine cannot see each other's topics.
"""
from __future__ import annotations

import os
import random
import time
from typing import Callable, Iterator

import pytest

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the range above
# The package's Fast DDS profile in every process of the session (the pytest process's first
# participant and every node, launch and CLI process it starts): camera-size frames over best
# effort are lost without it on both ends of a stream.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "fastdds.xml"))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


HAS_RCLPY = _has("rclpy")
HAS_MSGS = HAS_RCLPY and _has("emodan_ros.msg")
needs_ros = pytest.mark.skipif(
    not HAS_MSGS,
    reason="needs rclpy and the colcon-built emodan_ros.msg: run `make test` (or `make setup` and `. install/setup.sh`)",
)


@pytest.fixture(scope="session")
def rclpy_context() -> Iterator[object]:
    """One rclpy context for the session (init/shutdown are slow and global)."""
    if not HAS_RCLPY:
        pytest.skip("rclpy not importable: run `make test`")
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def make_node(rclpy_context: object) -> Iterator[Callable[[str], object]]:
    """Factory for nodes in the session context; all are destroyed after the test."""
    import rclpy

    nodes: list = []

    def factory(name: str) -> object:
        node = rclpy.create_node(f"{name}_{os.getpid()}", context=rclpy_context)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.destroy_node()


def spin_until(
    nodes: list, condition: Callable[[], bool], timeout_s: float = 10.0, context: object | None = None
) -> bool:
    """Spin `nodes` until `condition()` is true or `timeout_s` passes; returns condition()."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context or nodes[0].context)
    for node in nodes:
        executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while not condition() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        for node in nodes:
            executor.remove_node(node)
        executor.shutdown()
    return condition()


@pytest.fixture
def spin() -> Callable[..., bool]:
    """`spin(nodes, condition, timeout_s=10.0) -> bool` (see spin_until)."""
    return spin_until


# Every node behaviour test (test_emotion_node*.py) runs on the plain node and on the lifecycle node
# (configured and activated).
NODE_KINDS = ("plain", "lifecycle")


@pytest.fixture(scope="module", params=NODE_KINDS)
def raw(rclpy_context: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """emotion_node on raw frames with its camera and consumer (``node_harness.Harness``), per test module."""
    from node_harness import harness_fixture

    yield from harness_fixture(rclpy_context, request.param, compressed=False)


@pytest.fixture(scope="module", params=NODE_KINDS)
def compressed(rclpy_context: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """The same on compressed frames (``image_transport: compressed``)."""
    from node_harness import harness_fixture

    yield from harness_fixture(rclpy_context, request.param, compressed=True)

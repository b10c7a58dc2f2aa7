"""Messages between rclpy and rosbags (via CDR, which both sides produce byte-identically).

The bag I/O (``emodan_ros.io``) stays free of rclpy; what crosses between a live graph and a bag
goes through here.
"""

from __future__ import annotations

import importlib
from typing import Any

from rclpy.serialization import deserialize_message, serialize_message

from emodan_ros.io.bag_io import msgtype_of, typestore


def _is_rosbags(msg: Any) -> bool:
    return hasattr(msg, "__msgtype__")


def rclpy_class(msgtype: str) -> type:
    """The rclpy message class of 'pkg/msg/Name' (rosidl_runtime_py is not on PyPI)."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise TypeError(f"no rclpy message class for {msgtype!r}: {exc}") from exc


def to_rosbags(msg: Any) -> Any:
    """The rosbags equivalent of an rclpy message (identity for rosbags messages)."""
    if _is_rosbags(msg):
        return msg
    msgtype = msgtype_of(msg)
    return typestore().deserialize_cdr(serialize_message(msg), msgtype)


def to_rclpy(msg: Any, msg_cls: type | None = None) -> Any:
    """The rclpy equivalent of a rosbags message (identity for rclpy messages);
    ``msg_cls`` defaults to the class named by the message type."""
    if not _is_rosbags(msg):
        return msg
    msgtype = msgtype_of(msg)
    raw = bytes(typestore().serialize_cdr(msg, msgtype))
    return deserialize_message(raw, msg_cls or rclpy_class(msgtype))

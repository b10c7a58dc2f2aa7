"""Run emotion_node on a camera: `ros2 launch emodan_ros emotion.launch.py image_topic:=/camera/image_raw`.

Arguments: image_topic, camera_info_topic, image_transport (raw|compressed; compressed:=true is the
older spelling), params_file, device, model_path, namespace, use_sim_time, debug_image, hri_output,
lifecycle (true: `emotion_lifecycle_node`, unconfigured until `ros2 lifecycle set` or a manager
drives it). The node's relative topics are remapped here: `image` (or
`image/compressed`) and `camera_info` to the camera; `landmarks`, `emotions` and `debug_image` stay
under the namespace; with hri_output:=true the ROS4HRI topics go to /humans/faces/...

Camera-size images over best-effort Fast DDS lose most frames with the default 0.5 MB
shared-memory segment; the package's Fast DDS profile (share/emodan_ros/config/fastdds.xml)
enlarges it. It is set for this launch unless FASTDDS_DEFAULT_PROFILES_FILE is already set;
the camera driver's process needs the same profile for the fix to work.

A params_file that is not a readable YAML mapping, or a model_path that names no file, stops the
launch before the node starts, with the reason (launch_ros alone would only warn about the
former and run on defaults).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "emodan_ros"


class LaunchArgumentError(RuntimeError):
    """A launch argument names a file that cannot be used (ros2 launch prints this and exits 1)."""


def _check_files(context: object) -> list:
    """Refuse a params_file that is no YAML mapping and a model_path that is no file, before any start."""
    import yaml

    params_file = LaunchConfiguration("params_file").perform(context)
    if not os.path.isfile(params_file):
        raise LaunchArgumentError(f"params_file '{params_file}' is not a file")
    try:
        with open(params_file, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchArgumentError(f"params_file '{params_file}' is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise LaunchArgumentError(f"params_file '{params_file}' holds no node parameters (not a YAML mapping)")
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path and not os.path.isfile(model_path):
        raise LaunchArgumentError(f"model_path '{model_path}' is not a file")
    return []


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    image_topic = LaunchConfiguration("image_topic")
    arguments = [
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Camera image topic (sensor_msgs/Image); with compressed:=true "
                                          "the node reads <image_topic>/compressed"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="The camera's sensor_msgs/CameraInfo (intrinsics for head pose; "
                                          "without it the node assumes a field of view)"),
        DeclareLaunchArgument("hri_output", default_value="false",
                              description="Also publish ROS4HRI (REP 155) topics under /humans/faces"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw: <image_topic> (Image); compressed: <image_topic>/compressed "
                                          "(CompressedImage)"),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="Deprecated (removed in 0.3): true = image_transport:=compressed"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="Run the managed (lifecycle) node: configure/activate it with "
                                          "`ros2 lifecycle set <node> configure|activate`"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "emotion.yaml"]),
                              description="Node parameters (YAML)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cuda or cpu"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Model checkpoint; empty = the package's default model"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag replay with --clock)"),
        DeclareLaunchArgument("debug_image", default_value="true",
                              description="Publish the annotated debug_image while it has subscribers"),
    ]
    actions = list(arguments)
    actions.append(OpaqueFunction(function=_check_files))
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([share, "config", "fastdds.xml"])))
    node_options = dict(
        package=PACKAGE,
        name="emotion_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "image_transport": ParameterValue(LaunchConfiguration("image_transport"), value_type=str),
                "compressed": ParameterValue(LaunchConfiguration("compressed"), value_type=bool),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "publish_debug_image": ParameterValue(LaunchConfiguration("debug_image"), value_type=bool),
                "hri_output": ParameterValue(LaunchConfiguration("hri_output"), value_type=bool),
            },
        ],
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
    )
    lifecycle = LaunchConfiguration("lifecycle")
    actions.append(Node(executable="emotion_node", condition=UnlessCondition(lifecycle), **node_options))
    actions.append(LifecycleNode(executable="emotion_lifecycle_node", condition=IfCondition(lifecycle),
                                 **node_options))
    return LaunchDescription(actions)

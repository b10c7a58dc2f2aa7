"""Replay a recorded bag into emotion_node on the bag's clock:
`ros2 launch emodan_ros replay.launch.py bag:=my_bag image_topic:=/camera/image_raw`.

Runs `ros2 bag play --clock` and emotion.launch.py with use_sim_time:=true, so output stamps and
latency diagnostics use the recording's time. Other arguments are passed to emotion.launch.py.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

PACKAGE = "emodan_ros"


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="Path of the rosbag2 to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Image topic recorded in the bag"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), "launch",
                                                                "emotion.launch.py"])),
            launch_arguments={"use_sim_time": "true", "image_topic": LaunchConfiguration("image_topic")}.items(),
        ),
        ExecuteProcess(
            cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")],
            output="screen",
        ),
    ])

"""Replay a recorded bag into emotion_node on the bag's clock:
`ros2 launch emodan_ros replay.launch.py bag:=my_bag image_topic:=/camera/image_raw`.

Starts emotion.launch.py with use_sim_time:=true and a bag player publishing the bag's topics and
/clock, so output stamps and latency diagnostics use the recording's time. The player is the
package's own `bag_player` (rclpy + rosbags: works without rosbag2, e.g. with ROS 2 from PyPI);
it waits until the node subscribes (`wait`, seconds) so the first frames are not lost while the
model loads. `player:=ros2bag` runs `ros2 bag play --clock` instead (a full ROS 2 install).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "emodan_ros"


def _player_is(name: str) -> IfCondition:
    return IfCondition(PythonExpression(["'", LaunchConfiguration("player"), f"' == '{name}'"]))


def generate_launch_description() -> LaunchDescription:
    bag, rate = LaunchConfiguration("bag"), LaunchConfiguration("rate")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="Path of the rosbag2 to play (mcap or sqlite3)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Image topic recorded in the bag"),
        DeclareLaunchArgument("player", default_value="package", choices=["package", "ros2bag"],
                              description="package: emodan_ros bag_player (no rosbag2 needed); "
                                          "ros2bag: ros2 bag play --clock"),
        DeclareLaunchArgument("wait", default_value="60.0",
                              description="package player: wait up to this many seconds for the node to "
                                          "subscribe before playing"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), "launch",
                                                                "emotion.launch.py"])),
            launch_arguments={"use_sim_time": "true", "image_topic": LaunchConfiguration("image_topic")}.items(),
        ),
        Node(
            package=PACKAGE,
            executable="bag_player",
            arguments=[bag, "--rate", rate, "--wait-for-subscriber", LaunchConfiguration("wait"), "--no-progress"],
            output="screen",
            condition=_player_is("package"),
        ),
        ExecuteProcess(
            cmd=["ros2", "bag", "play", bag, "--clock", "--rate", rate],
            output="screen",
            condition=_player_is("ros2bag"),
        ),
    ])

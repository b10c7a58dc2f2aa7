# emodan_ros: one-command environment, build and tests (see README.md "Setup" and "Tests").
SHELL := /bin/bash
VENV := $(CURDIR)/.venv

.PHONY: setup test demo clean

## setup: create .venv (ROS 2 wheels or a sourced ROS 2 install), install deps, colcon build
setup:
	@bash tools/setup.sh

# ros2-extra's interface packages (launch_ros needs composition_interfaces), when setup installed them.
EXTRA_SETUP := $(VENV)/ros2-extra/install/local_setup.sh
SOURCE := . install/setup.sh; if [ -f "$(EXTRA_SETUP)" ]; then . "$(EXTRA_SETUP)"; fi

## test: setup, then run every test with the built package sourced
test: setup
	@set -e; $(SOURCE); \
	  PATH="$(VENV)/bin:$$PATH" "$(VENV)/bin/pytest" test/

## demo: setup, then run emotion_node on the built-in sample (or ARGS="--image photo.jpg" / "--bag BAG")
demo: setup
	@set -e; $(SOURCE); \
	  PATH="$(VENV)/bin:$$PATH" install/emodan_ros/lib/emodan_ros/emodan_demo --out demo_out $(ARGS)

## clean: remove build outputs (keeps .venv)
clean:
	rm -rf build install log

# emodan_ros: one-command environment, build and tests (see README.md "Setup" and "Tests").
SHELL := /bin/bash
VENV := $(CURDIR)/.venv

.PHONY: setup test clean

## setup: create .venv (ROS 2 wheels or a sourced ROS 2 install), install deps, colcon build
setup:
	@bash tools/setup.sh

## test: setup, then run every test with the built package sourced
test: setup
	@set -e; . install/setup.sh; \
	  PATH="$(VENV)/bin:$$PATH" "$(VENV)/bin/pytest" test/

## clean: remove build outputs (keeps .venv)
clean:
	rm -rf build install log

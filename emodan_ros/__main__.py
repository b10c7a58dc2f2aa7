"""`python -m emodan_ros ...` is the `emodan` command."""

from emodan_ros.cli import main

raise SystemExit(main())

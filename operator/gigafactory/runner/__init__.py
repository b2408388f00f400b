"""The factory runner: the process in each runner pod that claims bound jobs, runs the agent in a
worktree of its own, pushes the branch and reports back (see docs/runner.md, docs/protocol.md)."""

"""The `gigafactory` command line: the operator, the runner, local dev mode, and commands for job users."""

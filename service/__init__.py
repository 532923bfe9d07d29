"""Orchestration: the job coordinator, the Ray job runner, and (later) serving and queries."""

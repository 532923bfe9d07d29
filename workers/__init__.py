"""Code that runs inside Ray actors/tasks: model loading, hook capture, sources, fragment building."""

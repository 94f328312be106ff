"""Checkpoint files: which one (`locate`), reading and checking it (`read`, `integrity`), the
published names (`registry`), downloading (`http_transfer`, `download`), `export` to
.safetensors, what a file holds (`info`), the AudioSet head (`head`), random checkpoints of a
given shape for benchmarks (`synthetic`). See docs/architecture.md for the layering rule."""

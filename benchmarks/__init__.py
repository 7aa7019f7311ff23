"""The benchmark programs behind ``resvision benchmark <task>`` (not installed: they live in the
source tree, next to the peers' reference code the tests keep)."""

"""``python -m resvision.tools`` behaves exactly like the ``resvision`` console script."""

from .cli import run

if __name__ == "__main__":
    run()

"""`python -m compiler` runs the meshc command line."""

from compiler.cli import run

run()

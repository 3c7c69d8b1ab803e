"""`python -m compiler` runs the meshc command line."""

from compiler.launch import run

run()

"""`python -m simpul.node` runs the `simpul` command line."""

from simpul.node.cli import main

main(prog_name="simpul")

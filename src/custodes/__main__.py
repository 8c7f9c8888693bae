"""`python -m custodes` runs the command line."""

from custodes.cli import app

app(prog_name="custodes")

"""`python -m dispatcher` is the `outage` command."""

from dispatcher.cli import app

app(prog_name="outage")
